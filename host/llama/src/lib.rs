//! llama.cpp behind wasmesh's [`InferenceEngine`] trait.
//!
//! * **One load per model per node.** Loaded models live in a moka cache weighted by
//!   their size in bytes, under a memory budget; concurrent first requests for one
//!   model share one load.
//! * **No context per request.** Each loaded model has a worker thread that owns the
//!   model and one llama.cpp context, created once (creating a context costs about
//!   33 ms on SmolLM2-135M, more than 60 generated tokens).
//! * **Continuous batching.** The context has `slots` sequences, each with its own
//!   KV stream; concurrent requests share each decode step, join when a slot is
//!   free, and leave as soon as they finish, each with its own sampler. A request
//!   gets exactly the tokens it gets alone (greedy decoding is batch-invariant).
//! * **Off the async runtime.** Loads and decode loops run on the worker's own
//!   thread; callers await a oneshot. Dropping the future cancels the request: the
//!   worker checks between tokens and skips requests cancelled while queued.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
//! use wasmesh_llama::{LlamaConfig, LlamaEngine};
//! let mut config = LlamaConfig::default();
//! config.models.insert("smollm2".into(), "SmolLM2-135M-Instruct.Q4_1.gguf".into());
//! let engine = LlamaEngine::new(config)?;
//! let out = engine
//!     .generate(GenerateRequest::new("smollm2", "Hello", GenerateParams::default()))
//!     .await?;
//! println!("{}", out.text);
//! # Ok(()) }
//! ```

mod backend;
pub mod native;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmesh_engine::{BoxFuture, EngineError, GenerateRequest, Generation, InferenceEngine};

pub use backend::{gpu_offload_supported, init_backend};
use worker::ModelWorker;
pub use worker::WorkerStats;

/// A LoRA adapter GGUF for one of the engine's models.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The model it adapts (a key of [`LlamaConfig::models`]).
    pub base: String,
    /// The adapter GGUF.
    pub path: PathBuf,
}

/// Settings of a [`LlamaEngine`]. Defaults suit a small CPU node.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Model name → GGUF file.
    pub models: BTreeMap<String, PathBuf>,
    /// Adapter name → adapter. Loaded with their base model, kept in RAM with it,
    /// applied per request (`"lora": NAME` in the options) without reloading it.
    pub loras: BTreeMap<String, LoraSpec>,
    /// RAM (or VRAM) the engine may fill with loaded models, in bytes. Default 4 GiB.
    /// A model larger than the whole budget is refused with a message saying so.
    pub memory_budget_bytes: u64,
    /// Layers to offload to a GPU. `None`: all of them when a GPU backend is compiled
    /// in and finds a device, none otherwise.
    pub n_gpu_layers: Option<u32>,
    /// Threads for prompt processing and generation. `None`: the cores available.
    pub threads: Option<u32>,
    /// Context size of one request in tokens (prompt + generation), capped at the
    /// model's training context. Each slot has its own, so the KV cache holds
    /// `n_ctx * slots` tokens. Default 4096.
    pub n_ctx: u32,
    /// Largest number of tokens decoded in one step (prompt chunks and one token
    /// per generating request). Default 512.
    pub n_batch: u32,
    /// Requests one model serves at once, sharing decode batches (continuous
    /// batching); more wait in arrival order. Default 4.
    pub slots: u32,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            models: BTreeMap::new(),
            loras: BTreeMap::new(),
            memory_budget_bytes: 4 << 30,
            n_gpu_layers: None,
            threads: None,
            n_ctx: 4096,
            n_batch: 512,
            slots: 4,
        }
    }
}

impl LlamaConfig {
    /// The thread count, with the default applied.
    pub fn threads(&self) -> u32 {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
    }

    /// The GPU layer count, with the default applied.
    pub fn n_gpu_layers(&self) -> u32 {
        self.n_gpu_layers.unwrap_or(if gpu_offload_supported() { u32::MAX } else { 0 })
    }
}

/// The llama.cpp engine. Cheap to share (`Arc` it); see the crate docs.
pub struct LlamaEngine {
    config: Arc<LlamaConfig>,
    /// Loaded models by name, weighted in MiB (moka weights are `u32`).
    loaded: moka::future::Cache<String, Arc<ModelWorker>>,
}

