//! One loaded model: a thread that owns the llama.cpp model and a reusable context,
//! serving generation jobs from a queue.

use crate::backend::init_backend;
use crate::LlamaConfig;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasmesh_engine::{EngineError, FinishReason, GenerateParams, GenerateRequest, Generation, Usage};

struct Job {
    request: GenerateRequest,
    reply: oneshot::Sender<Result<Generation, EngineError>>,
}

/// Handle to a model's worker thread. Dropping the last handle ends the thread
/// once its queue drains, which frees the context and then the model.
pub(crate) struct ModelWorker {
    name: String,
    jobs: mpsc::Sender<Job>,
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
        let thread_name = format!("llama-{name}");
        let model_name = name.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || run_worker(model_name, path, config, ready_tx, queue))
            .map_err(|e| EngineError::Internal(format!("cannot start a model thread: {e}")))?;
        let bytes = ready_rx
            .await
            .map_err(|_| EngineError::Load { name: name.clone(), reason: "the model thread died while loading".into() })??;
        Ok(Self { name, jobs, bytes })
    }

    /// Queues a generation and waits for it. Dropping the future cancels it.
    pub(crate) async fn generate(&self, request: GenerateRequest) -> Result<Generation, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { request, reply })
            .map_err(|_| EngineError::Unavailable(format!("model '{}' is unloading; retry", self.name)))?;
        answer
            .await
            .map_err(|_| EngineError::Internal(format!("model '{}' worker stopped mid-request", self.name)))?
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
    let threads = config.threads() as i32;
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(config.n_batch)
        .with_n_ubatch(config.n_batch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = {
        let _guard = CONTEXT_CREATION.lock().unwrap_or_else(|p| p.into_inner());
        model.new_context(backend, ctx_params)
    };
    let mut ctx = match ctx {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!("cannot create a context of {n_ctx} tokens: {e}"))));
            return;
        }
    };
    let template = model.chat_template(None).ok();
    tracing::info!(
        model = %name,
        path = %path.display(),
        size_mib = model.size() / (1 << 20),
        n_ctx,
        threads,
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    if ready.send(Ok(model.size())).is_err() {
        return;
    }
    let mut batch = LlamaBatch::new(config.n_batch as usize, 1);
    let mut state = Session { model: &model, template: template.as_ref(), n_batch: config.n_batch as usize };
    while let Ok(job) = queue.recv() {
        if job.reply.is_closed() {
            continue; // cancelled while queued
        }
        let reply = job.reply;
        let result = state.generate(&mut ctx, &mut batch, &job.request, &|| reply.is_closed());
        let _ = reply.send(result);
    }
    tracing::debug!(model = %name, "model worker stopped");
}

struct Session<'m> {
    model: &'m LlamaModel,
    template: Option<&'m LlamaChatTemplate>,
    n_batch: usize,
}

