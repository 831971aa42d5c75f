//! The per-request walk: [`Snapshot::route`] ranks a request's candidates tier by tier (warm
//! holders, then the cold holder lists, then the model's ring arcs, then the nodes with the most
//! room), skipping nodes over their bounded-load cap while any other will do.

use std::sync::atomic::Ordering::Relaxed;

use super::decision::{Candidate, Decision, Request, Tier};
use super::load::Bound;
use super::{Holders, Snapshot, lookup};
use crate::config::MAX_PROBES;
use crate::hash::{combine, hash_str, reduce};
use crate::node::NodeIndex;
use crate::warmth::Warmth;
use wasmesh_api::ModelRef;

/// Salt for the ring start of requests that need no model (kept apart from model hashes).
const NO_MODEL_SALT: u64 = 0x6e6f_2d6d_6f64_656c;

impl Snapshot {
    /// Ranks the nodes for a request. Reads the live loads and moves the model's advisory
    /// cursor, nothing else; allocates nothing.
    ///
    /// See the [crate documentation](crate) for the order. Work is bounded by the configuration,
    /// not by the number of nodes: at most `warm_scan` warm nodes, `cold_probes` entries per
    /// other holder list, `ring_arc × ring_arcs` ring points and [`MAX_PROBES`] nodes of the
    /// most-memory list.
    pub fn route(&self, req: &Request<'_>) -> Decision {
        let pool_id = match req.network {
            None => self.public_pool,
            Some(name) => self.pool_names.get(name).copied(),
        };
        let Some(pool_id) = pool_id else { return Decision::empty() };
        let pool = &self.pools[pool_id as usize];
        let bound = Bound::new(pool.load.load(Relaxed), pool.cap.load(Relaxed), &self.config);
        let mut pick = Pick { snap: self, pool: pool_id, bound, out: Decision::empty(), spare: Decision::empty() };
        match req.model {
            None => pick.no_model(req.key),
            Some(key) => pick.model(key, req.model_bytes, req.key),
        }
        pick.finish(self.config.max_candidates)
    }
}

enum Fit {
    /// Not ready, or at its concurrency.
    No,
    /// At or over its bounded-load cap.
    Over,
    /// Under the cap: `load` in flight of `limit` allowed.
    Under { load: u32, limit: u32 },
}

/// A cold node found for a request, before ranking.
#[derive(Clone, Copy)]
struct Cold {
    node: u32,
    tier: Tier,
}

/// A small fixed list of cold nodes.
struct ColdList {
    items: [Cold; MAX_PROBES],
    len: usize,
}

impl ColdList {
    fn new() -> Self {
        Self { items: [Cold { node: u32::MAX, tier: Tier::Any }; MAX_PROBES], len: 0 }
    }

    fn push(&mut self, c: Cold) {
        if self.len < MAX_PROBES {
            self.items[self.len] = c;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[Cold] {
        &self.items[..self.len]
    }

    fn contains(&self, node: u32) -> bool {
        self.as_slice().iter().any(|c| c.node == node)
    }
}

/// What scanning the warm list found.
#[derive(Default)]
struct WarmScan {
    /// Warm nodes seen ready.
    ready: u32,
    /// Whether one of them has room under its busy threshold.
    room: bool,
    /// Whether the scan reached the end of the list (so, with the positions the cursor had
    /// passed as full, it saw the whole warm set).
    whole: bool,
}

/// One decision in the making.
struct Pick<'s> {
    snap: &'s Snapshot,
    pool: u32,
    bound: Bound,
    out: Decision,
    /// Nodes over their bounded-load cap but under their concurrency, in order of preference.
    spare: Decision,
}

impl Pick<'_> {
    fn fit(&self, node: u32) -> Fit {
        let i = node as usize;
        if !self.snap.ready[i].load(Relaxed) {
            return Fit::No;
        }
        let cap = self.snap.nodes[i].cap;
        let load = self.snap.loads[i].load(Relaxed);
        if load >= cap {
            return Fit::No;
        }
        let limit = self.bound.limit(cap);
        if load >= limit { Fit::Over } else { Fit::Under { load, limit } }
    }

    fn taken(&self, node: u32) -> bool {
        self.out.contains(node) || self.spare.contains(node)
    }

    fn push(&mut self, node: u32, tier: Tier) {
        self.out.push(Candidate { node: NodeIndex(node), tier, over_bound: false });
    }

