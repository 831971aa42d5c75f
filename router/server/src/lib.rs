//! The wasmesh router.
//!
//! Callers speak HTTP to any router (`/fn/{app}/{path}`); hosts keep a QUIC
//! connection to every router (they dial, so NAT is no obstacle). For each
//! request the router looks up which model the app's component uses, asks the
//! routing policy ([`wasmesh_policy`], a pure function of the node table) for
//! candidates (warm in RAM first, bounded load per model), and forwards the
//! request over the first candidate's connection as a QUIC stream. A node that
//! fails before the first response byte is retried on the next candidate, unseen
//! by the caller; after the first byte, the caller gets a clean error (an SSE
//! `error` event, or a reset) rather than a hang.
//!
//! The node table comes from the hosts' own reports on their connections
//! ([`wasmesh_tunnel::HostReport`]); the policy snapshot is rebuilt from it
//! whenever it changes (at most every 100 ms) and swapped atomically.

mod audit;
mod callers;
mod follow;
mod lanes;
mod link;
mod meter;
mod metrics;
mod pins;
mod receipt_queue;
mod relay;
mod renew;
mod route_error;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use wasmesh_api::wire::NodeRole;
use wasmesh_api::{AppManifest, AppPath};
use wasmesh_client::{Client, NodeIdentity};
use wasmesh_policy::{ModelRef, PolicyConfig, Snapshot};

pub use meter::MeterConfig;

/// A response body: bytes, or an error that aborts the response.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// How a router runs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The registry.
    pub registry: String,
    /// A key with the `router` scope (a router's certificate needs one).
    pub key: String,
    /// Holds the router's identity and certificate.
    pub data_dir: PathBuf,
    /// Its label.
    pub name: String,
    /// Where hosts connect (UDP).
    pub quic_listen: SocketAddr,
    /// The routing policy's settings.
    pub policy: PolicyConfig,
    /// Largest request body forwarded (bodies are buffered so a failed node can be retried).
    pub max_body_bytes: usize,
    /// How long a host may take to start answering (non-streaming inference answers at the end).
    pub first_byte_timeout: Duration,
    /// Whether callers need an `invoke` key.
    pub require_key: bool,
    /// The app whose component serves the OpenAI API (`/v1/...`).
    pub openai_app: String,
    /// Requests per second per caller key (bursts of twice that).
    pub per_key_rps: f64,
    /// Metering: holds on callers' credits, receipts, charges.
    pub metering: MeterConfig,
    /// Audits: how large a share of requests is replayed on auditors, and when a node
    /// stops getting traffic.
    pub trust: wasmesh_trust::TrustConfig,
    /// Audit shares of particular models (instead of [`TrustConfig::base_share`](wasmesh_trust::TrustConfig)).
    pub audit_share_by_model: HashMap<String, f64>,
}

impl RouterConfig {
    /// A router of `registry`, signing in with `key` (a router key), keeping its
    /// certificate in `data_dir` and listening for hosts on `quic_listen`; every other
    /// setting at its default (16 MiB bodies, 300 s to the first byte, 1000 requests/s
    /// per caller key, callers need an `invoke` key).
    pub fn new(registry: String, key: String, data_dir: PathBuf, quic_listen: SocketAddr) -> Self {
        Self {
            registry,
            key,
            data_dir,
            name: "router".into(),
            quic_listen,
            policy: PolicyConfig::default(),
            max_body_bytes: 16 << 20,
            first_byte_timeout: Duration::from_secs(300),
            require_key: true,
            openai_app: "openai".into(),
            per_key_rps: 1000.0,
            metering: MeterConfig::default(),
            trust: wasmesh_trust::TrustConfig::default(),
            audit_share_by_model: HashMap::new(),
        }
    }
}

/// The policy snapshot and, index for index, the connections it routes to.
struct Routed {
    snapshot: Snapshot,
    links: Vec<Arc<lanes::Lanes>>,
    /// The apps each node has loaded, with their versions (by node index).
    apps: Vec<Arc<std::collections::BTreeMap<String, u64>>>,
}

