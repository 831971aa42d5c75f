//! A node's lanes as requests see them: which lane takes the next request (the one with
//! the fewest answers in flight), and the count a request holds on its node and lane.

use crate::Routed;
use crate::link::HostConn;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmesh_policy::NodeIndex;

/// A routable node's open lanes, as the routing table holds them.
pub(crate) struct Lanes {
    lanes: Vec<Arc<HostConn>>,
    next: AtomicUsize,
}

impl Lanes {
    pub(crate) fn new(lanes: Vec<Arc<HostConn>>) -> Self {
        Self { lanes, next: AtomicUsize::new(0) }
    }

    /// The lane for the next request: the one with the fewest answers in flight, so a
    /// lane whose thread is taken by a long or CPU-heavy guest gets fewer new requests;
    /// ties go to the lanes in turn.
    pub(crate) fn pick(&self) -> &Arc<HostConn> {
        if let [only] = self.lanes.as_slice() {
            return only;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.lanes[least_loaded(self.lanes.len(), turn, |i| self.lanes[i].busy.load(Ordering::Relaxed))]
    }
}

/// Of `n` lanes, the one with the smallest `load`, looking from lane `turn % n` on (the
/// first of equals wins, so equal lanes take requests in turn).
fn least_loaded(n: usize, turn: usize, load: impl Fn(usize) -> usize) -> usize {
    let first = turn % n;
    let mut best = (load(first), first);
    for k in 1..n {
        let i = (first + k) % n;
        let l = load(i);
        if l < best.0 {
            best = (l, i);
        }
    }
    best.1
}

/// A request in flight on a node and one of its lanes: counted on the snapshot (for
/// routing) and on the lane (for [`Lanes::pick`]) until dropped.
pub(crate) struct InFlight {
    routed: Arc<Routed>,
    node: NodeIndex,
    lane: Arc<HostConn>,
}

impl InFlight {
    pub(crate) fn begin(routed: &Arc<Routed>, node: NodeIndex, lane: &Arc<HostConn>) -> Self {
        routed.snapshot.begin(node);
        lane.busy.fetch_add(1, Ordering::Relaxed);
        Self { routed: routed.clone(), node, lane: lane.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.routed.snapshot.end(self.node);
        self.lane.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_least_loaded_lane_wins_and_equals_take_turns() {
        let pick = |loads: &[usize], turn| super::least_loaded(loads.len(), turn, |i| loads[i]);
        // Equal lanes: each turn starts at the next lane.
        assert_eq!((0..6).map(|t| pick(&[0, 0, 0], t)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        // A lane busy with a long guest gets no new request while another is idle.
        assert!((0..6).all(|t| pick(&[3, 0, 0], t) != 0));
        assert_eq!(pick(&[2, 5, 1, 4], 1), 2);
        // Of equals, the first from the turn on.
        assert_eq!(pick(&[1, 0, 7, 0], 2), 3);
        assert_eq!(pick(&[1, 0, 7, 0], 0), 1);
    }
}
