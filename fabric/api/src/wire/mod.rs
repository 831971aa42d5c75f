//! The registry's wire types: what the CLI, the hosts and the registry send each
//! other as JSON. Field names are `snake_case`; times are Unix milliseconds;
//! hashes are lowercase hex blake3.
//!
//! The types live in files by resource and are all re-exported here, so each is
//! named `wire::X`.

mod apps;
mod artifacts;
mod audits;
mod control;
mod credits;
mod error;
mod heartbeat;
mod hex;
mod keys;
mod models;
mod nodes;
mod signing;
mod swarm;

pub use apps::{AppSummary, AppVersion, Deploy, Deployments, Rollback};
pub use artifacts::{
    ArtifactKind, BlobInfo, PieceManifest, StartUpload, UploadSession, parse_byte_range, piece_length_for,
};
pub use audits::{
    AuditOutcome, AuditRecord, AuditReport, ClaimScore, GenerationIds, NodeAudits, NodeTrust, TrustNode, replay_id,
};
pub use control::{CONTROL_SOCKET, ControlAnswer, ControlRequest, HostState, HostStatus};
pub use credits::{
    Balance, Generation, Grant, Lease, LeaseRequest, LedgerCheck, LedgerEntry, MICROS_PER_CREDIT, MeteredReceipt,
    Price, Receipt, ReceiptBatch, ReceiptOutcome, SignedReceipt, UsageRow, format_micros, parse_credits, receipt_key,
    receipt_mac, receipt_mac_valid,
};
pub use error::ErrorBody;
pub use heartbeat::{CachedModel, Gpu, Hardware, Heartbeat, MemoryPressure, ModelState, ResourceShare};
pub use hex::{from_hex, is_blake3_hex, to_hex};
pub use keys::{
    AccountInfo, AddMember, CreateAccount, CreateKey, CreatedKey, DEFAULT_ACCOUNT, KeyInfo, MemberInfo, SESSION_HOURS,
    Scope, SignIn, SignedIn, WhoAmI,
};
pub use models::{LoraInfo, ModelFacts, ModelInfo, PinModel, Publish, PushLora, PushModel};
pub use nodes::{
    NodeCertificate, NodeInfo, NodeRole, NodeStatus, RegisterNode, network_name, node_id_for, registration_message,
};
pub use signing::{node_auth, request_message};
pub use swarm::{PeerReport, ReportOutcome, SwarmGrant, SwarmJoin};
