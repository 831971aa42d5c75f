//! The seam between the wasmesh host and whatever runs models.
//!
//! The host links `wasi:nn` to an [`InferenceEngine`]; the binary chooses the
//! implementation (llama.cpp in `wasmesh-llama`, or [`fake::FakeEngine`] in
//! tests of the host's own logic). The types here are what a guest's options JSON
//! ([`GenerateParams`]) and the engine's answer ([`Generation`]) look like.
//!
//! Cancellation is by drop: an engine must stop work for a request whose future
//! was dropped (the guest was stopped at its deadline, or the caller went away).

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

pub mod fake;

/// A boxed future, so that [`InferenceEngine`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs inference for the host. Implementations own their models and threads;
/// every method is cheap to call from async code (heavy work runs elsewhere).
pub trait InferenceEngine: Send + Sync + 'static {
    /// The model names this engine can serve (loaded or not).
    fn models(&self) -> Vec<String>;

    /// Whether `model` names a model this engine can serve.
    fn has_model(&self, model: &str) -> bool {
        self.models().iter().any(|m| m == model)
    }

    /// Generates text for `request`. Dropping the future cancels the generation.
    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<Generation, EngineError>>;

    /// A pooled, L2-normalised embedding of `input` (mean over its tokens).
    fn embed<'a>(&'a self, model: &'a str, input: &'a str) -> BoxFuture<'a, Result<Embedding, EngineError>>;

    /// The models loaded in memory now (the rest of [`Self::models`] are on disk).
    fn loaded_models(&self) -> Vec<String> {
        Vec::new()
    }

    /// Bytes of model memory held by loaded models.
    fn memory_used(&self) -> u64 {
        0
    }

    /// The LoRA adapters this engine can apply, as `MODEL:ADAPTER`.
    fn adapters(&self) -> Vec<String> {
        Vec::new()
    }

    /// Loads `model` ahead of demand (a no-op when it is already loaded).
    fn preload<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Attaches adapter `adapter` of `model` ahead of demand (loading `model` first).
    fn preload_adapter<'a>(&'a self, model: &'a str, adapter: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        let _ = adapter;
        self.preload(model)
    }

    /// Adds model `name`, whose GGUF is `path`, to what the engine can serve, while it
    /// runs. It loads on first use. Adding a name again with the same file is a no-op.
    fn add_model(&self, name: &str, path: std::path::PathBuf) -> Result<(), EngineError> {
        let _ = path;
        Err(EngineError::Unavailable(format!("this engine serves a fixed set of models; cannot add '{name}'")))
    }

    /// Adds LoRA adapter `name` of model `base`, whose GGUF is `path`. It attaches to a
    /// warm base on first use, without reloading the base.
    fn add_adapter(&self, base: &str, name: &str, path: std::path::PathBuf) -> Result<(), EngineError> {
        let _ = path;
        Err(EngineError::Unavailable(format!(
            "this engine serves a fixed set of adapters; cannot add '{name}' of '{base}'"
        )))
    }

    /// Pins `model` (never evicted from memory while pinned) or unpins it.
    fn set_pinned(&self, model: &str, pinned: bool) {
        let _ = (model, pinned);
    }

    /// Every model and adapter (`MODEL:ADAPTER`) the engine knows, and where each stands.
    fn catalog(&self) -> Vec<CatalogEntry> {
        let loaded: std::collections::BTreeSet<String> = self.loaded_models().into_iter().collect();
        let residency = |warm: bool| if warm { Residency::Warm } else { Residency::OnDisk };
        let mut out: Vec<CatalogEntry> = self
            .models()
            .into_iter()
            .map(|name| CatalogEntry { residency: residency(loaded.contains(&name)), name, pinned: false })
            .collect();
        out.extend(self.adapters().into_iter().map(|name| {
            let base_warm = name.split_once(':').is_some_and(|(base, _)| loaded.contains(base));
            CatalogEntry { residency: residency(base_warm), name, pinned: false }
        }));
        out
    }

    /// Model loads started since the engine started (each cold start of a model).
    fn loads(&self) -> u64 {
        0
    }

    /// Bytes of model memory held by loaded models that no request is using and that
    /// are not pinned: what evicting idle models would free at once.
    fn memory_idle(&self) -> u64 {
        0
    }

    /// Live counters of each loaded model, for `/metrics`.
    fn counters(&self) -> Vec<ModelCounters> {
        Vec::new()
    }

    /// The memory for loaded models, in bytes, when the engine keeps a budget.
    fn memory_budget(&self) -> Option<u64> {
        None
    }

    /// Changes the memory budget while the engine runs. A smaller budget evicts idle,
    /// unpinned models (least recently used first) until what stays fits; models in use
    /// stay until their requests end, and loads wait for room as usual. Returns the
    /// models evicted.
    ///
    /// # Errors
    /// [`EngineError::InvalidRequest`] when the engine keeps no budget.
    fn set_memory_budget(&self, bytes: u64) -> Result<Vec<String>, EngineError> {
        let _ = bytes;
        Err(EngineError::InvalidRequest(format!("the {} engine has no model memory budget to change", self.summary())))
    }

    /// The engine's build: what must match for two nodes to give a request the same
    /// tokens (receipts carry it; auditors replay on the same build).
    fn build_id(&self) -> String {
        format!("wasmesh-engine {}", env!("CARGO_PKG_VERSION"))
    }

    /// One line describing the engine, for logs and `/health`.
    fn summary(&self) -> String;
}

