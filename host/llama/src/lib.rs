//! llama.cpp behind wasmesh's [`InferenceEngine`] trait.
//!
//! * **A catalog that grows while it runs.** Models and adapters are added by name
//!   and file ([`InferenceEngine::add_model`], [`InferenceEngine::add_adapter`]).
//!   Loaded models share a memory budget; concurrent first requests for one model
//!   share one load; a load that needs room evicts the least recently used models
//!   that no request is using and nobody pinned, and waits (bounded) when the rest
//!   are busy. Adapters attach to a warm base on first use without reloading it, up
//!   to [`LlamaConfig::max_adapters`] per model (least recently used idle one freed).
//! * **No context per request.** Each loaded model has a worker thread that owns the
//!   model and one llama.cpp context, created once (creating a context costs about
//!   33 ms on SmolLM2-135M, more than 60 generated tokens).
//! * **Continuous batching.** The context has `slots` sequences, each with its own
//!   KV stream; concurrent requests share each decode step, join when a slot is
//!   free, and leave as soon as they finish, each with its own sampler. A request
//!   gets exactly the tokens it gets alone (greedy decoding is batch-invariant).
//! * **Mixed adapters in one step.** Each sequence carries its own LoRA adapter (or
//!   none) inside one `llama_decode` (our llama.cpp patch, `deploy/patches/`), so k
//!   different adapters in flight cost one pass over the base weights, not k.
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
mod catalog;
mod ffi;
pub mod native;
mod worker;

use catalog::{Catalog, InUse, MIB};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use wasmesh_engine::{BoxFuture, CatalogEntry, EngineError, GenerateRequest, Generation, InferenceEngine};

pub use backend::{gpu_offload_supported, init_backend};
pub use worker::WorkerStats;

/// FNV-1a of the llama.cpp patch this engine is built with (`deploy/patches/`): part of
/// [`InferenceEngine::build_id`], so nodes replay audits only on the same patched build.
/// Whether `WASMESH_LLAMA_FAST_KERNELS` asks for llama.cpp's faster CPU kernels instead
/// of the reference ones (the patch reads the same variable when it makes a context).
/// Faster on long prompts and K-quant models, but a request's tokens then depend on what
/// shares its batch, so such a node is audited only by nodes with the same setting.
fn fast_kernels() -> bool {
    std::env::var("WASMESH_LLAMA_FAST_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0")
}

const LLAMA_PATCH_ID: u64 = {
    let bytes = include_bytes!("../../../deploy/patches/llama-cpp-sys-2.patch");
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
};

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
    /// Adapter name → adapter. Attached to their warm base model on first use,
    /// applied per request (`"lora": NAME` in the options) without reloading it.
    pub loras: BTreeMap<String, LoraSpec>,
    /// Adapters kept attached to one loaded model at once; past it the least recently
    /// used idle one is freed. Default 8.
    pub max_adapters: u32,
    /// How long a load waits for memory that running requests hold (the least recently
    /// used idle models are evicted at once; busy ones are waited for). Default 30 s.
    pub memory_wait: std::time::Duration,
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
    /// Slots beyond `slots` kept for tenants that hold none: a tenant already holding a
    /// slot cannot take them, so one app's flood never makes another app wait for a
    /// generation to end. Each costs one more KV stream of `n_ctx`. Default 1.
    pub spare_slots: u32,
    /// Sequences with different LoRA adapters (or none) share each decode step, each
    /// with its own adapter (`llama_set_adapter_lora_seq`, our llama.cpp patch), and
    /// still get exactly their solo tokens. `false`: the context carries one adapter at
    /// a time and steps rotate between adapter groups (the fallback). Default `true`.
    pub mixed_lora: bool,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            models: BTreeMap::new(),
            loras: BTreeMap::new(),
            max_adapters: 8,
            memory_wait: std::time::Duration::from_secs(30),
            memory_budget_bytes: 4 << 30,
            n_gpu_layers: None,
            threads: None,
            n_ctx: 4096,
            n_batch: 512,
            slots: 4,
            spare_slots: 1,
            mixed_lora: true,
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
    catalog: Catalog,
}

impl LlamaEngine {
    /// Creates the engine with the models and adapters of `config`; more can be added
    /// while it runs ([`InferenceEngine::add_model`]). Models load on first use (or
    /// [`InferenceEngine::preload`]), adapters attach on first use.
    ///
    /// Fails when a configured file is missing, so a typo is caught at start-up.
    pub fn new(config: LlamaConfig) -> Result<Self, EngineError> {
        init_backend()?;
        let catalog = Catalog::new(config.memory_budget_bytes);
        for (name, path) in &config.models {
            catalog.add_model(name, path.clone())?;
        }
        for (name, lora) in &config.loras {
            catalog.add_adapter(&lora.base, name, lora.path.clone())?;
        }
        Ok(Self { config: Arc::new(config), catalog })
    }

