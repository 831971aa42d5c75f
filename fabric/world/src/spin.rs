//! Spin's LLM interface, `fermyon:spin/llm@2.0.0`, on the node's [`InferenceEngine`].
//!
//! Components written with the `spin-sdk` crate's `llm` module run unchanged: `infer`
//! and `generate-embeddings` reach the same engine (and its continuous batching) as
//! `wasi:nn`. As in Spin, a component may use only the models its manifest lists in
//! `ai_models`; a model name may carry a LoRA adapter as `MODEL:ADAPTER`. When the
//! guest passes no parameters, Spin's defaults apply (100 tokens, repeat penalty 1.1
//! over 64 tokens, temperature 0.8, top-k 40, top-p 0.9).

use std::sync::Arc;
use wasmesh_api::ModelRef;
use wasmesh_engine::{EngineError, GenerateParams, GenerateRequest, InferenceEngine, Usage};
use wasmtime::component::{HasData, Linker};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmesh:guest/spin-guest",
        imports: { default: async | trappable },
    });
}

use generated::fermyon::spin::llm::{
    EmbeddingsResult, EmbeddingsUsage, Error, InferencingParams, InferencingResult, InferencingUsage,
};

/// The most texts one `generate-embeddings` call may embed.
pub const MAX_EMBEDDING_TEXTS: usize = 1024;

/// Spin's defaults for `infer` without parameters.
pub fn spin_default_params() -> InferencingParams {
    InferencingParams {
        max_tokens: 100,
        repeat_penalty: 1.1,
        repeat_penalty_last_n_token_count: 64,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.9,
    }
}

/// Per-store state of the Spin LLM interface: the engine and the component's
/// `ai_models` grant.
pub struct LlmCtx {
    engine: Arc<dyn InferenceEngine>,
    component: Arc<str>,
    granted: Arc<[String]>,
    /// Token counts of the calls this store made (for logs and billing).
    pub usage: Usage,
    /// The models it used, in order of first use (its receipt).
    pub models: Vec<String>,
    /// Texts it embedded.
    pub embeddings: u64,
    /// Why its last generation ended.
    pub finish: Option<wasmesh_engine::FinishReason>,
    /// What its generations asked for and produced (its receipt's commitment).
    pub commitment: crate::commit::Commitment,
    /// Its generations' seeds and token ids, and an audit replay's claims to check.
    pub replay: crate::commit::Replay,
}

impl LlmCtx {
    /// State for one instance of `component`, allowed the models in `granted` (`ai_models`).
    pub fn new(engine: Arc<dyn InferenceEngine>, component: Arc<str>, granted: Arc<[String]>) -> Self {
        Self {
            engine,
            component,
            granted,
            usage: Usage::default(),
            models: Vec::new(),
            embeddings: 0,
            finish: None,
            commitment: Default::default(),
            replay: Default::default(),
        }
    }

    /// Seeds its sampled generations that name none from the router's request `seed`
    /// (0: none).
    pub fn set_seed(&mut self, seed: u64) {
        self.replay.set_seed(seed, "llm");
    }

    /// Refuses a model the manifest does not grant, with the key to add (Spin answers
    /// `invalid-input` here too), and a model this node does not have.
    fn check(&self, model: &str) -> Result<ModelRef, Error> {
        if !self.granted.iter().any(|m| m == model) {
            let component = &self.component;
            return Err(Error::InvalidInput(format!(
                "component '{component}' may not use model '{model}': add \"{model}\" to `ai_models` in [component.{component}] of wasmesh.toml"
            )));
        }
        let model_ref = ModelRef::parse(model).map_err(|e| Error::InvalidInput(e.to_string()))?;
        if !self.engine.has_model(model_ref.model()) {
            return Err(engine_error(EngineError::ModelNotFound {
                name: model_ref.model().to_string(),
                available: self.engine.models(),
            }));
        }
        Ok(model_ref)
    }
}

/// Gives the linker access to [`LlmCtx`].
pub trait SpinLlmView: Send {
    /// Borrows the state from the store's data.
    fn llm(&mut self) -> &mut LlmCtx;
}

struct HasLlm;
impl HasData for HasLlm {
    type Data<'a> = &'a mut LlmCtx;
}

/// Adds `fermyon:spin/llm@2.0.0` to `linker`.
pub fn add_to_linker<T: SpinLlmView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    generated::fermyon::spin::llm::add_to_linker::<T, HasLlm>(linker, T::llm)
}

