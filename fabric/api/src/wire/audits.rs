//! Trust: audits of hosts' answers by trusted auditor nodes, and what the registry
//! keeps of them (see the `wasmesh-trust` crate for the decisions).

use super::credits::SignedReceipt;
use serde::{Deserialize, Serialize};

/// `POST /v1/audits` (router): the evidence of one audit. The registry checks every
/// signature, that the replays come from trusted nodes, and judges the commitments
/// itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditReport {
    /// The audited node's signed receipt of the request.
    pub original: SignedReceipt,
    /// The auditors' signed receipts of their replays, in the order they ran (each names
    /// the request as `ORIGINAL_ID/audit-N`).
    pub replays: Vec<SignedReceipt>,
}

/// What the registry made of an audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditOutcome {
    /// `passed`, `failed` or `inconclusive`.
    pub verdict: String,
    /// Whether the audited node is now evicted from routing.
    #[serde(default)]
    pub evicted: bool,
    /// Micros of the node's escrowed earnings refunded to the callers it served.
    #[serde(default)]
    pub refunded: i64,
    /// An audit of this request was recorded before: nothing changed.
    #[serde(default)]
    pub duplicate: bool,
}

/// A node's audit record and standing, as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTrust {
    /// Audits passed.
    pub passed: u64,
    /// Audits that convicted it.
    pub failed: u64,
    /// Audits that could not decide.
    pub inconclusive: u64,
    /// An auditor (`wasmesh nodes trust`): serves audits only.
    pub trusted: bool,
    /// Caught cheating: never routed to again.
    pub evicted: bool,
    /// Another node of its provider was caught: audited more.
    pub flagged: bool,
    /// Its reputation, 0 to 1000 (`wasmesh_trust::Standing::score`).
    pub score: u32,
}

/// One audit as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The request audited.
    pub request_id: String,
    /// The node audited.
    pub node: String,
    /// The auditors that replayed it, in order.
    pub auditors: Vec<String>,
    /// `passed`, `failed` or `inconclusive`.
    pub verdict: String,
    /// The node's commitment.
    pub commitment: String,
    /// The replays' commitments, in order.
    pub replays: Vec<String>,
    /// When it was recorded (Unix ms).
    pub at_ms: u64,
}

/// `GET /v1/nodes/{id}/audits`: a node's standing, its audits (newest first) and what
/// was refunded from its escrow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAudits {
    /// The node.
    pub node: String,
    /// Its standing now.
    pub trust: NodeTrust,
    /// Its audits, newest first (at most 200).
    pub audits: Vec<AuditRecord>,
    /// Micros of its escrowed earnings refunded to callers.
    pub refunded: i64,
}

/// `PUT /v1/nodes/{id}/trust` (admin): make a node an auditor, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustNode {
    /// Whether it is an auditor.
    pub trusted: bool,
}

/// The request id of the `n`th replay (from 1) of request `original`.
pub fn replay_id(original: &str, n: usize) -> String {
    format!("{original}/audit-{n}")
}
