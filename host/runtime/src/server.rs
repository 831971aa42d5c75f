//! The HTTP side of the host: the engine, the route table, and per-request
//! instances with their limits.

use crate::app::{AppError, LoadedApp, LoadedComponent};
use crate::engines::Engines;
use crate::limits::Limiter;
use crate::nn::{NnCtx, NnView, WasiNnView};
use crate::spin::{LlmCtx, SpinLlmView};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Body, Frame, SizeHint};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmesh_api::AppManifest;
use wasmesh_engine::InferenceEngine;
use wasmtime::component::ResourceTable;
use wasmtime::{PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// An error type for response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the host sends.
pub type HostBody = UnsyncBoxBody<Bytes, BoxError>;

/// Host-wide settings. Per-component limits come from each app's manifest.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Instances that may exist at once (the pooling allocator's size). A request
    /// beyond it gets 503. Default 256.
    pub max_instances: u32,
    /// How often the epoch ticker advances; deadlines are checked at this
    /// granularity and long-running guests yield to other tasks this often.
    /// Default 10 ms.
    pub epoch_tick: Duration,
    /// Largest linear memory any component may be granted, in bytes (each pooled
    /// slot reserves this much address space). Default 4 GiB.
    pub max_memory_bytes: u64,
    /// Metrics served at `GET /metrics` (other parts of the node, such as its
    /// weights fetcher, register theirs here).
    pub metrics: prometheus::Registry,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            epoch_tick: Duration::from_millis(10),
            max_memory_bytes: 4 << 30,
            metrics: prometheus::Registry::new(),
        }
    }
}

/// The data of each per-request store.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    nn: NnCtx,
    llm: LlmCtx,
    limiter: Limiter,
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

#[derive(Clone)]
struct RouteEntry {
    app: Arc<str>,
    route: wasmesh_api::Route,
    component: Arc<LoadedComponent>,
    /// Served at its own path (`/chat`) as well as under `/fn/{app}/chat`.
    root: bool,
    /// Which deployed version of the app this is (0 for a local manifest).
    version: u64,
}

/// Where an app's routes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// At the manifest's own paths (`/chat`) and under `/fn/{app}/`. Two apps
    /// cannot claim the same path. Local manifests (`wasmesh host --app`) use this.
    Root,
    /// Only under `/fn/{app}/`: apps from the registry, which may use any paths
    /// without clashing.
    Scoped,
}

