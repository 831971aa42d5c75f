//! Calling a component for one request: the WASIp2 and WASIp3 invocation paths
//! under the component's deadline and body caps, what the request gets once the
//! component answered, and how a call ended ([`Outcome`]).

use crate::app::LoadedComponent;
use crate::body::{BoxError, Capped, HostBody, WithGuard};
use crate::failure::{failure_response, json_error, too_large};
use crate::host::Host;
use crate::limits::Limiter;
use crate::nn::NnCtx;
use crate::outcome::Outcome;
use crate::served::ServedReport;
use crate::spin::LlmCtx;
use crate::state::HostState;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::Body;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;

impl Host {
    pub(crate) async fn invoke<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        req: http::Request<B>,
    ) -> Response<HostBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let limits = component.limits;
        let max_request = limits.max_request_bytes();
        let report = req.extensions().get::<ServedReport>().cloned();
        let seed = req.extensions().get::<crate::RouterSeed>().map_or(0, |s| s.0);
        let claims = req.extensions().get::<crate::RouterClaims>().cloned();
        if let Some(len) =
            req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > max_request
        {
            return too_large(component, len, max_request);
        }
        let body_too_large = Arc::new(AtomicBool::new(false));
        let req = {
            let flag = body_too_large.clone();
            req.map(|body| {
                http_body_util::Limited::new(body, usize::try_from(max_request).unwrap_or(usize::MAX)).map_err(
                    move |e: BoxError| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            flag.store(true, Ordering::Release);
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_request))
                        } else {
                            match e.downcast::<hyper::Error>() {
                                Ok(h) => wasmtime_wasi_http::Error::Hyper(*h),
                                Err(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
                            }
                        }
                    },
                )
            })
        };

        let timeout = Duration::from_millis(limits.timeout_ms());
        let mut store = self.new_store(component, true);
        if seed != 0 {
            store.data_mut().nn.set_seed(seed);
            store.data_mut().llm.set_seed(seed);
        }
        if let Some(claims) = claims {
            let arcs = |v: Vec<Vec<i32>>| v.into_iter().map(std::sync::Arc::from).collect();
            store.data_mut().nn.replay.set_claims(arcs(claims.ids.nn), claims.score);
            store.data_mut().llm.replay.set_claims(arcs(claims.ids.llm), claims.score);
        }
        let pre = match &component.pre {
            ProxyPre::P2(pre) => pre.clone(),
            ProxyPre::P3(pre) => {
                return self.invoke_p3(component, pre.clone(), store, req, body_too_large, report).await;
            }
        };

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| {
            let incoming = store.data_mut().http().new_incoming_request(Scheme::Http, req)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok::<_, wasmtime::Error>((incoming, out))
        })();
        let (incoming, out) = match prepared {
            Ok(x) => x,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": format!("bad request: {e:#}") }),
                );
            }
        };

        let instantiate = self.host_metrics.instantiate.clone();
        let task = tokio::spawn(async move {
            let mut instantiated = false;
            let result = tokio::time::timeout(timeout, async {
                let started = std::time::Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiate.observe(started.elapsed().as_secs_f64());
                instantiated = true;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            })
            .await;
            Outcome::of(&store, result, instantiated)
        });

        match respond(component, receiver.await, task, &body_too_large, None, report).await {
            Ok(response) => response.map(UnsyncBoxBody::new),
            Err(error) => error,
        }
    }

    /// [`Self::invoke`] for a WASIp3 component (`wasi:http/handler@0.3.0`). The
    /// guest's `handle` returns the response head while its body may still be
    /// written, so the store's event loop runs until the body is sent or dropped,
    /// within the same deadline.
    async fn invoke_p3<B>(
        self: &Arc<Self>,
        component: &Arc<LoadedComponent>,
        pre: ServicePre<HostState>,
        mut store: Store<HostState>,
        req: http::Request<B>,
        body_too_large: Arc<AtomicBool>,
        report: Option<ServedReport>,
    ) -> Response<HostBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let limits = component.limits;
        let timeout = Duration::from_millis(limits.timeout_ms());
        let req = with_absolute_uri(req);
        let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, req);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        // Dropped by the response body when it ends or the caller goes away; the
        // event loop runs until then.
        let (body_done, body_done_rx) = tokio::sync::oneshot::channel::<()>();
        let failed = Arc::new(AtomicBool::new(false));
        let task = {
            let failed = failed.clone();
            let instantiate = self.host_metrics.instantiate.clone();
            tokio::spawn(async move {
                let mut instantiated = false;
                let result = tokio::time::timeout(timeout, async {
                    let started = std::time::Instant::now();
                    let service = pre.instantiate_async(&mut store).await?;
                    instantiate.observe(started.elapsed().as_secs_f64());
                    instantiated = true;
                    store
                        .run_concurrent(async move |access| -> wasmtime::Result<()> {
                            match service.handle(access, request).await? {
                                Err(code) => {
                                    let _ = sender.send(Err(code));
                                    return Ok(());
                                }
                                Ok(response) => {
                                    let response = access.with(|s| response.into_http(s, request_io))?;
                                    let _ = sender.send(Ok(response));
                                }
                            }
                            let _ = body_done_rx.await;
                            Ok(())
                        })
                        .await?
                })
                .await;
                if !matches!(result, Ok(Ok(()))) {
                    // Before the store (and the body's channel) is dropped: the body
                    // then ends with an error rather than looking complete.
                    failed.store(true, Ordering::Release);
                }
                Outcome::of(&store, result, instantiated)
            })
        };

        match respond(component, receiver.await, task, &body_too_large, Some(failed), report).await {
            Ok(response) => response
                .map(|body| UnsyncBoxBody::new(WithGuard { inner: UnsyncBoxBody::new(body), _guard: body_done })),
            Err(error) => error,
        }
    }
}