struct Inner {
    config: RouterConfig,
    links: link::Links,
    routed: ArcSwap<Routed>,
    dirty: AtomicBool,
    apps: ArcSwap<HashMap<String, AppManifest>>,
    model_sizes: ArcSwap<HashMap<String, u64>>,
    /// Each registry model's account and whether it is published (`/v1/models` lists
    /// a caller only its own account's and the published ones).
    model_owners: ArcSwap<HashMap<String, (String, bool)>>,
    /// Pinned models and how many nodes must keep each warm (see `pins`).
    pins: ArcSwap<HashMap<String, u32>>,
    /// Nodes the registry lists as offline (their heartbeats stopped: a revoked key,
    /// or a node cut off from the control plane): never routed to, even if their
    /// certificate still opens a link.
    cut_off: ArcSwap<std::collections::HashSet<String>>,
    /// Nodes' audit records and standing, as the registry lists them (auditors, caught
    /// nodes, reputation).
    standing: Arc<ArcSwap<HashMap<String, wasmesh_api::wire::NodeTrust>>>,
    audits: Arc<audit::Audits>,
    /// Callers' keys as the registry judged them: kept 30 s when valid, 5 s when
    /// refused (so a new or revoked key takes effect soon), at most 10,000.
    callers: moka::sync::Cache<String, callers::Verdict>,
    limiter: wasmesh_api::limit::RateLimiter,
    unknown_keys: wasmesh_api::limit::RateLimiter,
    client: Client,
    metrics: metrics::Metrics,
    meter: Arc<meter::Meter>,
}

/// A running router.
pub struct Router {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Router {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Router {
    /// Registers the router with the registry (its certificate names
    /// `router.wasmesh`), opens the QUIC endpoint for hosts and starts following
    /// deployments.
    pub async fn start(config: RouterConfig) -> anyhow::Result<Self> {
        let identity = NodeIdentity::load_or_create(&config.data_dir.join("router.key"))?;
        let client = Client::new(&config.registry, Some(config.key.clone()))?;
        let cert = client
            .register(&identity, &config.name, NodeRole::Router)
            .await
            .map_err(|e| anyhow::anyhow!("cannot register the router (it needs a key with the router scope: `wasmesh keys create --scope router`): {e}"))?;
        let tls = wasmesh_tunnel::TlsIdentity::new(&cert.certificate_pem, &identity.pkcs8_der(), &cert.ca_pem)?;
        let endpoint = wasmesh_tunnel::router_endpoint(config.quic_listen, &tls)?;
        tracing::info!(quic = %endpoint.local_addr()?, node = %identity.node_id(), "router registered; waiting for hosts");
        let renew = tokio::spawn(renew::renew_certificate(
            client.clone(),
            identity,
            config.name.clone(),
            endpoint.clone(),
            cert,
        ));
        let empty = Snapshot::build(Vec::new(), &config.policy).map_err(|e| anyhow::anyhow!("{e}"))?;
        let standing = Arc::new(ArcSwap::from_pointee(HashMap::new()));
        let (audits, audit_jobs) =
            audit::Audits::new(standing.clone(), config.trust.clone(), config.audit_share_by_model.clone())?;
        let audits = Arc::new(audits);
        let meter = Arc::new(meter::Meter::new(
            config.metering.clone(),
            client.clone(),
            &config.data_dir.join("receipts"),
            audits.clone(),
        )?);
        let metrics = metrics::Metrics::new()?;
        metrics.registry.register(Box::new(meter.credits.clone()))?;
        metrics.registry.register(Box::new(audits.counts.clone()))?;
        metrics.registry.register(Box::new(audits.replays.clone()))?;
        let inner = Arc::new(Inner {
            links: link::Links::default(),
            routed: ArcSwap::from_pointee(Routed { snapshot: empty, links: Vec::new(), apps: Vec::new() }),
            dirty: AtomicBool::new(false),
            apps: ArcSwap::from_pointee(HashMap::new()),
            model_sizes: ArcSwap::from_pointee(HashMap::new()),
            model_owners: ArcSwap::from_pointee(HashMap::new()),
            pins: ArcSwap::from_pointee(HashMap::new()),
            cut_off: ArcSwap::from_pointee(std::collections::HashSet::new()),
            standing,
            audits,
            callers: moka::sync::Cache::builder().max_capacity(10_000).expire_after(callers::VerdictExpiry).build(),
            limiter: wasmesh_api::limit::RateLimiter::new(config.per_key_rps),
            unknown_keys: wasmesh_api::limit::RateLimiter::new(20.0),
            client,
            metrics,
            meter,
            config,
        });
        let mut tasks = vec![
            tokio::spawn(link::accept(inner.clone(), endpoint)),
            tokio::spawn(follow::rebuild_loop(inner.clone())),
            tokio::spawn(follow::follow_deployments(inner.clone())),
            tokio::spawn(follow::follow_nodes(inner.clone())),
            tokio::spawn(pins::follow_models(inner.clone())),
            tokio::spawn(pins::keep_pins(inner.clone())),
            tokio::spawn(follow::metering_loop(inner.clone())),
            tokio::spawn(audit::run(inner.clone(), audit_jobs)),
            renew,
        ];
        tasks.shrink_to_fit();
        Ok(Self { inner, tasks })
    }

    /// Hosts connected now.
    pub fn hosts(&self) -> usize {
        self.inner.links.len()
    }

