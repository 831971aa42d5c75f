//! One loaded model: a thread that owns the llama.cpp model and a reusable context,
//! serving generation jobs from a queue.

use crate::LlamaConfig;
use crate::backend::init_backend;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasmesh_engine::{Embedding, EngineError, FinishReason, GenerateParams, GenerateRequest, Generation, Usage};

enum Job {
    Generate { request: GenerateRequest, reply: oneshot::Sender<Result<Generation, EngineError>> },
    Embed { input: String, reply: oneshot::Sender<Result<Embedding, EngineError>> },
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
    pub(crate) async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        self.ask(|reply| Job::Generate { request, reply }).await
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

/// Serialises context creation across models: llama.cpp documents creating contexts
/// in parallel as unsound.
static CONTEXT_CREATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_worker(
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
    let mut model = match LlamaModel::load_from_file(backend, &path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!(
                "llama.cpp could not load {} ({e}); is it a GGUF file of an architecture this build supports?",
                path.display()
            ))));
            return;
        }
    };
    // Adapters load with their base (they need it mutably) and live as long as it.
    let mut adapters = Vec::new();
    for (lora, spec) in config.loras.iter().filter(|(_, spec)| spec.base == name) {
        let t = Instant::now();
        match model.lora_adapter_init(&spec.path) {
            Ok(adapter) => {
                tracing::info!(model = %name, %lora, ms = t.elapsed().as_millis() as u64, "LoRA adapter loaded");
                adapters.push((lora.clone(), adapter));
            }
            Err(e) => {
                let _ = ready.send(Err(load_err(format!(
                    "LoRA '{lora}' ({}) does not fit this model ({e}); was it made for another base or architecture?",
                    spec.path.display()
                ))));
                return;
            }
        }
    }
    let model = model;
    let n_ctx = config.n_ctx.min(model.n_ctx_train()).max(64);
    let slots = config.slots.max(1);
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
    let template = model.chat_template(None).ok();
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
        batch: LlamaBatch::new(config.n_batch as usize, 1),
        threads,
        stats,
        adapters,
        applied: None,
        last_group: None,
    };
    scheduler.run(&mut ctx, &queue);
    tracing::debug!(model = %name, "model worker stopped");
}

/// A generation waiting for a slot.
struct Waiting {
    request: GenerateRequest,
    reply: oneshot::Sender<Result<Generation, EngineError>>,
}

/// A request in flight: its sequence in the shared context and its own sampler.
struct Active {
    reply: oneshot::Sender<Result<Generation, EngineError>>,
    stop: Vec<String>,
    /// Streaming: where pieces go, and how many bytes of `text` were sent.
    stream: Option<wasmesh_engine::TokenSink>,
    emitted: usize,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already decoded.
    prefilled: usize,
    /// Token to feed next step (the last one sampled).
    pending: Option<LlamaToken>,
    /// Position of the next token fed.
    pos: usize,
    n_predict: usize,
    sampler: LlamaSampler,
    /// Plain greedy decoding: the token is the first largest logit, read in place
    /// (no candidate array of the whole vocabulary per token, as the sampler builds).
    greedy: bool,
    tokens: Vec<i32>,
    text: Vec<u8>,
    started: Instant,
    /// Time on this request's own bookkeeping (tokenizing, templates, samplers,
    /// detokenizing, stop strings): all but the shared decode steps and sampling.
    fixed: Duration,
    /// Where this sequence's logits are in the current batch.
    logits_at: Option<i32>,
    lora: LoraKey,
}

impl Active {
    /// Streams the text produced since the last call: whole UTF-8 characters, and
    /// (unless `last`) holding back a tail that could still become a stop string.
    fn emit(&mut self, last: bool) {
        let Some(sink) = &self.stream else { return };
        let mut end = self.text.len();
        if !last {
            end -= held_back(&self.text[self.emitted..], &self.stop);
        }
        let ready = &self.text[self.emitted..end];
        let valid = match std::str::from_utf8(ready) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            let piece = String::from_utf8_lossy(&ready[..valid]).into_owned();
            let _ = sink.send(piece);
            self.emitted += valid;
        }
        if last && self.emitted < self.text.len() {
            let _ = sink.send(String::from_utf8_lossy(&self.text[self.emitted..]).into_owned());
            self.emitted = self.text.len();
        }
    }
}

