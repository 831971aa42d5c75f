//! The swarm: a node joining the swarm of a model or LoRA file, and reporting
//! peers that served bad pieces.

use serde::{Deserialize, Serialize};

/// `POST /v1/nodes/{id}/swarm` (signed by the node): a node joins the swarm of a
/// model or LoRA file, to fetch it or to seed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmJoin {
    /// The file's blake3.
    pub blob: String,
    /// Whether the node is fetching (and wants pieces to take from the origin).
    pub fetching: bool,
}

/// The registry's answer to [`SwarmJoin`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmGrant {
    /// The private tracker's announce URL for this node (it holds a token: never log it).
    pub announce: String,
    /// Pieces this node should take from the object store (the origin): the registry
    /// hands each fetching node a different share, so the origin serves each piece
    /// about once and the nodes trade the rest. Empty: peers hold every piece (or
    /// every piece is already someone's share); take them from peers.
    pub origin_pieces: Vec<u32>,
    /// Peers that announced the whole file (seeders) in their last announce.
    pub seeders: u32,
    /// Peers fetching it now.
    pub leechers: u32,
}

/// `POST /v1/nodes/{id}/reports` (signed by the node): a peer served pieces that
/// failed verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReport {
    /// The file's blake3.
    pub blob: String,
    /// The peer's address as the reporting node saw it.
    pub peer: String,
    /// What happened.
    pub reason: String,
}

/// The registry's answer to [`PeerReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// The node that address belongs to, when the tracker knows it.
    pub node_id: Option<String>,
    /// Reports against that node so far.
    pub reports: u64,
}