    /// Hosts connected and ready, as the routing table has them now.
    pub fn ready_hosts(&self) -> usize {
        ready_hosts(&self.inner)
    }

    /// Serves callers' HTTP on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let connections = Arc::new(tokio::sync::Semaphore::new(wasmesh_api::limit::MAX_CONNECTIONS));
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
            // Over the connection cap: close at once rather than hold a file open.
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "too many connections; closing a new one");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&inner, req, peer.ip()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(wasmesh_api::limit::HEADER_READ_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .expect("valid response")
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, serde_json::json!({ "error": message.into() }))
}

async fn handle(inner: &Arc<Inner>, req: Request<Incoming>, source: std::net::IpAddr) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let response = match path.as_str() {
        "/health" => health(inner),
        "/metrics" => metrics::respond(inner),
        "/v1/models" => models(inner, req, source).await,
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" => openai(inner, path.clone(), req, source).await,
        _ => match AppPath::parse(&path) {
            Some(scoped) => function(inner, scoped, req, source).await,
            None => error(
                StatusCode::NOT_FOUND,
                format!("no route for {path}: functions are under /fn/APP/..., the OpenAI API under /v1/..."),
            ),
        },
    };
    inner.metrics.answered(response.status());
    inner.metrics.latency.observe(started.elapsed().as_secs_f64());
    response
}

/// Hosts that say they are ready and that the current routing table routes to.
fn ready_hosts(inner: &Inner) -> usize {
    let routed = inner.routed.load();
    inner
        .links
        .reports()
        .iter()
        .filter(|(id, r)| r.ready && routed.snapshot.index_of(id).is_some_and(|n| routed.snapshot.is_ready(n)))
        .count()
}

fn health(inner: &Inner) -> Response<Body> {
    let ready = ready_hosts(inner);
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": "ok",
            "hosts": inner.links.len(),
            "ready": ready,
            "apps": inner.apps.load().len(),
            "metering": inner.meter.enabled(),
            "receipt_segments_waiting": inner.meter.waiting(),
        }),
    )
}

/// The models the component behind `path` of `app` is granted (first one first), and
/// the app's private network.
#[allow(clippy::result_large_err, reason = "the error is the response itself, built once per refused request")]
fn grants_for(inner: &Inner, app: &str, path: &str) -> Result<(Vec<String>, Option<String>), Response<Body>> {
    let apps = inner.apps.load();
    let Some(manifest) = apps.get(app) else {
        return Err(error(StatusCode::NOT_FOUND, format!("no app named '{app}' is deployed")));
    };
    let Some(route) = manifest.route_for(path) else {
        let routes: Vec<&str> = manifest.route.iter().map(|r| r.path.as_str()).collect();
        return Err(json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("app '{app}' has no route for {path}"), "routes": routes }),
        ));
    };
    let grants = manifest
        .component
        .get(&route.component)
        .map(|c| c.models.iter().chain(&c.ai_models).cloned().collect())
        .unwrap_or_default();
    Ok((grants, manifest.app.network.clone()))
}

/// The model (and adapter) a function request runs with, as the routing key: the
/// body's `model` when the component is granted it (else its first grant), with the
/// body's `lora` as the adapter. A body that is not a JSON object routes by the first grant.
fn model_of_function(grants: &[String], body: &[u8]) -> Option<ModelRef> {
    #[derive(serde::Deserialize)]
    struct Keys {
        model: Option<String>,
        lora: Option<String>,
    }
    let first = grants.first().and_then(|m| ModelRef::parse(m).ok());
    let keys = match serde_json::from_slice::<Keys>(body) {
        Ok(keys) if body.first() == Some(&b'{') => keys,
        _ => return first,
    };
    let model = match keys.model {
        Some(m) if grants.iter().any(|g| ModelRef::parse(g).is_ok_and(|r| r.model() == m)) => m,
        _ => first.as_ref()?.model().to_string(),
    };
    let reference = match keys.lora.as_deref() {
        // A lora may be written as NAME or MODEL:NAME.
        Some(lora) => match lora.split_once(':') {
            Some((_, adapter)) => format!("{model}:{adapter}"),
            None => format!("{model}:{lora}"),
        },
        None => model,
    };
    ModelRef::parse(&reference).ok().or(first)
}

