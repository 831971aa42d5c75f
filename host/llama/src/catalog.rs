//! What the engine can serve and what it holds in memory: models and adapters added
//! while it runs, loads shared by every request waiting for them, and eviction of the
//! least recently used models that no request is using and nobody pinned.

use crate::worker::{AdapterFile, ModelWorker};
use crate::{LlamaConfig, LoraSpec};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmesh_engine::{CatalogEntry, EngineError, Residency};

pub(crate) const MIB: u64 = 1 << 20;

type Load = Shared<BoxFuture<'static, Result<Arc<ModelWorker>, EngineError>>>;

/// Where one model stands.
enum Slot {
    Cold,
    Loading(Load),
    Warm(Arc<ModelWorker>),
}

struct ModelEntry {
    path: PathBuf,
    /// Bytes it takes in memory: its file's size until it has loaded, then llama.cpp's count.
    bytes: u64,
    pinned: bool,
    /// [`Catalog::tick`] at its last use.
    last_used: u64,
    slot: Slot,
}

impl ModelEntry {
    /// Whether the catalog's handle is the only one: no request holds the worker.
    fn idle(&self) -> bool {
        matches!(&self.slot, Slot::Warm(w) if Arc::strong_count(w) == 1)
    }
}

#[derive(Default)]
struct Inner {
    models: BTreeMap<String, ModelEntry>,
    adapters: BTreeMap<String, LoraSpec>,
    tick: u64,
    /// Loads started.
    loads: u64,
}

/// The engine's catalog. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Catalog {
    inner: Arc<Mutex<Inner>>,
    /// Signalled when a request lets go of a model, so a load waiting for memory looks again.
    freed: Arc<tokio::sync::Notify>,
    /// Bytes loaded and loading models may take together (`LlamaConfig::memory_budget_bytes`
    /// at start; `set_budget` changes it).
    budget: Arc<std::sync::atomic::AtomicU64>,
}

/// A loaded model, held for one request. Its drop tells loads waiting for memory to
/// look again.
pub(crate) struct InUse {
    pub(crate) worker: Arc<ModelWorker>,
    freed: Arc<tokio::sync::Notify>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.freed.notify_waiters();
    }
}

/// What one look at the catalog decided.
enum Next {
    Ready(Arc<ModelWorker>),
    Await(Load),
    WaitForMemory,
}

impl Catalog {
    pub(crate) fn new(budget: u64) -> Self {
        Self {
            inner: Arc::default(),
            freed: Arc::new(tokio::sync::Notify::new()),
            budget: Arc::new(std::sync::atomic::AtomicU64::new(budget)),
        }
    }