/// What a request gets once its component answered (or failed to): the response
/// with its body capped at `max_response_bytes` (and, given `failed`, ending with an
/// error if the guest fails mid-body), a watcher that logs a failure after the head
/// was sent, or the error response.
async fn respond<B, E: std::fmt::Debug>(
    component: &Arc<LoadedComponent>,
    received: Result<Result<http::Response<B>, E>, tokio::sync::oneshot::error::RecvError>,
    task: tokio::task::JoinHandle<Outcome>,
    body_too_large: &AtomicBool,
    failed: Option<Arc<AtomicBool>>,
    report: Option<ServedReport>,
) -> Result<Response<Capped<B>>, Response<HostBody>> {
    // The guest may still be running (writing its body): what it used is reported
    // when its call ends, whichever branch below answers.
    match received {
        Ok(Ok(response)) => {
            if body_too_large.load(Ordering::Acquire) {
                let watch = component.clone();
                tokio::spawn(async move {
                    if let (Ok(outcome), Some(report)) = (task.await, report) {
                        report.send(outcome.served(&watch.app));
                    }
                });
                return Err(too_large(component, 0, component.limits.max_request_bytes()));
            }
            let watch = component.clone();
            tokio::spawn(async move {
                if let Ok(outcome) = task.await {
                    if let Some(report) = &report {
                        report.send(outcome.served(&watch.app));
                    }
                    if outcome.timed_out || outcome.memory_hit || outcome.error.is_some() {
                        tracing::warn!(
                            component = %watch.name,
                            "component failed after sending its response headers: {}",
                            outcome.describe(&watch)
                        );
                    }
                }
            });
            let left = component.limits.max_response_bytes();
            Ok(response.map(|inner| Capped { inner, left, component: component.name.clone(), failed }))
        }
        Ok(Err(code)) => {
            let watch = component.clone();
            tokio::spawn(async move {
                if let (Ok(outcome), Some(report)) = (task.await, report) {
                    report.send(outcome.served(&watch.app));
                }
            });
            Err(json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": format!("component '{}' answered with an error: {code:?}", component.name) }),
            ))
        }
        Err(_) => {
            let outcome = task.await;
            if let (Ok(outcome), Some(report)) = (&outcome, &report) {
                report.send(outcome.served(&component.app));
            }
            Err(failure_response(component, outcome, body_too_large))
        }
    }
}

/// The request with an absolute URI (`http://HOST/path`), so a WASIp3 guest sees
/// the scheme and authority as a WASIp2 guest does (the `host` header itself is
/// not passed to guests).
fn with_absolute_uri<B>(mut req: http::Request<B>) -> http::Request<B> {
    let authority = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok());
    if let Some(authority) = authority {
        let mut parts = req.uri().clone().into_parts();
        if parts.scheme.is_none() {
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(authority);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
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
        // One lookup of the app's share: linear memories and tensors charge it apart.
        let (charge, cpu) = self.app_share(&component.app);
        let state = HostState::new(
            wasi.build(),
            NnCtx::new(
                self.inference.clone(),
                component.name.clone(),
                component.granted.clone(),
                usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
            )
            .with_tenant(component.app.clone())
            .with_budget(charge.sibling()),
            LlmCtx::new(self.inference.clone(), component.name.clone(), component.ai_granted.clone()),
            Limiter {
                memory_bytes: usize::try_from(limits.memory_bytes()).unwrap_or(usize::MAX),
                memory_hit: false,
                deadline: Instant::now() + Duration::from_millis(limits.timeout_ms()),
                deadline_hit: false,
                charge,
                budget_hit: false,
            },
        );
        let mut store = Store::new(&component.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        let tick = self.epoch_tick;
        let mut resumed = Instant::now();
        store.epoch_deadline_callback(move |mut ctx| {
            let limiter = &mut ctx.data_mut().limiter;
            let now = Instant::now();
            if now >= limiter.deadline {
                limiter.deadline_hit = true;
                return Err(wasmtime::format_err!("deadline exceeded"));
            }
            // Guest time since it last resumed, without what it spent waiting on the
            // host; a guest past its app's share of the cores sleeps off the debt (but
            // never past its deadline, which the next tick then enforces).
            let wait = cpu.charge(now.saturating_duration_since(resumed).min(tick * 2), now);
            let wait = wait.min(limiter.deadline.saturating_duration_since(now));
            resumed = now + wait;
            if wait.is_zero() {
                return Ok(UpdateDeadline::Yield(1));
            }
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(wait))))
        });
        store
    }
}

impl Host {
    /// Times `iterations` instantiations of the component serving `path`, each in a
    /// fresh store built exactly as a request builds it (no guest code runs).
    /// Returns, per iteration, the instantiation alone and store creation plus
    /// instantiation. For benchmarks and diagnostics.
    pub async fn measure_instantiation(
        &self,
        path: &str,
        iterations: usize,
    ) -> Result<Vec<(Duration, Duration)>, String> {
        let (component, _) = self.lookup(path).ok_or_else(|| format!("no route for {path}"))?;
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let mut store = self.new_store(&component, false);
            let instantiating = Instant::now();
            match &component.pre {
                ProxyPre::P2(pre) => pre.instantiate_async(&mut store).await.map(|_| ()),
                ProxyPre::P3(pre) => pre.instantiate_async(&mut store).await.map(|_| ()),
            }
            .map_err(|e| format!("{e:#}"))?;
            let done = Instant::now();
            times.push((done - instantiating, done - started));
            drop(store);
        }
        Ok(times)
    }
}
