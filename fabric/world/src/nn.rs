//! `wasi:nn` for guests, backed by an [`InferenceEngine`].
//!
//! Host bindings are generated from the same WIT that Wasmtime's `wasmtime-wasi-nn`
//! ships (`wit/deps/wasi-nn`), rather than through that crate's backend traits:
//! those are synchronous (a generation would block an async-runtime thread for
//! seconds), know nothing of per-component model grants, and leave no room for the
//! streaming extension. The conventions (tensor names, options JSON) are in
//! `wit/README.md`.

use std::sync::Arc;
use wasmesh_api::ModelRef;
use wasmesh_engine::{EngineError, GenerateParams, GenerateRequest, Generation, InferenceEngine};
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmesh:guest/nn-guest",
        with: {
            "wasi:nn/graph.graph": super::Graph,
            "wasi:nn/tensor.tensor": super::Tensor,
            "wasi:nn/inference.graph-execution-context": super::ExecutionContext,
            "wasi:nn/errors.error": super::NnError,
            "wasmesh:guest/streaming.token-stream": super::TokenStream,
        },
        imports: {
            "wasi:nn/inference.[method]graph-execution-context.compute": async | trappable,
            "wasmesh:guest/streaming.compute-stream": trappable,
            "wasmesh:guest/streaming.[method]token-stream.next": async | trappable,
            default: trappable,
        },
    });
}

use generated::wasi::nn::errors::ErrorCode;
use generated::wasi::nn::graph::{ExecutionTarget, GraphBuilder, GraphEncoding};
use generated::wasi::nn::tensor::{TensorData, TensorDimensions, TensorType};

/// A graph handle: a model this component may use, by name, with the LoRA adapter
/// named after a ':' (`load-by-name("smollm2:pirate")`).
#[derive(Debug)]
pub struct Graph {
    model: String,
    lora: Option<String>,
}

/// An execution context on a graph.
#[derive(Debug)]
pub struct ExecutionContext {
    model: String,
    lora: Option<String>,
}

/// A tensor as the guest made it.
#[derive(Debug, Clone)]
pub struct Tensor {
    dimensions: Vec<u32>,
    ty: TensorType,
    data: Vec<u8>,
}

/// An error for the guest: a code and a message that says what to do.
#[derive(Debug)]
pub struct NnError {
    code: ErrorCode,
    message: String,
}

/// Generations one instance may stream at once (each is an engine task).
pub const MAX_STREAMS: usize = 4;

/// Per-store `wasi:nn` state: the engine and what this component may use.
pub struct NnCtx {
    engine: Arc<dyn InferenceEngine>,
    component: Arc<str>,
    granted: Arc<[String]>,
    /// Token counts of the generations this store ran, for the log line of the request.
    pub usage: wasmesh_engine::Usage,
    /// The models (`MODEL` or `MODEL:ADAPTER`) it ran, in order of first use (its receipt).
    pub models: Vec<String>,
    /// Texts it embedded.
    pub embeddings: u64,
    /// Why its last generation ended.
    pub finish: Option<wasmesh_engine::FinishReason>,
    /// What its generations asked for and produced (its receipt's commitment).
    pub commitment: crate::commit::Commitment,
    /// Its generations' seeds and token ids, and an audit replay's claims to check.
    pub replay: crate::commit::Replay,
    /// Whether a tensor found the node's guest memory budget (or the app's share) spent.
    pub budget_hit: bool,
    /// Bytes of the tensors this instance holds in the host (outside its linear memory),
    /// and the most it may: the component's own memory limit.
    tensor_bytes: usize,
    max_tensor_bytes: usize,
    /// Streams not yet dropped.
    streams: usize,
    /// Whose generations these are (the app), for the engine's fair share.
    tenant: Arc<str>,
    /// The tensors' share of the node's guest memory budget.
    charge: crate::budget::Charge,
}

impl NnCtx {
    /// State for one instance of `component`, allowed the models in `granted`, whose
    /// tensors may hold at most `max_tensor_bytes` in the host (its memory limit: what
    /// the guest copies out of its memory is counted against the same cap).
    pub fn new(
        engine: Arc<dyn InferenceEngine>,
        component: Arc<str>,
        granted: Arc<[String]>,
        max_tensor_bytes: usize,
    ) -> Self {
        let tenant = component.clone();
        Self {
            engine,
            component,
            granted,
            usage: Default::default(),
            models: Vec::new(),
            embeddings: 0,
            finish: None,
            commitment: Default::default(),
            replay: Default::default(),
            budget_hit: false,
            tensor_bytes: 0,
            max_tensor_bytes,
            streams: 0,
            tenant,
            charge: crate::budget::Charge::unlimited(),
        }
    }

