//! One loaded model: a thread that owns the llama.cpp model and a reusable context,
//! serving generation jobs from a queue.
//!
//! * [`load`]: the worker thread's start: the model, its adapters, the context.
//! * [`scheduler`]: the queue and admission into slots (continuous batching).
//! * [`step`]: one decode step over the active slots, and answering requests.
//! * [`slot`]: a request in flight and its streaming.
//! * [`compaction`]: keeping busy slots consecutive.
//! * [`lora`]: the adapter cache (attached on demand, least recently used freed),
//!   adapter groups and switching between them.
//! * [`sampling`], [`stop`]: picking tokens, finding stop strings.
//! * [`embed`]: embeddings on their own context.
//! * [`stats`]: the worker's live counters.

mod compaction;
mod embed;
mod load;
mod lora;
mod sampling;
mod scheduler;
mod score;
mod slot;
mod stats;
mod step;
mod stop;

use crate::LlamaConfig;
use load::run_worker;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;
use wasmesh_engine::{Embedding, EngineError, GenerateRequest, Generation};

pub use stats::WorkerStats;

/// A LoRA adapter a request runs with, and where its file is (attached on first use).
#[derive(Debug, Clone)]
pub(crate) struct AdapterFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
}

enum Job {
    Generate {
        request: GenerateRequest,
        lora: Option<AdapterFile>,
        reply: oneshot::Sender<Result<Generation, EngineError>>,
    },
    Embed {
        input: String,
        reply: oneshot::Sender<Result<Embedding, EngineError>>,
    },
    /// Attach an adapter now, between steps (a pre-load).
    Attach {
        model: String,
        lora: AdapterFile,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
}

/// Handle to a model's worker thread. Dropping the last handle ends the thread
/// once its queue drains, which frees the context and then the model.
pub(crate) struct ModelWorker {
    name: String,
    jobs: mpsc::Sender<Job>,
    pub(crate) stats: Arc<WorkerStats>,
    /// Size of the model in memory, for the cache's weigher.
    pub(crate) bytes: u64,
}

impl ModelWorker {
    /// Loads the model and creates its context on a new thread; resolves when the
    /// worker is ready to serve (or failed to load).
    pub(crate) async fn spawn(name: String, path: PathBuf, config: &LlamaConfig) -> Result<Self, EngineError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, queue) = mpsc::channel::<Job>();
        let config = config.clone();
        let stats = Arc::new(WorkerStats::default());
        let worker_stats = stats.clone();
        let thread_name = format!("llama-{name}");
        let model_name = name.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run_worker(model_name, path, config, ready_tx, queue, worker_stats))
            .map_err(|e| EngineError::Internal(format!("cannot start a model thread: {e}")))?;
        let bytes = ready_rx.await.map_err(|_| EngineError::Load {
            name: name.clone(),
            reason: "the model thread died while loading".into(),
        })??;
        Ok(Self { name, jobs, stats, bytes })
    }

    /// Queues a generation and waits for it. Dropping the future cancels it.
    pub(crate) async fn generate(
        &self,
        request: GenerateRequest,
        lora: Option<AdapterFile>,
    ) -> Result<Generation, EngineError> {
        self.ask(|reply| Job::Generate { request, lora, reply }).await
    }

    /// Attaches `lora` to the model between decode steps.
    pub(crate) async fn attach(&self, lora: AdapterFile) -> Result<(), EngineError> {
        let model = self.name.clone();
        self.ask(|reply| Job::Attach { model, lora, reply }).await
    }

    /// Queues an embedding and waits for it.
    pub(crate) async fn embed(&self, input: String) -> Result<Embedding, EngineError> {
        self.ask(|reply| Job::Embed { input, reply }).await
    }

    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<Result<T, EngineError>>) -> Job) -> Result<T, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(job(reply))?;
        answer.await.map_err(|_| EngineError::Internal(format!("model '{}' worker stopped mid-request", self.name)))?
    }

    fn send(&self, job: Job) -> Result<(), EngineError> {
        self.jobs.send(job).map_err(|_| EngineError::Unavailable(format!("model '{}' is unloading; retry", self.name)))
    }
}
