//! The transport between hosts and routers: QUIC (quinn), dialled by the host so
//! that nodes behind NAT can serve.
//!
//! * **Identity**: both ends present certificates the registry's CA issued
//!   (mutual TLS). A router's certificate names [`ROUTER_NAME`]; a host's carries
//!   its node's Ed25519 key, and the router takes the node id from that key
//!   ([`peer_node_id`]), never from anything the host says.
//! * **Requests**: the router opens one bidirectional stream per request and
//!   writes an [`Open`]: for a caller's request [`Open::Request`] with its
//!   [`RequestHead`], then the body as `Data` frames and `End`; the host answers a
//!   [`ResponseHead`], then `Data` frames as the component produces them (SSE
//!   arrives as it is written), then `End` (or `Error`). Control messages are
//!   other variants of [`Open`] ([`Open::Preload`]), never made-up URIs.
//! * **State**: the host opens one unidirectional stream at connect and writes a
//!   [`HostReport`] whenever its state changes, at least every second, so the
//!   router's view of warm models, load and readiness is seconds fresh.
//!
//! Frames: one byte of kind, a big-endian `u32` length, the payload.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmesh_api::ModelRef;
use wasmesh_api::wire::CachedModel;

/// ALPN of the protocol.
pub const ALPN: &[u8] = b"wasmesh/1";
/// The name every router certificate carries.
pub const ROUTER_NAME: &str = "router.wasmesh";
/// Largest head or report frame.
const MAX_CONTROL_FRAME: usize = 1 << 20;
/// Largest data frame.
const MAX_DATA_FRAME: usize = 1 << 20;

/// Transport errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// A certificate or key could not be used.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The QUIC endpoint could not be created.
    #[error("cannot open a QUIC endpoint on {addr}: {source}")]
    Endpoint {
        /// The address it was to listen on.
        addr: SocketAddr,
        /// The operating system's error (address in use, no permission).
        source: std::io::Error,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The stream or connection failed.
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A certificate chain and key, and the CA that peers must chain to.
#[derive(Clone)]
pub struct TlsIdentity {
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
    roots: Arc<rustls::RootCertStore>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn pem_certs(pem: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, TunnelError> {
    use rustls_pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TunnelError::Tls(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TunnelError::Tls("no certificate in the PEM".into()));
    }
    Ok(certs)
}

impl TlsIdentity {
    /// From a certificate (PEM), its private key (PKCS#8 DER) and the CA (PEM).
    pub fn new(cert_pem: &str, key_pkcs8_der: &[u8], ca_pem: &str) -> Result<Self, TunnelError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in pem_certs(ca_pem)? {
            roots.add(ca).map_err(|e| TunnelError::Tls(format!("bad CA certificate: {e}")))?;
        }
        Ok(Self { chain: pem_certs(cert_pem)?, key_der: key_pkcs8_der.to_vec(), roots: Arc::new(roots) })
    }

    fn key(&self) -> rustls_pki_types::PrivateKeyDer<'static> {
        rustls_pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

/// The transport limits of one side. A host accepts the router's request streams
/// (bidirectional, up to 4096 at once); a router accepts from a host only its report
/// stream (one unidirectional stream per link, two allowed) and no bidirectional one, and
/// bounds what a link may make it buffer (64 MiB), so an authenticated but hostile host
/// cannot open thousands of streams it never reads or fills the router's memory.
fn transport(router_side: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(5).try_into().expect("5 s fits")));
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    if router_side {
        t.max_concurrent_bidi_streams(0u32.into());
        t.max_concurrent_uni_streams(2u32.into());
        t.receive_window((64u32 << 20).into());
    } else {
        t.max_concurrent_bidi_streams(4096u32.into());
        t.max_concurrent_uni_streams(0u32.into());
    }
    Arc::new(t)
}

/// A router's endpoint: accepts hosts that present a certificate from the CA.
pub fn router_endpoint(addr: SocketAddr, identity: &TlsIdentity) -> Result<quinn::Endpoint, TunnelError> {
    quinn::Endpoint::server(router_config(identity)?, addr).map_err(|source| TunnelError::Endpoint { addr, source })
}

/// A router's TLS set-up with `identity`; `endpoint.set_server_config` swaps in a
/// renewed certificate for the handshakes that follow (live links keep theirs).
pub fn router_config(identity: &TlsIdentity) -> Result<quinn::ServerConfig, TunnelError> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(identity.roots.clone(), provider())
        .build()
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key())
        .map_err(|e| TunnelError::Tls(format!("router certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TunnelError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(true));
    Ok(config)
}

/// A host's endpoint: dials routers, presenting the node's certificate.
pub fn host_endpoint(identity: &TlsIdentity) -> Result<quinn::Endpoint, TunnelError> {
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("valid address");
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|source| TunnelError::Endpoint { addr: bind, source })?;
    endpoint.set_default_client_config(host_config(identity)?);
    Ok(endpoint)
}

/// A host's TLS set-up with `identity`; `endpoint.set_default_client_config` swaps in
/// a renewed certificate for the dials that follow (live links keep theirs).
pub fn host_config(identity: &TlsIdentity) -> Result<quinn::ClientConfig, TunnelError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_root_certificates(identity.roots.clone())
        .with_client_auth_cert(identity.chain.clone(), identity.key())
        .map_err(|e| TunnelError::Tls(format!("node certificate: {e}")))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TunnelError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(false));
    Ok(config)
}

/// The node id of the host at the other end, derived from the Ed25519 key of the
/// certificate it proved it holds.
pub fn peer_node_id(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<rustls_pki_types::CertificateDer<'static>>>()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let key: [u8; 32] = cert.public_key().subject_public_key.data.as_ref().try_into().ok()?;
    Some(wasmesh_api::wire::node_id_for(&key))
}