impl Session<'_> {
    fn generate(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        batch: &mut LlamaBatch<'_>,
        request: &GenerateRequest,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Generation, EngineError> {
        let start = Instant::now();
        let mut engine_time = Duration::ZERO; // decode + sampling
        let params = &request.params;
        ctx.clear_kv_cache();
        let prompt = self.render_prompt(&request.prompt, params)?;
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let n_ctx = ctx.n_ctx() as usize;
        if tokens.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        if tokens.len() >= n_ctx {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt is {} tokens; this node's context holds {n_ctx}. Shorten the prompt",
                tokens.len()
            )));
        }
        let n_predict = (params.n_predict as usize).min(n_ctx - tokens.len());
        let mut sampler = build_sampler(self.model, params);

        // Prompt processing, in chunks of n_batch; logits only for the last prompt token.
        let last = tokens.len() - 1;
        for (chunk_index, chunk) in tokens.chunks(self.n_batch).enumerate() {
            batch.clear();
            for (i, token) in chunk.iter().enumerate() {
                let pos = chunk_index * self.n_batch + i;
                batch
                    .add(*token, pos as i32, &[0], pos == last)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
            }
            let t = Instant::now();
            ctx.decode(batch).map_err(|e| EngineError::Internal(format!("prompt decode: {e}")))?;
            engine_time += t.elapsed();
            if cancelled() {
                return Err(EngineError::Unavailable("cancelled".into()));
            }
        }

        let mut out_tokens: Vec<i32> = Vec::with_capacity(n_predict);
        let mut text: Vec<u8> = Vec::new();
        let mut piece = Vec::with_capacity(32);
        let mut pos = tokens.len();
        let mut logits_index = batch.n_tokens() - 1;
        let mut finish = FinishReason::Length;
        while out_tokens.len() < n_predict {
            let t = Instant::now();
            let token = sampler.sample(ctx, logits_index);
            sampler.accept(token);
            engine_time += t.elapsed();
            if vocab.is_eog(token) {
                finish = FinishReason::Stop;
                break;
            }
            out_tokens.push(token.0);
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            let before = text.len();
            text.extend_from_slice(&piece);
            if let Some(cut) = find_stop(&text, before, &params.stop) {
                text.truncate(cut);
                finish = FinishReason::StopString;
                break;
            }
            if out_tokens.len() == n_predict {
                break;
            }
            if cancelled() {
                return Err(EngineError::Unavailable("cancelled".into()));
            }
            batch.clear();
            batch
                .add(token, pos as i32, &[0], true)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            pos += 1;
            logits_index = 0;
            let t = Instant::now();
            ctx.decode(batch).map_err(|e| EngineError::Internal(format!("decode: {e}")))?;
            engine_time += t.elapsed();
        }
        let compute_time = start.elapsed();
        Ok(Generation {
            text: String::from_utf8_lossy(&text).into_owned(),
            usage: Usage { input_tokens: tokens.len() as u32, output_tokens: out_tokens.len() as u32 },
            tokens: out_tokens,
            finish,
            fixed_cost: compute_time.saturating_sub(engine_time),
            compute_time,
        })
    }

    fn render_prompt(&self, prompt: &str, params: &GenerateParams) -> Result<String, EngineError> {
        if !params.chat {
            return Ok(prompt.to_string());
        }
        let template = self.template.ok_or_else(|| {
            EngineError::InvalidRequest("this model has no chat template in its GGUF; send a raw prompt with \"chat\": false".into())
        })?;
        let message = LlamaChatMessage::new("user".into(), prompt.into())
            .map_err(|e| EngineError::InvalidRequest(format!("prompt: {e}")))?;
        self.model
            .apply_chat_template(template, &[message], true)
            .map_err(|e| EngineError::Internal(format!("chat template: {e}")))
    }
}

/// The sampler chain for `params`: greedy when `temp` is 0 (deterministic).
pub(crate) fn build_sampler(model: &LlamaModel, params: &GenerateParams) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(model.n_vocab(), 64, params.repeat_penalty, 0.0, 0.0));
    }
    if params.is_greedy() {
        chain.push(LlamaSampler::greedy());
    } else {
        chain.push(LlamaSampler::top_k(params.top_k as i32));
        chain.push(LlamaSampler::top_p(params.top_p, 1));
        chain.push(LlamaSampler::temp(params.temp));
        chain.push(LlamaSampler::dist(params.seed));
    }
    if chain.len() == 1 {
        chain.pop().expect("one sampler")
    } else {
        LlamaSampler::chain_simple(chain)
    }
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
    fn stop_strings_are_found_across_token_boundaries() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop(b"abc\n", 3, &stops), None);
        assert_eq!(find_stop(b"abc\n\nxyz", 4, &stops), Some(3));
        assert_eq!(find_stop(b"xxEN", 2, &stops), None);
        assert_eq!(find_stop(b"xxENDyy", 4, &stops), Some(2));
        assert_eq!(find_stop(b"ENDxx", 4, &stops), None, "a stop wholly before new text was already seen");
    }
}
