//! Serverless weights: an [`InferenceEngine`] that fetches the models and LoRA adapters
//! it lacks from the fabric when a request (or a pre-load hint) first names them, then
//! hands them to the engine it wraps.
//!
//! * One fetch per name, shared by every request waiting for it; the fetch finishes
//!   (and lands in the engine) even when those requests go away.
//! * A request waits at most [`OnDemand::new`]'s `wait` for the fetch; past it the
//!   engine answers [`EngineError::Unavailable`], which the guest turns into 503 with
//!   `Retry-After`, while the fetch goes on for the next request.
//! * Fetching shows in [`InferenceEngine::catalog`] as [`Residency::Fetching`] with
//!   its progress, so routers and the registry see it.

use crate::models::Fetcher;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmesh_client::{ClientError, Progress};
use wasmesh_engine::{CatalogEntry, EngineError, GenerateRequest, Generation, InferenceEngine, Residency};
use wasmesh_weights::{FetchError, Lease};

type Fetch = Shared<BoxFuture<'static, Result<(), EngineError>>>;

/// Bytes of one fetch so far.
#[derive(Default)]
struct Counter {
    total: AtomicU64,
    done: AtomicU64,
}

impl Progress for Counter {
    fn start(&self, _phase: &str, total: u64, done: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn finish(&self) {}
}

struct Job {
    fetch: Fetch,
    progress: Arc<Counter>,
}

struct State {
    /// The host's main runtime, where fetches run whichever thread asks (a lane's
    /// one-thread runtime cannot run librqbit, which blocks in place).
    runtime: tokio::runtime::Handle,
    engine: Arc<dyn InferenceEngine>,
    fetcher: Fetcher,
    /// Fetches under way, by model name or `MODEL:ADAPTER`.
    jobs: Mutex<HashMap<String, Job>>,
    /// Keeps what was fetched in the disk cache while the host runs.
    leases: Mutex<Vec<Lease>>,
    /// Models pinned before they arrived.
    pinned: Mutex<BTreeSet<String>>,
}

/// An engine that fetches what it lacks. See the module docs.
pub struct OnDemand {
    state: Arc<State>,
    wait: Duration,
}

impl OnDemand {
    /// Wraps `engine`; weights come through `fetcher`; a request waits up to `wait`.
    /// Call it on the host's main (multi-thread) runtime: fetches run there.
    pub fn new(engine: Arc<dyn InferenceEngine>, fetcher: Fetcher, wait: Duration) -> Self {
        let state = State {
            runtime: tokio::runtime::Handle::current(),
            engine,
            fetcher,
            jobs: Mutex::default(),
            leases: Mutex::default(),
            pinned: Mutex::default(),
        };
        Self { state: Arc::new(state), wait }
    }