    /// The same state, its tensors also counted against the app's share of the node's
    /// memory and the node's budget.
    pub fn with_budget(mut self, charge: crate::budget::Charge) -> Self {
        self.charge = charge;
        self
    }

    /// Seeds its sampled generations that name no seed from the router's request
    /// `seed` (0: none).
    pub fn set_seed(&mut self, seed: u64) {
        self.replay.set_seed(seed, "nn");
    }

    /// The same state, its generations made for `tenant` (the app).
    pub fn with_tenant(mut self, tenant: Arc<str>) -> Self {
        self.tenant = tenant;
        self
    }

    fn record(&mut self, asked: &blake3::Hash, at: usize, generation: &Generation) {
        self.replay.done(at, generation);
        self.usage += generation.usage;
        self.finish = Some(generation.finish);
        self.commitment.add(asked, generation);
        tracing::debug!(
            component = %self.component,
            input_tokens = generation.usage.input_tokens,
            output_tokens = generation.usage.output_tokens,
            ms = generation.compute_time.as_millis() as u64,
            "generation done"
        );
    }
}

/// The `usage` output: token counts, why generation ended, and the token ids when asked.
fn usage_json(generation: &Generation, return_tokens: bool) -> Vec<u8> {
    let mut usage = serde_json::json!({
        "input_tokens": generation.usage.input_tokens,
        "output_tokens": generation.usage.output_tokens,
        "finish_reason": generation.finish,
    });
    if return_tokens {
        usage["tokens"] = serde_json::json!(generation.tokens);
    }
    serde_json::to_vec(&usage).expect("JSON of plain values")
}

/// A streaming generation: pieces arrive on `pieces`; the engine's future runs as
/// its own task, aborted (and so cancelled) when the guest drops the stream.
pub struct TokenStream {
    pieces: tokio::sync::mpsc::UnboundedReceiver<String>,
    task: Option<tokio::task::JoinHandle<Result<Generation, EngineError>>>,
    return_tokens: bool,
    usage: Option<String>,
    /// What it was asked for (its commitment).
    asked: blake3::Hash,
    /// Its place among the request's generations (see `Replay`).
    at: usize,
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// What the generated `Host` traits are implemented for.
pub struct NnView<'a> {
    /// The store's state.
    pub ctx: &'a mut NnCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// Gives the linker access to [`NnView`].
pub trait WasiNnView: Send {
    /// Borrows the view from the store's data.
    fn nn(&mut self) -> NnView<'_>;
}

struct HasNn;
impl HasData for HasNn {
    type Data<'a> = NnView<'a>;
}

/// Adds `wasi:nn` to `linker`.
pub fn add_to_linker<T: WasiNnView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    generated::wasi::nn::tensor::add_to_linker::<T, HasNn>(linker, T::nn)?;
    generated::wasi::nn::graph::add_to_linker::<T, HasNn>(linker, T::nn)?;
    generated::wasi::nn::inference::add_to_linker::<T, HasNn>(linker, T::nn)?;
    generated::wasi::nn::errors::add_to_linker::<T, HasNn>(linker, T::nn)?;
    generated::wasmesh::guest::streaming::add_to_linker::<T, HasNn>(linker, T::nn)?;
    Ok(())
}

type NnResult<T> = wasmtime::Result<Result<T, Resource<NnError>>>;

