//! The data of each per-request store ([`HostState`]): its WASI, `wasi:http`,
//! `wasi:nn` and Spin LLM contexts and its limiter, built from plain values
//! ([`HostState::new`]); and the hooks that deny guests outgoing HTTP. The store
//! around it is made in `invoke`.

use crate::limits::Limiter;
use crate::nn::{NnCtx, NnView, WasiNnView};
use crate::spin::{LlmCtx, SpinLlmView};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The data of each per-request store.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    pub(crate) nn: NnCtx,
    pub(crate) llm: LlmCtx,
    pub(crate) limiter: Limiter,
}

impl HostState {
    /// The state of one request's store: `wasi` built from the component's env,
    /// `nn` and `llm` holding its grants, `limiter` its memory cap and deadline.
    pub(crate) fn new(wasi: WasiCtx, nn: NnCtx, llm: LlmCtx, limiter: Limiter) -> Self {
        Self { table: ResourceTable::new(), wasi, http: WasiHttpCtx::new(), hooks: DenyOutbound, nn, llm, limiter }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

impl WasiNnView for HostState {
    fn nn(&mut self) -> NnView<'_> {
        NnView { ctx: &mut self.nn, table: &mut self.table }
    }
}

impl SpinLlmView for HostState {
    fn llm(&mut self) -> &mut LlmCtx {
        &mut self.llm
    }
}

/// Outgoing HTTP from guests is denied: components reach models through wasi:nn,
/// and a fabric node must not become an open proxy.
struct DenyOutbound;

impl wasmtime_wasi_http::WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