    /// The memory budget now.
    pub(crate) fn budget(&self) -> u64 {
        self.budget.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the memory budget; evicts idle, unpinned models, least recently used first,
    /// until what is loaded fits (or no idle model is left). Returns those evicted.
    pub(crate) fn set_budget(&self, bytes: u64) -> Vec<String> {
        let mut inner = self.lock();
        self.budget.store(bytes, std::sync::atomic::Ordering::Relaxed);
        let before: Vec<String> = warm_names(&inner);
        shrink_to(&mut inner, bytes);
        let after = warm_names(&inner);
        tracing::info!(mib = bytes / MIB, "model memory budget changed");
        before.into_iter().filter(|n| !after.contains(n)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or re-points, when cold) model `name` at the GGUF `path`.
    pub(crate) fn add_model(&self, name: &str, path: PathBuf) -> Result<(), EngineError> {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| EngineError::Load {
            name: name.to_string(),
            reason: format!(
                "file {} cannot be read ({e}); run `bash deploy/setup.sh` for the test model, or fix the path",
                path.display()
            ),
        })?;
        let mut inner = self.lock();
        match inner.models.get_mut(name) {
            Some(entry) if entry.path == path => {}
            Some(entry) if matches!(entry.slot, Slot::Cold) => {
                entry.path = path;
                entry.bytes = bytes;
            }
            Some(_) => {
                return Err(EngineError::InvalidRequest(format!(
                    "model '{name}' is loaded from another file; it can be replaced once it is unloaded"
                )));
            }
            None => {
                inner.models.insert(
                    name.to_string(),
                    ModelEntry { path, bytes, pinned: false, last_used: 0, slot: Slot::Cold },
                );
            }
        }
        Ok(())
    }

    /// Adds adapter `name` of `base` at `path` (attached to the warm base on first use).
    pub(crate) fn add_adapter(&self, base: &str, name: &str, path: PathBuf) -> Result<(), EngineError> {
        if !path.is_file() {
            return Err(EngineError::Load {
                name: name.to_string(),
                reason: format!("LoRA file {} not found", path.display()),
            });
        }
        let mut inner = self.lock();
        if !inner.models.contains_key(base) {
            return Err(EngineError::Load {
                name: name.to_string(),
                reason: format!("LoRA '{name}' names base model '{base}', which this engine does not have"),
            });
        }
        inner.adapters.insert(name.to_string(), LoraSpec { base: base.to_string(), path });
        Ok(())
    }

    pub(crate) fn set_pinned(&self, model: &str, pinned: bool) {
        if let Some(entry) = self.lock().models.get_mut(model) {
            entry.pinned = pinned;
        }
    }

    pub(crate) fn models(&self) -> Vec<String> {
        self.lock().models.keys().cloned().collect()
    }

    pub(crate) fn loaded(&self) -> Vec<String> {
        self.lock().models.iter().filter(|(_, e)| matches!(e.slot, Slot::Warm(_))).map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn adapters(&self) -> Vec<String> {
        self.lock().adapters.iter().map(|(name, spec)| format!("{}:{name}", spec.base)).collect()
    }

    /// The adapter file a request for `model` with adapter `name` runs with.
    pub(crate) fn adapter_file(&self, model: &str, name: &str) -> Result<AdapterFile, EngineError> {
        let inner = self.lock();
        match inner.adapters.get(name) {
            Some(spec) if spec.base == model => Ok(AdapterFile { name: name.to_string(), path: spec.path.clone() }),
            Some(spec) => Err(EngineError::InvalidRequest(format!(
                "LoRA adapter '{name}' adapts model '{}', not '{model}'; ask for model '{}'",
                spec.base, spec.base
            ))),
            None => {
                let known: Vec<&str> =
                    inner.adapters.iter().filter(|(_, s)| s.base == model).map(|(n, _)| n.as_str()).collect();
                Err(EngineError::InvalidRequest(format!(
                    "LoRA adapter '{name}' is not known for model '{model}' (available: {}); push it with `wasmesh loras push`",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )))
            }
        }
    }

    /// Loads started.
    pub(crate) fn loads(&self) -> u64 {
        self.lock().loads
    }

    /// Bytes held by loaded and loading models.
    pub(crate) fn memory_used(&self) -> u64 {
        self.lock().models.values().filter(|e| !matches!(e.slot, Slot::Cold)).map(|e| e.bytes).sum()
    }

    /// Bytes held by loaded models that no request uses and nobody pinned.
    pub(crate) fn memory_idle(&self) -> u64 {
        self.lock().models.values().filter(|e| !e.pinned && e.idle()).map(|e| e.bytes).sum()
    }

    /// Every model and adapter, and where each stands.
    pub(crate) fn entries(&self) -> Vec<CatalogEntry> {
        let inner = self.lock();
        let mut out = Vec::with_capacity(inner.models.len() + inner.adapters.len());
        for (name, e) in &inner.models {
            let residency = match e.slot {
                Slot::Cold => Residency::OnDisk,
                Slot::Loading(_) => Residency::Loading,
                Slot::Warm(_) => Residency::Warm,
            };
            out.push(CatalogEntry { name: name.clone(), residency, pinned: e.pinned });
        }
        for (name, spec) in &inner.adapters {
            let residency = match inner.models.get(&spec.base).map(|e| &e.slot) {
                Some(Slot::Warm(w)) if w.stats.attached.lock().unwrap_or_else(|p| p.into_inner()).contains(name) => {
                    Residency::Warm
                }
                Some(Slot::Loading(_)) => Residency::Loading,
                _ => Residency::OnDisk,
            };
            out.push(CatalogEntry { name: format!("{}:{name}", spec.base), residency, pinned: false });
        }
        out
    }

    /// The worker of a loaded model, if loaded.
    pub(crate) fn warm(&self, name: &str) -> Option<Arc<ModelWorker>> {
        match &self.lock().models.get(name)?.slot {
            Slot::Warm(w) => Some(w.clone()),
            _ => None,
        }
    }

    /// Model `name`, loaded: at once when warm, after the load under way, or after a new
    /// load. A load that needs memory held by running requests waits up to `patience`
    /// for them to finish.
    pub(crate) async fn acquire(
        &self,
        name: &str,
        config: &Arc<LlamaConfig>,
        patience: Duration,
    ) -> Result<InUse, EngineError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.freed.notified();
            let next = self.next(name, config)?;
            let worker = match next {
                Next::Ready(worker) => worker,
                Next::Await(load) => load.await?,
                Next::WaitForMemory => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(EngineError::Unavailable(format!(
                            "model '{name}' needs memory that running requests (or pinned models) hold; retry shortly, \
                             or raise --model-memory-mb"
                        )));
                    }
                    // Woken when a request lets go of a model; the poll bounds a missed wake-up.
                    let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
                    continue;
                }
            };
            return Ok(InUse { worker, freed: self.freed.clone() });
        }
    }

    fn next(&self, name: &str, config: &Arc<LlamaConfig>) -> Result<Next, EngineError> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let budget = self.budget();
        let available = || inner_names(&inner);
        let Some(entry) = inner.models.get(name) else {
            return Err(EngineError::ModelNotFound { name: name.to_string(), available: available() });
        };
        let bytes = entry.bytes;
        match &entry.slot {
            Slot::Warm(w) => {
                let w = w.clone();
                inner.models.get_mut(name).expect("found").last_used = tick;
                return Ok(Next::Ready(w));
            }
            Slot::Loading(load) => return Ok(Next::Await(load.clone())),
            Slot::Cold => {}
        }
        if bytes > budget {
            return Err(EngineError::Load {
                name: name.to_string(),
                reason: format!(
                    "it needs {} MiB but the model memory budget is {} MiB; raise --model-memory-mb",
                    bytes / MIB,
                    budget / MIB
                ),
            });
        }
        if !make_room(&mut inner, bytes, budget) {
            return Ok(Next::WaitForMemory);
        }
        inner.loads += 1;
        let load = self.start_load(name.to_string(), inner.models[name].path.clone(), config.clone());
        let entry = inner.models.get_mut(name).expect("found");
        entry.last_used = tick;
        entry.slot = Slot::Loading(load.clone());
        Ok(Next::Await(load))
    }

    /// Starts loading `name` on its own thread; the load finishes (and lands in the
    /// catalog) even when every request waiting for it goes away.
    fn start_load(&self, name: String, path: PathBuf, config: Arc<LlamaConfig>) -> Load {
        let catalog = self.clone();
        let load = async move {
            let result = ModelWorker::spawn(name.clone(), path, &config).await.map(Arc::new);
            let mut inner = catalog.lock();
            if let Some(entry) = inner.models.get_mut(&name) {
                match &result {
                    Ok(worker) => {
                        entry.bytes = worker.bytes.max(1);
                        entry.slot = Slot::Warm(worker.clone());
                    }
                    Err(_) => entry.slot = Slot::Cold,
                }
            }
            result
        }
        .boxed()
        .shared();
        tokio::spawn(load.clone());
        load
    }
}

