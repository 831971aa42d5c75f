//! The scheduler's state and its loop: taking jobs from the queue, admitting
//! waiting requests into free slots (rendering and tokenizing their prompts), and
//! driving compaction and decode steps.

use super::AdapterFile;
use super::Job;
use super::lora::{Adapter, LoraKey};
use super::sampling::build_sampler;
use super::slot::Active;
use super::stats::WorkerStats;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;
use tokio::sync::oneshot;
use wasmesh_engine::{EngineError, GenerateParams, GenerateRequest, Generation};

/// Bytes per token above which a prompt is refused before it is tokenized.
pub(crate) const MAX_BYTES_PER_TOKEN: usize = 64;

/// A generation waiting for a slot.
struct Waiting {
    request: GenerateRequest,
    lora: Option<AdapterFile>,
    reply: oneshot::Sender<Result<Generation, EngineError>>,
}

/// An embedding waiting for its turn between decode steps.
struct Embedding {
    input: String,
    reply: oneshot::Sender<Result<wasmesh_engine::Embedding, EngineError>>,
}

/// Continuous batching over one context: requests join the running batch when a
/// slot and KV room are free, each decode step carries one token for every
/// generating sequence plus as much pending prompt as fits, and finished or
/// cancelled requests leave at once.
pub(crate) struct Scheduler<'m> {
    pub(crate) model: &'m LlamaModel,
    pub(crate) template: Option<&'m LlamaChatTemplate>,
    pub(crate) n_batch: usize,
    pub(crate) n_ctx: usize,
    /// Tokens a sequence must have left for [`Scheduler::compact`] to move it.
    pub(crate) min_tokens_to_move: usize,
    pub(crate) slots: Vec<Option<Active>>,
    /// Slots any tenant may take; the rest are spare, for tenants holding none.
    pub(crate) regular_slots: usize,
    pub(crate) batch: LlamaBatch<'static>,
    pub(crate) threads: i32,
    pub(crate) stats: Arc<WorkerStats>,
    /// The adapters attached to this model; a freed place is `None` (a [`LoraKey`]
    /// is an index here, so places never move).
    pub(crate) adapters: Vec<Option<Adapter>>,
    /// The most adapters kept attached at once.
    pub(crate) max_adapters: usize,
    /// Counts adapter uses, for least-recently-used freeing.
    pub(crate) adapter_tick: u64,
    /// The adapter set on the whole context now (rotation mode).
    pub(crate) applied: LoraKey,
    /// The group the last step ran, for round-robin between groups.
    pub(crate) last_group: Option<LoraKey>,
    /// Per-sequence adapters ([`crate::LlamaConfig::mixed_lora`]): every step runs
    /// every sequence, each with its own adapter; else one adapter group per step.
    pub(crate) mixed_lora: bool,
    /// The adapter set on each sequence of the context now (mixed mode).
    pub(crate) seq_lora: Vec<LoraKey>,
    /// When each tenant was last admitted (an admission count), for fair admission.
    pub(crate) admitted: std::collections::HashMap<std::sync::Arc<str>, u64>,
    /// Admissions so far.
    pub(crate) admissions: u64,
}

