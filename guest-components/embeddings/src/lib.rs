//! `embeddings`: pooled embedding vectors through `wasi:nn`, in the shape of
//! OpenAI's embeddings API.
//!
//! `POST {"input": "text" | ["text", ...], "model": "smollm2"}` answers
//! `{"object": "list", "model": ..., "data": [{"object": "embedding", "index": 0, "embedding": [...]}],
//! "usage": {"prompt_tokens": N, "total_tokens": N}}`. Vectors are L2-normalised.

use serde::Deserialize;
use serde_json::json;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use wasmesh_guest_common::{
    EmbeddingInput, MAX_BODY_BYTES, embeddings_response, error_json, read_body, respond_json, respond_json_with,
};

const USAGE_HINT: &str =
    "use POST with a JSON body {\"input\": string or [string] (at most 64), \"model\": string (default \"smollm2\")}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingsRequest {
    input: EmbeddingInput,
    #[serde(default = "default_model")]
    model: String,
}

fn default_model() -> String {
    "smollm2".to_string()
}

struct Embeddings;

impl Guest for Embeddings {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if !matches!(request.method(), Method::Post) {
            let body = json!({ "error": format!("method not allowed: {USAGE_HINT}") });
            return respond_json_with(out, 405, &[("allow", "POST")], &body);
        }
        let body = match read_body(&request, MAX_BODY_BYTES) {
            Ok(body) => body,
            Err(e) => return respond_json(out, e.status(), &error_json(e.to_string())),
        };
        let req: EmbeddingsRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return respond_json(out, 400, &error_json(format!("invalid request body: {e}; {USAGE_HINT}"))),
        };
        let inputs = req.input.into_vec();
        if inputs.is_empty() || inputs.len() > 64 {
            return respond_json(out, 400, &error_json(format!("`input` must hold 1 to 64 strings; {USAGE_HINT}")));
        }
        match embeddings_response(&req.model, &inputs) {
            Ok(body) => respond_json(out, 200, &body),
            Err(e) => respond_json(out, e.http_status(), &e.to_json()),
        }
    }
}

wasi::http::proxy::export!(Embeddings);
