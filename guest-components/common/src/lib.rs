//! Shared code for wasmesh guest components.
//!
//! * [`read_body`]: read a whole `wasi:http` request body, up to a cap.
//! * [`respond`]: answer with a status code, a content type and a body.
//! * With the `nn` feature (default): [`respond_json`], [`error_json`], and [`generate`], a small
//!   wrapper around `wasi:nn` that follows the wasmesh inference conventions (`../wit/README.md`):
//!   load a model by name, pass tensors `prompt` and `options`, read tensors `text` and `usage`.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::StreamError;

/// The default cap on a request body read by a guest: 1 MiB. (The host enforces its own limit too.)
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the cap (in bytes).
    TooLarge(usize),
    /// The body stream failed, or was already taken.
    Read(String),
}

impl BodyError {
    /// The HTTP status to answer with: 413 for a body over the cap, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge(_) => 413,
            BodyError::Read(_) => 400,
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge(cap) => write!(f, "request body is larger than {cap} bytes"),
            BodyError::Read(why) => write!(f, "could not read the request body: {why}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Reads the whole body of `request`, failing with [`BodyError::TooLarge`] once it passes `cap`
/// bytes (the rest is not read).
pub fn read_body(request: &IncomingRequest, cap: usize) -> Result<Vec<u8>, BodyError> {
    let body = request.consume().map_err(|()| BodyError::Read("the body was already consumed".into()))?;
    let stream = body.stream().map_err(|()| BodyError::Read("the body stream was already taken".into()))?;
    let mut data = Vec::new();
    loop {
        // Never ask for more than one byte past the cap, so a huge body is not buffered.
        let want = (cap + 1 - data.len()).min(64 * 1024) as u64;
        match stream.blocking_read(want) {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > cap {
                    return Err(BodyError::TooLarge(cap));
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(BodyError::Read(e.to_debug_string()));
            }
        }
    }
    // The stream is a child of the body: drop it before the body is dropped.
    drop(stream);
    drop(body);
    Ok(data)
}

/// Answers with `status`, a `content-type` header, any `extra_headers`, and `body`.
///
/// The response is handed to the host first, then the body is streamed and finished.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, extra_headers: &[(&str, &str)], body: &[u8]) {
    let headers = Fields::new();
    let length = body.len().to_string();
    let standard = [("content-type", content_type), ("content-length", length.as_str())];
    for (name, value) in standard.iter().chain(extra_headers) {
        // A header the host refuses is a bug in the guest; still answer, without that header.
        let _ = headers.append(name, value.as_bytes());
    }
    let response = OutgoingResponse::new(headers);
    // Every status code used by the guests is valid; ignore the impossible error.
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("a new response's body is taken once");
    ResponseOutparam::set(out, Ok(response));

    let stream = outgoing.write().expect("a new body's stream is taken once");
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for chunk in body.chunks(4096) {
        if stream.blocking_write_and_flush(chunk).is_err() {
            // The client went away; nothing more to do.
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

#[cfg(feature = "nn")]
pub use nn_support::*;

#[cfg(feature = "nn")]
mod nn_support {
    use super::respond;
    use wasi::http::types::ResponseOutparam;

    /// Bindings generated from `../wit` (world `wasmesh:guest/nn-guest`): the `wasi:nn` imports.
    #[allow(missing_docs, clippy::all)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "wasmesh:guest/nn-guest",
            generate_all,
        });
    }

    pub use bindings::wasi::nn::errors::ErrorCode;
    use bindings::wasi::nn::{
        errors::Error,
        graph::load_by_name,
        tensor::{Tensor, TensorType},
    };
    use bindings::wasmesh::guest::streaming::{TokenStream, compute_stream};

    /// Answers with `status` and `value` as `application/json`.
    pub fn respond_json(out: ResponseOutparam, status: u16, value: &serde_json::Value) {
        // A 503 is "not yet" (a model still being fetched or loaded): say when to retry.
        let retry: &[(&str, &str)] = if status == 503 { &[("retry-after", "2")] } else { &[] };
        respond_json_with(out, status, retry, value);
    }

    /// Like [`respond_json`], with extra headers.
    pub fn respond_json_with(
        out: ResponseOutparam,
        status: u16,
        extra_headers: &[(&str, &str)],
        value: &serde_json::Value,
    ) {
        let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        respond(out, status, "application/json", extra_headers, &body);
    }

    /// `{"error": message}`.
    pub fn error_json(message: impl Into<String>) -> serde_json::Value {
        serde_json::json!({ "error": message.into() })
    }

    /// Token counts of one generation, from the `usage` output tensor.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    pub struct Usage {
        /// Tokens in the prompt (after the chat template, if any).
        pub input_tokens: u64,
        /// Tokens generated.
        pub output_tokens: u64,
        /// Why generation ended: `stop`, `length` or `stop_string`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub finish_reason: Option<String>,
        /// The generated token ids, when the options asked for `return-tokens`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tokens: Option<Vec<i64>>,
    }

