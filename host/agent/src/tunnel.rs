//! The host's side of the router links: dial each router over QUIC (so a host
//! behind NAT needs no open port), keep the connection up (reconnecting with
//! backoff and jitter), report state, and serve the requests routers forward.

use crate::jitter;
use crate::snapshot::HostSnapshot;
use futures::FutureExt;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmesh_runtime::Host;
use wasmesh_tunnel::{
    Frame, FrameReader, HostReport, Open, ResponseHead, decode_head, encode_frame, encode_head, write_frame, write_json,
};

/// What the reports need besides the host.
#[derive(Clone)]
pub(crate) struct ReportSource {
    pub(crate) host: Arc<Host>,
    /// What the provider lends: concurrency and model memory.
    pub(crate) share: crate::Share,
    pub(crate) under_pressure: Arc<AtomicBool>,
    /// Signs what metered requests used.
    pub(crate) receipts: crate::receipts::Receipts,
}

impl ReportSource {
    fn report(&self) -> HostReport {
        let mut report = HostSnapshot::read(&self.host, self.under_pressure.load(Ordering::Relaxed))
            .report(&crate::share_now(&self.share));
        report.engine = self.receipts.engine.to_string();
        report.cpu_class = self.receipts.cpu_class.to_string();
        report
    }
}

/// The TLS set-up every dial uses; the heartbeat loop swaps in a renewed certificate.
pub(crate) type DialConfig = std::sync::Arc<std::sync::RwLock<quinn::ClientConfig>>;

/// How many lanes a host opens to each router by default: one per four cores, at least
/// one, at most 8. One lane serves a `hello` in about 27 µs of the host's CPU where two on
/// a 2-core machine took 44 µs (one connection packs more requests per datagram and wakes
/// its thread less often), so lanes are for guests' own CPU work, which is small beside
/// inference (llama.cpp runs on threads of its own); `--link-lanes` sets more.
pub(crate) fn default_lanes() -> usize {
    (std::thread::available_parallelism().map_or(1, |n| n.get()) / 4).clamp(1, 8)
}

/// Starts one lane to the router at `addr`: a thread of its own with a one-thread runtime,
/// its own QUIC endpoint and connection, serving the requests that come on it (their
/// guests included) until `stop`'s sender is dropped.
///
/// Why lanes: a connection's packets, its driver and its streams' tasks then share one
/// thread, so a request wakes no other thread and never waits for the connection's lock.
/// On the multi-thread runtime they crossed workers, which cost the host's side 52–60 µs
/// of CPU per `hello` on a 2-core VM, against 27 µs on one lane. Several lanes give
/// guests more cores; the router takes them in turn.
pub(crate) fn start_lane(
    tls: &wasmesh_tunnel::TlsIdentity,
    dial: DialConfig,
    addr: SocketAddr,
    source: ReportSource,
    mut stop: tokio::sync::watch::Receiver<()>,
    lane: usize,
    requests: prometheus::IntCounter,
) -> Result<(), wasmesh_tunnel::TunnelError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let endpoint = {
        let _in_it = runtime.enter();
        wasmesh_tunnel::host_endpoint(tls)?
    };
    std::thread::Builder::new().name(format!("wasmesh-lane-{lane}")).spawn(move || {
        runtime.block_on(async move {
            tokio::select! {
                () = link(endpoint, dial, addr, source, requests) => {}
                _ = stop.changed() => {}
            }
        });
    })?;
    Ok(())
}