    /// Makes model `name` (and adapter `lora` of it) known to the engine, fetching what
    /// is missing; waits at most the configured bound.
    async fn ensure(&self, name: &str, lora: Option<&str>) -> Result<(), EngineError> {
        let work = async {
            self.state.clone().model(name).await?;
            if let Some(lora) = lora {
                self.state.clone().adapter(name, lora).await?;
            }
            Ok(())
        };
        match tokio::time::timeout(self.wait, work).await {
            Ok(result) => result,
            Err(_) => {
                let what = lora.map(|l| format!("{name}:{l}")).unwrap_or_else(|| name.to_string());
                let progress = self.state.progress_of(&what).or_else(|| self.state.progress_of(name));
                Err(EngineError::Unavailable(format!(
                    "'{what}' is still being fetched to this node{}; retry in a few seconds",
                    progress
                        .map(|(done, total)| format!(" ({} of {} MiB)", done >> 20, total >> 20))
                        .unwrap_or_default()
                )))
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn progress_of(&self, key: &str) -> Option<(u64, u64)> {
        lock(&self.jobs)
            .get(key)
            .map(|j| (j.progress.done.load(Ordering::Relaxed), j.progress.total.load(Ordering::Relaxed)))
    }

    /// Runs `work` once for `key` (joining the run under way) unless `present` says the
    /// engine already has it.
    async fn once(
        self: Arc<Self>,
        key: String,
        present: impl Fn(&dyn InferenceEngine) -> bool,
        work: impl FnOnce(Arc<Self>, Arc<Counter>) -> BoxFuture<'static, Result<(), EngineError>>,
    ) -> Result<(), EngineError> {
        let fetch = {
            let mut jobs = lock(&self.jobs);
            if present(self.engine.as_ref()) {
                return Ok(());
            }
            match jobs.get(&key) {
                Some(job) => job.fetch.clone(),
                None => {
                    let progress = Arc::new(Counter::default());
                    let state = self.clone();
                    let done_key = key.clone();
                    // On the main runtime: awaiting the shared future from a lane only
                    // waits for this task.
                    let run = self.runtime.spawn(work(self.clone(), progress.clone()));
                    let fetch = async move {
                        let result = run.await.unwrap_or_else(|e| {
                            Err(EngineError::Unavailable(format!("the fetch stopped: {e}; retry the request")))
                        });
                        lock(&state.jobs).remove(&done_key);
                        if let Err(e) = &result {
                            tracing::warn!(what = %done_key, "on-demand fetch failed: {e}");
                        }
                        result
                    }
                    .boxed()
                    .shared();
                    jobs.insert(key, Job { fetch: fetch.clone(), progress });
                    self.runtime.spawn(fetch.clone());
                    fetch
                }
            }
        };
        fetch.await
    }

    async fn model(self: Arc<Self>, name: &str) -> Result<(), EngineError> {
        let wanted = name.to_string();
        self.once(
            name.to_string(),
            move |engine| engine.has_model(&wanted),
            |state, progress| {
                let name = name.to_string();
                async move {
                    tracing::info!(model = %name, "fetching a model on demand");
                    let started = std::time::Instant::now();
                    let (path, lease) =
                        state.fetcher.model(&name, progress).await.map_err(|e| fetch_error(&name, e))?;
                    lock(&state.leases).push(lease);
                    state.engine.add_model(&name, path)?;
                    if lock(&state.pinned).contains(&name) {
                        state.engine.set_pinned(&name, true);
                    }
                    tracing::info!(model = %name, ms = started.elapsed().as_millis() as u64, "model fetched on demand");
                    Ok(())
                }
                .boxed()
            },
        )
        .await
    }

    async fn adapter(self: Arc<Self>, base: &str, name: &str) -> Result<(), EngineError> {
        let key = format!("{base}:{name}");
        let wanted = key.clone();
        self.once(
            key,
            move |engine| engine.adapters().contains(&wanted),
            |state, progress| {
                let (base, name) = (base.to_string(), name.to_string());
                async move {
                    let (info, path, lease) =
                        state.fetcher.lora(&name, progress).await.map_err(|e| fetch_error(&name, e))?;
                    lock(&state.leases).push(lease);
                    if info.base != base {
                        return Err(EngineError::InvalidRequest(format!(
                            "LoRA adapter '{name}' adapts model '{}', not '{base}'; ask for model '{}'",
                            info.base, info.base
                        )));
                    }
                    state.engine.add_adapter(&base, &name, path)?;
                    tracing::info!(model = %base, lora = %name, "adapter fetched on demand");
                    Ok(())
                }
                .boxed()
            },
        )
        .await
    }
}

/// A failed fetch, as the engine's error: a name the registry does not have is
/// [`EngineError::ModelNotFound`]; the rest may pass, so retrying is worth it.
fn fetch_error(name: &str, e: FetchError) -> EngineError {
    match e {
        FetchError::Registry(ClientError::Api { status: 404, .. }) => {
            EngineError::ModelNotFound { name: name.to_string(), available: Vec::new() }
        }
        e @ FetchError::UnknownAdapter(_) => EngineError::InvalidRequest(e.to_string()),
        other => EngineError::Unavailable(format!("fetching '{name}' to this node failed: {other}; retry")),
    }
}

impl InferenceEngine for OnDemand {
    fn models(&self) -> Vec<String> {
        self.state.engine.models()
    }

    /// Every name may be fetched: whether the registry has it is known when it is asked for.
    fn has_model(&self, _model: &str) -> bool {
        true
    }

    fn generate(&self, request: GenerateRequest) -> wasmesh_engine::BoxFuture<'_, Result<Generation, EngineError>> {
        Box::pin(async move {
            request.params.validate()?;
            let lora = request.params.lora.as_deref().filter(|_| request.params.lora_scale != 0.0);
            self.ensure(&request.model, lora).await?;
            self.state.engine.generate(request).await
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        input: &'a str,
    ) -> wasmesh_engine::BoxFuture<'a, Result<wasmesh_engine::Embedding, EngineError>> {
        Box::pin(async move {
            self.ensure(model, None).await?;
            self.state.engine.embed(model, input).await
        })
    }

    fn loaded_models(&self) -> Vec<String> {
        self.state.engine.loaded_models()
    }

    fn memory_used(&self) -> u64 {
        self.state.engine.memory_used()
    }

    fn memory_idle(&self) -> u64 {
        self.state.engine.memory_idle()
    }

    fn memory_budget(&self) -> Option<u64> {
        self.state.engine.memory_budget()
    }

    fn build_id(&self) -> String {
        self.state.engine.build_id()
    }

    fn counters(&self) -> Vec<wasmesh_engine::ModelCounters> {
        self.state.engine.counters()
    }

    fn set_memory_budget(&self, bytes: u64) -> Result<Vec<String>, EngineError> {
        self.state.engine.set_memory_budget(bytes)
    }

    fn loads(&self) -> u64 {
        self.state.engine.loads()
    }

    fn adapters(&self) -> Vec<String> {
        self.state.engine.adapters()
    }

    fn preload<'a>(&'a self, model: &'a str) -> wasmesh_engine::BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            // A hint is not a request: no bound, it runs until the model is warm.
            self.state.clone().model(model).await?;
            self.state.engine.preload(model).await
        })
    }

