//! The node table indexed for routing ([`Snapshot`]) and the decision itself ([`Snapshot::route`]).
//!
//! This file holds the index's layout and its lookups; the rest is split by concern:
//! `decision` (what a request asks and what it gets back: [`Request`], [`Decision`]), `build`
//! (indexing a node table: [`Snapshot::build`]), `load` (per-node in-flight bookkeeping and the
//! bounded-load cap) and `route` (the per-request walk: [`Snapshot::route`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use crate::config::PolicyConfig;
use crate::hash::StableState;
use crate::node::NodeIndex;
use crate::warmth::Warmth;

mod build;
mod decision;
mod load;
mod route;

pub use build::BuildError;
pub use decision::{Candidate, Decision, Request, Tier};

/// A node, as the snapshot keeps it.
#[derive(Debug)]
struct Node {
    id: Box<str>,
    pool: u32,
    cap: u32,
    mem_free: u64,
    /// Free plus idle: what a load may use.
    mem_room: u64,
    /// Hash of its id: its ring points and its rank in holder lists derive from it.
    hash: u64,
    /// Its reputation: ranks it before holders of lower reputation.
    reputation: u32,
    /// Its models: `held[held_start..held_end]`, sorted by model id.
    held_start: u32,
    held_end: u32,
}

/// The nodes of one network (or of none), which only serve each other's requests.
#[derive(Debug)]
struct Pool {
    /// `(point, node)` sorted by point: `vnodes` points per node with concurrency.
    ring: Vec<(u64, u32)>,
    /// In-flight requests on its nodes.
    load: AtomicU64,
    /// Concurrency of its ready nodes.
    cap: AtomicU64,
    /// `(free + idle memory, node)`, most room first: where a model can still be loaded when
    /// the ring walk meets only nodes whose memory serves requests.
    by_room: Vec<(u64, u32)>,
}

/// Where one model key is held in one pool. Each list is in rendezvous order for the model
/// (`combine(hash(model), hash(node))`), the same on every router.
#[derive(Debug)]
struct Holders {
    pool: u32,
    warm: Vec<u32>,
    loading: Vec<u32>,
    disk: Vec<u32>,
    /// Advisory: the first position of `warm` that had room at the last look. Requests fill
    /// warm nodes in list order; this skips the full ones until the next rebuild (a second or
    /// so), so a model warm on a thousand nodes costs a step, not a thousand.
    cursor: AtomicU32,
}

/// The node table, indexed for routing: immutable but for per-node loads, readiness, and
/// per-model cursors.
///
/// Build one from the heartbeats' table ([`Snapshot::build`]) every second or so and swap it in
/// atomically (the router holds an `ArcSwap<Snapshot>`); route with [`Snapshot::route`].
///
/// **Loads.** Each node's in-flight count is an atomic the router moves per request
/// ([`Snapshot::begin`] when it sends one, [`Snapshot::end`] when it completes), so routing between
/// two rebuilds sees the requests placed since. They are advisory (relaxed atomics; a decision
/// may race another by one request) and start from [`NodeState::in_flight`] at each rebuild: the
/// router keeps its own authoritative per-node counters and copies them into the next table, so
/// an `end` that lands on a newer snapshot than its `begin` is corrected at the following
/// rebuild (`end` never goes below zero).
///
/// **Readiness** is checked at pick time ([`Snapshot::set_ready`] takes a node out at once,
/// e.g. after a failed connection), as in pingora's balancer.
///
/// [`NodeState::in_flight`]: crate::NodeState::in_flight
#[derive(Debug)]
pub struct Snapshot {
    config: PolicyConfig,
    nodes: Vec<Node>,
    held: Vec<(u32, Warmth)>,
    loads: Box<[AtomicU32]>,
    ready: Box<[AtomicBool]>,
    ids: HashMap<Box<str>, u32, StableState>,
    pools: Vec<Pool>,
    pool_names: HashMap<Box<str>, u32, StableState>,
    public_pool: Option<u32>,
    /// Model key text to model id.
    models: HashMap<Box<str>, u32, StableState>,
    /// Per model id: its holders, per pool (most models are in one or two pools).
    holders: Vec<Vec<Holders>>,
}

impl Snapshot {
    /// Nodes in the table.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The id of a node of this snapshot.
    pub fn node_id(&self, node: NodeIndex) -> Option<&str> {
        self.nodes.get(node.get()).map(|n| &*n.id)
    }

    /// The index of a node by id.
    pub fn index_of(&self, id: &str) -> Option<NodeIndex> {
        self.ids.get(id).map(|&i| NodeIndex(i))
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    fn held(&self, node: u32) -> &[(u32, Warmth)] {
        let n = &self.nodes[node as usize];
        &self.held[n.held_start as usize..n.held_end as usize]
    }

    fn holders(&self, key: &str, pool: u32) -> (Option<u32>, Option<&Holders>) {
        match self.models.get(key) {
            None => (None, None),
            Some(&mid) => (Some(mid), self.holders[mid as usize].iter().find(|h| h.pool == pool)),
        }
    }
}

fn lookup(held: &[(u32, Warmth)], model: u32) -> Option<Warmth> {
    held.binary_search_by_key(&model, |&(m, _)| m).ok().map(|at| held[at].1)
}
