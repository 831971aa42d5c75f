//! A running host's control socket (`DATA/control.sock`, a Unix socket only the node's
//! own user can open, never the public port): one JSON line in, one JSON line out.
//! `wasmesh host pause|resume|status|set` speak it.

use super::{Balance, CachedModel};
use serde::{Deserialize, Serialize};

/// The socket's file name in the host's data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// A command to a running host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Take no new requests (routers stop routing to the node at its next report);
    /// requests in flight finish; registration and caches stay.
    Pause,
    /// Take requests again.
    Resume,
    /// What the node is doing.
    Status,
    /// Change a share of the machine while the node runs (`memory=40%`, `requests=8`).
    Set {
        /// What to change: `memory`, `requests`, `upload_kib_s` or `cache` (now); `threads`
        /// (at the next start).
        key: String,
        /// Its new value.
        value: String,
    },
}

/// A node's state in a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Taking requests.
    Ready,
    /// Paused by its provider.
    Paused,
    /// Starting, or under memory pressure.
    NotReady,
}

/// What `wasmesh host status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// Its state.
    pub state: HostState,
    /// Its id in the fabric (none without a registry).
    pub node_id: Option<String>,
    /// The registry it joined.
    pub registry: Option<String>,
    /// Requests running now.
    pub in_flight: u32,
    /// Requests served since it started.
    pub served: u64,
    /// Requests it takes at once (the share it lends).
    pub max_requests: u32,
    /// Memory for loaded models, in bytes (the share it lends).
    pub model_memory_bytes: u64,
    /// Of which loaded models hold.
    pub model_memory_used_bytes: u64,
    /// Models and adapters it has, and where each stands.
    pub models: Vec<CachedModel>,
    /// The provider account's credits (earnings in escrow and available), when the
    /// registry answered.
    pub earnings: Option<Balance>,
    /// Why `earnings` is missing, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earnings_error: Option<String>,
    /// The config file `wasmesh host set` writes changes to, if it runs from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// What happened, in words (or what went wrong and what to do).
    pub message: String,
    /// Whether the command did what was asked.
    pub ok: bool,
    /// The node's state after the command.
    pub status: Option<HostStatus>,
}
