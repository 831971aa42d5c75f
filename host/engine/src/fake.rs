//! A deterministic engine for tests of the host's own logic (routing, grants,
//! limits, error mapping). It never runs a model: the "generated" text is the
//! prompt's words reversed, one word per token, up to `n-predict` tokens.

use crate::{BoxFuture, EngineError, FinishReason, GenerateRequest, Generation, InferenceEngine, Usage};
use std::time::Duration;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct FakeEngine {
    models: Vec<String>,
    delay: Duration,
}

impl FakeEngine {
    /// An engine that serves `models`.
    pub fn new(models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { models: models.into_iter().map(Into::into).collect(), delay: Duration::ZERO }
    }

    /// Makes every generation take `delay` (to test deadlines and cancellation).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl InferenceEngine for FakeEngine {
    fn models(&self) -> Vec<String> {
        self.models.clone()
    }

    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, EngineError>> {
        Box::pin(async move {
            if !self.has_model(&request.model) {
                return Err(EngineError::ModelNotFound { name: request.model, available: self.models.clone() });
            }
            request.params.validate()?;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let words: Vec<&str> = request.prompt.split_whitespace().rev().collect();
            let n = words.len().min(request.params.n_predict as usize);
            if let Some(sink) = &request.stream {
                for (i, w) in words[..n].iter().enumerate() {
                    let _ = sink.send(if i == 0 { w.to_string() } else { format!(" {w}") });
                }
            }
            let finish = if n < words.len() { FinishReason::Length } else { FinishReason::Stop };
            Ok(Generation {
                text: words[..n].join(" "),
                tokens: (0..n as i32).collect(),
                usage: Usage { input_tokens: words.len() as u32, output_tokens: n as u32 },
                finish,
                fixed_cost: Duration::ZERO,
                compute_time: self.delay,
                score: None,
            })
        })
    }

    fn embed<'a>(&'a self, model: &'a str, input: &'a str) -> BoxFuture<'a, Result<crate::Embedding, EngineError>> {
        Box::pin(async move {
            if !self.has_model(model) {
                return Err(EngineError::ModelNotFound { name: model.to_string(), available: self.models.clone() });
            }
            // Letter counts, normalised: same text, same vector.
            let mut v = vec![0f32; 26];
            for c in input.bytes().filter(u8::is_ascii_alphabetic) {
                v[(c.to_ascii_lowercase() - b'a') as usize] += 1.0;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            Ok(crate::Embedding {
                vector: v.into_iter().map(|x| x / norm).collect(),
                input_tokens: input.split_whitespace().count() as u32,
            })
        })
    }

    fn preload<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        Box::pin(async move {
            if self.has_model(model) {
                Ok(())
            } else {
                Err(EngineError::ModelNotFound { name: model.to_string(), available: self.models.clone() })
            }
        })
    }

    fn summary(&self) -> String {
        format!("fake engine ({} models)", self.models.len())
    }
}
