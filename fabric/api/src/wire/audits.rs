//! Trust: audits of hosts' answers by trusted auditor nodes, and what the registry
//! keeps of them (see the `wasmesh-trust` crate for the decisions).

use super::credits::SignedReceipt;
use serde::{Deserialize, Serialize};

/// How likely the tokens a node claims are under the claimed model, as an auditor of
/// another engine build or CPU class scores them (its rounding differs, so it cannot
/// replay them bit for bit). The auditor feeds prompt and claim in one pass and takes
/// every claimed token as is; at each position it compares the claimed token with
/// what the request's sampler could have picked there, the claim's end too (an end of
/// text the node claims the model chose). Summed over a request's generations;
/// `wasmesh_trust::score_passes` judges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimScore {
    /// Positions scored: claimed tokens, and ends of text.
    pub positions: u64,
    /// The largest shortfall, in logits (after the repeat penalty, before temperature),
    /// of a claimed token below the least the sampler could pick: the largest logit for
    /// greedy decoding, the least kept by top-k and top-p for sampling. 0 when every
    /// claimed token was pickable; an honest node's exceed 0 only by rounding.
    pub worst_gap: f32,
    /// For sampling with a seed, whose draws the auditor replays (the same Mersenne
    /// Twister on every machine): positions with a known draw, and those whose draw fell
    /// off the claimed token's share of the sampler's distribution (by more than 0.001).
    /// An honest node's draws miss only where rounding moved a share's edge past the
    /// draw; a node that sampled with other draws misses at most positions.
    #[serde(default)]
    pub draws: u64,
    /// See `draws`.
    #[serde(default)]
    pub draw_misses: u64,
    /// The largest distance, as a share of probability, between a draw and its claimed
    /// token's share (see `draws`).
    #[serde(default)]
    pub worst_draw_gap: f64,
    /// Of the sampled positions whose token the sampler could pick: how many, and the
    /// sums of the claimed token's surprisal (`-ln q`), of the entropy and of the
    /// surprisal's variance under the sampler's distribution `q` there. Honest sampling
    /// makes `(surprisal - entropy) / sqrt(variance)` about a standard normal draw; a
    /// node sampling from another distribution drifts above it.
    pub sampled: u64,
    /// See `sampled`.
    pub surprisal: f64,
    /// See `sampled`.
    pub entropy: f64,
    /// See `sampled`.
    pub variance: f64,
}

impl ClaimScore {
    /// Adds another generation's score.
    pub fn add(&mut self, other: &ClaimScore) {
        self.positions += other.positions;
        self.worst_gap = self.worst_gap.max(other.worst_gap);
        self.worst_draw_gap = self.worst_draw_gap.max(other.worst_draw_gap);
        self.draws += other.draws;
        self.draw_misses += other.draw_misses;
        self.sampled += other.sampled;
        self.surprisal += other.surprisal;
        self.entropy += other.entropy;
        self.variance += other.variance;
    }

    /// The share of known draws that missed their claimed token (0 with none).
    pub fn draw_miss_share(&self) -> f64 {
        if self.draws == 0 { 0.0 } else { self.draw_misses as f64 / self.draws as f64 }
    }

    /// How far above its expectation the claimed tokens' surprisal is, in standard
    /// deviations (0 with no sampled position).
    pub fn z(&self) -> f64 {
        if self.variance <= 0.0 { 0.0 } else { (self.surprisal - self.entropy) / self.variance.sqrt() }
    }
}

/// Token ids of a request's generations, by the order they started: those through
/// `wasi:nn`, and those through Spin's `llm`. A host returns them to a router that
/// meters the request; an audit's replay checks them (teacher-forced) as claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationIds {
    /// Of the `wasi:nn` generations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nn: Vec<Vec<i32>>,
    /// Of the Spin `llm` generations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub llm: Vec<Vec<i32>>,
}

impl GenerationIds {
    /// The most bytes [`GenerationIds::encode`] writes (a quarter of a million ids).
    pub const MAX_ENCODED: usize = 1 << 20;

    /// Whether no generation produced a token.
    pub fn is_empty(&self) -> bool {
        self.nn.iter().chain(&self.llm).all(Vec::is_empty)
    }

    /// A compact binary form: for `nn`, then `llm`, a count of generations and each
    /// generation's count of ids, then its ids (big-endian `u32` counts, little-endian
    /// `i32` ids). `None` past [`GenerationIds::MAX_ENCODED`] bytes.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let ids: usize = self.nn.iter().chain(&self.llm).map(Vec::len).sum();
        let size = 8 + 4 * (self.nn.len() + self.llm.len()) + 4 * ids;
        if size > Self::MAX_ENCODED {
            return None;
        }
        let mut out = Vec::with_capacity(size);
        for side in [&self.nn, &self.llm] {
            out.extend_from_slice(&(side.len() as u32).to_be_bytes());
            for generation in side {
                out.extend_from_slice(&(generation.len() as u32).to_be_bytes());
                for id in generation {
                    out.extend_from_slice(&id.to_le_bytes());
                }
            }
        }
        Some(out)
    }

    /// Reads what [`GenerationIds::encode`] wrote; every count is checked against what
    /// is left, so a hostile count allocates nothing.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, String> {
        let bad = || "malformed token ids".to_string();
        let next_u32 = |bytes: &mut &[u8]| -> Result<u32, String> {
            let (head, rest) = bytes.split_first_chunk::<4>().ok_or_else(bad)?;
            *bytes = rest;
            Ok(u32::from_be_bytes(*head))
        };
        let mut sides = [Vec::new(), Vec::new()];
        for side in &mut sides {
            let count = next_u32(&mut bytes)? as usize;
            if count > bytes.len() / 4 {
                return Err(bad());
            }
            for _ in 0..count {
                let len = next_u32(&mut bytes)? as usize;
                if len > bytes.len() / 4 {
                    return Err(bad());
                }
                let (ids, rest) = bytes.split_at(len * 4);
                side.push(ids.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes"))).collect());
                bytes = rest;
            }
        }
        if !bytes.is_empty() {
            return Err(bad());
        }
        let [nn, llm] = sides;
        Ok(Self { nn, llm })
    }
}

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
