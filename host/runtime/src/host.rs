//! The HTTP side of the host: the [`Host`] itself, with its host-wide settings
//! ([`HostConfig`]), its Wasmtime engines (instance pool, epoch ticker) and the
//! counters a node reports. Its other parts live in their own modules: the route
//! table in `routes`, serving in `serve`, calling components in `invoke`.

use crate::engines::Engines;
use crate::routes::RouteEntry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wasmesh_engine::InferenceEngine;
use wasmtime::PoolingAllocationConfig;

/// Host-wide settings. Per-component limits come from each app's manifest.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Instances that may exist at once (the pooling allocator's size). A request
    /// beyond it gets 503. Default 256.
    pub max_instances: u32,
    /// How often the epoch ticker advances; deadlines are checked at this
    /// granularity and long-running guests yield to other tasks this often.
    /// Default 10 ms.
    pub epoch_tick: Duration,
    /// Largest linear memory any component may be granted, in bytes (each pooled
    /// slot reserves this much address space). Default 4 GiB.
    pub max_memory_bytes: u64,
    /// Metrics served at `GET /metrics` (other parts of the node, such as its
    /// weights fetcher, register theirs here).
    pub metrics: prometheus::Registry,
    /// The most any manifest may ask for (the node owner's `--cap-*`); memory is also
    /// bounded by `max_memory_bytes`.
    pub caps: wasmesh_api::LimitCaps,
    /// What all instances together may hold, bytes: their linear memories and the
    /// `wasi:nn` tensors they copy into the host. Growth past it fails the growing
    /// request with 503 and `Retry-After`; no other request is touched. Default 8 GiB
    /// (`wasmesh host` defaults to half the machine's memory).
    pub instance_memory_bytes: u64,
    /// What one app's instances together may hold of `instance_memory_bytes`, so that
    /// one tenant's memory bombs leave room for the others. Default 2 GiB (`wasmesh
    /// host` defaults to a quarter of the budget).
    pub app_memory_bytes: u64,
    /// Cores one app's guests may use together (see `cpu.rs`); a guest past its app's
    /// share sleeps until the share refills. Default: all cores but one, at least one.
    pub app_cpu_cores: f64,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            epoch_tick: Duration::from_millis(10),
            max_memory_bytes: 4 << 30,
            metrics: prometheus::Registry::new(),
            caps: wasmesh_api::LimitCaps::default(),
            instance_memory_bytes: 8 << 30,
            app_memory_bytes: 2 << 30,
            app_cpu_cores: crate::cpu::default_app_cores(),
        }
    }
}