/// Live counters of one loaded model (they start again at zero when it is reloaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCounters {
    /// The model.
    pub model: String,
    /// Requests generating now.
    pub active: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
    /// Requests answered.
    pub completed: u64,
    /// Prompt tokens of the requests answered.
    pub prompt_tokens: u64,
    /// Tokens generated for them.
    pub generated_tokens: u64,
    /// Decode steps run.
    pub steps: u64,
    /// Tokens decoded over all steps (`/ steps`: the mean batch).
    pub batched_tokens: u64,
}

/// Where a model or adapter stands in an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Residency {
    /// In memory (an adapter: attached to its warm base): requests run at once.
    Warm,
    /// Being loaded (an adapter: its base is).
    Loading,
    /// On local disk only: a load away.
    OnDisk,
    /// Being fetched to the node (`done` of `total` bytes); a load follows.
    Fetching {
        /// Bytes fetched so far.
        done: u64,
        /// Bytes in all (0 until known).
        total: u64,
    },
}

/// One model, or one adapter named `MODEL:ADAPTER`, in an engine's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The model's name, or `MODEL:ADAPTER`.
    pub name: String,
    /// Where it stands.
    pub residency: Residency,
    /// Whether it is pinned in memory.
    pub pinned: bool,
}

/// Where a streaming generation sends its text, piece by piece: whole UTF-8
/// characters, never any part of a stop string. Unbounded, but a generation sends
/// at most `n-predict` pieces.
pub type TokenSink = tokio::sync::mpsc::UnboundedSender<String>;

/// One generation.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// The model's name, as the engine knows it.
    pub model: String,
    /// The prompt, fed to the model as is unless `params.chat` is set.
    pub prompt: String,
    /// Sampling and length options.
    pub params: GenerateParams,
    /// When set, text is also sent here as it is produced; the returned
    /// [`Generation`] still holds all of it.
    pub stream: Option<TokenSink>,
    /// Whose request it is (the app): engines share their slots fairly between
    /// tenants, so one app's flood does not starve another's requests.
    pub tenant: std::sync::Arc<str>,
    /// Tokens another node claims this generation produced (an audit's replay): the
    /// engine checks them in one pass over the prompt and the claim (teacher-forced)
    /// instead of generating them one step at a time, and generates on from the first
    /// token the model would not have picked. The result is what generating gives,
    /// whatever the claim; a true claim only makes it cheaper. Engines that cannot
    /// check generate as usual.
    pub forced: Option<std::sync::Arc<[i32]>>,
    /// With `forced`: take every claimed token as it is and score how likely each was
    /// under the model ([`Generation::score`]) rather than check it. For an auditor of
    /// another engine build or CPU class, whose rounding differs from the node's, so a
    /// pick that differs by a hair proves nothing. Engines that cannot score generate
    /// as usual (and return no score).
    pub score: bool,
}

