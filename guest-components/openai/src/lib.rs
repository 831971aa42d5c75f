//! `openai`: the OpenAI-compatible API, as a component that runs on hosts like
//! any other (routers send `/v1/...` to it). It speaks to the model through
//! `wasi:nn` with wasmesh's conventions (see `wit/README.md`).
//!
//! * `POST /v1/chat/completions`: `messages` rendered with the model's own chat
//!   template (from its GGUF); `stream: true` answers with server-sent events
//!   (`chat.completion.chunk` objects, then `data: [DONE]`).
//! * `POST /v1/completions`: a raw prompt.
//! * `POST /v1/embeddings`: L2-normalised pooled vectors.
//!
//! Errors have OpenAI's shape: `{"error": {"message", "type", "code"}}`.

use serde::Deserialize;
use serde_json::{Value, json};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use wasmesh_guest_common::{
    EmbeddingInput, EventStream, MAX_BODY_BYTES, Usage, embeddings_response, generate, generate_stream, read_body,
    respond_json,
};

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The fields of chat and text completions this component honours; others that
/// OpenAI clients commonly send are accepted and ignored.
#[derive(Debug, Deserialize)]
struct Completion {
    model: String,
    #[serde(default)]
    messages: Option<Vec<Message>>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
}

/// `stream_options`: `include_usage` adds a last chunk with no choices and the usage.
#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
struct Embeddings {
    model: String,
    input: EmbeddingInput,
}

fn error(out: ResponseOutparam, status: u16, kind: &str, message: impl Into<String>) {
    respond_json(out, status, &json!({ "error": { "message": message.into(), "type": kind, "code": status } }));
}

fn nn_error(out: ResponseOutparam, e: &wasmesh_guest_common::NnError) {
    let kind = match e.http_status() {
        404 => "model_not_found",
        403 => "permission_error",
        400 => "invalid_request_error",
        _ => "server_error",
    };
    error(out, e.http_status(), kind, e.to_string());
}

fn now() -> u64 {
    wasi::clocks::wall_clock::now().seconds
}

fn id(prefix: &str) -> String {
    let t = wasi::clocks::wall_clock::now();
    format!("{prefix}-{:x}{:08x}", t.seconds, t.nanoseconds)
}

fn finish_reason(usage: &Usage) -> &str {
    match usage.finish_reason.as_deref() {
        Some("length") => "length",
        _ => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    })
}

struct OpenAi;

impl Guest for OpenAi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default().to_string();
        if !matches!(request.method(), Method::Post) {
            return error(out, 405, "invalid_request_error", format!("use POST for {path}"));
        }
        let body = match read_body(&request, MAX_BODY_BYTES) {
            Ok(b) => b,
            Err(e) => return error(out, e.status(), "invalid_request_error", e.to_string()),
        };
        match path.as_str() {
            "/v1/chat/completions" => completion(out, &body, true),
            "/v1/completions" => completion(out, &body, false),
            "/v1/embeddings" => embeddings(out, &body),
            other => error(
                out,
                404,
                "invalid_request_error",
                format!("no endpoint {other}: use /v1/chat/completions, /v1/completions or /v1/embeddings"),
            ),
        }
    }
}

