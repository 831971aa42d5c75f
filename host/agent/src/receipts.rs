//! The host's receipts: what each metered request used, signed with the node's key.
//! A router asks for one by giving the request an id; the receipt goes back on the
//! request's stream just before its end (`Frame::Receipt`).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmesh_api::wire::{Receipt, SignedReceipt};
use wasmesh_client::NodeIdentity;
use wasmesh_runtime::{Host, Served};

/// Signs receipts as this node.
#[derive(Clone)]
pub(crate) struct Receipts {
    pub(crate) identity: Arc<NodeIdentity>,
    /// The receipt key the registry gave the node: receipts carry a MAC under it (well
    /// under a microsecond) rather than an Ed25519 signature (tens of microseconds, and as
    /// much again for the registry to check). None from a registry that gives none.
    pub(crate) mac_key: Option<[u8; 32]>,
    /// The engine's build and this machine's CPU class, the same in every receipt.
    pub(crate) engine: Arc<str>,
    pub(crate) cpu_class: Arc<str>,
}

impl Receipts {
    /// The signed receipt (JSON of a [`SignedReceipt`]) of request `request_id`,
    /// answered with `status` after running since `started`; `served` is `None` when no
    /// guest ran (nothing used).
    pub(crate) fn sign(
        &self,
        host: &Host,
        request_id: &str,
        served: Option<Served>,
        status: u16,
        started: Instant,
    ) -> bytes::Bytes {
        let served = served.unwrap_or_default();
        let receipt = Receipt {
            request_id: request_id.to_string(),
            node: self.identity.node_id().to_string(),
            app_version: host.app_version(&served.app).unwrap_or(0),
            app: served.app,
            models: served.models,
            input_tokens: served.input_tokens,
            output_tokens: served.output_tokens,
            embeddings: served.embeddings,
            wall_ms: started.elapsed().as_millis() as u64,
            status,
            failed: served.failed,
            at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            finish_reason: served.finish_reason,
            commitment: served.commitment,
            engine: self.engine.to_string(),
            cpu_class: self.cpu_class.to_string(),
            score: served.score,
        };
        let text = serde_json::to_string(&receipt).expect("JSON of plain values");
        let signed = match &self.mac_key {
            Some(key) => SignedReceipt {
                mac: wasmesh_api::wire::receipt_mac(key, &text),
                receipt: text,
                signature: String::new(),
            },
            None => {
                SignedReceipt { signature: self.identity.sign_hex(text.as_bytes()), receipt: text, mac: String::new() }
            }
        };
        serde_json::to_vec(&signed).expect("JSON of plain values").into()
    }
}
