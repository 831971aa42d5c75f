//! Calling a component for one request: the WASIp2 and WASIp3 invocation paths
//! under the component's deadline and body caps, what the request gets once the
//! component answered, and how a call ended ([`Outcome`]).

use crate::app::LoadedComponent;
use crate::body::{BoxError, Capped, HostBody, WithGuard};
use crate::failure::{failure_response, first_line, json_error, too_large};
use crate::host::Host;
use crate::state::HostState;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
use hyper::body::Body;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::Store;
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
        let pre = match &component.pre {
            ProxyPre::P2(pre) => pre.clone(),
            ProxyPre::P3(pre) => {
                return self.invoke_p3(component, pre.clone(), store, req, body_too_large).await;
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

        let task = tokio::spawn(async move {
            let mut instantiated = false;
            let result = tokio::time::timeout(timeout, async {
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiated = true;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, incoming, out).await
            })
            .await;
            Outcome::of(&store, result, instantiated)
        });

        match respond(component, receiver.await, task, &body_too_large, None).await {
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
            tokio::spawn(async move {
                let mut instantiated = false;
                let result = tokio::time::timeout(timeout, async {
                    let service = pre.instantiate_async(&mut store).await?;
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

        match respond(component, receiver.await, task, &body_too_large, Some(failed)).await {
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
) -> Result<Response<Capped<B>>, Response<HostBody>> {
    match received {
        Ok(Ok(response)) => {
            if body_too_large.load(Ordering::Acquire) {
                return Err(too_large(component, 0, component.limits.max_request_bytes()));
            }
            let watch = component.clone();
            tokio::spawn(async move {
                if let Ok(outcome) = task.await
                    && (outcome.timed_out || outcome.memory_hit || outcome.error.is_some())
                {
                    tracing::warn!(
                        component = %watch.name,
                        "component failed after sending its response headers: {}",
                        outcome.describe(&watch)
                    );
                }
            });
            let left = component.limits.max_response_bytes();
            Ok(response.map(|inner| Capped { inner, left, component: component.name.clone(), failed }))
        }
        Ok(Err(code)) => Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": format!("component '{}' answered with an error: {code:?}", component.name) }),
        )),
        Err(_) => Err(failure_response(component, task.await, body_too_large)),
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

/// How a guest call ended, read from its store.
pub(crate) struct Outcome {
    pub(crate) timed_out: bool,
    pub(crate) memory_hit: bool,
    pub(crate) instantiated: bool,
    pub(crate) error: Option<String>,
    #[allow(dead_code, reason = "reported once billing lands")]
    usage: wasmesh_engine::Usage,
}

impl Outcome {
    /// Reads the outcome of a call that ended with `result` (`Err` when it ran past
    /// its deadline) from its store.
    pub(crate) fn of<T>(
        store: &Store<HostState>,
        result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
        instantiated: bool,
    ) -> Self {
        let data = store.data();
        Outcome {
            timed_out: result.is_err() || data.limiter.deadline_hit,
            memory_hit: data.limiter.memory_hit,
            instantiated,
            error: match result {
                Ok(Err(e)) => Some(format!("{e:?}")),
                _ => None,
            },
            usage: {
                let mut usage = data.nn.usage;
                usage += data.llm.usage;
                usage
            },
        }
    }

    pub(crate) fn describe(&self, c: &LoadedComponent) -> String {
        if self.timed_out {
            format!(
                "component '{}' was stopped at its deadline of {} ms; raise limits.timeout_ms in [component.{}.limits] if it needs longer",
                c.name,
                c.limits.timeout_ms(),
                c.name
            )
        } else if self.memory_hit {
            format!(
                "component '{}' was stopped at its memory limit of {} MiB; raise limits.memory_mb in [component.{}.limits] if it needs more",
                c.name,
                c.limits.memory_bytes() >> 20,
                c.name
            )
        } else if !self.instantiated {
            format!(
                "the host could not instantiate component '{}' (at capacity?): {}",
                c.name,
                self.error.as_deref().unwrap_or("unknown error")
            )
        } else if let Some(e) = &self.error {
            format!("component '{}' trapped: {}", c.name, first_line(e))
        } else {
            format!("component '{}' returned without sending a response", c.name)
        }
    }

    pub(crate) fn limit_key(&self) -> Option<&'static str> {
        if self.timed_out {
            Some("timeout_ms")
        } else if self.memory_hit {
            Some("memory_mb")
        } else {
            None
        }
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