/// A worker node's runtime: see the crate docs.
pub struct Host {
    pub(crate) engines: Arc<Engines>,
    pub(crate) inference: Arc<dyn InferenceEngine>,
    pub(crate) routes: RwLock<Arc<Vec<RouteEntry>>>,
    pub(crate) ready: AtomicBool,
    /// Paused by its provider: new requests are refused (retryable), running ones finish.
    pub(crate) paused: AtomicBool,
    pub(crate) in_flight: std::sync::atomic::AtomicU32,
    pub(crate) served: std::sync::atomic::AtomicU64,
    stop_ticker: Arc<AtomicBool>,
    pub(crate) metrics: prometheus::Registry,
    /// The host's own metrics in it.
    pub(crate) host_metrics: crate::metrics::HostMetrics,
    pub(crate) caps: wasmesh_api::LimitCaps,
    /// Requests in flight per app (capped at `caps.instances_per_app`).
    pub(crate) app_in_flight: std::sync::Mutex<std::collections::HashMap<Arc<str>, u32>>,
    /// The guest memory budget every store charges.
    pub(crate) budget: Arc<wasmesh_world::budget::MemoryBudget>,
    /// Each app's share of it and of the cores, made on the app's first request.
    app_shares: std::sync::Mutex<std::collections::HashMap<Arc<str>, AppShare>>,
    app_memory_bytes: usize,
    app_cpu_cores: f64,
    pub(crate) epoch_tick: Duration,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Host {
    /// Creates the Wasmtime engines (pooling allocator, epoch interruption; see
    /// [`Engines`]), links WASI, `wasi:http` and `wasi:nn`, and starts the epoch
    /// ticker thread.
    pub fn new(config: HostConfig, inference: Arc<dyn InferenceEngine>) -> wasmtime::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n * 4)
            .total_memories(n * 2)
            .total_tables(n * 4)
            // A WASIp3 guest may need a second fiber while its task waits on the host.
            .total_stacks(n * 2)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
            // Reset the first pages of a freed slot with memset instead of returning
            // them to the kernel: the next instance skips the page faults.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            // Where the kernel has PAGEMAP_SCAN (6.7+), reset only the pages an
            // instance touched, without madvise.
            .pagemap_scan(wasmtime::Enabled::Auto)
            // Return freed slots' memory to the kernel in batches, not one madvise
            // per instance.
            .decommit_batch_size(16);
        let engines = Arc::new(Engines::new(Some(pool))?);

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engines = engines.clone();
            let stop = stop_ticker.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("wasmesh-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engines.increment_epoch();
                    }
                })
                .map_err(|e| wasmtime::format_err!("cannot start the epoch thread: {e}"))?;
        }
        let host_metrics = crate::metrics::HostMetrics::new(&config.metrics)
            .map_err(|e| wasmtime::format_err!("cannot register the host's metrics: {e}"))?;
        Ok(Arc::new(Self {
            host_metrics,
            engines,
            inference,
            routes: RwLock::new(Arc::new(Vec::new())),
            ready: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            in_flight: Default::default(),
            app_in_flight: Default::default(),
            budget: wasmesh_world::budget::MemoryBudget::new(
                usize::try_from(config.instance_memory_bytes).unwrap_or(usize::MAX),
            ),
            app_shares: Default::default(),
            app_memory_bytes: usize::try_from(config.app_memory_bytes).unwrap_or(usize::MAX),
            app_cpu_cores: config.app_cpu_cores,
            epoch_tick: config.epoch_tick,
            served: Default::default(),
            stop_ticker,
            metrics: config.metrics,
            caps: wasmesh_api::LimitCaps {
                memory_mb: config.caps.memory_mb.min(config.max_memory_bytes >> 20),
                ..config.caps
            },
        }))
    }

    /// The inference engine components reach through `wasi:nn`.
    pub fn inference(&self) -> &Arc<dyn InferenceEngine> {
        &self.inference
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The registry `GET /metrics` serves: other parts of the node register theirs here.
    pub fn metrics_registry(&self) -> &prometheus::Registry {
        &self.metrics
    }

    /// Requests served since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the host is marked ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the host ready (`GET /health` answers 200 from then on).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether its provider paused it.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pauses (new requests get 503 with `x-wasmesh-paused`, which routers retry on
    /// another node; requests running finish) or resumes the host. Returns whether it
    /// was paused before.
    pub fn set_paused(&self, paused: bool) -> bool {
        self.paused.swap(paused, Ordering::AcqRel)
    }
}

/// One app's share of the node: of its guest memory budget and of its cores.
#[derive(Clone)]
struct AppShare {
    memory: Arc<wasmesh_world::budget::MemoryBudget>,
    cpu: Arc<crate::cpu::AppCpu>,
}

impl Host {
    /// `app`'s share of the node: a new charge against its share of the instance memory
    /// and the node's budget, for one store's linear memories or tensors, and its
    /// account of guest time (see `cpu.rs`).
    pub(crate) fn app_share(&self, app: &Arc<str>) -> (wasmesh_world::budget::Charge, Arc<crate::cpu::AppCpu>) {
        let share = {
            let mut shares = self.app_shares.lock().expect("app shares");
            shares
                .entry(app.clone())
                .or_insert_with(|| AppShare {
                    memory: wasmesh_world::budget::MemoryBudget::new(self.app_memory_bytes),
                    cpu: Arc::new(crate::cpu::AppCpu::new(self.app_cpu_cores)),
                })
                .clone()
        };
        (wasmesh_world::budget::Charge::new(self.budget.clone(), share.memory), share.cpu)
    }
}
