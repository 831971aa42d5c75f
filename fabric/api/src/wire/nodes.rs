//! Nodes: registering a node's identity and role, its certificate, its status as
//! listed, and how its id and registration signature are derived.

use super::heartbeat::Heartbeat;
use serde::{Deserialize, Serialize};

/// `POST /v1/nodes/register`, sent with a `provider` key: a node proves it holds
/// the Ed25519 key its id is derived from by signing
/// [`registration_message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// `node_id_for(public_key)`.
    pub node_id: String,
    /// The node's Ed25519 public key, hex.
    pub public_key: String,
    /// A label for people (defaults to the hostname).
    pub name: String,
    /// Now, in Unix ms; the registry refuses stale registrations.
    pub timestamp_ms: u64,
    /// Ed25519 signature of [`registration_message`], hex.
    pub signature: String,
    /// What the node is (a router's certificate names `router.wasmesh`; registering
    /// one needs a `router` key).
    #[serde(default)]
    pub role: NodeRole,
}

/// What a registered identity is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A worker host.
    #[default]
    Host,
    /// A router.
    Router,
}

impl NodeRole {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Host => "host",
            NodeRole::Router => "router",
        }
    }
}

/// The registry's answer to a registration: a certificate for the node's key,
/// signed by the registry's CA (the QUIC transport uses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// The node.
    pub node_id: String,
    /// Its certificate, PEM.
    pub certificate_pem: String,
    /// The registry CA's certificate, PEM.
    pub ca_pem: String,
    /// When the certificate expires (Unix ms): nodes register again before then
    /// (certificates live hours, so a revoked key's nodes lose theirs soon).
    #[serde(default)]
    pub expires_at_ms: u64,
    /// A host's receipt key (hex, 32 bytes): it authenticates its usage receipts with it
    /// ([`receipt_mac`](super::receipt_mac)). The same at every registration; none for routers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub receipt_key: String,
}

/// A node's status as the registry sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeats arrive and it is ready.
    Online,
    /// Heartbeats arrive but it is not ready (starting, or under memory pressure).
    NotReady,
    /// It missed its heartbeats.
    Offline,
    /// Heartbeats arrive but its provider paused it (`wasmesh host pause`).
    Paused,
}

/// A node as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub node_id: String,
    /// Its label.
    pub name: String,
    /// Its status.
    pub status: NodeStatus,
    /// Host or router.
    #[serde(default)]
    pub role: NodeRole,
    /// When it registered first.
    pub registered_at_ms: u64,
    /// When its last heartbeat arrived (0: never).
    pub last_seen_ms: u64,
    /// The last heartbeat.
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
    /// Times peers reported it for serving pieces that failed verification; a
    /// reported node is no longer given to anyone as a peer.
    #[serde(default)]
    pub peer_reports: u64,
    /// Its audits and standing (trust).
    #[serde(default)]
    pub trust: super::NodeTrust,
}

/// A node's id: `n` followed by the first 20 bytes of the blake3 of its Ed25519
/// public key, hex. A node cannot choose its id; it proves it by signing.
pub fn node_id_for(public_key: &[u8; 32]) -> String {
    let hash = blake3::hash(public_key);
    let mut id = String::with_capacity(41);
    id.push('n');
    for b in &hash.as_bytes()[..20] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The certificate name that puts a node in private network `network`.
pub fn network_name(network: &str) -> String {
    format!("{network}.net.wasmesh")
}

/// What a node signs to register.
pub fn registration_message(node_id: &str, public_key_hex: &str, timestamp_ms: u64) -> Vec<u8> {
    format!("wasmesh-register-v1\n{node_id}\n{public_key_hex}\n{timestamp_ms}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_depend_on_the_key() {
        let a = node_id_for(&[1; 32]);
        let b = node_id_for(&[2; 32]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 41);
        assert!(a.starts_with('n'));
    }
}