    fn push_spare(&mut self, node: u32, tier: Tier) {
        self.spare.push(Candidate { node: NodeIndex(node), tier, over_bound: true });
    }

    fn finish(mut self, max: usize) -> Decision {
        for c in self.spare.candidates() {
            if usize::from(self.out.len) >= max {
                break;
            }
            self.out.push(*c);
        }
        self.out.len = self.out.len.min(max as u8);
        self.out
    }

    /// Requests that need no model: bounded-load consistent hashing of the request key over
    /// the pool's ring (the paper's setting: each key is a ball).
    fn no_model(&mut self, key: u64) {
        let max = self.snap.config.max_candidates;
        let start = combine(key, NO_MODEL_SALT);
        self.walk(start, |pick, node| {
            if pick.taken(node) {
                return false;
            }
            match pick.fit(node) {
                Fit::No => {}
                Fit::Over => pick.push_spare(node, Tier::Any),
                Fit::Under { .. } => pick.push(node, Tier::Any),
            }
            usize::from(pick.out.len) >= max
        });
    }

    fn model(&mut self, key: &ModelRef, bytes: u64, req_key: u64) {
        let cfg = &self.snap.config;
        let max = cfg.max_candidates;
        let home = hash_str(key.model());
        let (exact_id, exact) = self.snap.holders(key.as_str(), self.pool);
        let (base_id, base) =
            if key.is_adapter() { self.snap.holders(key.model(), self.pool) } else { (exact_id, exact) };
        let model = Model { exact: exact_id, base: base_id, adapter: key.is_adapter(), bytes };

        // 1. Warm in RAM, in the model's rendezvous order, packed up to the busy threshold.
        let mut scan = WarmScan::default();
        if let Some(h) = exact {
            scan = self.scan_warm(h);
        }
        // Loads of the model that may still start: a hint picks among that many cold nodes.
        let allowed = exact.map_or(0, |h| {
            let warm = h.warm.len();
            // Loads under way count toward `min_warm`: a copy being loaded is one more on its way.
            let coming = (warm + h.loading.len()) as u32;
            let busy = warm > 0 && (coming < cfg.min_warm || (scan.ready > 0 && scan.whole && !scan.room));
            let cap = (cfg.max_loading as usize).max((warm as f64 * cfg.loading_per_warm) as usize);
            if busy { cap.saturating_sub(h.loading.len()) } else { 0 }
        });
        let want_hint = allowed > 0;

        // 2. Cold tiers, the same for every request of the model in a snapshot (so all agree on
        //    the node to load it on) unless the model is hot (below): base in RAM, loading, disk,
        //    then the ring, then the nodes with the most memory to spare.
        let need = max.saturating_sub(usize::from(self.out.len)).max(if want_hint {
            allowed.min(cfg.placement_window)
        } else {
            0
        });
        if need == 0 {
            return;
        }
        let mut cold = ColdList::new();
        let enough = |cold: &ColdList| {
            cold.len >= need && (!want_hint || cold.as_slice().iter().any(|c| hint_tier(c.tier, key.is_adapter())))
        };
        if key.is_adapter()
            && let Some(b) = base
        {
            self.probe_cold(&b.warm, Tier::BaseWarm, None, &mut cold);
        }
        if let Some(h) = exact
            && !enough(&cold)
        {
            self.probe_cold(&h.loading, Tier::Loading, None, &mut cold);
        }
        if let Some(b) = base
            && !enough(&cold)
        {
            self.probe_cold(&b.disk, Tier::Disk, Some(bytes), &mut cold);
        }
        let holders_found = cold.len;
        // Which of the loads that may start this request's hint is for: at most `allowed`
        // distinct nodes are named per snapshot, whatever the number of requests.
        let slot = if allowed > 1 { reduce(combine(req_key, home), allowed.min(cfg.placement_window)) } else { 0 };
        // A model warm on more nodes than an arc holds has filled the arcs near its home point
        // (that is where it grew). Its spill goes where the request key points (the spill of a
        // hot model then spreads over many nodes instead of piling on a few), and its pre-loads
        // where its warm count and the slot point (the same on every router, moving on as the
        // model grows).
        let hot = exact.is_some_and(|h| h.warm.len() > cfg.ring_arc);
        let start = if hot { combine(home, req_key) } else { home };
        if !enough(&cold) {
            self.place(start, &model, &mut cold, need);
        }
        if !enough(&cold) {
            self.place_by_room(start, &model, &mut cold, &enough);
        }
        if want_hint {
            // An adapter's hint only attaches it where its base is warm (milliseconds); new
            // copies of the base are the base's own demand, never an adapter's.
            let adapter = key.is_adapter();
            let hint = if !hot {
                let all = cold.as_slice();
                nth_hint(all, slot % count_hints(all, adapter).max(1), adapter)
            } else if let Some(node) = nth_hint(&cold.as_slice()[..holders_found], slot, adapter) {
                Some(node)
            } else if adapter {
                None
            } else {
                let warm = exact.map_or(0, |h| h.warm.len()) as u64;
                let mut spread = ColdList::new();
                self.place(combine(home, (warm << 8) | slot as u64), &model, &mut spread, 1);
                nth_hint(spread.as_slice(), 0, false)
            };
            self.out.preload = hint.map(NodeIndex);
        }
        for c in cold.as_slice() {
            if usize::from(self.out.len) >= max {
                break;
            }
            self.push(c.node, c.tier);
        }
    }

