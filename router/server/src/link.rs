//! The router's side of the hosts' QUIC connections: who is connected, what they
//! report, and forwarding requests to them with failover.

use crate::lanes::{InFlight, Lanes};
use crate::route_error::{Kind, RouteError};
use crate::{Body, Inner, Routed, error};
use bytes::Bytes;
use http::Response;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmesh_api::wire::ModelState;
use wasmesh_policy::{Candidate, ModelRef, NodeState, Request, Snapshot, Warmth};
use wasmesh_tunnel::{
    Frame, FrameReader, HostReport, Open, RequestHead, ResponseHead, encode_frame, encode_head, write_frame, write_head,
};

/// A host's connection and the request streams it keeps open between requests.
pub(crate) struct HostConn {
    pub(crate) connection: quinn::Connection,
    /// Streams whose last answer ended: the next request goes on one of them (no stream
    /// to open, and on the host none to accept and no task to spawn), as HTTP/1.1
    /// keep-alive reuses connections.
    idle: Mutex<Vec<Exchange>>,
    /// Requests on this lane whose answers have not ended (see [`Lanes::pick`]).
    pub(crate) busy: AtomicUsize,
}

/// Idle streams kept per host at most (more than the requests a host serves at once).
const MAX_IDLE_STREAMS: usize = 256;

impl HostConn {
    pub(crate) fn new(connection: quinn::Connection) -> Arc<Self> {
        Arc::new(Self { connection, idle: Mutex::new(Vec::new()), busy: AtomicUsize::new(0) })
    }

    fn take_idle(&self) -> Option<Exchange> {
        self.idle.lock().expect("idle streams lock").pop()
    }
}

/// One request stream to a host: the request goes out on `send`, the answer comes
/// back on `recv`.
pub(crate) struct Exchange {
    /// None once the request's writer has it (a large body, written as the host reads it).
    send: Option<quinn::SendStream>,
    pub(crate) recv: FrameReader<quinn::RecvStream>,
    /// Where the stream goes back when its answer has ended (none: it carries one request).
    pool: Option<Arc<HostConn>>,
    /// Whether it carried an earlier request.
    pub(crate) reused: bool,
}

impl Exchange {
    /// The answer ended cleanly: the stream can carry the next request.
    pub(crate) fn release(mut self) {
        // An idle stream does not hold its connection (no cycle through the pool).
        if let Some(pool) = self.pool.take() {
            let mut idle = pool.idle.lock().expect("idle streams lock");
            if idle.len() < MAX_IDLE_STREAMS && pool.connection.close_reason().is_none() {
                idle.push(self);
            }
        }
    }
}

/// A host's connections to this router: one per lane (a host dials each router once per
/// link thread of its own, see `wasmesh_agent`), each with its own streams.
struct Link {
    lanes: Vec<Arc<HostConn>>,
    network: Option<String>,
    report: HostReport,
}

impl Link {
    fn open_lanes(&self) -> impl Iterator<Item = &Arc<HostConn>> {
        self.lanes.iter().filter(|l| l.connection.close_reason().is_none())
    }
}

/// Lanes one node may open to a router at most (a host opens one per link thread).
const MAX_LANES: usize = 64;

/// The connected hosts.
#[derive(Default)]
pub(crate) struct Links(Mutex<HashMap<String, Link>>);

impl Links {
    pub(crate) fn len(&self) -> usize {
        self.0.lock().expect("links lock").len()
    }

    pub(crate) fn reports(&self) -> Vec<(String, HostReport)> {
        self.0.lock().expect("links lock").iter().map(|(id, l)| (id.clone(), l.report.clone())).collect()
    }

    /// Every link: the node, its last report and one of its open connections.
    pub(crate) fn connections(&self) -> Vec<(String, HostReport, Arc<HostConn>)> {
        self.0
            .lock()
            .expect("links lock")
            .iter()
            .filter_map(|(id, l)| Some((id.clone(), l.report.clone(), l.open_lanes().next()?.clone())))
            .collect()
    }
}

