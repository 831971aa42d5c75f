//! The two `wasi:http` ABIs a component may be built for, and the Wasmtime settings
//! each is compiled with (the same for hosts and for the registry's check, so a
//! component the registry accepts compiles on every host).

/// Which `wasi:http` ABI an engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `wasi:http@0.2`: the synchronous component model ABI.
    P2,
    /// `wasi:http@0.3.0`: the component model's async ABI.
    P3,
}

/// Engine settings shared by every host and validator, for `abi`.
pub fn engine_config(abi: Abi) -> wasmtime::Config {
    let mut wasm = wasmtime::Config::new();
    wasm.wasm_component_model(true);
    let p3 = abi == Abi::P3;
    wasm.concurrency_support(p3);
    wasm.wasm_component_model_async(p3);
    wasm.epoch_interruption(true);
    // Proposals guests of the wasi:http world do not use: off, so no instance pays
    // for their runtime state.
    wasm.wasm_threads(false);
    wasm.wasm_gc(false);
    wasm
}
