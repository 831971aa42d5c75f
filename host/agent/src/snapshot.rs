//! One reading of a host's state. The router's `HostReport` (every second, over QUIC)
//! and the registry's `Heartbeat` (every 10 s) are both built from it, so they cannot
//! disagree about what a node holds or whether it is ready.

use std::collections::BTreeMap;
use wasmesh_api::wire::{CachedModel, Hardware, Heartbeat, MemoryPressure, ModelState, ResourceShare};
use wasmesh_engine::Residency;
use wasmesh_runtime::Host;
use wasmesh_tunnel::HostReport;

/// A host's state at one moment.
pub(crate) struct HostSnapshot {
    /// Serving, not paused and not under memory pressure.
    pub(crate) ready: bool,
    /// Paused by its provider.
    pub(crate) paused: bool,
    pub(crate) in_flight: u32,
    /// Bytes of model memory the engine holds.
    pub(crate) memory_used: u64,
    /// Of those, bytes held by idle, unpinned models.
    pub(crate) memory_idle: u64,
    pub(crate) models: Vec<CachedModel>,
    pub(crate) apps: BTreeMap<String, u64>,
    pub(crate) served: u64,
    /// Model loads started since the host started.
    pub(crate) loads: u64,
}

impl HostSnapshot {
    /// Reads `host`; `under_pressure` is the memory-pressure monitor's last verdict.
    pub(crate) fn read(host: &Host, under_pressure: bool) -> Self {
        let engine = host.inference();
        Self {
            ready: host.is_ready() && !host.is_paused() && !under_pressure,
            paused: host.is_paused(),
            in_flight: host.in_flight(),
            memory_used: engine.memory_used(),
            memory_idle: engine.memory_idle(),
            models: model_states(engine.as_ref()),
            apps: host.apps(),
            served: host.served(),
            loads: engine.loads(),
        }
    }

    /// What routers route by, for a node lending `share`.
    pub(crate) fn report(self, share: &ResourceShare) -> HostReport {
        HostReport {
            ready: self.ready,
            in_flight: self.in_flight,
            max_concurrency: share.max_concurrency,
            free_model_memory_bytes: share.model_memory_bytes.saturating_sub(self.memory_used),
            idle_model_memory_bytes: self.memory_idle,
            models: self.models,
            apps: self.apps,
            served: self.served,
            cold_loads: self.loads,
            engine: String::new(),
            cpu_class: String::new(),
        }
    }

    /// What the registry keeps, with the machine's `hardware` and `pressure`.
    pub(crate) fn heartbeat(self, hardware: Hardware, share: ResourceShare, pressure: MemoryPressure) -> Heartbeat {
        Heartbeat {
            hardware,
            share,
            models: self.models,
            in_flight: self.in_flight,
            ready: self.ready,
            pressure,
            version: env!("CARGO_PKG_VERSION").to_string(),
            deployments_revision: 0,
            paused: self.paused,
        }
    }
}

/// The models and adapters of `engine`, and where each stands.
pub(crate) fn model_states(engine: &dyn wasmesh_engine::InferenceEngine) -> Vec<CachedModel> {
    engine
        .catalog()
        .into_iter()
        .map(|entry| {
            let (state, fetched) = match entry.residency {
                Residency::Warm => (ModelState::Loaded, None),
                Residency::Loading => (ModelState::Loading, None),
                Residency::OnDisk => (ModelState::OnDisk, None),
                Residency::Fetching { done, total } => (ModelState::Fetching, Some((done, total))),
            };
            CachedModel { name: entry.name, state, fetched, pinned: entry.pinned }
        })
        .collect()
}
