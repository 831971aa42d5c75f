//! The data of each per-request store ([`HostState`]): its WASI, `wasi:http`,
//! `wasi:nn` and Spin LLM contexts and its limiter; how the host builds a store
//! for one request (memory cap, deadline); and the hooks that deny guests
//! outgoing HTTP.

use crate::app::LoadedComponent;
use crate::host::Host;
use crate::limits::Limiter;
use crate::nn::{NnCtx, NnView, WasiNnView};
use crate::spin::{LlmCtx, SpinLlmView};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
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

impl Host {
    /// A store for one request to `component`: its WASI context, `wasi:nn` grants,
    /// memory cap and deadline (checked at every epoch tick, where a long-running
    /// guest also yields so it cannot hold a runtime thread).
    pub(crate) fn new_store(&self, component: &LoadedComponent, stderr: bool) -> Store<HostState> {
        let limits = component.limits;
        let mut wasi = WasiCtx::builder();
        wasi.envs(&component.env);
        if stderr {
            wasi.inherit_stderr();
        }
        let state = HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            nn: NnCtx::new(self.inference.clone(), component.name.clone(), component.granted.clone()),
            llm: LlmCtx::new(self.inference.clone(), component.name.clone(), component.ai_granted.clone()),
            limiter: Limiter {
                memory_bytes: usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
                memory_hit: false,
                deadline: Instant::now() + Duration::from_millis(limits.timeout_ms()),
                deadline_hit: false,
            },
        };
        let mut store = Store::new(&component.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let limiter = &mut ctx.data_mut().limiter;
            if Instant::now() >= limiter.deadline {
                limiter.deadline_hit = true;
                return Err(wasmtime::format_err!("deadline exceeded"));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }
}
