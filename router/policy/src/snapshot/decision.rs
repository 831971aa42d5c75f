//! What a request asks of the policy ([`Request`]) and what it gets back: a [`Decision`] of
//! [`Candidate`]s, each with its [`Tier`].

use std::fmt;

use crate::config::MAX_CANDIDATES;
use crate::node::NodeIndex;
use wasmesh_api::ModelRef;

/// What a request needs from the fabric.
///
/// ```
/// use wasmesh_policy::{ModelRef, Request};
/// let model = ModelRef::new("llama-3-8b")?;
/// let req = Request::for_model(&model, 5 << 30).in_network("acme").with_key(42);
/// assert_eq!(req.network, Some("acme"));
/// # Ok::<(), wasmesh_policy::ModelRefError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The model (or `MODEL:ADAPTER`) the function calls, if any.
    pub model: Option<&'a ModelRef>,
    /// The bytes the model takes in memory once loaded (base plus adapter): a node with less
    /// free plus idle model memory is never asked to load it.
    pub model_bytes: u64,
    /// The private network the app is held to: only nodes of that network are candidates, and
    /// none when the snapshot has no node in it.
    pub network: Option<&'a str>,
    /// Where a request that needs no model goes on the ring (e.g. a hash of the request id, or
    /// of the session for stickiness). Requests for a model are ranked by the model alone, so
    /// that every router packs it onto the same nodes; the key only spreads pre-load hints when
    /// a hot model may grow by several nodes at once.
    pub key: u64,
}

impl<'a> Request<'a> {
    /// A request for `model`, which takes `model_bytes` of memory once loaded.
    pub fn for_model(model: &'a ModelRef, model_bytes: u64) -> Self {
        Self { model: Some(model), model_bytes, network: None, key: 0 }
    }

    /// A request that needs no model.
    pub fn without_model() -> Self {
        Self { model: None, model_bytes: 0, network: None, key: 0 }
    }

    /// Holds the request to a private network.
    pub fn in_network(mut self, network: &'a str) -> Self {
        self.network = Some(network);
        self
    }

    /// Sets the tie-breaking key.
    pub fn with_key(mut self, key: u64) -> Self {
        self.key = key;
        self
    }
}

/// Why a node is a candidate, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Tier {
    /// The model (and adapter) are in RAM: the request runs at once.
    Warm,
    /// Adapter requests: the base model is in RAM, the adapter (megabytes) is loaded first.
    BaseWarm,
    /// The model is being loaded there: the request waits for that load instead of starting one.
    Loading,
    /// The model is on the node's disk: a load, no download.
    Disk,
    /// The node has enough free memory to load the model without evicting.
    Fits,
    /// The node must evict idle models to load this one (free plus idle memory suffice).
    Evict,
    /// The request needs no model.
    Any,
}

/// One node of a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    /// The node.
    pub node: NodeIndex,
    /// Why it is there.
    pub tier: Tier,
    /// Whether it is already at or above its bounded-load cap (`c` times the mean): such nodes
    /// only come after every node under the cap, as a last resort before failing.
    pub over_bound: bool,
}

const NO_CANDIDATE: Candidate = Candidate { node: NodeIndex(u32::MAX), tier: Tier::Any, over_bound: true };

/// The outcome of [`Snapshot::route`]: nodes in order of preference (try the first, fail over
/// to the next), and perhaps a node to pre-load the model on.
///
/// Fixed capacity ([`MAX_CANDIDATES`]), so routing allocates nothing.
///
/// [`Snapshot::route`]: crate::Snapshot::route
#[derive(Clone, Copy)]
pub struct Decision {
    slots: [Candidate; MAX_CANDIDATES],
    pub(super) len: u8,
    pub(super) preload: Option<NodeIndex>,
}

impl Decision {
    pub(super) fn empty() -> Self {
        Self { slots: [NO_CANDIDATE; MAX_CANDIDATES], len: 0, preload: None }
    }

    /// The candidates, best first. Empty when no node may take the request (none ready in the
    /// network with capacity left, or none with the memory for the model).
    pub fn candidates(&self) -> &[Candidate] {
        &self.slots[..usize::from(self.len)]
    }

    /// The candidates' nodes, best first.
    pub fn nodes(&self) -> impl Iterator<Item = NodeIndex> + '_ {
        self.candidates().iter().map(|c| c.node)
    }

    /// The best candidate.
    pub fn first(&self) -> Option<NodeIndex> {
        self.candidates().first().map(|c| c.node)
    }

    /// Whether there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A node the router should ask to pre-load the model on (in the background): set when all
    /// the model's warm nodes are busy, or when it has fewer warm copies than
    /// [`PolicyConfig::min_warm`], and fewer loads of it are under way than allowed. It is a
    /// best node without the model (cheapest to load, in the model's order), and may also be
    /// one of the candidates. While several loads may start, requests name up to that many
    /// different nodes (by request key); otherwise every request of a snapshot names the same.
    ///
    /// [`PolicyConfig::min_warm`]: crate::PolicyConfig::min_warm
    pub fn preload(&self) -> Option<NodeIndex> {
        self.preload
    }

    pub(super) fn contains(&self, node: u32) -> bool {
        self.candidates().iter().any(|c| c.node.0 == node)
    }

    pub(super) fn push(&mut self, c: Candidate) {
        if usize::from(self.len) < MAX_CANDIDATES {
            self.slots[usize::from(self.len)] = c;
            self.len += 1;
        }
    }
}

impl PartialEq for Decision {
    fn eq(&self, other: &Self) -> bool {
        self.candidates() == other.candidates() && self.preload == other.preload
    }
}

impl Eq for Decision {}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision").field("candidates", &self.candidates()).field("preload", &self.preload).finish()
    }
}
