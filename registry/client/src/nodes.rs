//! Nodes: registering an identity, and the node's signed requests (heartbeats,
//! joining a swarm, reporting a peer); the node list.

use crate::error::{ClientError, Result, error_chain};
use crate::{Client, NodeIdentity};
use wasmesh_api::wire::{Heartbeat, NodeCertificate, NodeInfo, RegisterNode, SwarmGrant, node_auth};

impl Client {
    /// Every node.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/v1/nodes").await
    }

    /// Makes host `node` an auditor, or not (admin).
    pub async fn trust_node(&self, node: &str, trusted: bool) -> Result<wasmesh_api::wire::TrustNode> {
        self.put(&format!("/v1/nodes/{node}/trust"), &wasmesh_api::wire::TrustNode { trusted }).await
    }

    /// Host `node`'s audits and standing.
    pub async fn node_audits(&self, node: &str) -> Result<wasmesh_api::wire::NodeAudits> {
        self.get(&format!("/v1/nodes/{node}/audits")).await
    }

    /// Reports an audit (router).
    pub async fn post_audit(&self, report: &wasmesh_api::wire::AuditReport) -> Result<wasmesh_api::wire::AuditOutcome> {
        self.post("/v1/audits", report).await
    }

    /// Registers this node; the answer holds its certificate.
    pub async fn register_node(&self, identity: &NodeIdentity, name: &str) -> Result<NodeCertificate> {
        self.register(identity, name, wasmesh_api::wire::NodeRole::Host).await
    }

    /// Registers an identity as a host (provider key) or a router (router key).
    pub async fn register(
        &self,
        identity: &NodeIdentity,
        name: &str,
        role: wasmesh_api::wire::NodeRole,
    ) -> Result<NodeCertificate> {
        let public_key = identity.public_key_hex();
        let timestamp_ms = now_ms();
        let message = wasmesh_api::wire::registration_message(identity.node_id(), &public_key, timestamp_ms);
        let request = RegisterNode {
            node_id: identity.node_id().to_string(),
            public_key,
            name: name.to_string(),
            timestamp_ms,
            signature: identity.sign_hex(&message),
            role,
        };
        self.post("/v1/nodes/register", &request).await
    }

    /// Sends a heartbeat, signed by the node.
    pub async fn heartbeat(&self, identity: &NodeIdentity, beat: &Heartbeat) -> Result<()> {
        self.signed_post(identity, "heartbeat", beat).await.map(drop)
    }

    /// Joins the swarm of blob `blob` (a model or LoRA): the tracker URL (it holds a
    /// token: never log it) and, when `fetching`, this node's share of the origin.
    pub async fn join_swarm(&self, identity: &NodeIdentity, blob: &str, fetching: bool) -> Result<SwarmGrant> {
        let join = wasmesh_api::wire::SwarmJoin { blob: blob.to_string(), fetching };
        let mut grant: SwarmGrant = self.signed_post(identity, "swarm", &join).await?.json().await.map_err(|e| {
            ClientError::Invalid(format!("the registry answered with unexpected JSON: {}", error_chain(&e)))
        })?;
        grant.announce = self.url(&grant.announce);
        Ok(grant)
    }

    /// Reports a peer that served pieces of `blob` that failed verification.
    pub async fn report_peer(
        &self,
        identity: &NodeIdentity,
        blob: &str,
        peer: std::net::SocketAddr,
        reason: &str,
    ) -> Result<wasmesh_api::wire::ReportOutcome> {
        let report = wasmesh_api::wire::PeerReport {
            blob: blob.to_string(),
            peer: peer.to_string(),
            reason: reason.to_string(),
        };
        self.signed_post(identity, "reports", &report).await?.json().await.map_err(|e| {
            ClientError::Invalid(format!("the registry answered with unexpected JSON: {}", error_chain(&e)))
        })
    }

    /// POSTs `body` as JSON to `/v1/nodes/{id}/{what}`, signed by the node.
    async fn signed_post<B: serde::Serialize>(
        &self,
        identity: &NodeIdentity,
        what: &str,
        body: &B,
    ) -> Result<reqwest::Response> {
        let path = format!("/v1/nodes/{}/{what}", identity.node_id());
        let body = serde_json::to_vec(body).expect("node requests serialize");
        let timestamp = now_ms();
        let signature = identity.sign_hex(&wasmesh_api::wire::request_message("POST", &path, timestamp, &body));
        self.send(
            self.request(reqwest::Method::POST, &path)
                .header(node_auth::NODE, identity.node_id())
                .header(node_auth::TIMESTAMP, timestamp.to_string())
                .header(node_auth::SIGNATURE, signature)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
