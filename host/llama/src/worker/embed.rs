//! Embeddings: mean-pooled on a second context of the model, made on first use.

use super::load::CONTEXT_CREATION;
use super::scheduler::Scheduler;
use crate::backend::init_backend;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_batch::LlamaBatch;
use std::num::NonZeroU32;
use wasmesh_engine::{Embedding, EngineError};

impl<'m> Scheduler<'m> {
    /// A mean-pooled, L2-normalised embedding, on a second context made for it on
    /// first use (embeddings need their own output buffers and pooling).
    pub(crate) fn embed(
        &self,
        embed_ctx: &mut Option<LlamaContext<'m>>,
        input: &str,
    ) -> Result<Embedding, EngineError> {
        // Measured before tokenizing: a huge input must not hold the worker.
        if input.len() > self.n_batch * super::scheduler::MAX_BYTES_PER_TOKEN {
            return Err(EngineError::InvalidRequest(format!(
                "the input is {} bytes; embeddings take at most {} tokens (the batch size)",
                input.len(),
                self.n_batch
            )));
        }
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
}
