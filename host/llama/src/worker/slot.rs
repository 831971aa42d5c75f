//! A request in a slot: its sequence's progress, its sampler, its text so far, and
//! the streaming of that text.

use super::lora::LoraKey;
use super::stop::held_back;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use wasmesh_engine::{EngineError, Generation};

/// A request in flight: its sequence in the shared context and its own sampler.
pub(crate) struct Active {
    pub(crate) reply: oneshot::Sender<Result<Generation, EngineError>>,
    /// Whose request it is (fair admission counts slots per tenant).
    pub(crate) tenant: std::sync::Arc<str>,
    pub(crate) stop: Vec<String>,
    /// Streaming: where pieces go, and how many bytes of `text` were sent.
    pub(crate) stream: Option<wasmesh_engine::TokenSink>,
    pub(crate) emitted: usize,
    /// The prompt, then the tokens a checked request claims (see `checks`).
    pub(crate) prompt: Vec<LlamaToken>,
    /// Tokens of the prompt itself (the rest of `prompt` is a claim).
    pub(crate) n_prompt: usize,
    /// A checked request (teacher-forced, `GenerateRequest::forced`): where this step's
    /// batch holds the logits of the last prompt token and of each claimed token fed,
    /// in order. Each predicts the next token, which is compared with the claim.
    pub(crate) checks: Vec<i32>,
    /// A scored request (`GenerateRequest::score`): every claimed token is taken as is
    /// and scored, with no pick of its own.
    pub(crate) scoring: Option<Box<super::score::Scoring>>,
    /// Prompt tokens already decoded.
    pub(crate) prefilled: usize,
    /// Token to feed next step (the last one sampled).
    pub(crate) pending: Option<LlamaToken>,
    /// Position of the next token fed.
    pub(crate) pos: usize,
    pub(crate) n_predict: usize,
    pub(crate) sampler: LlamaSampler,
    /// Plain greedy decoding: the token is the first largest logit, read in place
    /// (no candidate array of the whole vocabulary per token, as the sampler builds).
    pub(crate) greedy: bool,
    pub(crate) tokens: Vec<i32>,
    pub(crate) text: Vec<u8>,
    pub(crate) started: Instant,
    /// Time on this request's own bookkeeping (tokenizing, templates, samplers,
    /// detokenizing, stop strings): all but the shared decode steps and sampling.
    pub(crate) fixed: Duration,
    /// Where this sequence's logits are in the current batch.
    pub(crate) logits_at: Option<i32>,
    pub(crate) lora: LoraKey,
}

impl Active {
    /// Streams the text produced since the last call: whole UTF-8 characters, and
    /// (unless `last`) holding back a tail that could still become a stop string.
    pub(crate) fn emit(&mut self, last: bool) {
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
