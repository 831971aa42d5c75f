//! Loading an app: compile each component once, check it is a `wasi:http`
//! component (WASIp2 or WASIp3) that imports only what this host links, and
//! pre-instantiate it.

use crate::engines::{Abi, Engines};
use crate::server::HostState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmesh_api::{AppManifest, ComponentLimits, ManifestError};
use wasmtime::component::Component;
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// Why an app or one of its components was refused. Each message names the
/// component and says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The manifest itself is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A component file could not be read.
    #[error("component '{component}': cannot read {}: {source}", path.display())]
    Read {
        /// The component.
        component: String,
        /// Its file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not WebAssembly.
    #[error("component '{component}': {} is not a WebAssembly file (it does not start with \\0asm)", path.display())]
    NotWasm {
        /// The component.
        component: String,
        /// Its file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "component '{component}': {} is a core WebAssembly module, not a component; build it for the `wasm32-wasip2` target (or wrap it with `wasm-tools component new`)",
        path.display()
    )]
    CoreModule {
        /// The component.
        component: String,
        /// Its file.
        path: PathBuf,
    },
    /// Wasmtime could not compile it.
    #[error("component '{component}': failed to compile: {message}")]
    Compile {
        /// The component.
        component: String,
        /// Wasmtime's message.
        message: String,
    },
    /// It exports neither `wasi:http/incoming-handler` (WASIp2) nor `wasi:http/handler` (WASIp3).
    #[error(
        "component '{component}' exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3.0 (it exports: {}); target the wasi:http/proxy world, e.g. with the `wasi` crate's `wasi::http::proxy::export!`, or write it with spin-sdk's `#[http_service]`",
        if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
    )]
    WrongWorld {
        /// The component.
        component: String,
        /// What it does export.
        exports: Vec<String>,
    },
    /// It imports something this host does not provide.
    #[error(
        "component '{component}' cannot be linked: {message}. wasmesh hosts provide the wasi:http/proxy world (WASIp2 and WASIp3), wasi:nn and fermyon:spin/llm (see wit/README.md)"
    )]
    UnsupportedImport {
        /// The component.
        component: String,
        /// Wasmtime's message, which names the import.
        message: String,
    },
    /// Two apps claim one route.
    #[error("route '{path}' of app '{app}' is already served by app '{other}'")]
    RouteConflict {
        /// The route.
        path: String,
        /// The app being loaded.
        app: String,
        /// The app that has it.
        other: String,
    },
}

/// A component ready to serve: compiled, checked and pre-instantiated.
pub(crate) struct LoadedComponent {
    pub(crate) app: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) pre: ProxyPre<HostState>,
    /// The engine it was compiled for (its stores are made on it).
    pub(crate) engine: wasmtime::Engine,
    pub(crate) limits: ComponentLimits,
    pub(crate) granted: Arc<[String]>,
    /// Models granted to Spin's LLM interface (`ai_models`).
    pub(crate) ai_granted: Arc<[String]>,
    pub(crate) env: Vec<(String, String)>,
}

/// An app whose components are all loaded.
pub struct LoadedApp {
    /// The manifest it came from.
    pub manifest: AppManifest,
    pub(crate) components: BTreeMap<String, Arc<LoadedComponent>>,
}

impl LoadedApp {
    /// Compiles and checks every component of `manifest`; `base` is the folder
    /// component paths are relative to. Compilation runs on blocking threads.
    pub(crate) async fn load(manifest: AppManifest, base: &Path, engines: &Arc<Engines>) -> Result<Self, AppError> {
        let app: Arc<str> = manifest.app.name.as_str().into();
        let mut components = BTreeMap::new();
        for (name, spec) in &manifest.component {
            let path = base.join(&spec.source);
            let bytes = tokio::fs::read(&path).await.map_err(|source| AppError::Read {
                component: name.clone(),
                path: path.clone(),
                source,
            })?;
            let (pre, engine) = {
                let engines = engines.clone();
                let name = name.clone();
                tokio::task::spawn_blocking(move || compile(&engines, &name, &path, &bytes))
                    .await
                    .expect("compile task panicked")?
            };
            components.insert(
                name.clone(),
                Arc::new(LoadedComponent {
                    app: app.clone(),
                    name: name.as_str().into(),
                    pre,
                    engine,
                    limits: spec.limits,
                    granted: spec.models.clone().into(),
                    ai_granted: spec.ai_models.clone().into(),
                    env: spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                }),
            );
        }
        Ok(Self { manifest, components })
    }
}

