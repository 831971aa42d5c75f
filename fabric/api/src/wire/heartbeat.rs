//! Heartbeats: what a node reports about itself every interval (hardware, the
//! provider's share, cached models, memory pressure, readiness).

use serde::{Deserialize, Serialize};

/// A node's hardware.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores.
    pub cpu_cores: u32,
    /// Physical memory.
    pub memory_bytes: u64,
    /// GPUs found (nvidia-smi, rocm-smi, system_profiler).
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
}

/// One GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// `nvidia`, `amd` or `apple`.
    pub vendor: String,
    /// Its marketing name.
    pub name: String,
    /// Its memory (0 when unknown, e.g. unified memory).
    pub memory_bytes: u64,
}

/// What the provider lets the fabric use on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceShare {
    /// Memory for loaded models.
    pub model_memory_bytes: u64,
    /// Requests served at once.
    pub max_concurrency: u32,
}

/// Where a model stands on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Loaded in memory: requests run at once.
    Loaded,
    /// On local disk: a load away.
    OnDisk,
    /// Being downloaded.
    Fetching,
    /// Being loaded into memory (an adapter: its base is).
    Loading,
}

/// A model (or LoRA, named `MODEL:ADAPTER`) a node holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedModel {
    /// The model's name, or `MODEL:ADAPTER` for an adapter.
    pub name: String,
    /// Where it stands.
    pub state: ModelState,
    /// While [`ModelState::Fetching`]: bytes fetched so far and in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<(u64, u64)>,
    /// Pinned in memory on this node (never evicted while pinned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
}

/// Memory pressure over the last heartbeat interval, from the kernel's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPressure {
    /// Pages swapped in and out per second.
    pub swap_pages_per_s: f64,
    /// Major page faults per second.
    pub major_faults_per_s: f64,
    /// Whether either rate is above the node's threshold (the node is then not ready).
    pub under_pressure: bool,
}

/// A node's heartbeat (`POST /v1/nodes/{id}/heartbeat`, signed by the node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The hardware.
    pub hardware: Hardware,
    /// The provider's share.
    pub share: ResourceShare,
    /// Models and LoRAs in its caches.
    #[serde(default)]
    pub models: Vec<CachedModel>,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Memory pressure.
    pub pressure: MemoryPressure,
    /// Whether the node takes requests (false under memory pressure or while starting).
    pub ready: bool,
    /// The host's version.
    pub version: String,
    /// The deployments revision the node serves.
    #[serde(default)]
    pub deployments_revision: u64,
    /// Paused by its provider (`wasmesh host pause`): it takes no new requests but
    /// keeps its registration and caches.
    #[serde(default)]
    pub paused: bool,
}
