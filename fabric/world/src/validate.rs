//! The deploy-time check of a component: is it a `wasi:http` handler, built for a
//! world hosts provide? Run by the registry on every component it is asked to deploy,
//! and by hosts (which also link every import's type) when they load one.

use crate::abi::{Abi, engine_config};
use crate::interfaces;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Why a component was refused. Each message names the component and says what to
/// change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The file is not WebAssembly.
    #[error("component '{component}': {} is not a WebAssembly file (it does not start with \\0asm)", path.display())]
    NotWasm {
        /// The component's name in its manifest.
        component: String,
        /// Where its bytes came from.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "component '{component}': {} is a core WebAssembly module, not a component; build it for the `wasm32-wasip2` target (or wrap it with `wasm-tools component new`)",
        path.display()
    )]
    CoreModule {
        /// The component's name in its manifest.
        component: String,
        /// Where its bytes came from.
        path: PathBuf,
    },
    /// Wasmtime could not compile it.
    #[error("component '{component}': failed to compile: {message}")]
    Compile {
        /// The component's name in its manifest.
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
        /// The component's name in its manifest.
        component: String,
        /// What it does export.
        exports: Vec<String>,
    },
    /// It imports something hosts do not provide.
    #[error(
        "component '{component}' cannot be linked: {message}. wasmesh hosts provide the wasi:http/proxy world (WASIp2 and WASIp3), wasi:nn and fermyon:spin/llm (see wit/README.md)"
    )]
    UnsupportedImport {
        /// The component's name in its manifest.
        component: String,
        /// What is missing, naming the import.
        message: String,
    },
}

/// Checks the preamble: `\0asm`, a 2-byte version, then a 2-byte layer (0 for core
/// modules, 1 for components).
///
/// # Errors
/// [`ComponentError::NotWasm`] or [`ComponentError::CoreModule`].
pub fn check_preamble(component: &str, path: &Path, bytes: &[u8]) -> Result<(), ComponentError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ComponentError::NotWasm { component: component.to_owned(), path: path.to_owned() });
    }
    if bytes[6..8] == [0, 0] {
        return Err(ComponentError::CoreModule { component: component.to_owned(), path: path.to_owned() });
    }
    Ok(())
}

/// What a compiled component exports, by name, and which handler ABI that makes it.
pub struct Exports {
    /// Every export's name.
    pub names: Vec<String>,
}

impl Exports {
    /// Whether it exports the WASIp3 handler (`wasi:http/handler@0.3.0`).
    pub fn is_p3(&self) -> bool {
        self.names.iter().any(|e| e == "wasi:http/handler@0.3.0")
    }

    /// Whether it exports either `wasi:http` handler.
    pub fn is_handler(&self) -> bool {
        self.is_p3() || self.names.iter().any(|e| e.starts_with("wasi:http/incoming-handler@0.2"))
    }
}

/// The exports of `compiled`, compiled on `engine`.
pub fn exports_of(compiled: &Component, engine: &Engine) -> Exports {
    Exports { names: compiled.component_type().exports(engine).map(|(name, _)| name.to_string()).collect() }
}

/// Checks components as hosts would load them, without serving them: the
/// preamble, that Wasmtime compiles them with hosts' settings, that they export a
/// `wasi:http` handler, and that every import is an interface hosts provide
/// ([`interfaces`]), by name and version.
pub struct ComponentValidator {
    p2: Engine,
    p3: OnceLock<Engine>,
}

impl ComponentValidator {
    /// Engines configured like a host's (no instance pool).
    ///
    /// # Errors
    /// When Wasmtime refuses the configuration (it does not on supported platforms).
    pub fn new() -> wasmtime::Result<Self> {
        Ok(Self { p2: Engine::new(&engine_config(Abi::P2))?, p3: OnceLock::new() })
    }

    /// The WASIp3 engine, made when the first component needs it.
    fn p3(&self) -> wasmtime::Result<&Engine> {
        if let Some(engine) = self.p3.get() {
            return Ok(engine);
        }
        let engine = Engine::new(&engine_config(Abi::P3))?;
        Ok(self.p3.get_or_init(|| engine))
    }

    /// Checks `bytes`, the component named `component` in its manifest. CPU-heavy (it
    /// compiles): call it from a blocking thread.
    ///
    /// # Errors
    /// A [`ComponentError`] saying what is wrong and what to change.
    pub fn validate(&self, component: &str, bytes: &[u8]) -> Result<(), ComponentError> {
        check_preamble(component, Path::new("the uploaded file"), bytes)?;
        let compile_error =
            |e: wasmtime::Error| ComponentError::Compile { component: component.to_owned(), message: format!("{e:#}") };
        // WASIp2 first; a component that fails there (it uses the async ABI) or that
        // exports the WASIp3 handler is compiled for the WASIp3 engine, whose errors are
        // then the ones to report: it accepts everything the first one does.
        let on_p2 = Component::new(&self.p2, bytes).ok().map(|c| {
            let exports = exports_of(&c, &self.p2);
            (c, exports)
        });
        let (compiled, engine, exports) = match on_p2 {
            Some((compiled, exports)) if !exports.is_p3() => (compiled, &self.p2, exports),
            _ => {
                let engine = self.p3().map_err(compile_error)?;
                let compiled = Component::new(engine, bytes).map_err(compile_error)?;
                let exports = exports_of(&compiled, engine);
                (compiled, engine, exports)
            }
        };
        if !exports.is_handler() {
            return Err(ComponentError::WrongWorld { component: component.to_owned(), exports: exports.names });
        }
        let missing: Vec<String> = compiled
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| !interfaces::is_provided(name))
            .collect();
        if !missing.is_empty() {
            let listed = missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
            return Err(ComponentError::UnsupportedImport {
                component: component.to_owned(),
                message: format!("it imports {listed}, which no wasmesh host provides"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A handler that imports what hosts provide, and one that imports what they do not,
    // are `host/runtime/tests/fake_engine.rs`'s (through the runtime's re-export).

    #[test]
    fn non_components_and_non_handlers_are_refused_with_what_to_do() {
        let validator = ComponentValidator::new().unwrap();
        let err = validator.validate("web", b"hello, not wasm").unwrap_err();
        assert!(matches!(err, ComponentError::NotWasm { .. }), "{err}");
        let err = validator.validate("web", b"\0asm\x01\0\0\0").unwrap_err();
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
        let empty = wat::parse_str("(component)").unwrap();
        let err = validator.validate("web", &empty).unwrap_err();
        assert!(matches!(err, ComponentError::WrongWorld { .. }), "{err}");
        assert!(err.to_string().contains("component 'web'"), "{err}");
    }
}