const MIB: u64 = 1 << 20;

impl LlamaEngine {
    /// Creates the engine. Models load on first use (or [`InferenceEngine::preload`]).
    ///
    /// Fails when a model file is missing, so a typo is caught at start-up.
    pub fn new(config: LlamaConfig) -> Result<Self, EngineError> {
        init_backend()?;
        for (name, path) in &config.models {
            if !path.is_file() {
                return Err(EngineError::Load {
                    name: name.clone(),
                    reason: format!(
                        "file {} not found; run `bash deploy/setup.sh` for the test model, or fix the path",
                        path.display()
                    ),
                });
            }
        }
        for (name, lora) in &config.loras {
            if !config.models.contains_key(&lora.base) {
                return Err(EngineError::Load {
                    name: name.clone(),
                    reason: format!("LoRA '{name}' names base model '{}', which is not configured", lora.base),
                });
            }
            if !lora.path.is_file() {
                return Err(EngineError::Load {
                    name: name.clone(),
                    reason: format!("LoRA file {} not found", lora.path.display()),
                });
            }
        }
        let loaded = moka::future::Cache::builder()
            .max_capacity((config.memory_budget_bytes / MIB).max(1))
            .weigher(|_name: &String, worker: &Arc<ModelWorker>| {
                u32::try_from(worker.bytes.div_ceil(MIB)).unwrap_or(u32::MAX)
            })
            .eviction_listener(|name, _worker, cause| {
                tracing::info!(model = %name, ?cause, "model unloaded from the RAM cache");
            })
            .build();
        Ok(Self { config: Arc::new(config), loaded })
    }

    /// The engine's settings.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Live counters of a loaded model's worker (`None` when it is not loaded).
    pub async fn stats(&self, model: &str) -> Option<Arc<WorkerStats>> {
        self.loaded.get(model).await.map(|w| w.stats.clone())
    }

    async fn worker(&self, name: &str) -> Result<Arc<ModelWorker>, EngineError> {
        let Some(path) = self.config.models.get(name).cloned() else {
            return Err(EngineError::ModelNotFound { name: name.to_string(), available: self.models() });
        };
        let config = self.config.clone();
        let model = name.to_string();
        self.loaded
            .try_get_with(name.to_string(), async move {
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size > config.memory_budget_bytes {
                    return Err(EngineError::Load {
                        name: model,
                        reason: format!(
                            "it needs {} MiB but the model memory budget is {} MiB; raise --model-memory-mb",
                            size / MIB,
                            config.memory_budget_bytes / MIB
                        ),
                    });
                }
                ModelWorker::spawn(model, path, &config).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<EngineError>| (*e).clone())
    }
}

impl InferenceEngine for LlamaEngine {
    fn models(&self) -> Vec<String> {
        self.config.models.keys().cloned().collect()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.loaded.iter().map(|(name, _)| (*name).clone()).collect()
    }

    fn memory_used(&self) -> u64 {
        self.loaded.weighted_size() * MIB
    }

    fn adapters(&self) -> Vec<String> {
        self.config.loras.iter().map(|(name, lora)| format!("{}:{name}", lora.base)).collect()
    }

    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, EngineError>> {
        Box::pin(async move {
            request.params.validate()?;
            let worker = self.worker(&request.model).await?;
            worker.generate(request).await
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<wasmesh_engine::Embedding, EngineError>> {
        Box::pin(async move {
            let worker = self.worker(model).await?;
            worker.embed(input.to_string()).await
        })
    }

    fn preload<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.worker(model).await.map(|_| ()) })
    }

    fn summary(&self) -> String {
        format!(
            "llama.cpp ({} models, {} threads, {} GPU layers, budget {} MiB)",
            self.config.models.len(),
            self.config.threads(),
            if self.config.n_gpu_layers() == u32::MAX {
                "all".to_string()
            } else {
                self.config.n_gpu_layers().to_string()
            },
            self.config.memory_budget_bytes / MIB
        )
    }
}
