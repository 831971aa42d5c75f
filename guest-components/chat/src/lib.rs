//! `chat`: generate text with a model through `wasi:nn`.
//!
//! `POST` a JSON body:
//!
//! ```json
//! {"prompt": "Hello", "max_tokens": 128, "temperature": 0.0, "model": "smollm2", "chat": false, "return_tokens": false,
//!  "repeat_penalty": 1.0, "repeat_last_n": 64}
//! ```
//!
//! Only `prompt` is required. The answer is `200`
//! `{"text": "...", "usage": {"input_tokens": N, "output_tokens": N}}`.
//!
//! Errors: a bad body → 400 (413 over 1 MiB) `{"error": "..."}`; a `wasi:nn` error →
//! `{"error": data, "code": "not-found"}` with 404 (not-found), 403 (security),
//! 400 (invalid-argument) or 500 (anything else); a method other than POST → 405.

use serde::Deserialize;
use serde_json::json;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use wasmesh_guest_common::{
    EventStream, MAX_BODY_BYTES, error_json, generate, generate_stream, read_body, respond_json, respond_json_with,
};

const USAGE_HINT: &str = "use POST with a JSON body {\"prompt\": string, \"max_tokens\": int (default 128), \"temperature\": float (default 0.0), \"model\": string (default \"smollm2\"), \"chat\": bool (default false), \"return_tokens\": bool (default false), \"stream\": bool (default false: true answers with server-sent events), \"lora\": string (an adapter granted as \"MODEL:NAME\"), \"lora_scale\": float (default 1.0), \"repeat_penalty\": float (default 1.0: off), \"repeat_last_n\": int (default 64)}";

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    prompt: String,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    #[serde(default)]
    temperature: f32,
    #[serde(default = "default_model")]
    model: String,
    #[serde(default)]
    chat: bool,
    #[serde(default)]
    return_tokens: bool,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    lora: Option<String>,
    #[serde(default = "default_lora_scale")]
    lora_scale: f32,
    #[serde(default = "default_repeat_penalty")]
    repeat_penalty: f32,
    #[serde(default = "default_repeat_last_n")]
    repeat_last_n: u32,
}

fn default_repeat_penalty() -> f32 {
    1.0
}

fn default_repeat_last_n() -> u32 {
    64
}

fn default_lora_scale() -> f32 {
    1.0
}

fn default_max_tokens() -> u32 {
    128
}

fn default_model() -> String {
    "smollm2".to_string()
}

struct Chat;

impl Guest for Chat {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if !matches!(request.method(), Method::Post) {
            let body = json!({ "error": format!("method not allowed: {USAGE_HINT}") });
            respond_json_with(out, 405, &[("allow", "POST")], &body);
            return;
        }

        let body = match read_body(&request, MAX_BODY_BYTES) {
            Ok(body) => body,
            Err(e) => return respond_json(out, e.status(), &error_json(e.to_string())),
        };
        let req: ChatRequest = match serde_json::from_slice(&body) {
            Ok(req) => req,
            Err(e) => {
                let message = format!("invalid request body: {e}; {USAGE_HINT}");
                return respond_json(out, 400, &error_json(message));
            }
        };
        if !req.temperature.is_finite() || req.temperature < 0.0 {
            return respond_json(out, 400, &error_json("`temperature` must be a number >= 0"));
        }

        let options = json!({
            "n-predict": req.max_tokens,
            "temp": req.temperature,
            "chat": req.chat,
            "return-tokens": req.return_tokens,
            "lora": req.lora,
            "lora-scale": req.lora_scale,
            "repeat-penalty": req.repeat_penalty,
            "repeat-last-n": req.repeat_last_n,
        })
        .to_string();
        if req.stream {
            return stream(out, &req.model, &req.prompt, &options);
        }
        match generate(&req.model, &req.prompt, Some(&options)) {
            Ok((text, usage)) => respond_json(out, 200, &json!({ "text": text, "usage": usage })),
            Err(e) => respond_json(out, e.http_status(), &e.to_json()),
        }
    }
}

/// Answers as server-sent events: `data: {"text": piece}` for each piece as the model
/// produces it, then `event: done` with `{"usage": ...}` (or `event: error`).
fn stream(out: ResponseOutparam, model: &str, prompt: &str, options: &str) {
    let text = match generate_stream(model, prompt, Some(options)) {
        Ok(s) => s,
        Err(e) => return respond_json(out, e.http_status(), &e.to_json()),
    };
    let events = EventStream::start(out);
    loop {
        match text.next() {
            Ok(Some(piece)) => {
                if !events.send(None, &json!({ "text": piece }).to_string()) {
                    return; // the caller went away; dropping `text` cancels the generation
                }
            }
            Ok(None) => {
                events.send(Some("done"), &json!({ "usage": text.usage() }).to_string());
                break;
            }
            Err(e) => {
                events.send(Some("error"), &e.to_json().to_string());
                break;
            }
        }
    }
    events.finish();
}

wasi::http::proxy::export!(Chat);