impl NnView<'_> {
    /// Keeps a tensor in the host, counted against the instance's memory limit: past it
    /// the guest traps with a message naming the limit (a tensor has no error result).
    fn push_tensor(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<Tensor>> {
        let total = self.ctx.tensor_bytes.saturating_add(tensor.data.len());
        if total > self.ctx.max_tensor_bytes {
            return Err(wasmtime::format_err!(
                "memory limit exceeded: component '{}' holds {} MiB of wasi:nn tensors, over its limit of {} MiB (limits.memory_mb)",
                self.ctx.component,
                total >> 20,
                self.ctx.max_tensor_bytes >> 20
            ));
        }
        if let Err(refused) = self.ctx.charge.take(tensor.data.len()) {
            self.ctx.budget_hit = true;
            return Err(wasmtime::format_err!("{refused}"));
        }
        self.ctx.tensor_bytes = total;
        Ok(self.table.push(tensor)?)
    }

    fn fail<T>(&mut self, code: ErrorCode, message: impl Into<String>) -> NnResult<T> {
        let message = message.into();
        tracing::debug!(component = %self.ctx.component, ?code, %message, "wasi-nn error returned to guest");
        Ok(Err(self.table.push(NnError { code, message })?))
    }

    /// Reads the `prompt` and `options` tensors into a request for the execution
    /// context's model; a bad input is an `Err` for the guest, not a trap.
    fn parse_inputs(
        &mut self,
        exec: &Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> wasmtime::Result<Result<GenerateRequest, (ErrorCode, String)>> {
        let (model, graph_lora) = {
            let exec = self.table.get(exec)?;
            (exec.model.clone(), exec.lora.clone())
        };
        let mut prompt: Option<Tensor> = None;
        let mut options: Option<Tensor> = None;
        for (position, (name, tensor)) in inputs.into_iter().enumerate() {
            let tensor = self.table.delete(tensor)?; // the guest passed ownership
            match (name.as_str(), position) {
                ("prompt", _) | ("0", _) => prompt = Some(tensor),
                ("options", _) | ("1", _) => options = Some(tensor),
                (_, 0) if prompt.is_none() => prompt = Some(tensor),
                (_, 1) if options.is_none() => options = Some(tensor),
                (other, _) => {
                    return Ok(Err((
                        ErrorCode::InvalidArgument,
                        format!("unexpected input tensor '{other}': inputs are `prompt` and optionally `options`"),
                    )));
                }
            }
        }
        let Some(prompt) = prompt else {
            return Ok(Err((
                ErrorCode::InvalidArgument,
                "no input tensor: pass the prompt as a u8 tensor named `prompt`".into(),
            )));
        };
        for (what, t) in [("prompt", Some(&prompt)), ("options", options.as_ref())] {
            if let Some(t) = t
                && t.ty != TensorType::U8
            {
                return Ok(Err((
                    ErrorCode::InvalidArgument,
                    format!("the `{what}` tensor must be of type u8 (UTF-8 bytes), got {:?}", t.ty),
                )));
            }
        }
        let Ok(prompt) = String::from_utf8(prompt.data) else {
            return Ok(Err((ErrorCode::InvalidArgument, "the prompt is not valid UTF-8".into())));
        };
        let mut params = match options {
            Some(o) if !o.data.is_empty() => match GenerateParams::from_json(&o.data) {
                Ok(p) => p,
                Err(e) => return Ok(Err((ErrorCode::InvalidArgument, e.to_string()))),
            },
            _ => GenerateParams::default(),
        };
        if params.lora.is_none() {
            params.lora = graph_lora;
        }
        if let Some(lora) = &params.lora {
            let grant = format!("{model}:{lora}");
            if !self.ctx.granted.contains(&grant) {
                let component = &self.ctx.component;
                return Ok(Err((
                    ErrorCode::Security,
                    format!(
                        "component '{component}' may not use LoRA adapter '{lora}' of model '{model}': add \"{grant}\" to `models` in [component.{component}] of wasmesh.toml"
                    ),
                )));
            }
        }
        let used = match &params.lora {
            Some(lora) => format!("{model}:{lora}"),
            None => model.clone(),
        };
        crate::note_model(&mut self.ctx.models, used);
        Ok(Ok(GenerateRequest::new(model, prompt, params).for_tenant(self.ctx.tenant.clone())))
    }

    fn engine_error<T>(&mut self, error: EngineError) -> NnResult<T> {
        let code = match &error {
            EngineError::ModelNotFound { .. } => ErrorCode::NotFound,
            EngineError::InvalidRequest(_) => ErrorCode::InvalidArgument,
            // Not yet: the model is still being fetched or loaded, or memory is busy.
            EngineError::Unavailable(_) => ErrorCode::Timeout,
            _ => ErrorCode::RuntimeError,
        };
        self.fail(code, error.to_string())
    }
}

impl generated::wasi::nn::graph::Host for NnView<'_> {
    fn load(
        &mut self,
        _builder: Vec<GraphBuilder>,
        _encoding: GraphEncoding,
        _target: ExecutionTarget,
    ) -> NnResult<Resource<Graph>> {
        self.fail(
            ErrorCode::UnsupportedOperation,
            "wasmesh loads models by name: call load-by-name(\"MODEL\") with a model listed in `models` of this component in wasmesh.toml",
        )
    }

    fn load_by_name(&mut self, name: String) -> NnResult<Resource<Graph>> {
        if !self.ctx.granted.contains(&name) {
            let component = self.ctx.component.clone();
            return self.fail(
                ErrorCode::Security,
                format!(
                    "component '{component}' may not use model '{name}': add \"{name}\" to `models` in [component.{component}] of wasmesh.toml"
                ),
            );
        }
        let model_ref = match ModelRef::parse(&name) {
            Ok(r) => r,
            Err(e) => return self.fail(ErrorCode::InvalidArgument, e.to_string()),
        };
        let (model, lora) = (model_ref.model().to_string(), model_ref.adapter().map(str::to_string));
        if !self.ctx.engine.has_model(&model) {
            let available = self.ctx.engine.models();
            return self.engine_error(EngineError::ModelNotFound { name: model, available });
        }
        Ok(Ok(self.table.push(Graph { model, lora })?))
    }
}

