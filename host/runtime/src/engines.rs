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

    /// What proves a host links an interface: a function it defines (imported with a
    /// wrong type, the linker finds it and complains about the type, not that it is
    /// missing) or a resource it defines (imported as a resource, it links). `None`:
    /// the interface holds only type definitions, which need nothing from a linker.
    fn probe(name: &str) -> Option<(&'static str, &'static str)> {
        let path = name.split('@').next().unwrap_or(name);
        let (kind, item) = match path {
            "fermyon:spin/llm" => ("func", "infer"),
            "wasi:cli/environment" => ("func", "get-environment"),
            "wasi:cli/exit" => ("func", "exit"),
            "wasi:cli/stdin" if name.ends_with("0.3.0") => ("func", "read-via-stream"),
            "wasi:cli/stdout" | "wasi:cli/stderr" if name.ends_with("0.3.0") => ("func", "write-via-stream"),
            "wasi:cli/stdin" => ("func", "get-stdin"),
            "wasi:cli/stdout" => ("func", "get-stdout"),
            "wasi:cli/stderr" => ("func", "get-stderr"),
            "wasi:cli/terminal-input" => ("resource", "terminal-input"),
            "wasi:cli/terminal-output" => ("resource", "terminal-output"),
            "wasi:cli/terminal-stdin" => ("func", "get-terminal-stdin"),
            "wasi:cli/terminal-stdout" => ("func", "get-terminal-stdout"),
            "wasi:cli/terminal-stderr" => ("func", "get-terminal-stderr"),
            "wasi:clocks/wall-clock" | "wasi:clocks/monotonic-clock" | "wasi:clocks/system-clock" => ("func", "now"),
            "wasi:filesystem/preopens" => ("func", "get-directories"),
            "wasi:filesystem/types" => ("resource", "descriptor"),
            "wasi:http/types" => ("resource", "fields"),
            "wasi:http/outgoing-handler" => ("func", "handle"),
            "wasi:http/client" => ("func", "send"),
            "wasi:io/error" | "wasi:nn/errors" => ("resource", "error"),
            "wasi:io/poll" => ("func", "poll"),
            "wasi:io/streams" => ("resource", "input-stream"),
            "wasi:nn/graph" => ("func", "load"),
            "wasi:nn/inference" => ("resource", "graph-execution-context"),
            "wasi:nn/tensor" => ("resource", "tensor"),
            "wasi:random/random" => ("func", "get-random-bytes"),
            "wasi:random/insecure" => ("func", "get-insecure-random-bytes"),
            "wasi:random/insecure-seed" if name.ends_with("0.3.0") => ("func", "get-insecure-seed"),
            "wasi:random/insecure-seed" => ("func", "insecure-seed"),
            "wasi:sockets/network" => ("resource", "network"),
            "wasi:sockets/instance-network" => ("func", "instance-network"),
            "wasi:sockets/ip-name-lookup" => ("func", "resolve-addresses"),
            "wasi:sockets/tcp" | "wasi:sockets/types" => ("resource", "tcp-socket"),
            "wasi:sockets/tcp-create-socket" => ("func", "create-tcp-socket"),
            "wasi:sockets/udp" => ("resource", "udp-socket"),
            "wasi:sockets/udp-create-socket" => ("func", "create-udp-socket"),
            "wasmesh:guest/streaming" => ("func", "compute-stream"),
            "wasi:clocks/types" | "wasi:cli/types" => return None,
            other => panic!("no probe for {other}: add one naming a function or resource it defines"),
        };
        Some((kind, item))
    }

    /// Every interface the world crate lists (and so the registry accepts) is linked by
    /// a host: each is probed on the WASIp3 engine's linker, which has all of them. A
    /// name no host links is found missing by the same probe.
    #[test]
    fn every_interface_the_world_lists_links_on_a_host() {
        let engines = Engines::new(None).unwrap();
        let p3 = engines.get(Abi::P3).unwrap();
        // `Ok(())` when the linker defines `item` in `name`; the error chain otherwise.
        let defined = |name: &str, kind: &str, item: &str| -> Result<(), String> {
            let export = match kind {
                "func" => format!(r#"(export "{item}" (func))"#),
                _ => format!(r#"(export "{item}" (type (sub resource)))"#),
            };
            let text = format!(r#"(component (import "{name}" (instance {export})))"#);
            let component = wasmtime::component::Component::new(&p3.engine, wat::parse_str(text).unwrap()).unwrap();
            match p3.linker.instantiate_pre(&component) {
                Ok(_) => Ok(()),
                // Found, with another type than the probe's `(func)`.
                Err(e) if !format!("{e:#}").contains("implementation is missing") => Ok(()),
                Err(e) => Err(format!("{e:#}")),
            }
        };
        let mut probed = 0;
        for name in wasmesh_world::interfaces::ALL.iter().flat_map(|group| group.iter()) {
            if let Some((kind, item)) = probe(name) {
                defined(name, kind, item).unwrap_or_else(|e| {
                    panic!("{name} is listed in wasmesh_world::interfaces but no host links it: {e}")
                });
                probed += 1;
            }
        }
        assert!(probed > 50, "only {probed} interfaces probed");
        assert!(defined("acme:clocks/monotonic-clock@9.0.0", "func", "now").is_err());
        assert!(defined("wasi:io/poll@0.2.12", "func", "no-such-function").is_err());
        assert!(!wasmesh_world::interfaces::is_provided("acme:clocks/monotonic-clock@9.0.0"));
    }
}