    /// Scans the warm list in order from its cursor, `warm_scan` nodes at most: first the nodes
    /// with room under their busy threshold (the model packs onto the first ones, so copies
    /// further down drain and become evictable), then, if none has room, those under their cap.
    fn scan_warm(&mut self, h: &Holders) -> WarmScan {
        let cfg = &self.snap.config;
        let max = cfg.max_candidates;
        let list = &h.warm;
        let mut scan = WarmScan::default();
        if list.is_empty() {
            return scan;
        }
        let start = (h.cursor.load(Relaxed) as usize).min(list.len() - 1);
        let mut busy = ColdList::new();
        let mut first_room = None;
        let mut found = 0;
        let steps = list.len().min(cfg.warm_scan);
        scan.whole = start + steps >= list.len();
        for step in 0..steps {
            let at = if start + step >= list.len() { start + step - list.len() } else { start + step };
            let node = list[at];
            match self.fit(node) {
                Fit::No => {
                    if self.snap.ready[node as usize].load(Relaxed) {
                        scan.ready += 1;
                    }
                }
                Fit::Over => {
                    scan.ready += 1;
                    self.push_spare(node, Tier::Warm);
                }
                Fit::Under { load, limit } => {
                    scan.ready += 1;
                    if f64::from(load + 1) <= cfg.busy_fraction * f64::from(limit) {
                        first_room.get_or_insert(at);
                        self.push(node, Tier::Warm);
                        found += 1;
                        if found >= max {
                            break;
                        }
                    } else if busy.len < max {
                        busy.push(Cold { node, tier: Tier::Warm });
                    }
                }
            }
        }
        scan.room = first_room.is_some();
        // No room in this window: the next request looks at the next one.
        let cursor = first_room.unwrap_or((start + steps) % list.len());
        if cursor != start {
            h.cursor.store(cursor as u32, Relaxed);
        }
        for c in busy.as_slice() {
            self.push(c.node, Tier::Warm);
        }
        scan
    }

    /// Probes up to `cold_probes` nodes of a holder list in its order; keeps those under their
    /// cap (and with the memory, when `bytes` is given).
    fn probe_cold(&mut self, list: &[u32], tier: Tier, bytes: Option<u64>, cold: &mut ColdList) {
        let k = list.len().min(self.snap.config.cold_probes);
        for &node in &list[..k] {
            if self.taken(node) || cold.contains(node) {
                continue;
            }
            if bytes.is_some_and(|b| self.snap.nodes[node as usize].mem_room < b) {
                continue;
            }
            match self.fit(node) {
                Fit::No => {}
                Fit::Over => self.push_spare(node, tier),
                Fit::Under { .. } => cold.push(Cold { node, tier }),
            }
        }
    }

    /// Where `node` stands for the model; `None` when it cannot take it (no room to load it).
    fn classify(&self, node: u32, model: &Model) -> Option<Tier> {
        let held = self.snap.held(node);
        let exact = model.exact.and_then(|m| lookup(held, m));
        let base = if model.adapter { model.base.and_then(|m| lookup(held, m)) } else { exact };
        let n = &self.snap.nodes[node as usize];
        match (exact, base) {
            (Some(Warmth::Ram), _) => Some(Tier::Warm),
            (_, Some(Warmth::Ram)) if model.adapter => Some(Tier::BaseWarm),
            (Some(Warmth::Loading), _) => Some(Tier::Loading),
            (_, Some(Warmth::Disk | Warmth::Loading)) => (n.mem_room >= model.bytes).then_some(Tier::Disk),
            _ if n.mem_free >= model.bytes => Some(Tier::Fits),
            _ if n.mem_room >= model.bytes => Some(Tier::Evict),
            _ => None,
        }
    }