/// Checks the bytes, compiles, and pre-instantiates one component on the engine
/// of its ABI (see [`Engines`]).
pub(crate) fn compile(
    engines: &Engines,
    name: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<(ProxyPre<HostState>, wasmtime::Engine), AppError> {
    let component = name.to_string();
    // The preamble is "\0asm", a 2-byte version, then a 2-byte layer: 0 for core
    // modules, 1 for components.
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(AppError::NotWasm { component, path: path.to_owned() });
    }
    if bytes[6..8] == [0, 0] {
        return Err(AppError::CoreModule { component, path: path.to_owned() });
    }
    let compile_error =
        |e: wasmtime::Error| AppError::Compile { component: component.clone(), message: format!("{e:#}") };
    let exports_of = |compiled: &Component, engine: &wasmtime::Engine| -> Vec<String> {
        compiled.component_type().exports(engine).map(|(name, _)| name.to_string()).collect()
    };
    let is_p3 = |exports: &[String]| exports.iter().any(|e| e == "wasi:http/handler@0.3.0");
    // WASIp2 first. A component that fails there (it uses the async ABI) or that
    // exports the WASIp3 handler goes to the WASIp3 engine, whose errors are then
    // the ones to report: it accepts everything the first one does.
    let p2 = engines.get(Abi::P2).map_err(compile_error)?;
    let on_p2 = Component::new(&p2.engine, bytes).ok().map(|compiled| {
        let exports = exports_of(&compiled, &p2.engine);
        (compiled, exports)
    });
    let on_p3 = || -> Result<_, AppError> {
        let p3 = engines.get(Abi::P3).map_err(compile_error)?;
        let compiled = Component::new(&p3.engine, bytes).map_err(compile_error)?;
        let exports = exports_of(&compiled, &p3.engine);
        Ok((compiled, p3, exports))
    };
    let ((compiled, runtime, exports), abi) = match on_p2 {
        Some((compiled, exports)) if !is_p3(&exports) => ((compiled, p2, exports), Abi::P2),
        _ => (on_p3()?, Abi::P3),
    };
    let p3 = is_p3(&exports);
    if !p3 && !exports.iter().any(|e| e.starts_with("wasi:http/incoming-handler@0.2")) {
        return Err(AppError::WrongWorld { component, exports });
    }
    let unsupported =
        |e: wasmtime::Error| AppError::UnsupportedImport { component: component.clone(), message: format!("{e:#}") };
    let (pre, runtime) = match runtime.linker.instantiate_pre(&compiled) {
        Ok(pre) => (pre, runtime),
        // Only the WASIp3 linker has WASIp3 interfaces: a WASIp2 handler that imports
        // some runs there. If it fails there too, the WASIp2 error is the one to show.
        Err(e) if abi == Abi::P2 => {
            let (compiled, p3_runtime, _) = on_p3()?;
            match p3_runtime.linker.instantiate_pre(&compiled) {
                Ok(pre) => (pre, p3_runtime),
                Err(_) => return Err(unsupported(e)),
            }
        }
        Err(e) => return Err(unsupported(e)),
    };
    let pre = if p3 {
        ProxyPre::P3(ServicePre::new(pre).map_err(unsupported)?)
    } else {
        ProxyPre::P2(wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(unsupported)?)
    };
    Ok((pre, runtime.engine.clone()))
}

/// Checks components the way a host would load them, without serving them: the
/// registry runs it on every upload it is asked to deploy.
pub struct ComponentValidator {
    engines: Engines,
}

impl ComponentValidator {
    /// An engine and linker configured like a host's (no instance pool).
    pub fn new() -> wasmtime::Result<Self> {
        Ok(Self { engines: Engines::new(None)? })
    }

    /// Checks that `bytes` is a component exporting `wasi:http/incoming-handler`
    /// and importing only what hosts provide. CPU-heavy (it compiles): call it
    /// from a blocking thread.
    pub fn validate(&self, component: &str, bytes: &[u8]) -> Result<(), AppError> {
        compile(&self.engines, component, Path::new("the uploaded file"), bytes).map(drop)
    }
}