    /// The engine's settings.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Live counters of a loaded model's worker (`None` when it is not loaded).
    pub async fn stats(&self, model: &str) -> Option<Arc<WorkerStats>> {
        self.catalog.warm(model).map(|w| w.stats.clone())
    }

    async fn worker(&self, name: &str) -> Result<InUse, EngineError> {
        self.catalog.acquire(name, &self.config, self.config.memory_wait).await
    }
}

impl InferenceEngine for LlamaEngine {
    fn models(&self) -> Vec<String> {
        self.catalog.models()
    }

    fn loaded_models(&self) -> Vec<String> {
        self.catalog.loaded()
    }

    fn memory_used(&self) -> u64 {
        self.catalog.memory_used()
    }

    fn memory_idle(&self) -> u64 {
        self.catalog.memory_idle()
    }

    fn memory_budget(&self) -> Option<u64> {
        Some(self.catalog.budget())
    }

    fn build_id(&self) -> String {
        // llama-cpp-sys-2 is pinned to an exact version (its vendored llama.cpp), built
        // with fixed CPU flags (GGML_NATIVE off) and llamafile off, with our patches over
        // it (which change numerics: the reference CPU kernels), named by their hash.
        format!(
            "llama.cpp (llama-cpp-sys-2 0.1.161, patch {:016x}{}) wasmesh-llama {}",
            LLAMA_PATCH_ID,
            if fast_kernels() { ", fast kernels" } else { "" },
            env!("CARGO_PKG_VERSION")
        )
    }

    fn counters(&self) -> Vec<wasmesh_engine::ModelCounters> {
        use std::sync::atomic::Ordering::Relaxed;
        self.catalog
            .loaded()
            .into_iter()
            .filter_map(|model| {
                let s = self.catalog.warm(&model)?.stats.clone();
                Some(wasmesh_engine::ModelCounters {
                    model,
                    active: s.active.load(Relaxed) as u64,
                    queued: s.queued.load(Relaxed) as u64,
                    completed: s.completed.load(Relaxed),
                    prompt_tokens: s.prompt_tokens.load(Relaxed),
                    generated_tokens: s.generated_tokens.load(Relaxed),
                    steps: s.steps.load(Relaxed),
                    batched_tokens: s.batched_tokens.load(Relaxed),
                })
            })
            .collect()
    }

    fn set_memory_budget(&self, bytes: u64) -> Result<Vec<String>, EngineError> {
        Ok(self.catalog.set_budget(bytes))
    }

    fn loads(&self) -> u64 {
        self.catalog.loads()
    }

    fn adapters(&self) -> Vec<String> {
        self.catalog.adapters()
    }

    fn preload_adapter<'a>(&'a self, model: &'a str, adapter: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            let lora = self.catalog.adapter_file(model, adapter)?;
            let held = self.worker(model).await?;
            held.worker.attach(lora).await
        })
    }

    fn add_model(&self, name: &str, path: PathBuf) -> Result<(), EngineError> {
        self.catalog.add_model(name, path)
    }

    fn add_adapter(&self, base: &str, name: &str, path: PathBuf) -> Result<(), EngineError> {
        self.catalog.add_adapter(base, name, path)
    }

    fn set_pinned(&self, model: &str, pinned: bool) {
        self.catalog.set_pinned(model, pinned);
    }

    fn catalog(&self) -> Vec<CatalogEntry> {
        self.catalog.entries()
    }

    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, EngineError>> {
        Box::pin(async move {
            request.params.validate()?;
            let lora = match &request.params.lora {
                Some(name) if request.params.lora_scale != 0.0 => {
                    Some(self.catalog.adapter_file(&request.model, name)?)
                }
                _ => None,
            };
            let held = self.worker(&request.model).await?;
            held.worker.generate(request, lora).await
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        input: &'a str,
    ) -> BoxFuture<'a, Result<wasmesh_engine::Embedding, EngineError>> {
        Box::pin(async move {
            let held = self.worker(model).await?;
            held.worker.embed(input.to_string()).await
        })
    }

    fn preload<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move { self.worker(model).await.map(|_| ()) })
    }

    fn summary(&self) -> String {
        format!(
            "llama.cpp ({} models, {} threads, {} GPU layers, budget {} MiB)",
            self.catalog.models().len(),
            self.config.threads(),
            if self.config.n_gpu_layers() == u32::MAX {
                "all".to_string()
            } else {
                self.config.n_gpu_layers().to_string()
            },
            self.catalog.budget() / MIB
        )
    }
}
