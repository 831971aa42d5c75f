//! The world wasmesh guests live in: every interface a component may import, in one
//! place.
//!
//! A guest capability is one unit here, with three steps:
//!
//! | capability | interfaces | link once (`host` feature) | check at deploy | per-request state |
//! |---|---|---|---|---|
//! | WASI and `wasi:http` (p2, p3) | [`interfaces::WASI_P2`], [`interfaces::WASI_P3`] | [`link::link`] | import names | the host's `WasiCtx`, `WasiHttpCtx` |
//! | `wasi:nn` + `wasmesh:guest/streaming` | [`interfaces::NN`] | `nn::add_to_linker` | import names; model grants (`models`) at request time | `nn::NnCtx` |
//! | `fermyon:spin/llm` | [`interfaces::SPIN_LLM`] | `spin::add_to_linker` | import names; grants (`ai_models`) at request time | `spin::LlmCtx` |
//!
//! Adding a capability means: its WIT under `wit/`, a module here with its bindgen
//! and `add_to_linker`, its interface names in [`interfaces`], a line in
//! [`link::link`], and a field in the host's store data.
//!
//! Without the `host` feature the crate is the deploy-time check alone
//! ([`ComponentValidator`]): it compiles a component with the engine settings hosts
//! use ([`abi::engine_config`]) and checks what it exports and imports by name, so the
//! registry depends on Wasmtime but not on WASI, `wasi:http` or the host runtime. The
//! host's own load links every import's type as well (the `host` feature's tests keep
//! the two in step: every name [`interfaces`] lists links on the host's linker).

pub mod abi;
#[cfg(feature = "host")]
pub mod budget;
#[cfg(feature = "host")]
pub mod commit;
pub mod interfaces;
#[cfg(feature = "host")]
pub mod link;
#[cfg(feature = "host")]
pub mod nn;
#[cfg(feature = "host")]
pub mod spin;
mod validate;

pub use abi::{Abi, engine_config};
pub use validate::{ComponentError, ComponentValidator, Exports, check_preamble, exports_of};

/// Models a receipt lists per request, at most (a guest looping over names cannot grow it).
#[cfg(feature = "host")]
const MAX_MODELS_NOTED: usize = 8;

/// Adds `model` to a store's list of models used, once.
#[cfg(feature = "host")]
fn note_model(models: &mut Vec<String>, model: String) {
    if models.len() < MAX_MODELS_NOTED && !models.contains(&model) {
        models.push(model);
    }
}
