//! Reference generation straight through llama-cpp-2, with none of the engine's
//! machinery (no cache, no worker, a fresh context): the anchor that tests compare
//! the engine against token for token, and that benchmarks measure "native"
//! llama.cpp speed with.

use crate::backend::init_backend;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

/// The outcome of [`greedy`].
#[derive(Debug, Clone)]
pub struct NativeRun {
    /// Generated token ids (end-of-generation excluded).
    pub tokens: Vec<i32>,
    /// Their text.
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Time spent decoding the prompt.
    pub prompt_time: Duration,
    /// Time spent generating (sampling + decoding each new token).
    pub gen_time: Duration,
}

/// A model loaded for reference runs.
pub struct NativeModel {
    model: LlamaModel,
}

impl NativeModel {
    /// Loads a GGUF on the CPU (or all layers on a GPU when `gpu_layers` says so).
    pub fn load(path: &Path, gpu_layers: u32) -> Result<Self, String> {
        let backend = init_backend().map_err(|e| e.to_string())?;
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| e.to_string())?;
        Ok(Self { model })
    }

    /// Greedy generation of up to `n_predict` tokens from `prompt`, with a fresh
    /// context of `n_ctx` tokens and `threads` threads.
    pub fn greedy(&self, prompt: &str, n_predict: usize, n_ctx: u32, threads: i32) -> Result<NativeRun, String> {
        let backend = init_backend().map_err(|e| e.to_string())?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(512)
            .with_n_ubatch(512)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let mut ctx = self.model.new_context(backend, params).map_err(|e| e.to_string())?;
        let vocab = self.model.vocab();
        let tokens = vocab.tokenize(prompt.as_bytes(), true, true);
        let mut batch = LlamaBatch::new(512, 1);
        let last = tokens.len() - 1;
        for (i, t) in tokens.iter().enumerate() {
            batch.add(*t, i as i32, &[0], i == last).map_err(|e| e.to_string())?;
        }
        let t0 = Instant::now();
        ctx.decode(&mut batch).map_err(|e| e.to_string())?;
        let prompt_time = t0.elapsed();
        let mut sampler = LlamaSampler::greedy();
        let mut out = Vec::new();
        let mut text = Vec::new();
        let mut pos = tokens.len() as i32;
        let t1 = Instant::now();
        let mut idx = batch.n_tokens() - 1;
        while out.len() < n_predict {
            let token = sampler.sample(&ctx, idx); // samples and accepts
            if vocab.is_eog(token) {
                break;
            }
            out.push(token.0);
            vocab.token_to_piece_into(token, &mut text, false, None);
            if out.len() == n_predict {
                break;
            }
            batch.clear();
            batch.add(token, pos, &[0], true).map_err(|e| e.to_string())?;
            pos += 1;
            idx = 0;
            ctx.decode(&mut batch).map_err(|e| e.to_string())?;
        }
        Ok(NativeRun {
            tokens: out,
            text: String::from_utf8_lossy(&text).into_owned(),
            prompt_tokens: tokens.len(),
            prompt_time,
            gen_time: t1.elapsed(),
        })
    }
}
