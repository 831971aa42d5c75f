//! The router's certificate: short-lived (hours), renewed by registering again.

use std::time::Duration;
use wasmesh_api::wire::NodeRole;
use wasmesh_client::{Client, NodeIdentity};

/// Registers again at half the certificate's life (certificates live hours) and
/// swaps the renewed one into the QUIC endpoint for the handshakes that follow.
pub(crate) async fn renew_certificate(
    client: Client,
    identity: NodeIdentity,
    name: String,
    endpoint: quinn::Endpoint,
    mut cert: wasmesh_api::wire::NodeCertificate,
) {
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let left = Duration::from_millis(cert.expires_at_ms).saturating_sub(now);
        tokio::time::sleep((left / 2).max(Duration::from_secs(30))).await;
        match client.register(&identity, &name, NodeRole::Router).await {
            Ok(renewed) => {
                let config =
                    wasmesh_tunnel::TlsIdentity::new(&renewed.certificate_pem, &identity.pkcs8_der(), &renewed.ca_pem)
                        .and_then(|tls| wasmesh_tunnel::router_config(&tls));
                match config {
                    Ok(c) => {
                        endpoint.set_server_config(Some(c));
                        tracing::info!(expires_at_ms = renewed.expires_at_ms, "router certificate renewed");
                        cert = renewed;
                    }
                    Err(e) => tracing::warn!("cannot use the renewed certificate: {e}"),
                }
            }
            Err(e) => tracing::warn!("cannot renew the router's certificate, retrying: {e}"),
        }
    }
}