impl generated::wasi::nn::graph::HostGraph for NnView<'_> {
    fn init_execution_context(&mut self, graph: Resource<Graph>) -> NnResult<Resource<ExecutionContext>> {
        let graph = self.table.get(&graph)?;
        let exec = ExecutionContext { model: graph.model.clone(), lora: graph.lora.clone() };
        Ok(Ok(self.table.push(exec)?))
    }

    fn drop(&mut self, graph: Resource<Graph>) -> wasmtime::Result<()> {
        self.table.delete(graph)?;
        Ok(())
    }
}

impl generated::wasi::nn::inference::Host for NnView<'_> {}

impl generated::wasi::nn::inference::HostGraphExecutionContext for NnView<'_> {
    async fn compute(
        &mut self,
        exec: Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> NnResult<Vec<(String, Resource<Tensor>)>> {
        let mut request = match self.parse_inputs(&exec, inputs)? {
            Ok(r) => r,
            Err((code, message)) => return self.fail(code, message),
        };
        let engine = self.ctx.engine.clone();
        if request.params.embedding {
            let embedding = match engine.embed(&request.model, &request.prompt).await {
                Ok(e) => e,
                Err(e) => return self.engine_error(e),
            };
            self.ctx.usage.input_tokens += embedding.input_tokens;
            self.ctx.embeddings += 1;
            let data: Vec<u8> = embedding.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            let usage =
                serde_json::to_vec(&serde_json::json!({"input_tokens": embedding.input_tokens, "output_tokens": 0}))
                    .expect("JSON of plain values");
            let vector = self.push_tensor(Tensor {
                dimensions: vec![embedding.vector.len() as u32],
                ty: TensorType::Fp32,
                data,
            })?;
            let usage =
                self.push_tensor(Tensor { dimensions: vec![usage.len() as u32], ty: TensorType::U8, data: usage })?;
            return Ok(Ok(vec![("embedding".to_string(), vector), ("usage".to_string(), usage)]));
        }
        let at = self.ctx.replay.start(&mut request);
        let return_tokens = request.params.return_tokens;
        let asked = crate::commit::request_digest(&request);
        let generation = match engine.generate(request).await {
            Ok(g) => g,
            Err(e) => return self.engine_error(e),
        };
        self.ctx.record(&asked, at, &generation);
        let usage = usage_json(&generation, return_tokens);
        let text = generation.text.into_bytes();
        let text = self.push_tensor(Tensor { dimensions: vec![text.len() as u32], ty: TensorType::U8, data: text })?;
        let usage =
            self.push_tensor(Tensor { dimensions: vec![usage.len() as u32], ty: TensorType::U8, data: usage })?;
        Ok(Ok(vec![("text".to_string(), text), ("usage".to_string(), usage)]))
    }

    fn drop(&mut self, exec: Resource<ExecutionContext>) -> wasmtime::Result<()> {
        self.table.delete(exec)?;
        Ok(())
    }
}