/// A worker node's runtime: see the crate docs.
pub struct Host {
    engines: Arc<Engines>,
    inference: Arc<dyn InferenceEngine>,
    routes: RwLock<Arc<Vec<RouteEntry>>>,
    ready: AtomicBool,
    in_flight: std::sync::atomic::AtomicU32,
    served: std::sync::atomic::AtomicU64,
    stop_ticker: Arc<AtomicBool>,
    metrics: prometheus::Registry,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Host {
    /// Creates the Wasmtime engines (pooling allocator, epoch interruption; see
    /// [`Engines`]), links WASI, `wasi:http` and `wasi:nn`, and starts the epoch
    /// ticker thread.
    pub fn new(config: HostConfig, inference: Arc<dyn InferenceEngine>) -> wasmtime::Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = config.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n * 4)
            .total_memories(n * 2)
            .total_tables(n * 4)
            // A WASIp3 guest may need a second fiber while its task waits on the host.
            .total_stacks(n * 2)
            .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
            // Reset the first pages of a freed slot with memset instead of returning
            // them to the kernel: the next instance skips the page faults.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            // Where the kernel has PAGEMAP_SCAN (6.7+), reset only the pages an
            // instance touched, without madvise.
            .pagemap_scan(wasmtime::Enabled::Auto)
            // Return freed slots' memory to the kernel in batches, not one madvise
            // per instance.
            .decommit_batch_size(16);
        let engines = Arc::new(Engines::new(Some(pool))?);

        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engines = engines.clone();
            let stop = stop_ticker.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("wasmesh-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engines.increment_epoch();
                    }
                })
                .map_err(|e| wasmtime::format_err!("cannot start the epoch thread: {e}"))?;
        }
        Ok(Arc::new(Self {
            engines,
            inference,
            routes: RwLock::new(Arc::new(Vec::new())),
            ready: AtomicBool::new(false),
            in_flight: Default::default(),
            served: Default::default(),
            stop_ticker,
            metrics: config.metrics,
        }))
    }

    /// The inference engine components reach through `wasi:nn`.
    pub fn inference(&self) -> &Arc<dyn InferenceEngine> {
        &self.inference
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests served since start.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the host is marked ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the host ready (`GET /health` answers 200 from then on).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Loads `wasmesh.toml` at `path` (components relative to it) and serves its routes
    /// at their own paths and under `/fn/{app}/`.
    pub async fn load_app_file(&self, path: &Path) -> Result<(), AppError> {
        let manifest = AppManifest::from_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        self.load_app(manifest, base).await
    }

    /// Loads an app and swaps it into the route table at its own paths ([`Mount::Root`]);
    /// an app of the same name is replaced (requests in flight finish on the old version).
    pub async fn load_app(&self, manifest: AppManifest, base: &Path) -> Result<(), AppError> {
        self.load_app_version(manifest, base, Mount::Root, 0).await
    }

    /// Loads `version` of an app, mounted as `mount`, and swaps it in atomically:
    /// requests already running finish on the version they started with, new ones
    /// get this one. Nothing changes when loading fails.
    pub async fn load_app_version(
        &self,
        manifest: AppManifest,
        base: &Path,
        mount: Mount,
        version: u64,
    ) -> Result<(), AppError> {
        let app = LoadedApp::load(manifest, base, &self.engines).await?;
        for (name, spec) in &app.manifest.component {
            for model in &spec.models {
                if !self.inference.has_model(model) {
                    tracing::warn!(component = %name, %model, "component is granted a model this node does not have");
                }
            }
        }
        let name: Arc<str> = app.manifest.app.name.as_str().into();
        let root = mount == Mount::Root;
        let mut routes = self.routes.write().expect("route table lock");
        let mut table: Vec<RouteEntry> = routes.iter().filter(|e| e.app != name).cloned().collect();
        for route in &app.manifest.route {
            if root && let Some(other) = table.iter().find(|e| e.root && e.route.path == route.path) {
                return Err(AppError::RouteConflict {
                    path: route.path.clone(),
                    app: name.to_string(),
                    other: other.app.to_string(),
                });
            }
            table.push(RouteEntry {
                app: name.clone(),
                route: route.clone(),
                component: app.components[&route.component].clone(),
                root,
                version,
            });
        }
        *routes = Arc::new(table);
        tracing::info!(app = %name, version, components = app.components.len(), routes = app.manifest.route.len(), "app loaded");
        Ok(())
    }

    /// Stops serving `app` (requests in flight finish). Returns whether it was served.
    pub fn unload_app(&self, app: &str) -> bool {
        let mut routes = self.routes.write().expect("route table lock");
        let before = routes.len();
        let table: Vec<RouteEntry> = routes.iter().filter(|e| &*e.app != app).cloned().collect();
        let removed = table.len() != before;
        *routes = Arc::new(table);
        if removed {
            tracing::info!(%app, "app unloaded");
        }
        removed
    }

    /// The apps served now, with the version of each (0 for local manifests).
    pub fn apps(&self) -> std::collections::BTreeMap<String, u64> {
        self.routes.read().expect("route table lock").iter().map(|e| (e.app.to_string(), e.version)).collect()
    }

    /// The paths served now, as `(app, path, component)`; scoped apps' paths are
    /// shown under `/fn/{app}`.
    pub fn routes(&self) -> Vec<(String, String, String)> {
        self.routes
            .read()
            .expect("route table lock")
            .iter()
            .map(|e| {
                let path = if e.root { e.route.path.clone() } else { format!("/fn/{}{}", e.app, e.route.path) };
                (e.app.to_string(), path, e.route.component.clone())
            })
            .collect()
    }

    /// The component for `path`, and the path the component sees when the request
    /// came in under `/fn/{app}/` (the app-relative rest, so a component behaves the
    /// same whichever way it is reached).
    fn lookup(&self, path: &str) -> Option<(Arc<LoadedComponent>, Option<String>)> {
        let routes = self.routes.read().expect("route table lock").clone();
        if let Some(rest) = path.strip_prefix("/fn/") {
            let (app, inner) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let found = routes
                .iter()
                .filter(|e| &*e.app == app)
                .filter_map(|e| e.route.matches(inner).map(|score| (score, e)))
                .max_by_key(|(score, _)| *score)
                .map(|(_, e)| (e.component.clone(), Some(inner.to_string())));
            if found.is_some() {
                return found;
            }
        }
        routes
            .iter()
            .filter(|e| e.root)
            .filter_map(|e| e.route.matches(path).map(|score| (score, e)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, e)| (e.component.clone(), None))
    }

    /// Accepts connections on `listener` until `shutdown` resolves.
    pub async fn serve_with_shutdown(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let host = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let host = host.clone();
                    async move { Ok::<_, std::convert::Infallible>(host.handle(req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    /// Accepts connections on `listener` until the process ends.
    pub async fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with_shutdown(listener, std::future::pending()).await
    }

    /// Handles one HTTP request (routing, limits, the guest, error mapping).
    pub async fn handle<B>(self: &Arc<Self>, req: http::Request<B>) -> Response<HostBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path().to_string();
        if path == "/health" {
            return self.health();
        }
        if path == "/metrics" {
            return self.metrics();
        }
        let Some((component, inner)) = self.lookup(&path) else {
            let routes: Vec<String> = self.routes().into_iter().map(|(_, p, _)| p).collect();
            return json_error(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": format!("no route for {path}"), "routes": routes }),
            );
        };
        let mut req = req;
        if let Some(inner) = inner {
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            if let Ok(uri) = format!("{inner}{query}").parse::<http::Uri>() {
                *req.uri_mut() = uri;
            }
        }
        let started = Instant::now();
        // In flight until the response body is done or dropped (a streamed answer
        // counts for as long as it streams), or this future is dropped.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.clone());
        let response = self.invoke(&component, req).await;
        self.served.fetch_add(1, Ordering::Relaxed);
        let response = response.map(|body| WithGuard { inner: body, _guard: guard }.boxed_unsync());
        tracing::debug!(
            app = %component.app,
            component = %component.name,
            %path,
            status = response.status().as_u16(),
            us = started.elapsed().as_micros() as u64,
            "request"
        );
        response
    }

    /// A store for one request to `component`: its WASI context, `wasi:nn` grants,
    /// memory cap and deadline (checked at every epoch tick, where a long-running
    /// guest also yields so it cannot hold a runtime thread).
    fn new_store(&self, component: &LoadedComponent, stderr: bool) -> Store<HostState> {
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

    fn metrics(&self) -> Response<HostBody> {
        let mut text = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&self.metrics.gather(), &mut text) {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({ "error": e.to_string() }));
        }
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync())
            .expect("static response parts")
    }

    fn health(&self) -> Response<HostBody> {
        let ready = self.ready.load(Ordering::Acquire);
        let body = serde_json::json!({
            "status": if ready { "ready" } else { "starting" },
            "engine": self.inference.summary(),
            "models": self.inference.models(),
            "loaded": self.inference.loaded_models(),
            "served": self.served(),
            "in_flight": self.in_flight(),
            "routes": self.routes().into_iter().map(|(app, path, component)| serde_json::json!({"app": app, "path": path, "component": component})).collect::<Vec<_>>(),
        });
        let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        json_response(status, &body)
    }

    async fn invoke<B>(self: &Arc<Self>, component: &Arc<LoadedComponent>, req: http::Request<B>) -> Response<HostBody>
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

/// The error answer for a request whose component sent no response head.
fn failure_response(
    component: &LoadedComponent,
    outcome: Result<Outcome, tokio::task::JoinError>,
    body_too_large: &AtomicBool,
) -> Response<HostBody> {
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": format!("component task failed: {e}") }),
            );
        }
    };
    if body_too_large.load(Ordering::Acquire) {
        return too_large(component, 0, component.limits.max_request_bytes());
    }
    let status = if outcome.timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else if !outcome.instantiated {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let message = outcome.describe(component);
    tracing::warn!(app = %component.app, component = %component.name, status = status.as_u16(), "{message}");
    let mut body = serde_json::json!({ "error": message, "component": &*component.name });
    if let Some(key) = outcome.limit_key() {
        body["limit"] = serde_json::json!(format!("[component.{}.limits] {key}", component.name));
    }
    json_error(status, body)
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
struct Outcome {
    timed_out: bool,
    memory_hit: bool,
    instantiated: bool,
    error: Option<String>,
    #[allow(dead_code, reason = "reported once billing lands")]
    usage: wasmesh_engine::Usage,
}

impl Outcome {
    /// Reads the outcome of a call that ended with `result` (`Err` when it ran past
    /// its deadline) from its store.
    fn of<T>(
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

    fn describe(&self, c: &LoadedComponent) -> String {
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

    fn limit_key(&self) -> Option<&'static str> {
        if self.timed_out {
            Some("timeout_ms")
        } else if self.memory_hit {
            Some("memory_mb")
        } else {
            None
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn too_large(c: &LoadedComponent, len: u64, max: u64) -> Response<HostBody> {
    let size = if len > 0 { format!("{len} bytes") } else { "more bytes".to_string() };
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        serde_json::json!({
            "error": format!(
                "request body of {size} is over the limit of {max} bytes for component '{}'; raise limits.max_request_bytes in [component.{}.limits]",
                c.name, c.name
            ),
            "limit": format!("[component.{}.limits] max_request_bytes", c.name),
        }),
    )
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<HostBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON of plain values"));
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes).map_err(|never| match never {}).boxed_unsync())
        .expect("static response parts")
}

fn json_error(status: StatusCode, body: serde_json::Value) -> Response<HostBody> {
    json_response(status, &body)
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Host>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A body that keeps a value alive until the body is dropped.
struct WithGuard<G> {
    inner: HostBody,
    _guard: G,
}

impl<G: Unpin> Body for WithGuard<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that fails once the component writes more than its cap, or,
/// given `failed`, that ends with an error instead of cleanly when the flag is set
/// (a WASIp3 guest failed while writing it: a trap or its deadline).
struct Capped<B> {
    inner: B,
    left: u64,
    component: Arc<str>,
    failed: Option<Arc<AtomicBool>>,
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        tracing::warn!(component = %this.component, "response body over limits.max_response_bytes; cut off");
                        return Poll::Ready(Some(Err(format!(
                            "component '{}' wrote more than its limits.max_response_bytes",
                            this.component
                        )
                        .into())));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(format!("{e:?}").into()))),
            Poll::Ready(None) if this.failed.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) => Poll::Ready(Some(
                Err(format!("component '{}' failed while writing its response body", this.component).into()),
            )),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // With a failure flag, never claim the end early: the end is where a failure shows.
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