    fn preload_adapter<'a>(
        &'a self,
        model: &'a str,
        adapter: &'a str,
    ) -> wasmesh_engine::BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            self.state.clone().model(model).await?;
            self.state.clone().adapter(model, adapter).await?;
            self.state.engine.preload_adapter(model, adapter).await
        })
    }

    fn add_model(&self, name: &str, path: std::path::PathBuf) -> Result<(), EngineError> {
        self.state.engine.add_model(name, path)
    }

    fn add_adapter(&self, base: &str, name: &str, path: std::path::PathBuf) -> Result<(), EngineError> {
        self.state.engine.add_adapter(base, name, path)
    }

    fn set_pinned(&self, model: &str, pinned: bool) {
        let mut pins = lock(&self.state.pinned);
        if pinned {
            pins.insert(model.to_string());
        } else {
            pins.remove(model);
        }
        self.state.engine.set_pinned(model, pinned);
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        let mut entries = self.state.engine.catalog();
        let known: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
        let pins = lock(&self.state.pinned).clone();
        for (name, job) in lock(&self.state.jobs).iter() {
            if !known.contains(name) {
                entries.push(CatalogEntry {
                    name: name.clone(),
                    residency: Residency::Fetching {
                        done: job.progress.done.load(Ordering::Relaxed),
                        total: job.progress.total.load(Ordering::Relaxed),
                    },
                    pinned: pins.contains(name),
                });
            }
        }
        entries
    }

    fn summary(&self) -> String {
        format!("{} (fetching models and adapters on demand)", self.state.engine.summary())
    }
}