/// Accepts hosts until the endpoint closes.
pub(crate) async fn accept(inner: Arc<Inner>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    match wasmesh_tunnel::version_hint(&e) {
                        Some(hint) => tracing::warn!("a host failed the handshake: {e}; {hint}"),
                        None => tracing::info!("a host failed the handshake: {e}"),
                    }
                    return;
                }
            };
            let Some(node) = wasmesh_tunnel::peer_node_id(&connection) else {
                tracing::warn!(peer = %connection.remote_address(), "refusing a connection without a node certificate");
                connection.close(1u32.into(), b"no node certificate");
                return;
            };
            let network = wasmesh_tunnel::peer_network(&connection);
            serve_link(inner, node, network, connection).await;
        });
    }
}

async fn serve_link(inner: Arc<Inner>, node: String, network: Option<String>, connection: quinn::Connection) {
    let mut reports = match connection.accept_uni().await {
        Ok(r) => FrameReader::new(r),
        Err(e) => {
            tracing::info!(%node, "host left before reporting: {e}");
            return;
        }
    };
    let id = connection.stable_id();
    let conn = HostConn::new(connection.clone());
    tracing::info!(%node, peer = %connection.remote_address(), network = network.as_deref().unwrap_or("public"), "host connected");
    loop {
        // Hosts report at least every second; silence means the link is dead.
        let next = tokio::time::timeout(Duration::from_secs(5), reports.json::<HostReport>()).await;
        let next = next.unwrap_or_else(|_| Err(wasmesh_tunnel::TunnelError::Protocol("no report for 5 s".into())));
        match next {
            Ok(report) => {
                let mut links = inner.links.0.lock().expect("links lock");
                let link = links.entry(node.clone()).or_insert_with(|| Link {
                    lanes: Vec::new(),
                    network: network.clone(),
                    report: report.clone(),
                });
                let mut changed = link.report != report;
                if !link.lanes.iter().any(|l| l.connection.stable_id() == id) {
                    link.lanes.retain(|l| l.connection.close_reason().is_none());
                    if link.lanes.len() >= MAX_LANES {
                        drop(links);
                        tracing::warn!(%node, "refusing a host's connection over {MAX_LANES} lanes");
                        break;
                    }
                    link.lanes.push(conn.clone());
                    changed = true;
                }
                link.report = report;
                link.network = network.clone();
                drop(links);
                if changed {
                    inner.dirty.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::info!(%node, "host disconnected: {e}");
                break;
            }
        }
    }
    // Close it, so a host whose reports broke reconnects instead of idling on a
    // link that gets no requests.
    connection.close(0u32.into(), b"link ended");
    let mut links = inner.links.0.lock().expect("links lock");
    if let Some(link) = links.get_mut(&node) {
        link.lanes.retain(|l| l.connection.stable_id() != id);
        if link.lanes.is_empty() {
            links.remove(&node);
        }
    }
    drop(links);
    // Take it out of the routing table at once, not at the next tick.
    rebuild(&inner);
}

fn warmth(state: ModelState) -> Warmth {
    match state {
        ModelState::Loaded => Warmth::Ram,
        ModelState::Fetching | ModelState::Loading => Warmth::Loading,
        ModelState::OnDisk => Warmth::Disk,
    }
}

/// Builds a new policy snapshot from the hosts' reports and swaps it in.
pub(crate) fn rebuild(inner: &Inner) {
    let cut_off = inner.cut_off.load();
    let links = inner.links.0.lock().expect("links lock");
    let mut table = Vec::with_capacity(links.len());
    let mut connections = Vec::with_capacity(links.len());
    let mut apps = Vec::with_capacity(links.len());
    for (id, link) in links.iter() {
        let lanes: Vec<Arc<HostConn>> = link.open_lanes().cloned().collect();
        if lanes.is_empty() {
            continue;
        }
        if cut_off.contains(id) {
            tracing::debug!(node = %id, "not routing to a node the registry lists as offline");
            continue;
        }
        // Auditors serve audits only; caught nodes and those of too low a reputation nothing.
        let (routable, reputation) = crate::audit::routing_standing(inner, id);
        if !routable {
            tracing::debug!(node = %id, "not routing callers to an auditor, or to a node caught or of low reputation");
            continue;
        }
        let r = &link.report;
        let mut node = NodeState::new(id.clone(), r.max_concurrency, r.free_model_memory_bytes)
            .with_reputation(reputation)
            .with_ready(r.ready)
            .with_in_flight(r.in_flight)
            .with_memory_idle(r.idle_model_memory_bytes);
        if let Some(network) = &link.network {
            node = node.with_network(network.clone());
        }
        for m in &r.models {
            if let Ok(key) = ModelRef::parse(&m.name) {
                node = node.with_model(key, warmth(m.state));
            }
        }
        table.push(node);
        connections.push(Arc::new(Lanes::new(lanes)));
        apps.push(Arc::new(r.apps.clone()));
    }
    drop(links);
    match Snapshot::build(table, &inner.config.policy) {
        Ok(snapshot) => inner.routed.store(Arc::new(Routed { snapshot, links: connections, apps })),
        Err(e) => tracing::error!("cannot build the routing table: {e}"),
    }
}

fn hash(s: &str) -> u64 {
    // FNV-1a: a stable key for tie-breaking, not security.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// How one attempt on one node went.
pub(crate) enum Attempt {
    /// The node answered: its head, and the stream its body follows on.
    Answered(ResponseHead, Exchange),
    /// The node failed; [`RouteError::retry`] says whether the next may be tried.
    Failed(RouteError),
}

/// Bodies up to this size are sent with their head in one write, without a task.
const SMALL_BODY: usize = 64 << 10;

/// Sends `open` and `body` to one node while waiting for its answer (a host may
/// answer before it has read the whole body, e.g. a 413). A small request goes on a
/// stream kept from an earlier one when there is one (`keep`: and the stream is kept
/// for the next once its answer ends).
pub(crate) async fn try_node(
    conn: &Arc<HostConn>,
    open: &Open,
    body: &Bytes,
    first_byte: Duration,
    keep: bool,
) -> Attempt {
    let small = body.len() <= SMALL_BODY;
    if keep && small {
        // A kept stream the host has since ended fails before any answer: the request
        // goes again on a new stream (the host did not run it; it runs a stream's
        // requests one after another, and ended this one before reading it).
        while let Some(mut exchange) = conn.take_idle() {
            exchange.reused = true;
            exchange.pool = Some(conn.clone());
            match send_small(exchange, open, body, first_byte).await {
                Ok(answered) => return answered,
                Err(stale) => tracing::debug!("a kept stream to the host had ended: {stale}"),
            }
        }
    }
    let (mut send, mut recv) = match tokio::time::timeout(Duration::from_secs(5), conn.connection.open_bi()).await {
        Ok(Ok((send, recv))) => (send, FrameReader::new(recv)),
        Ok(Err(e)) => return Attempt::Failed(RouteError::upstream(Kind::Connect, e.to_string())),
        Err(_) => return Attempt::Failed(RouteError::upstream(Kind::Connect, "opening a stream timed out")),
    };
    if small {
        let pool = keep.then(|| conn.clone());
        let exchange = Exchange { send: Some(send), recv, pool, reused: false };
        return match send_small(exchange, open, body, first_byte).await {
            Ok(answered) => answered,
            Err(e) => Attempt::Failed(RouteError::upstream(Kind::BeforeHead, e)),
        };
    }
    let (open, body) = (open.clone(), body.clone());
    let writer = tokio::spawn(async move {
        let write = async {
            write_head(&mut send, &open).await?;
            let mut at = 0;
            while at < body.len() {
                let end = (at + (1 << 20)).min(body.len());
                write_frame(&mut send, &Frame::Data(body.slice(at..end))).await?;
                at = end;
            }
            write_frame(&mut send, &Frame::End).await?;
            send.finish().map_err(std::io::Error::other)
        };
        // A host that stops reading does not hold the stream forever.
        if tokio::time::timeout(Duration::from_secs(60), write).await.is_err() {
            let _ = send.reset(1u32.into());
        }
    });
    match tokio::time::timeout(first_byte, recv.head::<ResponseHead>()).await {
        Ok(Ok(response)) => Attempt::Answered(response, Exchange { send: None, recv, pool: None, reused: false }),
        Ok(Err(e)) => {
            writer.abort();
            Attempt::Failed(RouteError::upstream(Kind::BeforeHead, e.to_string()))
        }
        Err(_) => {
            writer.abort();
            Attempt::Failed(RouteError::upstream(Kind::FirstByteTimeout, format!("no response within {first_byte:?}")))
        }
    }
}

/// A small request in one write (the stream's window takes it at once), then the head
/// of its answer. `Err`: the stream failed before any answer (a timeout is an answer of
/// its own: `Failed`, not retried on another stream).
async fn send_small(
    mut exchange: Exchange,
    open: &Open,
    body: &Bytes,
    first_byte: Duration,
) -> Result<Attempt, String> {
    let mut frames = Vec::with_capacity(512 + body.len());
    encode_head(&mut frames, open).map_err(|e| e.to_string())?;
    if !body.is_empty() {
        encode_frame(&mut frames, &Frame::Data(body.clone()));
    }
    encode_frame(&mut frames, &Frame::End);
    let send = exchange.send.as_mut().ok_or("the stream's send half is gone")?;
    send.write_all(&frames).await.map_err(|e| e.to_string())?;
    if exchange.pool.is_none() {
        send.finish().map_err(|e| e.to_string())?;
    }
    match tokio::time::timeout(first_byte, exchange.recv.head::<ResponseHead>()).await {
        Ok(Ok(response)) => Ok(Attempt::Answered(response, exchange)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Ok(Attempt::Failed(RouteError::upstream(
            Kind::FirstByteTimeout,
            format!("no response within {first_byte:?}"),
        ))),
    }
}

/// Asks a cold node to load `model` ahead of demand (fire and forget); `pin` asks it to
/// keep the model warm too (a pinned model, see `pins`).
pub(crate) fn preload(conn: Arc<HostConn>, model: &ModelRef, pin: bool) {
    let open = Open::Preload { model: model.clone(), pin };
    tokio::spawn(async move {
        let _ = try_node(&conn, &open, &Bytes::new(), Duration::from_secs(5), false).await;
    });
}

/// Routes and forwards one request, with failover before the first byte.
pub(crate) async fn forward(
    inner: &Arc<Inner>,
    app: &str,
    network: Option<&str>,
    model: Option<ModelRef>,
    mut head: RequestHead,
    body: Bytes,
    hold: Option<crate::meter::Hold>,
) -> Response<Body> {
    if let Some(hold) = &hold {
        head.request_id = hold.request_id.clone();
        // Every metered request carries a seed of the router's: the few replayed on
        // auditors sample the same tokens, and look like the rest. Its token ids come
        // back for every one too, so that a replay can check them rather than generate.
        head.seed = crate::audit::seed();
        head.tokens = true;
    }
    let routed = inner.routed.load_full();
    let size = model.as_ref().and_then(|m| inner.model_sizes.load().get(m.model()).copied()).unwrap_or(0);
    let key = hash(&head.uri);
    let mut request = match &model {
        Some(m) => Request::for_model(m, size).with_key(key),
        None => Request::without_model().with_key(key),
    };
    if let Some(network) = network {
        request = request.in_network(network);
    }
    let decision = routed.snapshot.route(&request);
    if decision.is_empty() {
        let e = RouteError::internal(
            Kind::NoCandidate,
            format!(
                "no host can serve app '{app}'{}{} now: {} hosts connected, none ready with room for it",
                model.as_ref().map(|m| format!(" (model {})", m.as_str())).unwrap_or_default(),
                network.map(|n| format!(" in private network '{n}'")).unwrap_or_default(),
                routed.links.len()
            ),
        );
        inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
        return retry_later(e.status(), e.message);
    }
    if let (Some(node), Some(m)) = (decision.preload(), &model) {
        inner.metrics.preloads.inc();
        tracing::info!(
            node = routed.snapshot.node_id(node).unwrap_or("?"),
            model = m.as_str(),
            "asking a cold node to pre-load"
        );
        preload(routed.links[node.get()].pick().clone(), m, false);
    }
    let open = Open::Request(head);
    let mut failures = Vec::new();
    let mut no_route = 0;
    let mut paused = 0;
    // Nodes that have the app loaded first (a deploy reaches hosts one by one); the
    // rest keep their order and are tried after, in case a report is behind.
    let has_app = |c: &&Candidate| routed.apps.get(c.node.get()).is_some_and(|a| a.contains_key(app));
    let ranked = decision.candidates();
    for candidate in ranked.iter().filter(has_app).chain(ranked.iter().filter(|c| !has_app(c))) {
        let node = candidate.node;
        let node_id = routed.snapshot.node_id(node).unwrap_or("?").to_string();
        let lane = routed.links[node.get()].pick();
        let guard = InFlight::begin(&routed, node, lane);
        match try_node(lane, &open, &body, inner.config.first_byte_timeout, true).await {
            Attempt::Answered(response, _) if is_no_route(&response) => {
                drop(guard);
                no_route += 1;
                let e = RouteError::upstream(Kind::NoRoute, format!("host {node_id} has no route for app '{app}' yet"));
                inner.metrics.retries.inc();
                tracing::info!(%app, node = %node_id, "host has not loaded the app yet, trying the next");
                failures.push(format!("{node_id}: {e}"));
            }
            Attempt::Answered(response, _) if is_paused(&response) => {
                drop(guard);
                paused += 1;
                let e = RouteError::upstream(Kind::Paused, format!("host {node_id} is paused by its provider"));
                inner.metrics.retries.inc();
                tracing::info!(%app, node = %node_id, "host is paused, trying the next");
                failures.push(format!("{node_id}: {e}"));
            }
            Attempt::Answered(response, exchange) => {
                let tier = crate::metrics::tier_name(candidate.tier);
                inner.metrics.streams[usize::from(exchange.reused)].inc();
                inner.metrics.routed(candidate.tier);
                // Per request, so at debug: at info it cost about a tenth of the router's CPU
                // (formatting and a write to stderr per request); the counters above keep the tally.
                tracing::debug!(
                    %app,
                    node = %node_id,
                    tier,
                    over_bound = candidate.over_bound,
                    model = model.as_ref().map(|m| m.as_str()).unwrap_or("-"),
                    status = response.status,
                    retries = failures.len(),
                    "routed"
                );
                let openai = app == inner.config.openai_app;
                let hold = hold.map(|mut hold| {
                    if let Open::Request(head) = open {
                        hold.keep_for_audit(head, body, model.map(|m| m.model().to_string()));
                    }
                    hold
                });
                return crate::relay::respond(response, exchange, guard, hold, openai);
            }
            Attempt::Failed(e) if e.retry => {
                drop(guard);
                inner.metrics.retries.inc();
                inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
                tracing::warn!(%app, node = %node_id, kind = ?e.kind, "node failed before answering, trying the next: {e}");
                failures.push(format!("{node_id}: {e}"));
            }
            Attempt::Failed(e) => {
                inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
                tracing::warn!(%app, node = %node_id, kind = ?e.kind, "node failed, not retried: {e}");
                let message = match e.kind {
                    Kind::FirstByteTimeout => format!("host {node_id} did not answer in time: {e}"),
                    _ => format!("host {node_id} failed: {e}"),
                };
                return error(e.status(), message);
            }
        }
    }
    if no_route > 0 && no_route == failures.len() {
        let e =
            RouteError::upstream(Kind::NoRoute, format!("app '{app}' is not loaded on any host yet; retry shortly"));
        inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
        return retry_later(e.status(), e.message);
    }
    if paused > 0 && no_route + paused == failures.len() {
        let e = RouteError::upstream(
            Kind::Paused,
            format!("every host that could serve app '{app}' is paused; retry shortly"),
        );
        inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
        return retry_later(e.status(), e.message);
    }
    let e = RouteError::internal(Kind::AllFailed, format!("every candidate host failed: {}", failures.join("; ")));
    inner.metrics.errors.with_label_values(&[e.origin_label()]).inc();
    error(e.status(), e.message)
}

/// Whether a host's answer is its "no route for this path" 404 (no component ran).
fn is_no_route(head: &ResponseHead) -> bool {
    head.status == 404 && head.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(wasmesh_api::NO_ROUTE_HEADER))
}

/// Whether a host's answer is its "paused by its provider" 503 (no component ran).
fn is_paused(head: &ResponseHead) -> bool {
    head.status == 503 && head.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(wasmesh_api::PAUSED_HEADER))
}

/// An error the caller should retry: with `Retry-After` (seconds).
fn retry_later(status: http::StatusCode, message: String) -> Response<Body> {
    let mut response = error(status, message);
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("2"));
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn fnv_is_stable() {
        assert_eq!(super::hash(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(super::hash("/a"), super::hash("/b"));
    }
}