fn completion(out: ResponseOutparam, body: &[u8], chat: bool) {
    let req: Completion = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(out, 400, "invalid_request_error", format!("invalid JSON body: {e}")),
    };
    if req.n.unwrap_or(1) != 1 {
        return error(out, 400, "invalid_request_error", "only n = 1 is supported");
    }
    let (prompt, messages) = if chat {
        let Some(messages) = req.messages else {
            return error(out, 400, "invalid_request_error", "`messages` is required");
        };
        if messages.is_empty() {
            return error(out, 400, "invalid_request_error", "`messages` must not be empty");
        }
        let messages: Vec<Value> = messages.iter().map(|m| json!({ "role": m.role, "content": m.content })).collect();
        (String::new(), Some(messages))
    } else {
        let Some(prompt) = req.prompt else {
            return error(out, 400, "invalid_request_error", "`prompt` is required");
        };
        (prompt, None)
    };
    let stop = match req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let mut options = json!({
        "n-predict": req.max_completion_tokens.or(req.max_tokens).unwrap_or(256),
        "temp": req.temperature.unwrap_or(1.0),
        "top-p": req.top_p.unwrap_or(1.0),
        "stop": stop,
    });
    if let Some(seed) = req.seed {
        options["seed"] = json!(seed);
    }
    if let Some(messages) = messages {
        options["messages"] = Value::Array(messages);
    }
    let options = options.to_string();
    let created = now();
    if req.stream {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        return stream(out, &req.model, &prompt, &options, chat, created, include_usage);
    }
    match generate(&req.model, &prompt, Some(&options)) {
        Ok((text, usage)) => {
            let body = if chat {
                json!({
                    "id": id("chatcmpl"),
                    "object": "chat.completion",
                    "created": created,
                    "model": req.model,
                    "choices": [{
                        "index": 0,
                        "message": { "role": "assistant", "content": text },
                        "finish_reason": finish_reason(&usage),
                    }],
                    "usage": usage_json(&usage),
                })
            } else {
                json!({
                    "id": id("cmpl"),
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    "choices": [{ "index": 0, "text": text, "finish_reason": finish_reason(&usage) }],
                    "usage": usage_json(&usage),
                })
            };
            respond_json(out, 200, &body);
        }
        Err(e) => nn_error(out, &e),
    }
}

fn stream(
    out: ResponseOutparam,
    model: &str,
    prompt: &str,
    options: &str,
    chat: bool,
    created: u64,
    include_usage: bool,
) {
    let text = match generate_stream(model, prompt, Some(options)) {
        Ok(s) => s,
        Err(e) => return nn_error(out, &e),
    };
    let id = id(if chat { "chatcmpl" } else { "cmpl" });
    let object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let chunk = |delta: Value, finish: Option<&str>| {
        let choice = if chat {
            json!({ "index": 0, "delta": delta, "finish_reason": finish })
        } else {
            json!({ "index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")), "finish_reason": finish })
        };
        json!({ "id": id, "object": object, "created": created, "model": model, "choices": [choice] }).to_string()
    };
    let events = EventStream::start(out);
    if chat && !events.send(None, &chunk(json!({ "role": "assistant", "content": "" }), None)) {
        return;
    }
    loop {
        match text.next() {
            Ok(Some(piece)) => {
                if !events.send(None, &chunk(json!({ "content": piece }), None)) {
                    return; // the caller left; dropping the stream cancels the generation
                }
            }
            Ok(None) => {
                let reason = text.usage().map(|u| finish_reason(&u).to_string()).unwrap_or_else(|| "stop".into());
                let mut last: Value = serde_json::from_str(&chunk(json!({}), Some(&reason))).unwrap_or_default();
                let usage = text.usage().map(|u| usage_json(&u));
                if include_usage {
                    // OpenAI's shape: the finish chunk without usage, then a chunk with
                    // no choices and the usage.
                    events.send(None, &last.to_string());
                    let mut tail: Value = serde_json::from_str(&chunk(json!({}), None)).unwrap_or_default();
                    tail["choices"] = json!([]);
                    tail["usage"] = usage.unwrap_or(Value::Null);
                    events.send(None, &tail.to_string());
                } else {
                    if let Some(usage) = usage {
                        last["usage"] = usage;
                    }
                    events.send(None, &last.to_string());
                }
                events.send(None, "[DONE]");
                break;
            }
            Err(e) => {
                events.send(
                    Some("error"),
                    &json!({ "error": { "message": e.to_string(), "type": "server_error" } }).to_string(),
                );
                break;
            }
        }
    }
    events.finish();
}

fn embeddings(out: ResponseOutparam, body: &[u8]) {
    let req: Embeddings = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(out, 400, "invalid_request_error", format!("invalid JSON body: {e}")),
    };
    let inputs = req.input.into_vec();
    if inputs.is_empty() || inputs.len() > 64 {
        return error(out, 400, "invalid_request_error", "`input` must hold 1 to 64 strings");
    }
    match embeddings_response(&req.model, &inputs) {
        Ok(body) => respond_json(out, 200, &body),
        Err(e) => nn_error(out, &e),
    }
}

wasi::http::proxy::export!(OpenAi);