/// The private network the registry put the peer's node in (a certificate name
/// `NETWORK.net.wasmesh`), if any.
pub fn peer_network(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<rustls_pki_types::CertificateDer<'static>>>()?;
    let (_, cert) = x509_parser::parse_x509_certificate(certs.first()?.as_ref()).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => dns.strip_suffix(".net.wasmesh").map(str::to_string),
        _ => None,
    })
}

/// The first frame of every stream a router opens: what the stream is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Open {
    /// A caller's request: body frames and `End` follow; the host answers with a
    /// [`ResponseHead`] and the response body.
    Request(RequestHead),
    /// Load a model (its base, for an adapter reference) ahead of demand. The host
    /// answers `202` and `End` at once and loads in the background.
    Preload {
        /// The model to load.
        model: ModelRef,
        /// Keep it warm too: never evicted while the registry pins it.
        #[serde(default)]
        pin: bool,
    },
}

/// A caller's request as the router forwards it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestHead {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query as the caller sent them, e.g. `/fn/demo/chat?x=1`.
    pub uri: String,
    /// The caller's headers, less the hop-by-hop ones and the caller's key.
    pub headers: Vec<(String, String)>,
}

/// The start of a host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
}

/// A host's state, as the router routes by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// Whether it takes requests.
    pub ready: bool,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests it serves at once.
    pub max_concurrency: u32,
    /// Model memory not used by loaded models.
    pub free_model_memory_bytes: u64,
    /// Model memory held by loaded models no request is using (and not pinned): what
    /// evicting idle models frees at once.
    #[serde(default)]
    pub idle_model_memory_bytes: u64,
    /// Models and adapters in its caches.
    pub models: Vec<CachedModel>,
    /// Apps it serves, with versions.
    pub apps: BTreeMap<String, u64>,
    /// Requests served since start (the tests' view of where requests landed).
    pub served: u64,
    /// Model loads started since the host started (each cold start of a model).
    pub cold_loads: u64,
}

/// A frame on a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON head (request or response) or report.
    Head(Bytes),
    /// Body bytes.
    Data(Bytes),
    /// The body ended.
    End,
    /// The sender failed; the message says why.
    Error(String),
}

const HEAD: u8 = 1;
const DATA: u8 = 2;
const END: u8 = 3;
const ERROR: u8 = 4;

/// Writes one frame.
pub async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, frame: &Frame) -> std::io::Result<()> {
    let (kind, payload): (u8, &[u8]) = match frame {
        Frame::Head(b) => (HEAD, b),
        Frame::Data(b) => (DATA, b),
        Frame::End => (END, &[]),
        Frame::Error(m) => (ERROR, m.as_bytes()),
    };
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    out.write_all(&header).await?;
    out.write_all(payload).await
}

/// Reads one frame; `None` at a clean end of stream.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(input: &mut R) -> Result<Option<Frame>, TunnelError> {
    let mut header = [0u8; 5];
    match input.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    input.read_exact(&mut header[1..]).await?;
    let len = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    let limit = if header[0] == DATA { MAX_DATA_FRAME } else { MAX_CONTROL_FRAME };
    if len > limit {
        return Err(TunnelError::Protocol(format!("frame of {len} bytes is over the limit of {limit}")));
    }
    let mut payload = BytesMut::zeroed(len);
    input.read_exact(&mut payload).await?;
    let payload = payload.freeze();
    Ok(Some(match header[0] {
        HEAD => Frame::Head(payload),
        DATA => Frame::Data(payload),
        END => Frame::End,
        ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
        other => return Err(TunnelError::Protocol(format!("unknown frame kind {other}"))),
    }))
}

/// Writes a JSON head.
pub async fn write_json<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_frame(out, &Frame::Head(bytes.into())).await
}

/// Reads a JSON head.
pub async fn read_json<R: tokio::io::AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    input: &mut R,
) -> Result<T, TunnelError> {
    match read_frame(input).await? {
        Some(Frame::Head(bytes)) => {
            serde_json::from_slice(&bytes).map_err(|e| TunnelError::Protocol(format!("bad head: {e}")))
        }
        Some(Frame::Error(message)) => Err(TunnelError::Protocol(message)),
        Some(other) => Err(TunnelError::Protocol(format!("expected a head, got {other:?}"))),
        None => Err(TunnelError::Protocol("stream ended before its head".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        let open = Open::Request(RequestHead { method: "GET".into(), uri: "/x".into(), headers: vec![] });
        write_json(&mut buf, &open).await.unwrap();
        write_frame(&mut buf, &Frame::Data(Bytes::from_static(b"body"))).await.unwrap();
        write_frame(&mut buf, &Frame::End).await.unwrap();
        let mut input = &buf[..];
        let Open::Request(head) = read_json(&mut input).await.unwrap() else { panic!("a request head") };
        assert_eq!(head.uri, "/x");
        assert_eq!(read_frame(&mut input).await.unwrap(), Some(Frame::Data(Bytes::from_static(b"body"))));
        assert_eq!(read_frame(&mut input).await.unwrap(), Some(Frame::End));
        assert_eq!(read_frame(&mut input).await.unwrap(), None);
        let mut buf = Vec::new();
        write_json(&mut buf, &Open::Preload { model: "smollm2:sql".parse().unwrap(), pin: true }).await.unwrap();
        let Open::Preload { model, pin } = read_json(&mut &buf[..]).await.unwrap() else { panic!("a pre-load") };
        assert!(pin);
        assert_eq!((model.model(), model.adapter()), ("smollm2", Some("sql")));
        let huge = [DATA, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame(&mut &huge[..]).await, Err(TunnelError::Protocol(_))));
    }
}
