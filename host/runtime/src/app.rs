//! Loading an app: compile each component once, check it is a `wasi:http`
//! component (WASIp2 or WASIp3) that imports only what this host links (the world
//! crate's checks, then every import's type against the linker), and
//! pre-instantiate it.

use crate::engines::{Abi, Engines};
use crate::state::HostState;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmesh_api::{AppManifest, ComponentLimits, ManifestError};
use wasmesh_world::{ComponentError, check_preamble, exports_of};
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
        /// The component's name in its manifest.
        component: String,
        /// Its file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A component is not one hosts can serve (see [`ComponentError`]).
    #[error(transparent)]
    Component(#[from] ComponentError),
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
    /// Limits above the node's `caps` are lowered to them (logged).
    pub(crate) async fn load(
        manifest: AppManifest,
        base: &Path,
        engines: &Arc<Engines>,
        caps: &wasmesh_api::LimitCaps,
    ) -> Result<Self, AppError> {
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
            let (limits, lowered) = spec.limits.capped(caps);
            if !lowered.is_empty() {
                tracing::warn!(app = %app, component = %name, ?lowered, "limits above this node's caps were lowered to them");
            }
            components.insert(
                name.clone(),
                Arc::new(LoadedComponent {
                    app: app.clone(),
                    name: name.as_str().into(),
                    pre,
                    engine,
                    limits,
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
    check_preamble(name, path, bytes)?;
    let compile_error =
        |e: wasmtime::Error| ComponentError::Compile { component: component.clone(), message: format!("{e:#}") };
    // WASIp2 first. A component that fails there (it uses the async ABI) or that
    // exports the WASIp3 handler goes to the WASIp3 engine, whose errors are then
    // the ones to report: it accepts everything the first one does.
    let p2 = engines.get(Abi::P2).map_err(compile_error)?;
    let on_p2 = Component::new(&p2.engine, bytes).ok().map(|compiled| {
        let exports = exports_of(&compiled, &p2.engine);
        (compiled, exports)
    });
    let on_p3 = || -> Result<_, ComponentError> {
        let p3 = engines.get(Abi::P3).map_err(compile_error)?;
        let compiled = Component::new(&p3.engine, bytes).map_err(compile_error)?;
        let exports = exports_of(&compiled, &p3.engine);
        Ok((compiled, p3, exports))
    };
    let ((compiled, runtime, exports), abi) = match on_p2 {
        Some((compiled, exports)) if !exports.is_p3() => ((compiled, p2, exports), Abi::P2),
        _ => (on_p3()?, Abi::P3),
    };
    let p3 = exports.is_p3();
    if !exports.is_handler() {
        return Err(ComponentError::WrongWorld { component, exports: exports.names }.into());
    }
    let unsupported = |e: wasmtime::Error| -> AppError {
        ComponentError::UnsupportedImport { component: component.clone(), message: format!("{e:#}") }.into()
    };
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