    /// A `wasi:nn` error, copied out of the error resource.
    #[derive(Debug, Clone)]
    pub struct NnError {
        /// The error code.
        pub code: ErrorCode,
        /// The host's explanation (`error.data()`).
        pub data: String,
    }

    impl NnError {
        fn from_resource(error: Error) -> Self {
            NnError { code: error.code(), data: error.data() }
        }

        /// An error raised by the guest itself (for a reply it cannot understand).
        fn guest(code: ErrorCode, data: impl Into<String>) -> Self {
            NnError { code, data: data.into() }
        }

        /// The WIT name of the code, e.g. `not-found`.
        pub fn code_name(&self) -> &'static str {
            code_name(self.code)
        }

        /// The HTTP status that answers this error: not-found → 404, security → 403,
        /// invalid-argument → 400, timeout → 503 (the host is still fetching or loading
        /// the model: retry), anything else → 500.
        pub fn http_status(&self) -> u16 {
            match self.code {
                ErrorCode::NotFound => 404,
                ErrorCode::Security => 403,
                ErrorCode::InvalidArgument => 400,
                ErrorCode::Timeout => 503,
                _ => 500,
            }
        }

        /// `{"error": data, "code": code-name}`.
        pub fn to_json(&self) -> serde_json::Value {
            serde_json::json!({ "error": self.data, "code": self.code_name() })
        }
    }

    impl std::fmt::Display for NnError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "wasi-nn {}: {}", self.code_name(), self.data)
        }
    }

    impl std::error::Error for NnError {}

    /// The WIT name of a `wasi:nn` error code, e.g. `invalid-argument`.
    pub fn code_name(code: ErrorCode) -> &'static str {
        match code {
            ErrorCode::InvalidArgument => "invalid-argument",
            ErrorCode::InvalidEncoding => "invalid-encoding",
            ErrorCode::Timeout => "timeout",
            ErrorCode::RuntimeError => "runtime-error",
            ErrorCode::UnsupportedOperation => "unsupported-operation",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::NotFound => "not-found",
            ErrorCode::Security => "security",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Checks that `model` can be loaded by name (and is granted to this component), without
    /// generating anything.
    pub fn load(model: &str) -> Result<(), NnError> {
        load_by_name(model).map(drop).map_err(NnError::from_resource)
    }

    fn u8_tensor(bytes: &[u8]) -> Result<Tensor, NnError> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| NnError::guest(ErrorCode::TooLarge, "input tensor is larger than 4 GiB"))?;
        Ok(Tensor::new(&[len], TensorType::U8, bytes))
    }

    /// Generates text with the model named `model`.
    ///
    /// `options_json` is the JSON object passed as the `options` tensor (keys `n-predict`, `temp`,
    /// `chat`, ...: see `../wit/README.md`); `None` sends no options tensor (host defaults).
    pub fn generate(model: &str, prompt: &str, options_json: Option<&str>) -> Result<(String, Usage), NnError> {
        let graph = load_by_name(model).map_err(NnError::from_resource)?;
        let context = graph.init_execution_context().map_err(NnError::from_resource)?;

        let mut inputs = vec![("prompt".to_string(), u8_tensor(prompt.as_bytes())?)];
        if let Some(options) = options_json {
            inputs.push(("options".to_string(), u8_tensor(options.as_bytes())?));
        }
        let outputs = context.compute(inputs).map_err(NnError::from_resource)?;

        // Outputs are named `text` and `usage`, in that order; look them up by name first.
        let mut text = None;
        let mut usage = None;
        for (position, (name, tensor)) in outputs.iter().enumerate() {
            match (name.as_str(), position) {
                ("text", _) => text = Some(tensor.data()),
                ("usage", _) => usage = Some(tensor.data()),
                ("", 0) if text.is_none() => text = Some(tensor.data()),
                ("", 1) if usage.is_none() => usage = Some(tensor.data()),
                _ => {}
            }
        }
        let text =
            text.ok_or_else(|| NnError::guest(ErrorCode::RuntimeError, "the host returned no `text` output tensor"))?;
        let usage = usage
            .ok_or_else(|| NnError::guest(ErrorCode::RuntimeError, "the host returned no `usage` output tensor"))?;
        let usage: Usage = serde_json::from_slice(&usage).map_err(|e| {
            NnError::guest(
                ErrorCode::RuntimeError,
                format!("the host's `usage` output tensor is not the expected JSON: {e}"),
            )
        })?;
        // The host sends UTF-8; be lenient rather than fail a whole generation on a split byte.
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Ok((text, usage))
    }

    /// A mean-pooled, L2-normalised embedding of `input` with the model named `model`.
    pub fn embed(model: &str, input: &str) -> Result<(Vec<f32>, Usage), NnError> {
        let graph = load_by_name(model).map_err(NnError::from_resource)?;
        let context = graph.init_execution_context().map_err(NnError::from_resource)?;
        let inputs = vec![
            ("prompt".to_string(), u8_tensor(input.as_bytes())?),
            ("options".to_string(), u8_tensor(br#"{"embedding": true}"#)?),
        ];
        let outputs = context.compute(inputs).map_err(NnError::from_resource)?;
        let mut vector = None;
        let mut usage = None;
        for (name, tensor) in &outputs {
            match name.as_str() {
                "embedding" => vector = Some(tensor.data()),
                "usage" => usage = Some(tensor.data()),
                _ => {}
            }
        }
        let bytes =
            vector.ok_or_else(|| NnError::guest(ErrorCode::RuntimeError, "the host returned no `embedding` tensor"))?;
        let vector = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let usage = usage
            .and_then(|u| serde_json::from_slice(&u).ok())
            .ok_or_else(|| NnError::guest(ErrorCode::RuntimeError, "the host returned no readable `usage` tensor"))?;
        Ok((vector, usage))
    }

    /// OpenAI's `input` of an embeddings request: one string or a list.
    #[derive(Debug, serde::Deserialize)]
    #[serde(untagged)]
    pub enum EmbeddingInput {
        /// One text.
        One(String),
        /// Several.
        Many(Vec<String>),
    }

    impl EmbeddingInput {
        /// The texts, in order.
        pub fn into_vec(self) -> Vec<String> {
            match self {
                EmbeddingInput::One(s) => vec![s],
                EmbeddingInput::Many(v) => v,
            }
        }
    }

    /// Embeds each of `inputs` with `model` and answers in the shape of OpenAI's
    /// embeddings API: `{"object": "list", "model", "data": [{"object": "embedding",
    /// "index", "embedding"}], "usage": {"prompt_tokens", "total_tokens"}}`.
    pub fn embeddings_response(model: &str, inputs: &[String]) -> Result<serde_json::Value, NnError> {
        let mut data = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        for (index, text) in inputs.iter().enumerate() {
            let (vector, usage) = embed(model, text)?;
            tokens += usage.input_tokens;
            data.push(serde_json::json!({ "object": "embedding", "index": index, "embedding": vector }));
        }
        Ok(serde_json::json!({
            "object": "list",
            "model": model,
            "data": data,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }))
    }

    /// A generation whose text arrives piece by piece (`wasmesh:guest/streaming`).
    /// Dropping it cancels the generation on the host.
    pub struct TextStream {
        stream: TokenStream,
    }

    impl TextStream {
        /// The next piece of text, or `None` once generation has ended.
        pub fn next(&self) -> Result<Option<String>, NnError> {
            self.stream.next().map_err(NnError::from_resource)
        }

        /// The token counts, once [`TextStream::next`] has returned `None`.
        pub fn usage(&self) -> Option<Usage> {
            self.stream.usage().and_then(|u| serde_json::from_str(&u).ok())
        }
    }

    /// Starts a streaming generation; errors in the inputs (unknown model, bad
    /// options) come back here, before any text.
    pub fn generate_stream(model: &str, prompt: &str, options_json: Option<&str>) -> Result<TextStream, NnError> {
        let graph = load_by_name(model).map_err(NnError::from_resource)?;
        let context = graph.init_execution_context().map_err(NnError::from_resource)?;
        let mut inputs = vec![("prompt".to_string(), u8_tensor(prompt.as_bytes())?)];
        if let Some(options) = options_json {
            inputs.push(("options".to_string(), u8_tensor(options.as_bytes())?));
        }
        let stream = compute_stream(&context, inputs).map_err(NnError::from_resource)?;
        Ok(TextStream { stream })
    }
}

/// A `text/event-stream` response being written: each [`EventStream::send`] is
/// flushed to the caller at once.
pub struct EventStream {
    stream: wasi::io::streams::OutputStream,
    body: OutgoingBody,
}

impl EventStream {
    /// Answers 200 with `content-type: text/event-stream` and returns the writer.
    pub fn start(out: ResponseOutparam) -> Self {
        let headers = Fields::new();
        let _ = headers.append("content-type", b"text/event-stream");
        let _ = headers.append("cache-control", b"no-cache");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response's body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("a new body's stream is taken once");
        Self { stream, body }
    }

    /// Sends one event (`event:` line when `event` is set, then `data:`); `false`
    /// when the caller has gone away.
    pub fn send(&self, event: Option<&str>, data: &str) -> bool {
        let mut frame = String::new();
        if let Some(event) = event {
            frame.push_str("event: ");
            frame.push_str(event);
            frame.push('\n');
        }
        for line in data.split('\n') {
            frame.push_str("data: ");
            frame.push_str(line);
            frame.push('\n');
        }
        frame.push('\n');
        frame.as_bytes().chunks(4096).all(|chunk| self.stream.blocking_write_and_flush(chunk).is_ok())
    }

    /// Ends the response.
    pub fn finish(self) {
        drop(self.stream);
        let _ = OutgoingBody::finish(self.body, None);
    }
}
