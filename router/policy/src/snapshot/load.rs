//! Per-node load: the in-flight counts the router moves between rebuilds ([`Snapshot::begin`],
//! [`Snapshot::end`]), readiness, and the bounded-load cap of the moment ([`Bound`]).

use std::sync::atomic::Ordering::Relaxed;

use super::Snapshot;
use crate::config::PolicyConfig;
use crate::node::NodeIndex;

impl Snapshot {
    /// Counts a request sent to `node` (ignored for an index not of this snapshot).
    pub fn begin(&self, node: NodeIndex) {
        if let (Some(load), Some(n)) = (self.loads.get(node.get()), self.nodes.get(node.get())) {
            load.fetch_add(1, Relaxed);
            self.pools[n.pool as usize].load.fetch_add(1, Relaxed);
        }
    }

    /// Counts a request on `node` as done; never below zero.
    pub fn end(&self, node: NodeIndex) {
        if let (Some(load), Some(n)) = (self.loads.get(node.get()), self.nodes.get(node.get()))
            && load.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1)).is_ok()
        {
            self.pools[n.pool as usize].load.fetch_sub(1, Relaxed);
        }
    }

    /// Requests in flight on `node` (0 for an index not of this snapshot).
    pub fn in_flight(&self, node: NodeIndex) -> u32 {
        self.loads.get(node.get()).map_or(0, |l| l.load(Relaxed))
    }

    /// The requests `node` serves at once (0 for an index not of this snapshot).
    pub fn max_concurrency(&self, node: NodeIndex) -> u32 {
        self.nodes.get(node.get()).map_or(0, |n| n.cap)
    }

    /// Takes a node out of (or back into) routing until the next rebuild.
    pub fn set_ready(&self, node: NodeIndex, ready: bool) {
        if let (Some(flag), Some(n)) = (self.ready.get(node.get()), self.nodes.get(node.get()))
            && flag.swap(ready, Relaxed) != ready
        {
            let cap = &self.pools[n.pool as usize].cap;
            if ready {
                cap.fetch_add(u64::from(n.cap), Relaxed);
            } else {
                cap.fetch_sub(u64::from(n.cap), Relaxed);
            }
        }
    }

    /// Whether `node` takes requests (false for an index not of this snapshot).
    pub fn is_ready(&self, node: NodeIndex) -> bool {
        self.ready.get(node.get()).is_some_and(|r| r.load(Relaxed))
    }

    /// The most requests `node` may have in flight before the bounded-load rule skips it, now:
    /// `max(floor(c·a), ceil(a), floor(min_bound·concurrency))` capped at its concurrency, where
    /// `a` is its share of the pool's in-flight requests plus one, in proportion to its
    /// concurrency.
    pub fn load_limit(&self, node: NodeIndex) -> Option<u32> {
        let n = self.nodes.get(node.get())?;
        let pool = &self.pools[n.pool as usize];
        Some(Bound::new(pool.load.load(Relaxed), pool.cap.load(Relaxed), &self.config).limit(n.cap))
    }
}

/// The bounded-load cap of the moment, for one pool.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    /// `(in-flight + 1) / concurrency`: the mean relative load once this request is placed.
    mean: f64,
    c: f64,
    min_bound: f64,
}

impl Bound {
    pub(super) fn new(load: u64, cap: u64, config: &PolicyConfig) -> Self {
        let mean = if cap == 0 { 0.0 } else { (load + 1) as f64 / cap as f64 };
        Self { mean, c: config.load_factor, min_bound: config.min_bound }
    }

    /// `max(floor(c·a), ceil(a), floor(min_bound·cap))`, at most `cap`, with `a = mean·cap` the
    /// node's fair share. The floor of `c·a` keeps the cap at or under `c` times the mean (the
    /// paper's `ceil(c·a)` would let a node reach `c·a + 1`, a lot at eight slots); the ceil of
    /// `a` keeps the sum of caps at or over the pool's load, so some node always takes the
    /// request while capacity is left; `min_bound` leaves a lightly loaded fabric alone.
    pub(super) fn limit(&self, cap: u32) -> u32 {
        let cap = f64::from(cap);
        let share = self.mean * cap;
        let limit = (self.c * share + 1e-9).floor().max(share.ceil()).max((self.min_bound * cap + 1e-9).floor());
        limit.min(cap) as u32
    }
}
