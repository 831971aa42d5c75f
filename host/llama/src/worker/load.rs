//! The worker thread's start: loads the model, picks its chat template, creates the
//! context with one KV stream per slot, then hands over to the [`Scheduler`].
//! Adapters attach later, on first use ([`super::lora`]).

use super::Job;
use super::compaction::{kv_bytes_per_cell, min_tokens_to_move};
use super::scheduler::Scheduler;
use super::stats::WorkerStats;
use crate::LlamaConfig;
use crate::backend::init_backend;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::Instant;
use tokio::sync::oneshot;
use wasmesh_engine::EngineError;

/// Serialises context creation across models: llama.cpp documents creating contexts
/// in parallel as unsound.
pub(crate) static CONTEXT_CREATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub(crate) fn run_worker(
    name: String,
    path: PathBuf,
    config: LlamaConfig,
    ready: oneshot::Sender<Result<u64, EngineError>>,
    queue: mpsc::Receiver<Job>,
    stats: Arc<WorkerStats>,
) {
    let load_err = |reason: String| EngineError::Load { name: name.clone(), reason };
    let started = Instant::now();
    let backend = match init_backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let params = LlamaModelParams::default().with_n_gpu_layers(config.n_gpu_layers());
    let model = match LlamaModel::load_from_file(backend, &path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!(
                "llama.cpp could not load {} ({e}); is it a GGUF file of an architecture this build supports?",
                path.display()
            ))));
            return;
        }
    };
    let n_ctx = config.n_ctx.min(model.n_ctx_train()).max(64);
    let regular_slots = config.slots.max(1);
    let slots = regular_slots + config.spare_slots;
    // Each slot has its own KV stream of n_ctx cells (not one unified cache): a
    // sequence's cells then sit at the same places whether it runs alone or beside
    // others, so attention sums in the same order and a batched request gets exactly
    // its solo tokens. With a unified cache, cells interleave across sequences and
    // the rounding of those sums shifts. Admission needs only a free slot.
    let kv_tokens = n_ctx * slots;
    let threads = config.threads() as i32;
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(kv_tokens))
        .with_n_batch(config.n_batch)
        .with_n_ubatch(config.n_batch)
        .with_n_seq_max(slots)
        .with_kv_unified(false)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = {
        let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
        model.new_context(backend, ctx_params)
    };
    let mut ctx = match ctx {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!("cannot create a context of {kv_tokens} tokens: {e}"))));
            return;
        }
    };
    let (template, template_source) = chat_template(&model);
    let min_move = min_tokens_to_move(u64::from(n_ctx) * kv_bytes_per_cell(&model), model.size());
    tracing::info!(
        model = %name,
        path = %path.display(),
        size_mib = model.size() / (1 << 20),
        n_ctx,
        kv_tokens,
        slots,
        threads,
        compaction_min_tokens_left = min_move,
        chat_template = %template_source,
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    if ready.send(Ok(model.size())).is_err() {
        return;
    }
    let mut scheduler = Scheduler {
        model: &model,
        template: template.as_ref(),
        n_batch: config.n_batch as usize,
        n_ctx: n_ctx as usize,
        min_tokens_to_move: min_move,
        slots: (0..slots as i32).map(|_| None).collect(),
        regular_slots: regular_slots as usize,
        batch: LlamaBatch::new(config.n_batch as usize, 1),
        threads,
        stats,
        adapters: Vec::new(),
        max_adapters: config.max_adapters.max(1) as usize,
        adapter_tick: 0,
        applied: None,
        last_group: None,
        mixed_lora: config.mixed_lora,
        seq_lora: vec![None; slots as usize],
        admitted: std::collections::HashMap::new(),
        admissions: 0,
    };
    scheduler.run(&mut ctx, &queue);
    tracing::debug!(model = %name, "model worker stopped");
}

/// The model's chat template: its GGUF's own, else the one llama.cpp has built in for
/// its architecture, else ChatML (what llama-server falls back to). Returns the
/// template and where it came from, for the load log.
fn chat_template(model: &LlamaModel) -> (Option<LlamaChatTemplate>, String) {
    if let Ok(template) = model.chat_template(None) {
        return (Some(template), "gguf".to_string());
    }
    let arch = model.meta_val_str("general.architecture").unwrap_or_default();
    let name = builtin_template(&arch);
    let source = format!("built-in '{name}' (the GGUF has none; architecture '{arch}')");
    (LlamaChatTemplate::new(name).ok(), source)
}

/// The llama.cpp built-in template for a GGUF architecture without a template of its own.
pub(crate) fn builtin_template(arch: &str) -> &'static str {
    match arch {
        "gemma" | "gemma2" | "gemma3" => "gemma",
        "phi3" => "phi3",
        "command-r" | "cohere2" => "command-r",
        "exaone" => "exaone3",
        "granite" => "granite",
        "chatglm" => "chatglm4",
        "deepseek2" => "deepseek2",
        "minicpm" => "minicpm",
        _ => "chatml",
    }
}
