//! The linker every host instantiates components against: each capability's
//! interfaces, added once per engine.

use crate::abi::Abi;
use crate::nn::WasiNnView;
use crate::spin::SpinLlmView;
use wasmtime::Engine;
use wasmtime::component::Linker;
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

/// What a host's per-request store data must give each capability: WASI, `wasi:http`,
/// `wasi:nn` and Spin's LLM interface.
pub trait GuestState: WasiView + WasiHttpView + WasiNnView + SpinLlmView + 'static {}

impl<T: WasiView + WasiHttpView + WasiNnView + SpinLlmView + 'static> GuestState for T {}

/// What the fabric provides to components, for `abi`: WASI and `wasi:http` 0.2 (and
/// 0.3 for WASIp3 components), `wasi:nn` with its streaming extension, and Spin's
/// `fermyon:spin/llm`. The names are [`crate::interfaces`].
///
/// # Errors
/// When two capabilities define one name (a bug here, caught by this crate's tests).
pub fn link<T: GuestState>(engine: &Engine, abi: Abi) -> wasmtime::Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if abi == Abi::P3 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    crate::nn::add_to_linker(&mut linker)?;
    crate::spin::add_to_linker(&mut linker)?;
    Ok(linker)
}
