//! The node table indexed for routing ([`Snapshot`]) and the decision itself ([`Snapshot::route`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use crate::config::{ConfigError, MAX_CANDIDATES, MAX_PROBES, PolicyConfig};
use crate::hash::{StableState, combine, hash_str, reduce};
use crate::key::{ModelKey, Warmth};
use crate::node::{NodeIndex, NodeState};

/// Salt for the ring start of requests that need no model (kept apart from model hashes).
const NO_MODEL_SALT: u64 = 0x6e6f_2d6d_6f64_656c;

/// What a request needs from the fabric.
///
/// ```
/// use wasmesh_routing::{ModelKey, Request};
/// let model = ModelKey::new("llama-3-8b")?;
/// let req = Request::for_model(&model, 5 << 30).in_network("acme").with_key(42);
/// assert_eq!(req.network, Some("acme"));
/// # Ok::<(), wasmesh_routing::KeyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The model (or `MODEL:ADAPTER`) the function calls, if any.
    pub model: Option<&'a ModelKey>,
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
    pub fn for_model(model: &'a ModelKey, model_bytes: u64) -> Self {
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
#[derive(Clone, Copy)]
pub struct Decision {
    slots: [Candidate; MAX_CANDIDATES],
    len: u8,
    preload: Option<NodeIndex>,
}

impl Decision {
    fn empty() -> Self {
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
    pub fn preload(&self) -> Option<NodeIndex> {
        self.preload
    }

    fn contains(&self, node: u32) -> bool {
        self.candidates().iter().any(|c| c.node.0 == node)
    }

    fn push(&mut self, c: Candidate) {
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

/// Why a node table could not become a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The policy's configuration is out of range.
    Config(ConfigError),
    /// Two entries of the table share an id (drop the older heartbeat).
    DuplicateNode {
        /// The id.
        id: String,
    },
    /// More nodes than a [`NodeIndex`] can count.
    TooManyNodes {
        /// How many were given.
        count: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => e.fmt(f),
            BuildError::DuplicateNode { id } => {
                write!(f, "node '{id}' appears twice in the node table; keep only its latest heartbeat")
            }
            BuildError::TooManyNodes { count } => write!(f, "{count} nodes is more than a routing table holds"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Config(e)
    }
}

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
    /// Indexes a node table.
    ///
    /// Work: `O(n·vnodes·log(n·vnodes))` for the rings plus `O(entries)` for the model index;
    /// about 10–30 ms for 10 000 nodes at the default 32 points each.
    ///
    /// # Errors
    /// [`BuildError`] when the configuration is out of range, two nodes share an id, or there
    /// are more than `u32::MAX - 1` nodes.
    pub fn build(table: Vec<NodeState>, config: &PolicyConfig) -> Result<Snapshot, BuildError> {
        config.validate()?;
        if table.len() >= u32::MAX as usize {
            return Err(BuildError::TooManyNodes { count: table.len() });
        }
        let n = table.len();
        let mut ids: HashMap<Box<str>, u32, StableState> = HashMap::with_capacity_and_hasher(n, StableState);
        let mut pool_names: HashMap<Box<str>, u32, StableState> = HashMap::default();
        let mut public_pool = None;
        let mut pool_count = 0u32;
        let mut models: HashMap<Box<str>, u32, StableState> = HashMap::default();
        let mut base_of: Vec<Option<u32>> = Vec::new();
        let mut held: Vec<(u32, Warmth)> = Vec::new();
        let mut nodes = Vec::with_capacity(n);
        let mut loads = Vec::with_capacity(n);
        let mut ready = Vec::with_capacity(n);

        for (i, state) in table.into_iter().enumerate() {
            let NodeState {
                id,
                ready: is_ready,
                network,
                in_flight,
                max_concurrency,
                memory_free,
                memory_idle,
                models: list,
            } = state;
            let id = id.into_boxed_str();
            if ids.contains_key(&id) {
                return Err(BuildError::DuplicateNode { id: id.into() });
            }
            let pool = match network {
                None => *public_pool.get_or_insert_with(|| {
                    pool_count += 1;
                    pool_count - 1
                }),
                Some(name) => *pool_names.entry(name.into_boxed_str()).or_insert_with(|| {
                    pool_count += 1;
                    pool_count - 1
                }),
            };
            let start = held.len();
            for (key, warmth) in &list {
                let id = intern(&mut models, &mut base_of, key.as_str());
                if key.is_adapter() && base_of[id as usize].is_none() {
                    let base = intern(&mut models, &mut base_of, key.model());
                    base_of[id as usize] = Some(base);
                }
                held.push((id, *warmth));
            }
            // Sort by model, warmest first (Ram < Loading < Disk), then keep one entry per model.
            held[start..].sort_unstable();
            let mut w = start;
            for r in start..held.len() {
                if w == start || held[w - 1].0 != held[r].0 {
                    held[w] = held[r];
                    w += 1;
                }
            }
            held.truncate(w);
            // An adapter is usable warm only over a base in RAM on the same node.
            for r in start..held.len() {
                let (mid, warmth) = held[r];
                if warmth == Warmth::Ram
                    && let Some(base) = base_of[mid as usize]
                    && !matches!(lookup(&held[start..], base), Some(Warmth::Ram))
                {
                    held[r].1 = Warmth::Disk;
                }
            }
            ids.insert(id.clone(), i as u32);
            nodes.push(Node {
                id,
                pool,
                cap: max_concurrency,
                mem_free: memory_free,
                mem_room: memory_free.saturating_add(memory_idle),
                hash: 0,
                held_start: start as u32,
                held_end: held.len() as u32,
            });
            loads.push(AtomicU32::new(in_flight));
            ready.push(AtomicBool::new(is_ready));
        }

        let mut pools: Vec<Pool> = (0..pool_count)
            .map(|_| Pool { ring: Vec::new(), load: AtomicU64::new(0), cap: AtomicU64::new(0), by_room: Vec::new() })
            .collect();
        let mut holders: Vec<Vec<Holders>> = (0..base_of.len()).map(|_| Vec::new()).collect();
        // Where each model key is placed: its base's hash, so adapters meet their base.
        let mut home = vec![0u64; base_of.len()];
        for (text, &mid) in &models {
            home[mid as usize] = hash_str(text.split_once(':').map_or(&**text, |(model, _)| model));
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            node.hash = hash_str(&node.id);
            let pool = &mut pools[node.pool as usize];
            pool.load.fetch_add(u64::from(loads[i].load(Relaxed)), Relaxed);
            if ready[i].load(Relaxed) {
                pool.cap.fetch_add(u64::from(node.cap), Relaxed);
            }
            if node.cap > 0 {
                pool.ring.extend((0..config.vnodes).map(|r| (combine(node.hash, u64::from(r)), i as u32)));
                pool.by_room.push((node.mem_room, i as u32));
            }
            for &(mid, warmth) in &held[node.held_start as usize..node.held_end as usize] {
                let per_pool = &mut holders[mid as usize];
                let at = match per_pool.iter().position(|h| h.pool == node.pool) {
                    Some(at) => at,
                    None => {
                        per_pool.push(Holders {
                            pool: node.pool,
                            warm: Vec::new(),
                            loading: Vec::new(),
                            disk: Vec::new(),
                            cursor: AtomicU32::new(0),
                        });
                        per_pool.len() - 1
                    }
                };
                let h = &mut per_pool[at];
                match warmth {
                    Warmth::Ram => h.warm.push(i as u32),
                    Warmth::Loading => h.loading.push(i as u32),
                    Warmth::Disk => h.disk.push(i as u32),
                }
            }
        }
        for pool in &mut pools {
            pool.ring.sort_unstable();
            pool.by_room.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        for (mid, per_pool) in holders.iter_mut().enumerate() {
            let rank = |&n: &u32| combine(home[mid], nodes[n as usize].hash);
            for h in per_pool {
                h.warm.sort_by_cached_key(rank);
                h.loading.sort_by_cached_key(rank);
                h.disk.sort_by_cached_key(rank);
            }
        }

        Ok(Snapshot {
            config: config.clone(),
            nodes,
            held,
            loads: loads.into_boxed_slice(),
            ready: ready.into_boxed_slice(),
            ids,
            pools,
            pool_names,
            public_pool,
            models,
            holders,
        })
    }

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

/// The id of a model key's text, added when new (`base_of` grows with the ids).
fn intern(models: &mut HashMap<Box<str>, u32, StableState>, base_of: &mut Vec<Option<u32>>, text: &str) -> u32 {
    if let Some(&id) = models.get(text) {
        return id;
    }
    let id = base_of.len() as u32;
    models.insert(text.into(), id);
    base_of.push(None);
    id
}

fn lookup(held: &[(u32, Warmth)], model: u32) -> Option<Warmth> {
    held.binary_search_by_key(&model, |&(m, _)| m).ok().map(|at| held[at].1)
}

/// The bounded-load cap of the moment, for one pool.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// `(in-flight + 1) / concurrency`: the mean relative load once this request is placed.
    mean: f64,
    c: f64,
    min_bound: f64,
}

impl Bound {
    fn new(load: u64, cap: u64, config: &PolicyConfig) -> Self {
        let mean = if cap == 0 { 0.0 } else { (load + 1) as f64 / cap as f64 };
        Self { mean, c: config.load_factor, min_bound: config.min_bound }
    }

    /// `max(floor(c·a), ceil(a), floor(min_bound·cap))`, at most `cap`, with `a = mean·cap` the
    /// node's fair share. The floor of `c·a` keeps the cap at or under `c` times the mean (the
    /// paper's `ceil(c·a)` would let a node reach `c·a + 1`, a lot at eight slots); the ceil of
    /// `a` keeps the sum of caps at or over the pool's load, so some node always takes the
    /// request while capacity is left; `min_bound` leaves a lightly loaded fabric alone.
    fn limit(&self, cap: u32) -> u32 {
        let cap = f64::from(cap);
        let share = self.mean * cap;
        let limit = (self.c * share + 1e-9).floor().max(share.ceil()).max((self.min_bound * cap + 1e-9).floor());
        limit.min(cap) as u32
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

    fn model(&mut self, key: &ModelKey, bytes: u64, req_key: u64) {
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
            let busy = warm > 0 && ((warm as u32) < cfg.min_warm || (scan.ready > 0 && scan.whole && !scan.room));
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
        let enough =
            |cold: &ColdList| cold.len >= need && (!want_hint || cold.as_slice().iter().any(|c| hint_tier(c.tier)));
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
            let hint = if !hot {
                let all = cold.as_slice();
                nth_hint(all, slot % count_hints(all).max(1))
            } else if let Some(node) = nth_hint(&cold.as_slice()[..holders_found], slot) {
                Some(node)
            } else {
                let warm = exact.map_or(0, |h| h.warm.len()) as u64;
                let mut spread = ColdList::new();
                self.place(combine(home, (warm << 8) | slot as u64), &model, &mut spread, 1);
                nth_hint(spread.as_slice(), 0)
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
fn nth_hint(list: &[Cold], n: usize) -> Option<u32> {
    list.iter().filter(|c| hint_tier(c.tier)).nth(n).map(|c| c.node)
}

/// How many nodes of `list` may be named for a pre-load.
fn count_hints(list: &[Cold]) -> usize {
    list.iter().filter(|c| hint_tier(c.tier)).count()
}

/// Whether a cold candidate may be named for a pre-load (not already loading, not warm).
fn hint_tier(tier: Tier) -> bool {
    matches!(tier, Tier::BaseWarm | Tier::Disk | Tier::Fits | Tier::Evict)
}
