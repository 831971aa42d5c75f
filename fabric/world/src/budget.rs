//! The node's memory budget for guests: what all instances together may hold, their
//! linear memories and the `wasi:nn` tensors they copy into the host. Each instance
//! is also bounded by its own `memory_mb`; the budget bounds the sum, so 256
//! instances of a 4 GiB cap cannot ask a 24 GiB node for a terabyte.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes guests may hold at once on this node, and how many they hold now.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicUsize::new(0) })
    }

    /// No bound (tests and embedders that bound memory otherwise).
    pub fn unlimited() -> Arc<Self> {
        Self::new(usize::MAX)
    }

    /// Takes `bytes` from the budget; `false` (and nothing taken) when that would
    /// pass the limit.
    pub fn try_take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken earlier.
    pub fn give_back(&self, bytes: usize) {
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(bytes)));
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Which budget refused a [`Charge::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The app's share of the node (`--cap-app-memory-mb`): its other instances hold it.
    App {
        /// The share, bytes.
        limit: usize,
    },
    /// The whole node's budget (`--instance-memory-mb`).
    Node {
        /// The budget, bytes.
        limit: usize,
    },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::App { limit } => write!(
                f,
                "node memory budget exhausted: this app's instances on this node together hold its share of {} MiB (--cap-app-memory-mb); retry shortly",
                limit >> 20
            ),
            Refused::Node { limit } => write!(
                f,
                "node memory budget exhausted: the instances on this node together hold its {} MiB (--instance-memory-mb); retry shortly",
                limit >> 20
            ),
        }
    }
}

/// What one instance took from its app's share and from the node's budget; given back
/// when it is dropped.
#[derive(Debug)]
pub struct Charge {
    node: Arc<MemoryBudget>,
    app: Arc<MemoryBudget>,
    bytes: usize,
}

impl Charge {
    /// Nothing taken yet from `app` (the app's share) and `node`.
    pub fn new(node: Arc<MemoryBudget>, app: Arc<MemoryBudget>) -> Self {
        Self { node, app, bytes: 0 }
    }

    /// Another charge, empty, against the same app share and node budget (a store's
    /// tensors beside its linear memories): one lookup of the app's share serves both.
    pub fn sibling(&self) -> Self {
        Self::new(self.node.clone(), self.app.clone())
    }

    /// Charges to nothing (tests and embedders that bound memory otherwise).
    pub fn unlimited() -> Self {
        Self::new(MemoryBudget::unlimited(), MemoryBudget::unlimited())
    }

    /// Takes `bytes` more from both, or from neither when either has no room.
    pub fn take(&mut self, bytes: usize) -> Result<(), Refused> {
        if !self.app.try_take(bytes) {
            return Err(Refused::App { limit: self.app.limit });
        }
        if !self.node.try_take(bytes) {
            self.app.give_back(bytes);
            return Err(Refused::Node { limit: self.node.limit });
        }
        self.bytes += bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.app.give_back(self.bytes);
        self.node.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_apps_share_and_the_nodes_budget_and_come_back_when_dropped() {
        let node = MemoryBudget::new(100);
        let (one, other) = (MemoryBudget::new(70), MemoryBudget::new(70));
        let mut a = Charge::new(node.clone(), one.clone());
        let mut b = Charge::new(node.clone(), one.clone());
        let mut c = Charge::new(node.clone(), other.clone());
        assert_eq!(a.take(60), Ok(()));
        assert_eq!(b.take(11), Err(Refused::App { limit: 70 }), "the app holds 60 of its 70");
        assert_eq!(b.take(10), Ok(()));
        assert_eq!(c.take(31), Err(Refused::Node { limit: 100 }), "70 + 31 is over the node's 100");
        assert_eq!(other.used(), 0, "a refused take leaves the app's share as it was");
        assert_eq!(c.take(30), Ok(()));
        assert_eq!(node.used(), 100);
        drop(a);
        assert_eq!((node.used(), one.used()), (40, 10));
        drop(b);
        drop(c);
        assert_eq!((node.used(), one.used(), other.used()), (0, 0, 0));
        assert!(!MemoryBudget::new(10).try_take(usize::MAX), "no overflow");
    }
}