impl GenerateRequest {
    /// A non-streaming request.
    pub fn new(model: impl Into<String>, prompt: impl Into<String>, params: GenerateParams) -> Self {
        Self {
            model: model.into(),
            prompt: prompt.into(),
            params,
            stream: None,
            tenant: std::sync::Arc::from(""),
            forced: None,
            score: false,
        }
    }

    /// The same request, checking `tokens` another node claims it produced rather
    /// than generating them (see [`GenerateRequest::forced`]).
    pub fn checking(mut self, tokens: std::sync::Arc<[i32]>) -> Self {
        self.forced = Some(tokens);
        self
    }

    /// The same request, scoring `tokens` another node claims it produced (see
    /// [`GenerateRequest::score`]).
    pub fn scoring(mut self, tokens: std::sync::Arc<[i32]>) -> Self {
        self.forced = Some(tokens);
        self.score = true;
        self
    }

    /// The same request, made for `tenant`.
    pub fn for_tenant(mut self, tenant: std::sync::Arc<str>) -> Self {
        self.tenant = tenant;
        self
    }
}

/// Options for one generation, in the JSON shape guests pass as the `options`
/// tensor. Key names follow WasmEdge's GGML backend where one exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct GenerateParams {
    /// Maximum tokens to generate.
    pub n_predict: u32,
    /// Temperature; 0 is greedy decoding.
    pub temp: f32,
    /// Top-k sampling (ignored when greedy).
    pub top_k: u32,
    /// Nucleus sampling (ignored when greedy).
    pub top_p: f32,
    /// Repetition penalty; 1.0 is off.
    pub repeat_penalty: f32,
    /// How many of the last tokens the repetition penalty looks at (default 64).
    pub repeat_last_n: u32,
    /// Sampling seed.
    pub seed: u32,
    /// Stop when the text ends with any of these (not returned).
    pub stop: Vec<String>,
    /// Wrap the prompt as one user turn with the model's chat template.
    pub chat: bool,
    /// Compute an embedding of the prompt instead of generating (outputs
    /// `embedding` and `usage`).
    pub embedding: bool,
    /// Include the generated token ids in the `usage` output (for exact
    /// comparisons and audits by re-execution).
    pub return_tokens: bool,
    /// A LoRA adapter of the model to apply, by name.
    pub lora: Option<String>,
    /// The adapter's scale (1.0 as trained; 0 is the base model).
    pub lora_scale: f32,
    /// A whole conversation to render with the model's chat template (the prompt
    /// tensor is then ignored); OpenAI's `messages`.
    pub messages: Vec<ChatMessage>,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            n_predict: 128,
            temp: 0.0,
            top_k: 40,
            top_p: 0.95,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: u32::MAX,
            stop: Vec::new(),
            chat: false,
            embedding: false,
            return_tokens: false,
            lora: None,
            lora_scale: 1.0,
            messages: Vec::new(),
        }
    }
}

impl GenerateParams {
    /// The most tokens one request may ask for.
    pub const MAX_PREDICT: u32 = 32_768;

