//! A node as the router sees it, from its last heartbeat.

use std::fmt;

use crate::warmth::Warmth;
use wasmesh_api::ModelRef;

/// One node of the table a [`Snapshot`](crate::Snapshot) is built from: the state its heartbeat
/// reported, plus the router's own in-flight count.
///
/// ```
/// use wasmesh_policy::{ModelRef, NodeState, Warmth};
/// const GIB: u64 = 1 << 30;
/// let node = NodeState::new("node-a", 16, 4 * GIB)
///     .with_network("acme")
///     .with_memory_idle(8 * GIB)
///     .with_model(ModelRef::new("llama-3-8b")?, Warmth::Ram);
/// assert_eq!(node.models.len(), 1);
/// # Ok::<(), wasmesh_policy::ModelRefError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeState {
    /// The node's id (unique in a table).
    pub id: String,
    /// Whether it takes requests (false while starting, or under memory pressure). A node that
    /// is not ready is never chosen.
    pub ready: bool,
    /// The private network it belongs to. A node in a private network serves only requests held
    /// to that network; a node without one serves only requests without one.
    pub network: Option<String>,
    /// Requests in flight on it now (the router's count; see [`Snapshot`](crate::Snapshot)).
    pub in_flight: u32,
    /// Requests it serves at once (its provider's share). 0 takes nothing.
    pub max_concurrency: u32,
    /// Model memory held by no model, in bytes: a model this size or smaller loads without
    /// evicting another.
    pub memory_free: u64,
    /// Model memory held by loaded models with no request in flight, in bytes: what evicting
    /// idle models frees at once. A node whose free plus idle memory is smaller than a model is
    /// not asked to load it (it would have to refuse, or wait for its requests to finish).
    pub memory_idle: u64,
    /// The models and adapters it holds, and where. A key listed twice counts as its warmest.
    pub models: Vec<(ModelRef, Warmth)>,
    /// Its reputation (audits passed; `wasmesh_trust::Standing::score`): among warm holders
    /// of a model, higher reputation comes first. Default 0 (all equal).
    pub reputation: u32,
}

impl NodeState {
    /// A ready node with no request in flight, `memory_free` bytes of model memory free, no idle
    /// model, and no private network.
    pub fn new(id: impl Into<String>, max_concurrency: u32, memory_free: u64) -> Self {
        Self {
            id: id.into(),
            ready: true,
            network: None,
            in_flight: 0,
            max_concurrency,
            memory_free,
            memory_idle: 0,
            models: Vec::new(),
            reputation: 0,
        }
    }

    /// Sets [`NodeState::ready`].
    pub fn with_ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// Sets [`NodeState::network`].
    pub fn with_network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// Sets [`NodeState::in_flight`].
    pub fn with_in_flight(mut self, in_flight: u32) -> Self {
        self.in_flight = in_flight;
        self
    }

    /// Sets [`NodeState::memory_free`].
    pub fn with_memory_free(mut self, bytes: u64) -> Self {
        self.memory_free = bytes;
        self
    }

    /// Sets [`NodeState::memory_idle`].
    pub fn with_memory_idle(mut self, bytes: u64) -> Self {
        self.memory_idle = bytes;
        self
    }

    /// Sets [`NodeState::reputation`].
    pub fn with_reputation(mut self, reputation: u32) -> Self {
        self.reputation = reputation;
        self
    }

    /// Adds a model (or adapter) it holds.
    pub fn with_model(mut self, key: ModelRef, warmth: Warmth) -> Self {
        self.models.push((key, warmth));
        self
    }
}

/// A node's place in one [`Snapshot`](crate::Snapshot): the position of its [`NodeState`] in
/// the table given to [`Snapshot::build`](crate::Snapshot::build). Only meaningful for the
/// snapshot that produced it; map it to the node's id with
/// [`Snapshot::node_id`](crate::Snapshot::node_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIndex(pub(crate) u32);

impl NodeIndex {
    /// The position in the table.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