/// The models loaded or loading.
fn warm_names(inner: &Inner) -> Vec<String> {
    inner.models.iter().filter(|(_, e)| !matches!(e.slot, Slot::Cold)).map(|(n, _)| n.clone()).collect()
}

/// Evicts idle, unpinned models, least recently used first, until what is loaded fits
/// in `budget` or no idle model is left.
fn shrink_to(inner: &mut Inner, budget: u64) {
    let mut used: u64 = inner.models.values().filter(|e| !matches!(e.slot, Slot::Cold)).map(|e| e.bytes).sum();
    let idle = idle_by_age(inner);
    for (_, victim, victim_bytes) in idle {
        if used <= budget {
            break;
        }
        inner.models.get_mut(&victim).expect("listed").slot = Slot::Cold; // the worker's thread ends with its last handle
        used -= victim_bytes;
        tracing::info!(model = %victim, mib = victim_bytes / MIB, "model evicted from memory (the budget shrank)");
    }
}

/// Idle, unpinned models as (last use, name, bytes), least recently used first: what
/// may be evicted.
fn idle_by_age(inner: &Inner) -> Vec<(u64, String, u64)> {
    let mut idle: Vec<(u64, String, u64)> = inner
        .models
        .iter()
        .filter(|(_, e)| !e.pinned && e.idle())
        .map(|(n, e)| (e.last_used, n.clone(), e.bytes))
        .collect();
    idle.sort();
    idle
}

fn inner_names(inner: &Inner) -> Vec<String> {
    inner.models.keys().cloned().collect()
}

/// Evicts idle, unpinned models, least recently used first, until `bytes` more fit in
/// `budget`. Returns whether they fit (when not, nothing was evicted).
fn make_room(inner: &mut Inner, bytes: u64, budget: u64) -> bool {
    let used: u64 = inner.models.values().filter(|e| !matches!(e.slot, Slot::Cold)).map(|e| e.bytes).sum();
    if used + bytes <= budget {
        return true;
    }
    let idle = idle_by_age(inner);
    let freeable: u64 = idle.iter().map(|(_, _, b)| b).sum();
    if used - freeable + bytes > budget {
        return false;
    }
    let mut used = used;
    for (_, victim, victim_bytes) in idle {
        if used + bytes <= budget {
            break;
        }
        let entry = inner.models.get_mut(&victim).expect("listed");
        entry.slot = Slot::Cold; // the worker's thread ends with its last handle
        used -= victim_bytes;
        tracing::info!(model = %victim, mib = victim_bytes / MIB, "model evicted from memory (least recently used, idle)");
    }
    true
}
