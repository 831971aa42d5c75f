//! The policies compared ([`Policy`]) and how the naive ones pick ([`Baselines`]): random,
//! round-robin, and least-loaded (over a [`MinTree`]).

use crate::fabric::Fabric;
use wasmesh_policy::hash::Rng;

/// A routing policy the simulator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// The `wasmesh-policy` crate's policy ([`Snapshot::route`]).
    ///
    /// [`Snapshot::route`]: wasmesh_policy::Snapshot::route
    Ours,
    /// Four random up nodes.
    Random,
    /// The next four up nodes in turn.
    RoundRobin,
    /// The four least loaded up nodes (relative to concurrency).
    LeastLoaded,
}

impl Policy {
    /// All of them, ours first.
    pub const ALL: [Policy; 4] = [Policy::Ours, Policy::Random, Policy::RoundRobin, Policy::LeastLoaded];

    /// Its name in reports (`ours`, `random`, `round_robin`, `least_loaded`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::Ours => "ours",
            Policy::Random => "random",
            Policy::RoundRobin => "round_robin",
            Policy::LeastLoaded => "least_loaded",
        }
    }
}

/// How the baselines pick, and their state.
pub(crate) struct Baselines {
    /// Random's draws.
    pub(crate) rng: Rng,
    /// Round-robin's next node.
    pub(crate) cursor: usize,
    /// Least-loaded's nodes by relative load.
    pub(crate) tree: MinTree,
}

impl Baselines {
    /// Up to four candidates, best first, into `out` (`usize::MAX` for none).
    pub(crate) fn pick(&mut self, policy: Policy, fabric: &Fabric<'_>, out: &mut [usize; 4]) {
        let n = fabric.nodes.len();
        match policy {
            Policy::Random => {
                for c in out.iter_mut() {
                    // Up nodes are most of them: a few draws find one.
                    for _ in 0..64 {
                        let i = self.rng.below(n);
                        if fabric.nodes[i].up {
                            *c = i;
                            break;
                        }
                    }
                }
            }
            Policy::RoundRobin => {
                let mut taken = 0;
                let mut at = self.cursor;
                for _ in 0..n {
                    if taken == out.len() {
                        break;
                    }
                    if fabric.nodes[at].up {
                        out[taken] = at;
                        taken += 1;
                    }
                    at = (at + 1) % n;
                }
                self.cursor = (self.cursor + 1) % n.max(1);
            }
            Policy::LeastLoaded | Policy::Ours => {
                let mut popped = [u64::MAX; 4];
                for (c, p) in out.iter_mut().zip(popped.iter_mut()) {
                    let m = self.tree.min();
                    if m == u64::MAX {
                        break;
                    }
                    let i = (m & 0xffff_ffff) as usize;
                    *c = i;
                    *p = m;
                    self.tree.set(i, u64::MAX);
                }
                for p in popped.into_iter().filter(|&p| p != u64::MAX) {
                    self.tree.set((p & 0xffff_ffff) as usize, p);
                }
            }
        }
    }
}

/// A min-tree over nodes keyed by relative load, for the least-loaded baseline.
pub(crate) struct MinTree {
    size: usize,
    tree: Vec<u64>,
}

impl MinTree {
    /// A tree of `n` nodes, all absent.
    pub(crate) fn new(n: usize) -> Self {
        let size = n.next_power_of_two().max(1);
        Self { size, tree: vec![u64::MAX; 2 * size] }
    }

    /// Node `i`'s entry: its relative load, then its index.
    pub(crate) fn key(load: u32, cap: u32, i: usize) -> u64 {
        ((u64::from(load) << 16) / u64::from(cap.max(1))) << 32 | i as u64
    }

    /// Sets node `i`'s entry (`u64::MAX`: absent).
    pub(crate) fn set(&mut self, i: usize, v: u64) {
        let mut at = self.size + i;
        self.tree[at] = v;
        while at > 1 {
            at /= 2;
            self.tree[at] = self.tree[2 * at].min(self.tree[2 * at + 1]);
        }
    }

    /// Every node's entry from the fabric (up nodes only).
    pub(crate) fn rebuild(&mut self, fabric: &Fabric<'_>) {
        for (i, node) in fabric.nodes.iter().enumerate() {
            self.tree[self.size + i] =
                if node.up { Self::key(node.in_flight, fabric.world.cap[i], i) } else { u64::MAX };
        }
        for at in (1..self.size).rev() {
            self.tree[at] = self.tree[2 * at].min(self.tree[2 * at + 1]);
        }
    }

    fn min(&self) -> u64 {
        self.tree[1]
    }
}