async fn function(
    inner: &Arc<Inner>,
    scoped: AppPath<'_>,
    req: Request<Incoming>,
    source: std::net::IpAddr,
) -> Response<Body> {
    let caller = match callers::authorize(inner, &req, source).await {
        Ok(caller) => caller,
        Err(denied) => return denied,
    };
    let app = scoped.app();
    let (grants, network) = match grants_for(inner, app, scoped.rest()) {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (parts, body) = match buffer(inner, req).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let model = model_of_function(&grants, &body);
    let hold = match hold(inner, caller, model.as_ref(), &body, false).await {
        Ok(hold) => hold,
        Err(refused) => return refused,
    };
    let head = head_of(&parts, None);
    link::forward(inner, app, network.as_deref(), model, head, body, hold).await
}

/// The OpenAI-compatible API: served by the built-in `openai` app's component on
/// the hosts, routed by the body's `model`.
async fn openai(inner: &Arc<Inner>, path: String, req: Request<Incoming>, source: std::net::IpAddr) -> Response<Body> {
    let caller = match callers::authorize(inner, &req, source).await {
        Ok(caller) => caller,
        Err(denied) => return denied,
    };
    let app = inner.config.openai_app.clone();
    let Some(network) = inner.apps.load().get(&app).map(|m| m.app.network.clone()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the OpenAI API needs the built-in '{app}' app deployed (guest-components/openai; `wasmesh up` deploys it)"
            ),
        );
    };
    let (parts, body) = match buffer(inner, req).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let model = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => match v.get("model").and_then(|m| m.as_str()).map(|m| match v.get("lora").and_then(|l| l.as_str()) {
            Some(lora) if !m.contains(':') => ModelRef::parse(&format!("{m}:{lora}")),
            _ => ModelRef::parse(m),
        }) {
            Some(Ok(key)) => key,
            Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("invalid `model`: {e}")),
            None => return error(StatusCode::BAD_REQUEST, "`model` is required (GET /v1/models lists them)"),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let hold = match hold(inner, caller, Some(&model), &body, path == "/v1/embeddings").await {
        Ok(hold) => hold,
        Err(refused) => return refused,
    };
    let head = head_of(&parts, Some(AppPath::uri(&app, &path)));
    link::forward(inner, &app, network.as_deref(), Some(model), head, body, hold).await
}

/// Holds what the request may cost from the caller's credits (when metering is on and
/// callers have keys).
async fn hold(
    inner: &Arc<Inner>,
    caller: Option<meter::Caller>,
    model: Option<&ModelRef>,
    body: &[u8],
    embeddings: bool,
) -> Result<Option<meter::Hold>, Response<Body>> {
    match caller {
        Some(caller) if inner.meter.enabled() => inner.meter.reserve(caller, model, body, embeddings).await.map(Some),
        _ => Ok(None),
    }
}

/// `GET /v1/models`: what the registry has and what hosts hold.
async fn models(inner: &Arc<Inner>, req: Request<Incoming>, source: std::net::IpAddr) -> Response<Body> {
    let caller = match callers::authorize(inner, &req, source).await {
        Ok(caller) => caller,
        Err(denied) => return denied,
    };
    // Every model the registry has and every adapter a host holds, with the hosts that
    // hold each warm now (a request for a model on none waits for a fetch and a load);
    // another account's private models are left out.
    let owners = inner.model_owners.load();
    let visible = |name: &str| {
        let base = name.split_once(':').map_or(name, |(base, _)| base);
        match (owners.get(base), &caller) {
            (Some((account, public)), Some(caller)) => *public || *account == caller.account,
            _ => true,
        }
    };
    let mut warm: std::collections::BTreeMap<String, u32> =
        inner.model_sizes.load().keys().map(|name| (name.clone(), 0)).collect();
    for (_, report) in inner.links.reports() {
        for m in report.models {
            let count = warm.entry(m.name).or_insert(0);
            if m.state == wasmesh_api::wire::ModelState::Loaded {
                *count += 1;
            }
        }
    }
    let data: Vec<serde_json::Value> = warm
        .into_iter()
        .filter(|(id, _)| visible(id))
        .map(|(id, warm_on)| {
            serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "wasmesh", "warm_on": warm_on })
        })
        .collect();
    json(StatusCode::OK, serde_json::json!({ "object": "list", "data": data }))
}

/// Reads the whole body (so a failed node can be retried), within the limit.
async fn buffer(inner: &Inner, req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), Response<Body>> {
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, inner.config.max_body_bytes).collect().await {
        Ok(b) => Ok((parts, b.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over the router's limit of {} bytes", inner.config.max_body_bytes),
        )),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    }
}

/// The head forwarded to a host: `uri` (or the original), headers without hop-by-hop ones or the caller's key.
fn head_of(parts: &http::request::Parts, uri: Option<String>) -> wasmesh_tunnel::RequestHead {
    wasmesh_tunnel::RequestHead {
        method: parts.method.to_string(),
        uri: uri.unwrap_or_else(|| {
            parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| parts.uri.path().to_string())
        }),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != http::header::AUTHORIZATION && *name != http::header::CONNECTION)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect(),
        request_id: String::new(),
        seed: 0,
        tokens: false,
        claims: Default::default(),
        score_claims: false,
    }
}