/// The engine's parameters for Spin's `inferencing-params`; out-of-range values are
/// `invalid-input` naming the field.
pub fn generate_params(params: &InferencingParams) -> Result<GenerateParams, Error> {
    let params = GenerateParams {
        n_predict: params.max_tokens,
        temp: params.temperature,
        top_k: params.top_k,
        top_p: params.top_p,
        repeat_penalty: params.repeat_penalty,
        repeat_last_n: params.repeat_penalty_last_n_token_count,
        ..GenerateParams::default()
    };
    params.validate().map_err(|e| {
        let message = e.to_string();
        // Name Spin's fields, not the engine's.
        let message = message
            .replace("n-predict", "max-tokens")
            .replace("repeat-last-n", "repeat-penalty-last-n-token-count")
            .replace("temp ", "temperature ");
        Error::InvalidInput(message)
    })?;
    Ok(params)
}

fn engine_error(error: EngineError) -> Error {
    match error {
        EngineError::ModelNotFound { .. } | EngineError::InvalidRequest(_) => Error::InvalidInput(error.to_string()),
        other => Error::RuntimeError(other.to_string()),
    }
}

impl generated::fermyon::spin::llm::Host for &mut LlmCtx {
    async fn infer(
        &mut self,
        model: String,
        prompt: String,
        params: Option<InferencingParams>,
    ) -> wasmtime::Result<Result<InferencingResult, Error>> {
        let model_ref = match self.check(&model) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut params = match generate_params(&params.unwrap_or_else(spin_default_params)) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        params.lora = model_ref.adapter().map(str::to_string);
        let engine = self.engine.clone();
        let mut request = GenerateRequest::new(model_ref.model(), prompt, params);
        let at = self.replay.start(&mut request);
        let asked = crate::commit::request_digest(&request);
        let generation = match engine.generate(request).await {
            Ok(g) => g,
            Err(e) => return Ok(Err(engine_error(e))),
        };
        self.replay.done(at, &generation);
        self.usage += generation.usage;
        self.finish = Some(generation.finish);
        self.commitment.add(&asked, &generation);
        crate::note_model(&mut self.models, model_ref.as_str().to_string());
        tracing::debug!(
            component = %self.component,
            input_tokens = generation.usage.input_tokens,
            output_tokens = generation.usage.output_tokens,
            "spin llm infer done"
        );
        Ok(Ok(InferencingResult {
            text: generation.text,
            usage: InferencingUsage {
                prompt_token_count: generation.usage.input_tokens,
                generated_token_count: generation.usage.output_tokens,
            },
        }))
    }

    async fn generate_embeddings(
        &mut self,
        model: String,
        text: Vec<String>,
    ) -> wasmtime::Result<Result<EmbeddingsResult, Error>> {
        let model_ref = match self.check(&model) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if model_ref.is_adapter() {
            return Ok(Err(Error::InvalidInput(format!(
                "'{model}' names a LoRA adapter; embeddings come from a base model: use its name alone"
            ))));
        }
        if text.len() > MAX_EMBEDDING_TEXTS {
            return Ok(Err(Error::InvalidInput(format!(
                "generate-embeddings takes at most {MAX_EMBEDDING_TEXTS} texts per call, got {}",
                text.len()
            ))));
        }
        let engine = self.engine.clone();
        let mut embeddings = Vec::with_capacity(text.len());
        let mut tokens = 0u32;
        for input in &text {
            match engine.embed(&model, input).await {
                Ok(e) => {
                    tokens = tokens.saturating_add(e.input_tokens);
                    embeddings.push(e.vector);
                }
                Err(e) => return Ok(Err(engine_error(e))),
            }
        }
        self.usage.input_tokens += tokens;
        self.embeddings += text.len() as u64;
        crate::note_model(&mut self.models, model_ref.as_str().to_string());
        Ok(Ok(EmbeddingsResult { embeddings, usage: EmbeddingsUsage { prompt_token_count: tokens } }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_defaults_map_onto_the_engine() {
        let p = generate_params(&spin_default_params()).unwrap();
        assert_eq!(p.n_predict, 100);
        assert_eq!(p.repeat_last_n, 64);
        assert!((p.repeat_penalty - 1.1).abs() < 1e-6);
        assert!(!p.is_greedy());
    }

    #[test]
    fn out_of_range_params_name_spin_fields() {
        let bad = InferencingParams { max_tokens: 0, ..spin_default_params() };
        match generate_params(&bad) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("max-tokens"), "{m}"),
            other => panic!("expected invalid-input, got {other:?}"),
        }
        let bad = InferencingParams { top_p: 0.0, ..spin_default_params() };
        assert!(matches!(generate_params(&bad), Err(Error::InvalidInput(m)) if m.contains("top-p")));
    }
}