    /// Parses the guest's options JSON, refusing unknown keys and out-of-range values
    /// with a message that names the key.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EngineError> {
        let params: Self =
            serde_json::from_slice(bytes).map_err(|e| EngineError::InvalidRequest(format!("options JSON: {e}")))?;
        params.validate()?;
        Ok(params)
    }

    /// Checks each value's range.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::InvalidRequest(m));
        if self.n_predict == 0 || self.n_predict > Self::MAX_PREDICT {
            return bad(format!("n-predict must be 1..={}, got {}", Self::MAX_PREDICT, self.n_predict));
        }
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return bad(format!("temp must be a number >= 0, got {}", self.temp));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("repeat-penalty must be > 0, got {}", self.repeat_penalty));
        }
        if self.repeat_last_n > Self::MAX_PREDICT {
            return bad(format!("repeat-last-n must be 0..={}, got {}", Self::MAX_PREDICT, self.repeat_last_n));
        }
        if !(self.lora_scale.is_finite() && (-8.0..=8.0).contains(&self.lora_scale)) {
            return bad(format!("lora-scale must be in [-8, 8], got {}", self.lora_scale));
        }
        if self.stop.len() > 16 || self.stop.iter().any(|s| s.is_empty() || s.len() > 256) {
            return bad("stop takes at most 16 non-empty strings of at most 256 bytes".into());
        }
        if self.messages.len() > 1024 {
            return bad("messages takes at most 1024 turns".into());
        }
        if let Some(m) = self.messages.iter().find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant")) {
            return bad(format!("message role must be system, user or assistant, got '{}'", m.role));
        }
        Ok(())
    }

    /// Whether decoding is greedy (and so deterministic).
    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
    }
}

/// Token counts for one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Generated tokens.
    pub output_tokens: u32,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    Stop,
    /// `n-predict` tokens were generated.
    Length,
    /// A stop string was produced.
    StopString,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated token ids, in order (for exact comparisons in tests and audits).
    pub tokens: Vec<i32>,
    /// Token counts.
    pub usage: Usage,
    /// Why generation ended.
    pub finish: FinishReason,
    /// Time spent on work other than prompt processing and generation
    /// (queueing excluded): tokenizing, resetting state, building samplers.
    pub fixed_cost: std::time::Duration,
    /// Time from the request reaching the engine's worker until the last token.
    pub compute_time: std::time::Duration,
    /// A scored request's score of the claim ([`GenerateRequest::score`]).
    pub score: Option<wasmesh_api::wire::ClaimScore>,
}

/// An embedding vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector, L2-normalised (so a dot product is the cosine).
    pub vector: Vec<f32>,
    /// Tokens of the input.
    pub input_tokens: u32,
}

/// What went wrong in the engine. Messages are shown to guests and callers, so each
/// says what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No model by that name on this node.
    #[error("model '{name}' is not available on this node (available: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    ModelNotFound {
        /// The name asked for.
        name: String,
        /// The names this node has.
        available: Vec<String>,
    },
    /// The model file could not be loaded.
    #[error("model '{name}' failed to load: {reason}")]
    Load {
        /// The model.
        name: String,
        /// What llama.cpp (or the file) reported.
        reason: String,
    },
    /// The request itself is bad (options, prompt too long, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The engine is overloaded or shutting down; try again.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// A failure inside the engine.
    #[error("inference failed: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_use_wasmedge_key_names_and_defaults() {
        let p = GenerateParams::from_json(br#"{"n-predict": 16, "temp": 0.7, "top-k": 5, "stop": ["\n"]}"#).unwrap();
        assert_eq!(p.n_predict, 16);
        assert_eq!(p.top_k, 5);
        assert_eq!(p.stop, vec!["\n"]);
        assert_eq!(p.top_p, 0.95, "unset keys take defaults");
        assert!(GenerateParams::default().is_greedy());
    }

    #[test]
    fn unknown_option_keys_are_named() {
        let e = GenerateParams::from_json(br#"{"n_predict": 16}"#).unwrap_err().to_string();
        assert!(e.contains("n_predict"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [r#"{"n-predict": 0}"#, r#"{"temp": -1}"#, r#"{"top-p": 0}"#, r#"{"stop": [""]}"#] {
            assert!(GenerateParams::from_json(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }
}