impl generated::wasi::nn::tensor::Host for NnView<'_> {}

impl generated::wasi::nn::tensor::HostTensor for NnView<'_> {
    fn new(
        &mut self,
        dimensions: TensorDimensions,
        ty: TensorType,
        data: TensorData,
    ) -> wasmtime::Result<Resource<Tensor>> {
        self.push_tensor(Tensor { dimensions, ty, data })
    }

    fn dimensions(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorDimensions> {
        Ok(self.table.get(&tensor)?.dimensions.clone())
    }

    fn ty(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorType> {
        Ok(self.table.get(&tensor)?.ty)
    }

    fn data(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<TensorData> {
        Ok(self.table.get(&tensor)?.data.clone())
    }

    fn drop(&mut self, tensor: Resource<Tensor>) -> wasmtime::Result<()> {
        let tensor = self.table.delete(tensor)?;
        self.ctx.tensor_bytes = self.ctx.tensor_bytes.saturating_sub(tensor.data.len());
        Ok(())
    }
}

impl generated::wasi::nn::errors::Host for NnView<'_> {}

impl generated::wasi::nn::errors::HostError for NnView<'_> {
    fn code(&mut self, error: Resource<NnError>) -> wasmtime::Result<ErrorCode> {
        Ok(self.table.get(&error)?.code)
    }

    fn data(&mut self, error: Resource<NnError>) -> wasmtime::Result<String> {
        Ok(self.table.get(&error)?.message.clone())
    }

    fn drop(&mut self, error: Resource<NnError>) -> wasmtime::Result<()> {
        self.table.delete(error)?;
        Ok(())
    }
}

impl generated::wasmesh::guest::streaming::Host for NnView<'_> {
    fn compute_stream(
        &mut self,
        exec: Resource<ExecutionContext>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> NnResult<Resource<TokenStream>> {
        let mut request = match self.parse_inputs(&exec, inputs)? {
            Ok(r) => r,
            Err((code, message)) => return self.fail(code, message),
        };
        if request.params.embedding {
            return self
                .fail(ErrorCode::InvalidArgument, "embeddings are not streamed: use compute with \"embedding\": true");
        }
        let (sink, pieces) = tokio::sync::mpsc::unbounded_channel();
        request.stream = Some(sink);
        if self.ctx.streams >= MAX_STREAMS {
            return self.fail(
                ErrorCode::RuntimeError,
                format!("at most {MAX_STREAMS} generations stream at once per request; drop a finished stream first"),
            );
        }
        let at = self.ctx.replay.start(&mut request);
        let return_tokens = request.params.return_tokens;
        let asked = crate::commit::request_digest(&request);
        let engine = self.ctx.engine.clone();
        let task = tokio::spawn(async move { engine.generate(request).await });
        self.ctx.streams += 1;
        Ok(Ok(self.table.push(TokenStream { pieces, task: Some(task), return_tokens, usage: None, asked, at })?))
    }
}

impl generated::wasmesh::guest::streaming::HostTokenStream for NnView<'_> {
    async fn next(&mut self, stream: Resource<TokenStream>) -> NnResult<Option<String>> {
        let s = self.table.get_mut(&stream)?;
        if let Some(piece) = s.pieces.recv().await {
            return Ok(Ok(Some(piece)));
        }
        let Some(task) = s.task.take() else {
            return Ok(Ok(None)); // already finished
        };
        let (return_tokens, asked, at) = (s.return_tokens, s.asked, s.at);
        match task.await {
            Ok(Ok(generation)) => {
                self.ctx.record(&asked, at, &generation);
                let usage = String::from_utf8(usage_json(&generation, return_tokens)).expect("JSON is UTF-8");
                self.table.get_mut(&stream)?.usage = Some(usage);
                Ok(Ok(None))
            }
            Ok(Err(e)) => self.engine_error(e),
            Err(e) => self.fail(ErrorCode::RuntimeError, format!("generation task failed: {e}")),
        }
    }

    fn usage(&mut self, stream: Resource<TokenStream>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&stream)?.usage.clone())
    }

    fn drop(&mut self, stream: Resource<TokenStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        self.ctx.streams = self.ctx.streams.saturating_sub(1);
        Ok(())
    }
}