/// Keeps a link to the router at `addr` for as long as the task runs.
/// `requests` counts the requests it serves.
pub(crate) async fn link(
    endpoint: quinn::Endpoint,
    tls: DialConfig,
    addr: SocketAddr,
    source: ReportSource,
    requests: prometheus::IntCounter,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let config = tls.read().expect("dial config lock").clone();
        let connecting = endpoint.connect_with(config, addr, wasmesh_tunnel::ROUTER_NAME);
        match connecting {
            Ok(connecting) => match connecting.await {
                Ok(connection) => {
                    backoff = Duration::from_millis(200);
                    tracing::info!(router = %addr, "connected to router");
                    let reporter = tokio::spawn(report(connection.clone(), source.clone()));
                    loop {
                        match connection.accept_bi().await {
                            Ok((send, recv)) => {
                                tokio::spawn(serve_stream(
                                    source.host.clone(),
                                    source.receipts.clone(),
                                    requests.clone(),
                                    send,
                                    recv,
                                ));
                            }
                            Err(e) => {
                                tracing::warn!(router = %addr, "router link lost: {e}");
                                break;
                            }
                        }
                    }
                    reporter.abort();
                }
                Err(e) => match wasmesh_tunnel::version_hint(&e) {
                    Some(hint) => {
                        tracing::error!(router = %addr, "cannot connect to router, retrying in {backoff:?}: {e}; {hint}")
                    }
                    None => tracing::warn!(router = %addr, "cannot connect to router, retrying in {backoff:?}: {e}"),
                },
            },
            Err(e) => tracing::warn!(router = %addr, "cannot dial router: {e}"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Reports state on a stream of its own: at once, on every change (checked every
/// 100 ms), and at least every second.
async fn report(connection: quinn::Connection, source: ReportSource) {
    let Ok(mut stream) = connection.open_uni().await else { return };
    let mut last: Option<HostReport> = None;
    let mut sent_at = Instant::now();
    loop {
        let now = source.report();
        if last.as_ref() != Some(&now) || sent_at.elapsed() >= Duration::from_secs(1) {
            if write_json(&mut stream, &now).await.is_err() {
                return;
            }
            last = Some(now);
            sent_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bodies up to this size are read whole before the guest runs (the router sends
/// them with their head in one write); a larger one streams in as the guest reads it.
const WHOLE_BODY: usize = 64 << 10;

/// Serves the requests a router sends on one stream, one after another: the router
/// keeps a stream whose answer ended and sends its next request on it (no stream to
/// open, accept and spawn a task for per request). A stream ends when the router
/// finishes it, when a request's body is large (it streamed in), or on an error.
async fn serve_stream(
    host: Arc<Host>,
    receipts: crate::receipts::Receipts,
    requests: prometheus::IntCounter,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut recv = FrameReader::new(recv);
    loop {
        let open = match recv.frame().await {
            Ok(None) => return,
            Ok(Some(Frame::Head(bytes))) => match decode_head::<Open>(&bytes) {
                Ok(open) => open,
                Err(e) => {
                    tracing::debug!("bad request head from a router: {e}");
                    let _ = write_frame(&mut send, &Frame::Error(e.to_string())).await;
                    return;
                }
            },
            Ok(Some(other)) => {
                tracing::debug!("a router's stream began with {other:?}, not a head");
                return;
            }
            Err(e) => {
                tracing::debug!("bad request stream from a router: {e}");
                return;
            }
        };
        let head = match open {
            Open::Request(head) => {
                requests.inc();
                head
            }
            Open::Preload { model, pin } => {
                preload(&host, model, pin);
                let mut out = Vec::with_capacity(64);
                if encode_head(&mut out, &ResponseHead { status: 202, headers: Vec::new() }).is_err() {
                    return;
                }
                encode_frame(&mut out, &Frame::End);
                if send.write_all(&out).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // The body: whole when it is small (the usual case), else streamed.
        let mut chunks: Vec<bytes::Bytes> = Vec::new();
        let mut size = 0;
        let whole = loop {
            match recv.frame().await {
                Ok(Some(Frame::Data(bytes))) => {
                    size += bytes.len();
                    chunks.push(bytes);
                    if size > WHOLE_BODY {
                        break false;
                    }
                }
                Ok(Some(Frame::End)) => break true,
                Ok(Some(other)) => {
                    let _ = write_frame(&mut send, &Frame::Error(format!("unexpected frame {other:?}"))).await;
                    return;
                }
                Ok(None) | Err(_) => return,
            }
        };
        if whole {
            let body = match chunks.len() {
                0 => bytes::Bytes::new(),
                1 => chunks.pop().expect("one chunk"),
                _ => chunks.concat().into(),
            };
            let body = http_body_util::Full::new(body);
            if !serve(&host, &receipts, &mut send, head, body).await {
                return;
            }
            continue;
        }
        // A large body: what came so far, then the rest frame by frame as the guest reads it.
        let rest = futures::stream::unfold(Some(recv), |recv| async move {
            let mut recv = recv?;
            let item: Result<hyper_frame::Frame, std::io::Error> = match recv.frame().await {
                Ok(Some(Frame::Data(bytes))) => Ok(http_body::Frame::data(bytes)),
                Ok(Some(Frame::End)) | Ok(None) => return None,
                Ok(Some(other)) => Err(std::io::Error::other(format!("unexpected frame {other:?}"))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let next = if item.is_ok() { Some(recv) } else { None };
            Some((item, next))
        });
        let first = futures::stream::iter(chunks.into_iter().map(|b| Ok(http_body::Frame::data(b))));
        let body = http_body_util::StreamBody::new(futures::StreamExt::chain(first, rest));
        if serve(&host, &receipts, &mut send, head, body).await {
            let _ = send.finish();
        }
        return;
    }
}

/// Loads a model (its base, for an adapter reference) in the background, at a router's request.
fn preload(host: &Arc<Host>, model: wasmesh_api::ModelRef, pin: bool) {
    let engine = host.inference().clone();
    tokio::spawn(async move {
        tracing::info!(%model, pin, "pre-loading at a router's request");
        if pin {
            engine.set_pinned(model.model(), true);
        }
        let done = match model.adapter() {
            Some(adapter) => engine.preload_adapter(model.model(), adapter).await,
            None => engine.preload(model.model()).await,
        };
        if let Err(e) = done {
            tracing::warn!(%model, "pre-load failed: {e}");
        }
    });
}

/// Serves one forwarded request and writes its answer, ending with `End`; whether the
/// stream can carry the next request (false once a write failed or the answer failed).
async fn serve<B>(
    host: &Arc<Host>,
    receipts: &crate::receipts::Receipts,
    send: &mut quinn::SendStream,
    head: wasmesh_tunnel::RequestHead,
    body: B,
) -> bool
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let mut builder = http::Request::builder().method(head.method.as_str()).uri(head.uri.as_str());
    for (name, value) in &head.headers {
        builder = builder.header(name, value);
    }
    // A router that meters the request names it; what the guest used comes back here.
    let request_id = head.request_id;
    let want_tokens = head.tokens;
    let mut served = None;
    let request = match builder.body(body) {
        Ok(mut r) => {
            if head.seed != 0 {
                r.extensions_mut().insert(wasmesh_runtime::RouterSeed(head.seed));
            }
            if !head.claims.is_empty() {
                r.extensions_mut().insert(wasmesh_runtime::RouterClaims { ids: head.claims, score: head.score_claims });
            }
            if !request_id.is_empty() {
                let (report, receiver) = wasmesh_runtime::ServedReport::new();
                r.extensions_mut().insert(report);
                served = Some(receiver);
            }
            r
        }
        Err(e) => {
            let _ = write_frame(send, &Frame::Error(format!("invalid request head: {e}"))).await;
            return false;
        }
    };
    let response = host.handle(request).await;
    let (parts, mut body) = response.into_parts();
    let status = parts.status.as_u16();
    let head = ResponseHead {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
    };
    // What is ready goes out together: the head with a body that is already complete
    // (most small answers) in one write; a streamed body as its pieces come, never
    // held back waiting for the next.
    let mut out = Vec::with_capacity(512);
    if encode_head(&mut out, &head).is_err() {
        return false;
    }
    let mut reusable = true;
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => next,
            None => {
                if !out.is_empty() && send.write_all(&out).await.is_err() {
                    // The router stopped the stream (its caller left): dropping the body stops the guest.
                    return false;
                }
                out.clear();
                body.frame().await
            }
        };
        match next {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    encode_frame(&mut out, &Frame::Data(data));
                }
            }
            Some(Err(e)) => {
                encode_frame(&mut out, &Frame::Error(e.to_string()));
                reusable = false;
                break;
            }
            None => {
                if let Some(mut receiver) = served.take() {
                    // The guest's call ends with its body (or just after): its usage. What is
                    // held back waits a moment for it, so a small answer leaves in one write
                    // with its receipt and end (a host killed in between leaves no answer
                    // half-sent); a guest still running after its body gets its body sent.
                    let used = match (&mut receiver).now_or_never() {
                        Some(used) => used.ok(),
                        None => match tokio::time::timeout(Duration::from_millis(20), &mut receiver).await {
                            Ok(used) => used.ok(),
                            Err(_) => {
                                if !out.is_empty() && send.write_all(&out).await.is_err() {
                                    return false;
                                }
                                out.clear();
                                tokio::time::timeout(Duration::from_secs(2), receiver).await.ok().and_then(Result::ok)
                            }
                        },
                    };
                    if want_tokens
                        && let Some(used) = &used
                        && !used.tokens.is_empty()
                        && let Some(bytes) = used.tokens.encode()
                    {
                        encode_frame(&mut out, &Frame::Tokens(bytes.into()));
                    }
                    let receipt = receipts.sign(host, &request_id, used, status, started);
                    encode_frame(&mut out, &Frame::Receipt(receipt));
                }
                encode_frame(&mut out, &Frame::End);
                break;
            }
        }
        if out.len() >= 1 << 16 {
            if send.write_all(&out).await.is_err() {
                return false;
            }
            out.clear();
        }
    }
    if send.write_all(&out).await.is_err() {
        return false;
    }
    if !reusable {
        let _ = send.finish();
    }
    reusable
}

mod hyper_frame {
    pub(super) type Frame = http_body::Frame<bytes::Bytes>;
}