/// How many trailing bytes of `text` could be the start of a stop string.
fn held_back(text: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(|stop| {
            let stop = stop.as_bytes();
            (1..stop.len().min(text.len() + 1)).rev().find(|&n| text.ends_with(&stop[..n])).unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Continuous batching over one context: requests join the running batch when a
/// slot and KV room are free, each decode step carries one token for every
/// generating sequence plus as much pending prompt as fits, and finished or
/// cancelled requests leave at once.
struct Scheduler<'m> {
    model: &'m LlamaModel,
    template: Option<&'m LlamaChatTemplate>,
    n_batch: usize,
    n_ctx: usize,
    /// Tokens a sequence must have left for [`Scheduler::compact`] to move it.
    min_tokens_to_move: usize,
    slots: Vec<Option<Active>>,
    batch: LlamaBatch<'static>,
    threads: i32,
    stats: Arc<WorkerStats>,
    /// This model's LoRA adapters, by name.
    adapters: Vec<(String, LlamaLoraAdapter)>,
    /// The adapter set on the context now.
    applied: LoraKey,
    /// The group the last step ran, for round-robin between groups.
    last_group: Option<LoraKey>,
}

/// Bytes one KV cell takes across all layers: keys and values of the KV heads, f16
/// (llama.cpp's default cache type, which the engine keeps).
fn kv_bytes_per_cell(model: &LlamaModel) -> u64 {
    let (layers, embd) = (u64::from(model.n_layer()), model.n_embd().max(0) as u64);
    let (heads, kv_heads) = (u64::from(model.n_head().max(1)), u64::from(model.n_head_kv()));
    layers * 2 * (embd * kv_heads / heads) * 2
}

/// How many tokens a sequence must have left before compaction moves it: moving
/// copies its whole KV stream (`stream_bytes`) and saves about one pass over the
/// weights (`model_bytes`) on each step it has left. Both are memory-bound, so the
/// move pays once the passes saved outweigh the copy several times over: 4 tokens
/// where the stream is no larger than the weights (SmolLM2 at 4096 cells: 94 MB
/// against 97 MB), proportionally more for long contexts.
fn min_tokens_to_move(stream_bytes: u64, model_bytes: u64) -> usize {
    const MIN: u64 = 4;
    let scaled = (MIN * stream_bytes).div_ceil(model_bytes.max(1));
    usize::try_from(scaled.max(MIN)).unwrap_or(usize::MAX)
}

/// Which adapter (index, scale bits) a sequence runs with; `None` is the base model.
/// llama.cpp applies adapters to a whole context, so each decode step runs the
/// sequences of one key, and steps rotate between keys.
type LoraKey = Option<(usize, u32)>;

/// Live counters of one model's worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Requests in a slot now.
    pub active: AtomicUsize,
    /// Requests answered.
    pub completed: AtomicU64,
    /// Requests dropped by their caller while running (their slot was freed).
    pub cancelled: AtomicU64,
    /// Decode steps run.
    pub steps: AtomicU64,
    /// Tokens decoded over all steps (prompt and generated); `/ steps` is the mean batch.
    pub batched_tokens: AtomicU64,
    /// Times the context's LoRA adapter changed between steps.
    pub lora_switches: AtomicU64,
    /// Nanoseconds spent changing adapters.
    pub lora_switch_ns: AtomicU64,
    /// Sequences moved down into a freed slot (see `Scheduler::compact`).
    pub compactions: AtomicU64,
}

impl<'m> Scheduler<'m> {
    fn run(&mut self, ctx: &mut LlamaContext<'_>, queue: &mpsc::Receiver<Job>) {
        let mut waiting: std::collections::VecDeque<Waiting> = std::collections::VecDeque::new();
        let mut embed_ctx: Option<LlamaContext<'m>> = None;
        loop {
            let mut take = |job: Job, waiting: &mut std::collections::VecDeque<Waiting>| match job {
                Job::Generate { request, reply } => waiting.push_back(Waiting { request, reply }),
                Job::Embed { input, reply } => {
                    if !reply.is_closed() {
                        let _ = reply.send(self.embed(&mut embed_ctx, &input));
                    }
                }
            };
            // Take new jobs: block only when there is nothing else to do.
            let idle = self.slots.iter().all(Option::is_none) && waiting.is_empty();
            if idle {
                match queue.recv() {
                    Ok(job) => take(job, &mut waiting),
                    Err(_) => return,
                }
            }
            loop {
                match queue.try_recv() {
                    Ok(job) => take(job, &mut waiting),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if self.slots.iter().all(Option::is_none) && waiting.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            self.admit(ctx, &mut waiting);
            if waiting.is_empty() {
                self.compact(ctx);
            }
            if self.slots.iter().any(Option::is_some) {
                self.step(ctx);
            }
        }
    }

    /// Moves waiting jobs into free slots, in arrival order.
    fn admit(&mut self, ctx: &mut LlamaContext<'_>, waiting: &mut std::collections::VecDeque<Waiting>) {
        while let Some(free) = self.slots.iter().position(Option::is_none) {
            let Some(job) = waiting.front() else { return };
            if job.reply.is_closed() {
                waiting.pop_front();
                continue;
            }
            let t = Instant::now();
            let prepared = self.prepare(&job.request);
            let (prompt, n_predict, sampler, lora) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let job = waiting.pop_front().expect("front exists");
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            let job = waiting.pop_front().expect("front exists");
            let _ = ctx.kv_cache_seq_rm(free as i32, None, None);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            self.slots[free] = Some(Active {
                reply: job.reply,
                stop: job.request.params.stop.clone(),
                stream: job.request.stream,
                emitted: 0,
                pos: 0,
                prefilled: 0,
                pending: None,
                n_predict,
                greedy: job.request.params.is_greedy() && job.request.params.repeat_penalty == 1.0,
                sampler,
                tokens: Vec::with_capacity(n_predict),
                text: Vec::new(),
                started: t,
                fixed: t.elapsed(),
                logits_at: None,
                lora,
                prompt,
            });
        }
    }

    /// Keeps the busy slots' sequence ids consecutive: with a KV stream per slot,
    /// llama.cpp splits a step into one ubatch per run of consecutive ids, and each
    /// ubatch is a whole pass over the weights, so a request that ends early would
    /// cost the rest of its neighbours an extra pass on every step. The highest busy
    /// sequence moves into the lowest free slot instead (its KV stream is copied
    /// whole; cells keep their places, so its tokens do not change). Only sequences
    /// with at least `min_tokens_to_move` tokens left move (see [`min_tokens_to_move`]).
    fn compact(&mut self, ctx: &mut LlamaContext<'_>) {
        loop {
            let Some(hole) = self.slots.iter().position(Option::is_none) else { return };
            let Some(last) = self.slots.iter().rposition(Option::is_some) else { return };
            let worth_it =
                self.slots[last].as_ref().is_some_and(|a| a.n_predict - a.tokens.len() >= self.min_tokens_to_move);
            if last < hole || !worth_it {
                return;
            }
            if ctx.copy_kv_cache_seq(last as i32, hole as i32, None, None).is_err() {
                return;
            }
            let _ = ctx.kv_cache_seq_rm(last as i32, None, None);
            self.slots.swap(hole, last);
            self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Renders, tokenizes and checks one request; builds its sampler.
    fn prepare(
        &self,
        request: &GenerateRequest,
    ) -> Result<(Vec<LlamaToken>, usize, LlamaSampler, LoraKey), EngineError> {
        let params = &request.params;
        let lora = match &params.lora {
            None => None,
            Some(_) if params.lora_scale == 0.0 => None,
            Some(name) => {
                let Some(index) = self.adapters.iter().position(|(n, _)| n == name) else {
                    let available: Vec<&str> = self.adapters.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(EngineError::InvalidRequest(format!(
                        "LoRA adapter '{name}' is not loaded for model '{}' (available: {})",
                        request.model,
                        if available.is_empty() { "none".to_string() } else { available.join(", ") }
                    )));
                };
                Some((index, params.lora_scale.to_bits()))
            }
        };
        let prompt = self.render_prompt(&request.prompt, params)?;
        let tokens = self.model.vocab().tokenize(prompt.as_bytes(), true, true);
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        if tokens.len() >= self.n_ctx {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt is {} tokens; this node's context holds {}. Shorten the prompt",
                tokens.len(),
                self.n_ctx
            )));
        }
        let n_predict = (params.n_predict as usize).min(self.n_ctx - tokens.len());
        Ok((tokens, n_predict, build_sampler(self.model, params), lora))
    }

    /// The adapter group to run next: the one after the last, in key order.
    fn next_group(&mut self) -> LoraKey {
        if self.adapters.is_empty() {
            return None; // the common case: no per-step work at all
        }
        let mut keys: Vec<LoraKey> = self.slots.iter().flatten().map(|a| a.lora).collect();
        keys.sort_unstable();
        keys.dedup();
        let group = match self.last_group {
            Some(last) => keys.iter().copied().find(|k| *k > last).unwrap_or(keys[0]),
            None => keys[0],
        };
        self.last_group = Some(group);
        group
    }

    /// Puts `group`'s adapter on the context, if another one is there.
    fn apply(&mut self, ctx: &mut LlamaContext<'_>, group: LoraKey) -> Result<(), String> {
        if self.applied == group {
            return Ok(());
        }
        let t = Instant::now();
        match group {
            Some((index, scale)) => ctx
                .lora_adapter_set(&mut self.adapters[index].1, f32::from_bits(scale))
                .map_err(|e| format!("cannot apply LoRA '{}': {e}", self.adapters[index].0))?,
            None => {
                let adapter = &mut self.adapters.first_mut().expect("an adapter was applied").1;
                ctx.lora_adapter_remove(adapter).map_err(|e| format!("cannot remove the LoRA adapter: {e}"))?;
            }
        }
        self.applied = group;
        self.stats.lora_switches.fetch_add(1, Ordering::Relaxed);
        self.stats.lora_switch_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// One decode step for the active sequences of one adapter group.
    fn step(&mut self, ctx: &mut LlamaContext<'_>) {
        self.batch.clear();
        let group = self.next_group();
        if let Err(message) = self.apply(ctx, group) {
            for seq in 0..self.slots.len() {
                if self.slots[seq].as_ref().is_some_and(|a| a.lora == group) {
                    let a = self.slots[seq].take().expect("checked");
                    self.stats.active.fetch_sub(1, Ordering::Relaxed);
                    let _ = a.reply.send(Err(EngineError::Internal(message.clone())));
                    let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
                }
            }
            return;
        }
        let mut budget = self.n_batch;
        // Generating sequences first, one token each: running streams never stall
        // behind a long prompt.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            a.logits_at = None;
            if a.lora != group {
                continue;
            }
            if let Some(token) = a.pending.take() {
                a.logits_at = Some(self.batch.n_tokens());
                self.batch.add(token, a.pos as i32, &[seq as i32], true).expect("batch has room");
                a.pos += 1;
                budget -= 1;
            }
        }
        // Then prompt chunks, in slot order, as far as the batch has room.
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            if a.lora != group || a.prefilled == a.prompt.len() || budget == 0 {
                continue;
            }
            let take = (a.prompt.len() - a.prefilled).min(budget);
            for i in a.prefilled..a.prefilled + take {
                let last = i + 1 == a.prompt.len();
                if last {
                    a.logits_at = Some(self.batch.n_tokens());
                }
                self.batch.add(a.prompt[i], a.pos as i32, &[seq as i32], last).expect("batch has room");
                a.pos += 1;
            }
            a.prefilled += take;
            budget -= take;
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.stats.batched_tokens.fetch_add(self.batch.n_tokens() as u64, Ordering::Relaxed);
        if let Err(e) = ctx.decode(&mut self.batch) {
            let message = format!("decode failed: {e}");
            for seq in 0..self.slots.len() {
                if let Some(a) = self.slots[seq].take() {
                    self.stats.active.fetch_sub(1, Ordering::Relaxed);
                    let _ = a.reply.send(Err(EngineError::Internal(message.clone())));
                    let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
                }
            }
            return;
        }
        let vocab = self.model.vocab();
        let mut piece = Vec::with_capacity(32);
        for seq in 0..self.slots.len() {
            let Some(a) = self.slots[seq].as_mut() else { continue };
            if a.reply.is_closed() {
                self.finish(ctx, seq, None);
                continue;
            }
            let Some(at) = a.logits_at else { continue };
            let token = if a.greedy {
                first_max(ctx.get_logits_ith(at))
            } else {
                a.sampler.sample(ctx, at) // samples and accepts
            };
            let t = Instant::now();
            if vocab.is_eog(token) {
                a.fixed += t.elapsed();
                self.finish(ctx, seq, Some(FinishReason::Stop));
                continue;
            }
            a.tokens.push(token.0);
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let before = a.text.len();
            a.text.extend_from_slice(&piece);
            let stopped = find_stop(&a.text, before, &a.stop);
            if let Some(cut) = stopped {
                a.text.truncate(cut);
            }
            if stopped.is_none() {
                a.emit(false);
            }
            a.fixed += t.elapsed();
            if stopped.is_some() {
                self.finish(ctx, seq, Some(FinishReason::StopString));
            } else if a.tokens.len() >= a.n_predict {
                self.finish(ctx, seq, Some(FinishReason::Length));
            } else {
                a.pending = Some(token);
            }
        }
    }

    /// Frees a slot; with a reason, answers the request (without, it was cancelled).
    fn finish(&mut self, ctx: &mut LlamaContext<'_>, seq: usize, reason: Option<FinishReason>) {
        let Some(mut a) = self.slots[seq].take() else { return };
        if reason.is_some() {
            a.emit(true);
        }
        let _ = ctx.kv_cache_seq_rm(seq as i32, None, None);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        let Some(finish) = reason else {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        let _ = a.reply.send(Ok(Generation {
            text: String::from_utf8_lossy(&a.text).into_owned(),
            usage: Usage { input_tokens: a.prompt.len() as u32, output_tokens: a.tokens.len() as u32 },
            tokens: a.tokens,
            finish,
            fixed_cost: a.fixed,
            compute_time: a.started.elapsed(),
        }));
    }

    /// A mean-pooled, L2-normalised embedding, on a second context made for it on
    /// first use (embeddings need their own output buffers and pooling).
    fn embed(&self, embed_ctx: &mut Option<LlamaContext<'m>>, input: &str) -> Result<Embedding, EngineError> {
        let tokens = self.model.vocab().tokenize(input.as_bytes(), true, true);
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("the input is empty".into()));
        }
        if tokens.len() > self.n_batch {
            return Err(EngineError::InvalidRequest(format!(
                "the input is {} tokens; embeddings take at most {} (the batch size)",
                tokens.len(),
                self.n_batch
            )));
        }
        if embed_ctx.is_none() {
            let backend = init_backend()?;
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(self.n_batch as u32))
                .with_n_batch(self.n_batch as u32)
                .with_n_ubatch(self.n_batch as u32)
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean)
                .with_n_threads(self.threads)
                .with_n_threads_batch(self.threads);
            let made = {
                let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
                self.model.new_context(backend, params)
            };
            *embed_ctx =
                Some(made.map_err(|e| EngineError::Internal(format!("cannot create an embedding context: {e}")))?);
        }
        let ctx = embed_ctx.as_mut().expect("made above");
        ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(tokens.len(), 1);
        batch.add_sequence(&tokens, 0, false).map_err(|e| EngineError::Internal(e.to_string()))?;
        ctx.decode(&mut batch).map_err(|e| EngineError::Internal(format!("embedding decode: {e}")))?;
        let raw =
            ctx.embeddings_seq_ith(0).map_err(|e| EngineError::Internal(format!("no pooled embedding: {e:?}")))?;
        let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
        Ok(Embedding { vector: raw.iter().map(|x| x / norm).collect(), input_tokens: tokens.len() as u32 })
    }

    fn render_prompt(&self, prompt: &str, params: &GenerateParams) -> Result<String, EngineError> {
        if !params.chat && params.messages.is_empty() {
            return Ok(prompt.to_string());
        }
        let template = self.template.ok_or_else(|| {
            EngineError::InvalidRequest(
                "this model has no chat template in its GGUF; send a raw prompt with \"chat\": false".into(),
            )
        })?;
        let messages = if params.messages.is_empty() {
            vec![
                LlamaChatMessage::new("user".into(), prompt.into())
                    .map_err(|e| EngineError::InvalidRequest(format!("prompt: {e}")))?,
            ]
        } else {
            params
                .messages
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::InvalidRequest(format!("messages: {e}")))?
        };
        self.model
            .apply_chat_template(template, &messages, true)
            .map_err(|e| EngineError::Internal(format!("chat template: {e}")))
    }
}

