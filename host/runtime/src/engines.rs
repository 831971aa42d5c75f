//! The Wasmtime engines a host runs components on, and what they link.
//!
//! WASIp2 components (`wasi:http/incoming-handler@0.2`) run on an engine without
//! the component model's concurrency support; WASIp3 components
//! (`wasi:http/handler@0.3.0`, e.g. from spin-sdk 7) on one with it. With
//! concurrency on, every instantiation and every store carries task bookkeeping (a
//! guest task per core instance, the store's concurrent state), about a sixth of a
//! `hello` instantiation as measured by `cargo bench --bench host --
//! --instantiate-only`; WASIp2 guests never use it, so they do not pay for it. The
//! WASIp3 engine, with its own instance pool, is made when the first such
//! component loads. A WASIp2 handler that imports WASIp3 interfaces runs there too,
//! since only that engine's linker has them.

use crate::nn;
use crate::server::HostState;
use crate::spin;
use std::sync::OnceLock;
use wasmtime::component::Linker;
use wasmtime::{Engine, PoolingAllocationConfig};

/// Which `wasi:http` ABI an engine serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abi {
    /// `wasi:http@0.2`: synchronous component model ABI.
    P2,
    /// `wasi:http@0.3.0`: the component model's async ABI.
    P3,
}

/// One engine and the linker its components are checked and instantiated against.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
}

impl Runtime {
    fn new(abi: Abi, pool: Option<&PoolingAllocationConfig>) -> wasmtime::Result<Self> {
        let mut config = engine_config(abi);
        if let Some(pool) = pool {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool.clone()));
        }
        let engine = Engine::new(&config)?;
        let linker = link(&engine, abi)?;
        Ok(Self { engine, linker })
    }
}

/// The WASIp2 engine, and the WASIp3 engine once a component needs it.
pub(crate) struct Engines {
    p2: Runtime,
    p3: OnceLock<Runtime>,
    /// Instance pool of each engine; `None` allocates on demand (validators).
    pool: Option<PoolingAllocationConfig>,
}

impl Engines {
    pub(crate) fn new(pool: Option<PoolingAllocationConfig>) -> wasmtime::Result<Self> {
        Ok(Self { p2: Runtime::new(Abi::P2, pool.as_ref())?, p3: OnceLock::new(), pool })
    }

    /// The engine serving `abi`, made on first use.
    pub(crate) fn get(&self, abi: Abi) -> wasmtime::Result<&Runtime> {
        match abi {
            Abi::P2 => Ok(&self.p2),
            Abi::P3 => {
                if let Some(runtime) = self.p3.get() {
                    return Ok(runtime);
                }
                let made = Runtime::new(Abi::P3, self.pool.as_ref())?;
                // Two first loads at once: one engine wins, the other is dropped.
                Ok(self.p3.get_or_init(|| made))
            }
        }
    }

    /// Advances the epoch of every engine made so far (the host's ticker thread).
    pub(crate) fn increment_epoch(&self) {
        self.p2.engine.increment_epoch();
        if let Some(p3) = self.p3.get() {
            p3.engine.increment_epoch();
        }
    }
}

/// What the fabric provides to components, for `abi`: WASI and `wasi:http` 0.2
/// (and 0.3 for WASIp3 components), `wasi:nn` with its streaming extension, and
/// Spin's `fermyon:spin/llm`.
fn link(engine: &Engine, abi: Abi) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    if abi == Abi::P3 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    nn::add_to_linker(&mut linker)?;
    spin::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Engine settings every host and validator shares.
fn engine_config(abi: Abi) -> wasmtime::Config {
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