    /// Bounded-load consistent hashing from `start` (the model's home point): gathers up to
    /// `placement_window` eligible nodes in ring order, then ranks them by tier (disk, fits,
    /// evict), ring order within a tier.
    fn place(&mut self, start: u64, model: &Model, cold: &mut ColdList, need: usize) {
        let window = self.snap.config.placement_window.max(need);
        let mut found = ColdList::new();
        self.walk(start, |pick, node| {
            if pick.taken(node) || cold.contains(node) || found.contains(node) {
                return false;
            }
            let Some(tier) = pick.classify(node, model) else { return false };
            match pick.fit(node) {
                Fit::No => {}
                Fit::Over => pick.push_spare(node, tier),
                Fit::Under { .. } => found.push(Cold { node, tier }),
            }
            found.len >= window
        });
        let items = &mut found.items[..found.len];
        items.sort_by_key(|c| c.tier);
        for c in items.iter() {
            cold.push(*c);
        }
    }

    /// The last resort of placement: among the nodes with room for the model (a prefix of the
    /// pool's most-room-first list), from a point `start` sets.
    fn place_by_room(&mut self, start: u64, model: &Model, cold: &mut ColdList, enough: &impl Fn(&ColdList) -> bool) {
        let snap = self.snap;
        let list = &snap.pools[self.pool as usize].by_room;
        let with_room = list.partition_point(|&(room, _)| room >= model.bytes);
        if with_room == 0 {
            return;
        }
        let mut at = reduce(start, with_room);
        for _ in 0..with_room.min(MAX_PROBES) {
            let node = list[at].1;
            at = if at + 1 == with_room { 0 } else { at + 1 };
            if self.taken(node) || cold.contains(node) {
                continue;
            }
            let Some(tier) = self.classify(node, model) else { continue };
            match self.fit(node) {
                Fit::No => {}
                Fit::Over => self.push_spare(node, tier),
                Fit::Under { .. } => cold.push(Cold { node, tier }),
            }
            if enough(cold) {
                return;
            }
        }
    }

    /// Walks the pool's ring from `start`: `ring_arc` points, then jumps to the next start point
    /// (`combine(start, arc)`), `ring_arcs` times, until `visit` says to stop.
    fn walk(&mut self, start: u64, mut visit: impl FnMut(&mut Self, u32) -> bool) {
        let snap = self.snap;
        let ring = &snap.pools[self.pool as usize].ring;
        if ring.is_empty() {
            return;
        }
        let steps = snap.config.ring_arc.min(ring.len());
        for arc in 0..snap.config.ring_arcs {
            let point = if arc == 0 { start } else { combine(start, arc as u64) };
            let mut at = ring.partition_point(|&(p, _)| p < point);
            for _ in 0..steps {
                if at == ring.len() {
                    at = 0;
                }
                if visit(self, ring[at].1) {
                    return;
                }
                at += 1;
            }
            if steps == ring.len() {
                // The whole ring was read: another arc would read the same nodes.
                return;
            }
        }
    }
}

/// The request's model, as ids of this snapshot.
struct Model {
    exact: Option<u32>,
    base: Option<u32>,
    adapter: bool,
    bytes: u64,
}

/// The `n`-th node of `list` that may be named for a pre-load.
fn nth_hint(list: &[Cold], n: usize, adapter: bool) -> Option<u32> {
    list.iter().filter(|c| hint_tier(c.tier, adapter)).nth(n).map(|c| c.node)
}

/// How many nodes of `list` may be named for a pre-load.
fn count_hints(list: &[Cold], adapter: bool) -> usize {
    list.iter().filter(|c| hint_tier(c.tier, adapter)).count()
}

/// Whether a cold candidate may be named for a pre-load (not already loading, not warm);
/// for an adapter, only a node whose base is warm.
fn hint_tier(tier: Tier, adapter: bool) -> bool {
    if adapter {
        return tier == Tier::BaseWarm;
    }
    matches!(tier, Tier::BaseWarm | Tier::Disk | Tier::Fits | Tier::Evict)
}
