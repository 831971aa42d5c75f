//! `spin-llm`: a component written for Spin, with nothing wasmesh-specific in it.
//!
//! Built with the `spin-sdk` crate (7.x): a WASIp3 component that exports
//! `wasi:http/handler@0.3.0` and imports Spin's `fermyon:spin/llm@2.0.0`. The same
//! file runs under `spin up` with a `spin.toml` granting `ai_models`; under wasmesh,
//! `ai_models` in `wasmesh.toml` grants the models.
//!
//! `POST /infer` with `{"prompt": "...", "model": "smollm2", "max_tokens": 100,
//! "temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1,
//! "repeat_penalty_last_n_token_count": 64}` (only `prompt` is required; with no
//! sampling field set, the host's defaults apply) answers
//! `{"text": "...", "usage": {"prompt_token_count": N, "generated_token_count": N}}`.
//!
//! `POST /embed` with `{"input": ["...", ...], "model": "smollm2"}` answers
//! `{"embeddings": [[...], ...], "usage": {"prompt_token_count": N}}`.
//!
//! LLM errors map to 400 (`invalid-input`), 404 (`model-not-supported`) or 500
//! (`runtime-error`), with `{"error": message}`.

use serde::Deserialize;
use serde_json::{Value, json};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Json, Method, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::llm::{self, EmbeddingModel, InferencingModel, InferencingParams};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Infer {
    prompt: String,
    #[serde(default = "default_model")]
    model: String,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_penalty_last_n_token_count: Option<u32>,
}

impl Infer {
    /// `None` when no sampling field is set: the host's defaults apply.
    fn params(&self) -> Option<InferencingParams> {
        let any = self.max_tokens.is_some()
            || self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.repeat_penalty.is_some()
            || self.repeat_penalty_last_n_token_count.is_some();
        any.then(|| {
            let d = InferencingParams::default();
            InferencingParams {
                max_tokens: self.max_tokens.unwrap_or(d.max_tokens),
                temperature: self.temperature.unwrap_or(d.temperature),
                top_k: self.top_k.unwrap_or(d.top_k),
                top_p: self.top_p.unwrap_or(d.top_p),
                repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
                repeat_penalty_last_n_token_count: self
                    .repeat_penalty_last_n_token_count
                    .unwrap_or(d.repeat_penalty_last_n_token_count),
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Embed {
    input: Vec<String>,
    #[serde(default = "default_model")]
    model: String,
}

fn default_model() -> String {
    "smollm2".to_string()
}

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, Json(json!({ "error": message.into() })))
}

fn llm_error(e: llm::Error) -> Reply {
    match e {
        llm::Error::ModelNotSupported => error(StatusCode::NOT_FOUND, "model not supported"),
        llm::Error::InvalidInput(m) => error(StatusCode::BAD_REQUEST, m),
        llm::Error::RuntimeError(m) => error(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    if *req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "POST a JSON body to /infer or /embed");
    }
    let embed = req.uri().path().ends_with("/embed");
    let body = match req.into_body().bytes().await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e:?}")),
    };
    if embed {
        let ask: Embed = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        };
        return match llm::generate_embeddings(EmbeddingModel::Other(&ask.model), &ask.input) {
            Ok(r) => (
                StatusCode::OK,
                Json(
                    json!({ "embeddings": r.embeddings, "usage": { "prompt_token_count": r.usage.prompt_token_count } }),
                ),
            ),
            Err(e) => llm_error(e),
        };
    }
    let ask: Infer = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let model = InferencingModel::Other(&ask.model);
    let result = match ask.params() {
        Some(params) => llm::infer_with_options(model, &ask.prompt, params),
        None => llm::infer(model, &ask.prompt),
    };
    match result {
        Ok(r) => (
            StatusCode::OK,
            Json(json!({
                "text": r.text,
                "usage": {
                    "prompt_token_count": r.usage.prompt_token_count,
                    "generated_token_count": r.usage.generated_token_count,
                },
            })),
        ),
        Err(e) => llm_error(e),
    }
}
