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

use crate::state::HostState;
use std::sync::OnceLock;
pub(crate) use wasmesh_world::Abi;
use wasmesh_world::engine_config;
use wasmesh_world::link::link;
use wasmtime::component::Linker;
use wasmtime::{Engine, PoolingAllocationConfig};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every interface the world crate lists (and so the registry accepts) links on a
    /// host: a component importing it by name instantiates against the WASIp3 engine's
    /// linker, which has all of them. A name no host links fails.
    #[test]
    fn every_interface_the_world_lists_links_on_a_host() {
        let engines = Engines::new(None).unwrap();
        let p3 = engines.get(Abi::P3).unwrap();
        let links = |name: &str| {
            let component = wasmtime::component::Component::new(
                &p3.engine,
                wat::parse_str(format!(r#"(component (import "{name}" (instance)))"#)).unwrap(),
            )
            .unwrap();
            p3.linker.instantiate_pre(&component).is_ok()
        };
        for name in wasmesh_world::interfaces::ALL.iter().flat_map(|group| group.iter()) {
            assert!(links(name), "{name} is listed in wasmesh_world::interfaces but no host links it");
        }
        assert!(!links("acme:clocks/monotonic-clock@9.0.0"));
        assert!(!wasmesh_world::interfaces::is_provided("acme:clocks/monotonic-clock@9.0.0"));
    }
}
