//! QUIC with mutual TLS: the endpoints and configurations of routers and hosts, and
//! the peer's identity read from its certificate.

use crate::{ALPN, TunnelError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// What to add to a failed handshake's log line when the two ends speak different
/// versions of the protocol ([`ALPN`]): TLS's `no_application_protocol` alert, whichever
/// end sent it. `None` for every other failure.
pub fn version_hint(error: &quinn::ConnectionError) -> Option<String> {
    let no_common_protocol = quinn::TransportErrorCode::crypto(120);
    let code = match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(e) => e.code,
        _ => return None,
    };
    (code == no_common_protocol).then(|| {
        format!(
            "the other end speaks another version of the host-router protocol (this one speaks {}): \
             run the same wasmesh release on hosts and routers",
            String::from_utf8_lossy(ALPN)
        )
    })
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

/// A receive stream's chunks as quinn received them (in order): frames inside one are
/// slices of it, never copied.
impl crate::Chunks for quinn::RecvStream {
    async fn chunk(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        Ok(self.read_chunk(usize::MAX, true).await?.map(|chunk| chunk.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::version_hint;

    #[test]
    fn a_protocol_version_mismatch_says_what_to_do() {
        let close = |code| {
            quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code: code,
                frame_type: None,
                reason: bytes::Bytes::new(),
            })
        };
        let hint = version_hint(&close(quinn::TransportErrorCode::crypto(120))).expect("a hint");
        assert!(hint.contains("wasmesh/2") && hint.contains("same wasmesh release"), "{hint}");
        // Any other failure (a bad certificate: alert 42) gets none.
        assert_eq!(version_hint(&close(quinn::TransportErrorCode::crypto(42))), None);
        assert_eq!(version_hint(&quinn::ConnectionError::TimedOut), None);
    }
}