impl<'m> Scheduler<'m> {
    pub(crate) fn run(&mut self, ctx: &mut LlamaContext<'_>, queue: &mpsc::Receiver<Job>) {
        let mut waiting: std::collections::VecDeque<Waiting> = std::collections::VecDeque::new();
        let mut embed_ctx: Option<LlamaContext<'m>> = None;
        let mut embeds: std::collections::VecDeque<Embedding> = std::collections::VecDeque::new();
        loop {
            // Take new jobs: block only when there is nothing else to do.
            let idle = self.slots.iter().all(Option::is_none) && waiting.is_empty() && embeds.is_empty();
            if idle {
                match queue.recv() {
                    Ok(job) => self.take(ctx, &mut embeds, job, &mut waiting),
                    Err(_) => return,
                }
            }
            loop {
                match queue.try_recv() {
                    Ok(job) => self.take(ctx, &mut embeds, job, &mut waiting),
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
            self.stats.queued.store(waiting.len(), Ordering::Relaxed);
            if waiting.is_empty() {
                self.compact(ctx);
            }
            // Embeddings run between decode steps: all of them while nothing generates,
            // one per step otherwise, so a flood of them delays each step by at most one
            // embedding (of at most a batch of tokens) instead of stalling generation.
            let generating = self.slots.iter().any(Option::is_some);
            let turn = if generating { embeds.len().min(1) } else { embeds.len() };
            for Embedding { input, reply } in embeds.drain(..turn) {
                if !reply.is_closed() {
                    let _ = reply.send(self.embed(&mut embed_ctx, &input));
                    self.stats.embeddings.fetch_add(1, Ordering::Relaxed);
                }
            }
            if generating {
                self.step(ctx);
            }
        }
    }

    /// Takes one job off the queue: a generation waits for a slot, an embedding for
    /// its turn between steps; an adapter attach runs now.
    fn take(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        embeds: &mut std::collections::VecDeque<Embedding>,
        job: Job,
        waiting: &mut std::collections::VecDeque<Waiting>,
    ) {
        match job {
            Job::Generate { request, lora, reply } => waiting.push_back(Waiting { request, lora, reply }),
            Job::Embed { input, reply } => embeds.push_back(Embedding { input, reply }),
            Job::Attach { model, lora, reply } => {
                let name = lora.name.clone();
                let _ = reply.send(self.adapter(ctx, &model, &name, Some(lora)).map(|_| ()));
            }
        }
    }

    /// Moves waiting jobs into free slots. Fair between tenants: the next one is the
    /// first to arrive of the tenant holding the fewest slots now, so one app's flood
    /// waits behind another app's single request, not the other way round. Once the
    /// regular slots are taken, the spare ones go only to tenants holding none.
    fn admit(&mut self, ctx: &mut LlamaContext<'_>, waiting: &mut std::collections::VecDeque<Waiting>) {
        waiting.retain(|job| !job.reply.is_closed());
        while let Some(free) = self.slots.iter().position(Option::is_none) {
            let spare = self.slots.iter().flatten().count() >= self.regular_slots;
            let Some(next) = self.next_fair(waiting, spare) else { return };
            let job = &waiting[next];
            let t = Instant::now();
            let lora = job.lora.clone();
            let prepared = self.prepare(ctx, &job.request, lora);
            let (prompt, n_prompt, n_predict, sampler, lora) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    let job = waiting.remove(next).expect("the chosen job exists");
                    let _ = job.reply.send(Err(e));
                    continue;
                }
            };
            let job = waiting.remove(next).expect("the chosen job exists");
            let scoring = (job.request.score && job.request.forced.is_some()).then(|| {
                let vocab = self.model.vocab();
                let eog = (0..self.model.n_vocab()).filter(|&t| vocab.is_eog(LlamaToken::new(t))).collect();
                Box::new(super::score::Scoring::new(&job.request.params, eog))
            });
            self.admissions += 1;
            if self.admitted.len() > 4096 {
                self.admitted.clear();
            }
            self.admitted.insert(job.request.tenant.clone(), self.admissions);
            let _ = ctx.kv_cache_seq_rm(free as i32, None, None);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            self.slots[free] = Some(Active {
                tenant: job.request.tenant.clone(),
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
                checks: Vec::new(),
                scoring,
                lora,
                prompt,
                n_prompt,
            });
        }
    }

    /// The waiting job to admit next: the earliest of the tenant holding the fewest
    /// active slots, and among those the one admitted longest ago (round-robin); with
    /// `newcomers_only`, only of tenants holding none.
    fn next_fair(&self, waiting: &std::collections::VecDeque<Waiting>, newcomers_only: bool) -> Option<usize> {
        let mut held: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for active in self.slots.iter().flatten() {
            *held.entry(&*active.tenant).or_default() += 1;
        }
        waiting
            .iter()
            .enumerate()
            .filter(|(_, job)| !newcomers_only || !held.contains_key(&*job.request.tenant))
            .min_by_key(|(i, job)| {
                let tenant = &*job.request.tenant;
                let last = self.admitted.get(tenant).copied().unwrap_or(0);
                (held.get(tenant).copied().unwrap_or(0), last, *i)
            })
            .map(|(i, _)| i)
    }

    /// Renders, tokenizes and checks one request; builds its sampler. The tokens fed
    /// are the prompt's, then a checked request's claim (at most `n_predict` tokens, and
    /// none past the first that is not in the vocabulary); the second number is how
    /// many are the prompt's.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        request: &GenerateRequest,
        lora: Option<AdapterFile>,
    ) -> Result<(Vec<LlamaToken>, usize, usize, LlamaSampler, LoraKey), EngineError> {
        let params = &request.params;
        let lora = match (&params.lora, lora) {
            (None, _) => None,
            (Some(_), _) if params.lora_scale == 0.0 => None,
            (Some(name), file) => Some((self.adapter(ctx, &request.model, name, file)?, params.lora_scale.to_bits())),
        };
        // Measured before tokenizing: a prompt far longer than the context in bytes
        // cannot fit (a token is rarely over a few bytes), and tokenizing hundreds of
        // megabytes would hold this worker, and every tenant on it, for seconds.
        let bytes = request.prompt.len() + params.messages.iter().map(|m| m.content.len()).sum::<usize>();
        if bytes > self.n_ctx.saturating_mul(MAX_BYTES_PER_TOKEN) {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt is {bytes} bytes; this node's context holds {} tokens. Shorten the prompt",
                self.n_ctx
            )));
        }
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
        let n_prompt = tokens.len();
        let mut tokens = tokens;
        if let Some(claim) = &request.forced {
            let n_vocab = self.model.n_vocab();
            let valid = claim.iter().take(n_predict).take_while(|&&t| (0..n_vocab).contains(&t));
            tokens.extend(valid.map(|&t| LlamaToken::new(t)));
            self.stats.checked_requests.fetch_add(1, Ordering::Relaxed);
        }
        Ok((tokens, n_prompt, n_predict, build_sampler(self.model, params), lora))
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