/// The sampler chain for `params`: greedy when `temp` is 0 (deterministic).
pub(crate) fn build_sampler(model: &LlamaModel, params: &GenerateParams) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            params.repeat_last_n as i32,
            params.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if params.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        chain.push(LlamaSampler::top_k(params.top_k as i32));
        chain.push(LlamaSampler::top_p(params.top_p, 1));
        chain.push(LlamaSampler::temp(params.temp));
        chain.push(LlamaSampler::dist(params.seed));
    }
    if chain.len() == 1 { chain.pop().expect("one sampler") } else { LlamaSampler::chain_simple(chain) }
}

/// The token of the first largest logit: what llama.cpp's greedy sampler picks.
fn first_max(logits: &[f32]) -> LlamaToken {
    let mut best = 0;
    for (i, &logit) in logits.iter().enumerate().skip(1) {
        if logit > logits[best] {
            best = i;
        }
    }
    LlamaToken::new(best as i32)
}

/// Where a stop string begins in `text`, searching only where text added since
/// `new_from` could complete one.
fn find_stop(text: &[u8], new_from: usize, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|stop| {
            let stop = stop.as_bytes();
            let from = new_from.saturating_sub(stop.len() - 1);
            text[from..].windows(stop.len()).position(|w| w == stop).map(|i| from + i)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::find_stop;

    #[test]
    fn streaming_holds_back_what_may_become_a_stop_string() {
        use super::held_back;
        let stops = vec!["</s>".to_string()];
        assert_eq!(held_back(b"hello", &stops), 0);
        assert_eq!(held_back(b"hello<", &stops), 1);
        assert_eq!(held_back(b"hello</", &stops), 2);
        assert_eq!(held_back(b"hello</s", &stops), 3);
        assert_eq!(held_back(b"<", &[]), 0);
    }

    #[test]
    fn compaction_waits_for_more_tokens_left_when_the_kv_stream_outweighs_the_model() {
        use super::min_tokens_to_move;
        const MB: u64 = 1 << 20;
        // SmolLM2 Q4_1 at 4096 cells per slot: a 90 MiB stream, 92 MiB of weights.
        assert_eq!(min_tokens_to_move(90 * MB, 92 * MB), 4);
        // Much less KV than weights (a big model with grouped-query attention).
        assert_eq!(min_tokens_to_move(1024 * MB, 4700 * MB), 4);
        // The same small model at 32 768 cells per slot: eight times the stream.
        assert_eq!(min_tokens_to_move(720 * MB, 92 * MB), 32);
        assert_eq!(min_tokens_to_move(10 * MB, 0), 40 * MB as usize, "no weights: never worth a copy in practice");
    }

    #[test]
    fn greedy_picks_the_first_largest_logit_as_llama_cpp_does() {
        use super::first_max;
        assert_eq!(first_max(&[0.5, 2.0, 1.0, 2.0]).0, 1);
        assert_eq!(first_max(&[3.0, 2.0]).0, 0);
        assert_eq!(first_max(&[-1.0]).0, 0);
    }

    #[test]
    fn stop_strings_are_found_across_token_boundaries() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop(b"abc\n", 3, &stops), None);
        assert_eq!(find_stop(b"abc\n\nxyz", 4, &stops), Some(3));
        assert_eq!(find_stop(b"xxEN", 2, &stops), None);
        assert_eq!(find_stop(b"xxENDyy", 4, &stops), Some(2));
        assert_eq!(find_stop(b"ENDxx", 4, &stops), None, "a stop wholly before new text was already seen");
    }
}
