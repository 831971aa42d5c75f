//! A deterministic fabric simulator: replays one synthetic workload (Zipf-popular models, node
//! churn) against our policy and three naive ones, and measures how often requests find their
//! model warm, how evenly load spreads, and how long a decision takes.
//!
//! # The fabric
//!
//! * `nodes` nodes, each with a concurrency limit (8, 16 or 32 requests), a RAM budget for models
//!   (12, 16 or 24 GiB, so two to four models of the sizes below: the "K slots" of a node's LRU
//!   cache, counted in bytes) and a disk cache (64 or 128 GiB, LRU). RAM is managed LRU among
//!   idle models: a model serving a request is never evicted, so a node that cannot make room
//!   refuses the request and the router tries its next candidate (a real node would have to
//!   refuse or queue it behind the requests holding its memory).
//! * `models` models with sizes log-uniform in 2–10 GiB and Zipf popularity (exponent
//!   `zipf_s`), popularity independent of size. At the defaults the most popular model carries
//!   15 % of the requests, some 17 000 in flight: about a thousand nodes' worth, so bounded load
//!   and spill matter; the least popular is asked for a few times per tick.
//! * Each tick (a heartbeat, about a second), `arrivals` requests arrive, a fixed number chosen
//!   so the fabric's mean utilisation is `utilisation` of its concurrency; each lasts 2–8 ticks.
//! * Churn: each tick a `churn` fraction of the up nodes leaves (its requests are interrupted)
//!   for 30–120 ticks and comes back with an empty RAM cache (its disk is kept). About 4 % of
//!   the nodes are away at any time, so the utilisation of the up nodes is some 62 %.
//! * A request lands on the first candidate that is up, has a free slot, and has the model in
//!   RAM or can make room for it. Not in RAM there means a **cold load**: from disk in
//!   `load_ticks_disk` ticks, else downloaded in `load_ticks_network`; requests landing on a
//!   model still loading **join** that load (neither warm nor a new load).
//!
//! Every policy sees the same arrivals (model, duration, key, per tick, from the seed) and the
//! same churn; only the fabric's state differs, as the policies make it. Every cache starts
//! empty.
//!
//! # The policies
//!
//! * **ours**: [`Snapshot::route`] on a snapshot rebuilt every tick from the fabric (the
//!   heartbeat period: within a tick it does not see the loads and evictions other requests
//!   cause, as a router would not), with loads counted per request ([`Snapshot::begin`])
//!   between rebuilds; pre-load hints are followed at once (the load takes the usual time).
//! * **random**: four random up nodes. **round-robin**: the next four up nodes.
//!   **least-loaded**: the four nodes of least in-flight relative to concurrency. None of them
//!   looks at warmth, as naive routers do not; with every node asked for every model, their
//!   nodes' memory is mostly held by models serving requests, so many requests find no node
//!   able to load their model and fail.
//!
//! # The metrics (over the measured ticks, after `warmup` ticks)
//!
//! * **warm-hit rate**: requests served on a node that had their model in RAM when they
//!   arrived, over requests served. Counting starts after the warm-up, which every model's first
//!   request falls in; loads of a model never loaded before in the run are reported separately
//!   (`first_loads`, 0 at the defaults), as no policy can avoid them.
//! * **max/mean load**: at the end of each measured tick, over the nodes that are up, the
//!   highest relative load (in-flight ÷ concurrency) divided by the mean relative load (all
//!   in-flight ÷ all concurrency): "the busiest node carries this much more than its share".
//!   Reported as the mean over ticks and as the worst tick.
//! * **cold loads** (request-triggered), **preloads** (background, from hints), **joined**,
//!   **failed** (no candidate could take the request), **failovers** (served by a candidate
//!   other than the first), **interrupted** (by churn).
//! * **decision latency**: [`Snapshot::route`] timed one call at a time on ours' final state
//!   (10 000 nodes at the defaults), after the runs, each decision's first candidate counted in
//!   so loads move.
//!
//! # Example
//!
//! ```
//! use wasmesh_routing::sim::{SimConfig, run};
//! let mut cfg = SimConfig::default();
//! cfg.nodes = 200;
//! cfg.models = 40;
//! cfg.ticks = 40;
//! cfg.warmup = 20;
//! cfg.latency_samples = 1000;
//! let report = run(&cfg)?;
//! let ours = &report.policies[0];
//! assert!(ours.warm_hit_rate() > report.policies[1].warm_hit_rate());
//! # Ok::<(), wasmesh_routing::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Instant;

use crate::hash::{Rng, combine};
use crate::{ConfigError, ModelKey, NodeIndex, NodeState, PolicyConfig, Request, Snapshot, Warmth};

const GIB: u64 = 1 << 30;
const ARRIVAL_SALT: u64 = 0x6172_7269_7661_6c73;
const CHURN_SALT: u64 = 0x6368_7572_6e00_0000;
const BASELINE_SALT: u64 = 0x6261_7365_6c69_6e65;

/// The simulation's parameters. Start from [`SimConfig::default`] and set fields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimConfig {
    /// Seed of every random choice. Default 1.
    pub seed: u64,
    /// Nodes. Default 10 000.
    pub nodes: usize,
    /// Models. Default 1 000.
    pub models: usize,
    /// Zipf exponent of model popularity. Default 1.05.
    pub zipf_s: f64,
    /// Mean utilisation of the fabric's concurrency the arrival rate is set for. Default 0.6.
    pub utilisation: f64,
    /// Concurrency limits, one drawn per node. Default 8, 16, 32.
    pub concurrency: Vec<u32>,
    /// RAM budgets for models in GiB, one drawn per node. Default 12, 16, 24.
    pub ram_gib: Vec<u64>,
    /// Disk budgets in GiB, one drawn per node. Default 64, 128.
    pub disk_gib: Vec<u64>,
    /// Model sizes in GiB: log-uniform between these. Default 2 to 10.
    pub model_gib: (f64, f64),
    /// Request duration in ticks, uniform between these (inclusive). Default 2 to 8.
    pub duration: (u32, u32),
    /// Ticks simulated. Default 200.
    pub ticks: u32,
    /// Ticks before the metrics count. Default 60.
    pub warmup: u32,
    /// Fraction of the up nodes that leaves each tick. Default 0.0005 (a node leaves about
    /// every half hour of ticks).
    pub churn: f64,
    /// Ticks a node that left stays away, uniform between these. Default 30 to 120.
    pub downtime: (u32, u32),
    /// Ticks to load a model from disk. Default 2.
    pub load_ticks_disk: u32,
    /// Ticks to download and load a model. Default 5.
    pub load_ticks_network: u32,
    /// Our policy's configuration.
    pub policy: PolicyConfig,
    /// Decisions timed for the latency figures (0: none). Default 200 000.
    pub latency_samples: usize,
    /// Run the four policies on parallel threads. Default true.
    pub parallel: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 10_000,
            models: 1_000,
            zipf_s: 1.05,
            utilisation: 0.6,
            concurrency: vec![8, 16, 32],
            ram_gib: vec![12, 16, 24],
            disk_gib: vec![64, 128],
            model_gib: (2.0, 10.0),
            duration: (2, 8),
            ticks: 200,
            warmup: 60,
            churn: 0.0005,
            downtime: (30, 120),
            load_ticks_disk: 2,
            load_ticks_network: 5,
            policy: PolicyConfig::default(),
            latency_samples: 200_000,
            parallel: true,
        }
    }
}

impl SimConfig {
    /// Checks every field's range (and the policy's).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy.validate()?;
        let bad = |field, expected| Err(ConfigError { field, expected });
        if self.nodes == 0 || self.nodes >= u32::MAX as usize {
            return bad("sim.nodes", "at least 1");
        }
        if self.models == 0 || self.models >= u32::MAX as usize {
            return bad("sim.models", "at least 1");
        }
        if !(self.zipf_s.is_finite() && self.zipf_s >= 0.0) {
            return bad("sim.zipf_s", "a number >= 0");
        }
        if !(self.utilisation > 0.0 && self.utilisation <= 1.0) {
            return bad("sim.utilisation", "a number in (0, 1]");
        }
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return bad("sim.concurrency", "a non-empty list of numbers >= 1");
        }
        if self.ram_gib.is_empty() || self.ram_gib.contains(&0) || self.disk_gib.is_empty() {
            return bad("sim.ram_gib, sim.disk_gib", "non-empty lists, RAM sizes >= 1");
        }
        let (lo, hi) = self.model_gib;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad("sim.model_gib", "0 < low <= high");
        }
        if self.duration.0 == 0 || self.duration.0 > self.duration.1 || self.duration.1 > 10_000 {
            return bad("sim.duration", "1 <= low <= high <= 10000 ticks");
        }
        if self.warmup >= self.ticks {
            return bad("sim.warmup", "fewer than sim.ticks");
        }
        if !(0.0..1.0).contains(&self.churn) {
            return bad("sim.churn", "a number in [0, 1)");
        }
        if self.downtime.0 == 0 || self.downtime.0 > self.downtime.1 {
            return bad("sim.downtime", "1 <= low <= high");
        }
        Ok(())
    }
}

/// A routing policy the simulator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// This crate's policy ([`Snapshot::route`]).
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

/// One policy's figures over the measured ticks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PolicyReport {
    /// The policy.
    pub policy: Policy,
    /// Requests that arrived.
    pub requests: u64,
    /// Requests served (landed on a node).
    pub served: u64,
    /// Served with their model already in RAM.
    pub warm_hits: u64,
    /// Loads a request started (its model was neither in RAM nor loading on the node).
    pub cold_loads: u64,
    /// Of those, loads from the node's disk (the rest were downloads).
    pub cold_from_disk: u64,
    /// Loads of a model never loaded before in the run (no policy avoids these).
    pub first_loads: u64,
    /// Requests that landed on a load already under way.
    pub joined: u64,
    /// Background loads started by pre-load hints.
    pub preloads: u64,
    /// Models evicted from RAM.
    pub evictions: u64,
    /// Requests no candidate could take.
    pub failed: u64,
    /// Requests served by a candidate other than the first.
    pub failovers: u64,
    /// Requests cut short by their node leaving.
    pub interrupted: u64,
    /// Mean over ticks of max relative load ÷ mean relative load.
    pub max_over_mean: f64,
    /// The worst tick's max/mean.
    pub max_over_mean_worst: f64,
    /// Mean utilisation (in-flight ÷ concurrency of up nodes) over ticks.
    pub utilisation_mean: f64,
    /// Highest utilisation of a tick.
    pub utilisation_peak: f64,
    /// Wall-clock seconds the run took.
    pub run_s: f64,
}

impl PolicyReport {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            requests: 0,
            served: 0,
            warm_hits: 0,
            cold_loads: 0,
            cold_from_disk: 0,
            first_loads: 0,
            joined: 0,
            preloads: 0,
            evictions: 0,
            failed: 0,
            failovers: 0,
            interrupted: 0,
            max_over_mean: 0.0,
            max_over_mean_worst: 0.0,
            utilisation_mean: 0.0,
            utilisation_peak: 0.0,
            run_s: 0.0,
        }
    }

    /// `warm_hits / served` (0 when nothing was served).
    pub fn warm_hit_rate(&self) -> f64 {
        if self.served == 0 { 0.0 } else { self.warm_hits as f64 / self.served as f64 }
    }
}

/// Decision latency of our policy on the fabric's final state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Latency {
    /// Decisions timed.
    pub samples: usize,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, in microseconds.
    pub p999_us: f64,
    /// Slowest, in microseconds.
    pub max_us: f64,
    /// Time to build the snapshot, in milliseconds (median of three).
    pub build_ms: f64,
}

/// The simulation's outcome.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimReport {
    /// The parameters.
    pub config: SimConfig,
    /// Requests per tick.
    pub arrivals_per_tick: u64,
    /// Concurrency of all nodes.
    pub capacity: u64,
    /// Per policy, in [`Policy::ALL`] order.
    pub policies: Vec<PolicyReport>,
    /// Our decision latency (when `latency_samples > 0`).
    pub latency: Option<Latency>,
}

impl SimReport {
    /// The report for one policy.
    pub fn policy(&self, policy: Policy) -> Option<&PolicyReport> {
        self.policies.iter().find(|p| p.policy == policy)
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<13} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>6}",
            "policy",
            "served",
            "warm_hit",
            "cold",
            "of_disk",
            "joined",
            "preload",
            "failed",
            "max/mn",
            "worst",
            "evictions",
            "failover",
            "util"
        );
        for p in &self.policies {
            let _ = writeln!(
                s,
                "{:<13} {:>10} {:>8.4}% {:>9} {:>8} {:>8} {:>8} {:>8} {:>7.3} {:>7.3} {:>9} {:>9} {:>5.1}%",
                p.policy.name(),
                p.served,
                100.0 * p.warm_hit_rate(),
                p.cold_loads,
                p.cold_from_disk,
                p.joined,
                p.preloads,
                p.failed,
                p.max_over_mean,
                p.max_over_mean_worst,
                p.evictions,
                p.failovers,
                100.0 * p.utilisation_mean
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                s,
                "decision latency (ours, {} nodes, {} samples): p50 {:.2} us, p99 {:.2} us, p99.9 {:.2} us, max {:.1} us; snapshot build {:.1} ms",
                self.config.nodes, l.samples, l.p50_us, l.p99_us, l.p999_us, l.max_us, l.build_ms
            );
        }
        s
    }

    /// The figures as one line of JSON.
    pub fn json(&self) -> String {
        let mut s = format!(
            "{{\"bench\":\"routing\",\"nodes\":{},\"models\":{},\"ticks\":{},\"warmup\":{},\"arrivals_per_tick\":{},\"zipf_s\":{},\"load_factor\":{},\"policies\":{{",
            self.config.nodes,
            self.config.models,
            self.config.ticks,
            self.config.warmup,
            self.arrivals_per_tick,
            self.config.zipf_s,
            self.config.policy.load_factor
        );
        for (i, p) in self.policies.iter().enumerate() {
            let _ = write!(
                s,
                "{}\"{}\":{{\"warm_hit_rate\":{:.6},\"max_over_mean\":{:.4},\"max_over_mean_worst\":{:.4},\"cold_loads\":{},\"first_loads\":{},\"joined\":{},\"preloads\":{},\"failed\":{},\"served\":{},\"utilisation\":{:.4}}}",
                if i == 0 { "" } else { "," },
                p.policy.name(),
                p.warm_hit_rate(),
                p.max_over_mean,
                p.max_over_mean_worst,
                p.cold_loads,
                p.first_loads,
                p.joined,
                p.preloads,
                p.failed,
                p.served,
                p.utilisation_mean
            );
        }
        s.push('}');
        if let Some(l) = &self.latency {
            let _ = write!(
                s,
                ",\"decision_p50_us\":{:.3},\"decision_p99_us\":{:.3},\"decision_p999_us\":{:.3},\"snapshot_build_ms\":{:.2}",
                l.p50_us, l.p99_us, l.p999_us, l.build_ms
            );
        }
        s.push('}');
        s
    }
}

/// The policy-independent part: nodes' hardware, models, popularity, churn.
struct World {
    cap: Vec<u32>,
    ram: Vec<u64>,
    disk: Vec<u64>,
    ids: Vec<String>,
    keys: Vec<ModelKey>,
    sizes: Vec<u64>,
    /// Cumulative popularity by rank; `by_rank[r]` is the model of rank `r`.
    cdf: Vec<f64>,
    by_rank: Vec<u32>,
    /// Per tick: nodes leaving (with their downtime applied already) and nodes returning.
    leaves: Vec<Vec<u32>>,
    returns: Vec<Vec<u32>>,
    arrivals: u64,
}

impl World {
    fn new(cfg: &SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        // Lists are non-empty ([`SimConfig::validate`]).
        let pick = |rng: &mut Rng, list: &[u64]| list[rng.below(list.len())];
        let cap: Vec<u32> = (0..cfg.nodes).map(|_| cfg.concurrency[rng.below(cfg.concurrency.len())]).collect();
        let ram = (0..cfg.nodes).map(|_| pick(&mut rng, &cfg.ram_gib) * GIB).collect();
        let disk = (0..cfg.nodes).map(|_| pick(&mut rng, &cfg.disk_gib) * GIB).collect();
        let ids = (0..cfg.nodes).map(|i| format!("node-{i:05}")).collect();
        let keys = (0..cfg.models)
            .map(|m| ModelKey::new(&format!("model-{m:04}")).unwrap_or_else(|_| unreachable!("a valid key")))
            .collect();
        let (lo, hi) = (cfg.model_gib.0.max(0.1).ln(), cfg.model_gib.1.max(cfg.model_gib.0).max(0.1).ln());
        let sizes = (0..cfg.models).map(|_| ((lo + (hi - lo) * rng.unit()).exp() * GIB as f64) as u64).collect();
        let mut cdf = Vec::with_capacity(cfg.models);
        let mut acc = 0.0;
        for r in 1..=cfg.models {
            acc += 1.0 / (r as f64).powf(cfg.zipf_s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let mut by_rank: Vec<u32> = (0..cfg.models as u32).collect();
        for i in (1..by_rank.len()).rev() {
            let j = rng.below(i + 1);
            by_rank.swap(i, j);
        }

        // Churn, the same for every policy.
        let mut crng = Rng::new(cfg.seed ^ CHURN_SALT);
        let ticks = cfg.ticks as usize;
        let mut leaves = vec![Vec::new(); ticks];
        let mut returns = vec![Vec::new(); ticks];
        let mut up = vec![true; cfg.nodes];
        let mut up_count = cfg.nodes;
        let mut carry = 0.0;
        for t in 0..ticks {
            for &n in &returns[t] {
                up[n as usize] = true;
                up_count += 1;
            }
            carry += cfg.churn * up_count as f64;
            let mut leaving = carry.floor() as usize;
            carry -= leaving as f64;
            while leaving > 0 && up_count > 0 {
                let n = crng.below(cfg.nodes);
                if !up[n] {
                    continue;
                }
                up[n] = false;
                up_count -= 1;
                leaving -= 1;
                leaves[t].push(n as u32);
                let back = t + crng.range_u32(cfg.downtime.0, cfg.downtime.1.max(cfg.downtime.0)).max(1) as usize;
                if back < ticks {
                    returns[back].push(n as u32);
                }
            }
        }

        let capacity: u64 = cap.iter().map(|&c| u64::from(c)).sum();
        let mean_duration = f64::from(cfg.duration.0 + cfg.duration.1.max(cfg.duration.0)) / 2.0;
        let arrivals = (cfg.utilisation * capacity as f64 / mean_duration).round() as u64;
        Self { cap, ram, disk, ids, keys, sizes, cdf, by_rank, leaves, returns, arrivals }
    }

    fn draw_model(&self, rng: &mut Rng) -> u32 {
        let u = rng.unit();
        let r = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.by_rank[r]
    }
}

/// One arrival.
#[derive(Clone, Copy)]
struct Arrival {
    model: u32,
    duration: u32,
    key: u64,
}

fn arrivals(cfg: &SimConfig, world: &World, tick: u32, out: &mut Vec<Arrival>) {
    out.clear();
    let mut rng = Rng::new(combine(cfg.seed ^ ARRIVAL_SALT, u64::from(tick)));
    let hi = cfg.duration.1.max(cfg.duration.0);
    for _ in 0..world.arrivals {
        let model = world.draw_model(&mut rng);
        let duration = rng.range_u32(cfg.duration.0.max(1), hi.max(1));
        out.push(Arrival { model, duration, key: rng.next_u64() });
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    model: u32,
    ready_at: u32,
    last_used: u32,
    in_flight: u32,
}

#[derive(Debug, Clone, Default)]
struct SimNode {
    up: bool,
    epoch: u32,
    in_flight: u32,
    ram_used: u64,
    ram: Vec<Slot>,
    /// `(model, last used)`.
    disk: Vec<(u32, u32)>,
    disk_used: u64,
}

#[derive(Clone, Copy)]
struct End {
    node: u32,
    model: u32,
    epoch: u32,
}

enum Landed {
    Warm,
    Joined,
    Cold { from_disk: bool, first: bool },
}

/// The fabric as one policy shapes it.
struct Fabric<'w> {
    world: &'w World,
    cfg: &'w SimConfig,
    nodes: Vec<SimNode>,
    ends: Vec<Vec<End>>,
    ever_loaded: Vec<bool>,
    evictions: u64,
}

impl<'w> Fabric<'w> {
    fn new(world: &'w World, cfg: &'w SimConfig) -> Self {
        let horizon = cfg.duration.1.max(cfg.duration.0) as usize + 2;
        Self {
            world,
            cfg,
            nodes: vec![SimNode { up: true, ..SimNode::default() }; world.cap.len()],
            ends: vec![Vec::new(); horizon],
            ever_loaded: vec![false; world.keys.len()],
            evictions: 0,
        }
    }

    /// Churn and completions at the start of tick `now`; returns requests interrupted.
    fn start_tick(&mut self, now: u32) -> u64 {
        let mut interrupted = 0;
        for &n in &self.world.returns[now as usize] {
            let node = &mut self.nodes[n as usize];
            node.up = true;
        }
        for &n in &self.world.leaves[now as usize] {
            let node = &mut self.nodes[n as usize];
            interrupted += u64::from(node.in_flight);
            node.up = false;
            node.epoch += 1;
            node.in_flight = 0;
            node.ram.clear();
            node.ram_used = 0;
        }
        let horizon = self.ends.len();
        let due = std::mem::take(&mut self.ends[now as usize % horizon]);
        for e in &due {
            let node = &mut self.nodes[e.node as usize];
            if node.epoch != e.epoch {
                continue;
            }
            node.in_flight = node.in_flight.saturating_sub(1);
            if let Some(slot) = node.ram.iter_mut().find(|s| s.model == e.model) {
                slot.in_flight = slot.in_flight.saturating_sub(1);
            }
        }
        self.ends[now as usize % horizon] = due;
        self.ends[now as usize % horizon].clear();
        interrupted
    }

    /// Evicts idle, loaded models LRU-first until `size` bytes are free.
    fn make_room(&mut self, n: usize, size: u64, now: u32) -> bool {
        let total = self.world.ram[n];
        if size > total {
            return false;
        }
        let node = &mut self.nodes[n];
        while total - node.ram_used < size {
            let victim = node
                .ram
                .iter()
                .enumerate()
                .filter(|(_, s)| s.in_flight == 0 && s.ready_at <= now)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(i, _)| i);
            let Some(v) = victim else { return false };
            let slot = node.ram.swap_remove(v);
            node.ram_used -= self.world.sizes[slot.model as usize];
            self.evictions += 1;
        }
        true
    }

    /// Starts loading `model` on node `n`; returns whether it came from disk.
    fn load(&mut self, n: usize, model: u32, now: u32, in_flight: u32) -> bool {
        let size = self.world.sizes[model as usize];
        let node = &mut self.nodes[n];
        let from_disk = if let Some(d) = node.disk.iter_mut().find(|d| d.0 == model) {
            d.1 = now;
            true
        } else {
            let disk_total = self.world.disk[n];
            while disk_total - node.disk_used < size && !node.disk.is_empty() {
                let lru = node.disk.iter().enumerate().min_by_key(|(_, d)| d.1).map_or(0, |(i, _)| i);
                let (m, _) = node.disk.swap_remove(lru);
                node.disk_used -= self.world.sizes[m as usize];
            }
            if disk_total - node.disk_used >= size {
                node.disk.push((model, now));
                node.disk_used += size;
            }
            false
        };
        let ticks = if from_disk { self.cfg.load_ticks_disk } else { self.cfg.load_ticks_network };
        node.ram.push(Slot { model, ready_at: now + ticks, last_used: now, in_flight });
        node.ram_used += size;
        from_disk
    }

    fn land(&mut self, n: usize, a: &Arrival, now: u32) -> Option<Landed> {
        let node = &mut self.nodes[n];
        if !node.up || node.in_flight >= self.world.cap[n] {
            return None;
        }
        let landed = if let Some(slot) = node.ram.iter_mut().find(|s| s.model == a.model) {
            slot.in_flight += 1;
            slot.last_used = now;
            if slot.ready_at <= now { Landed::Warm } else { Landed::Joined }
        } else {
            if !self.make_room(n, self.world.sizes[a.model as usize], now) {
                return None;
            }
            let first = !std::mem::replace(&mut self.ever_loaded[a.model as usize], true);
            let from_disk = self.load(n, a.model, now, 1);
            Landed::Cold { from_disk, first }
        };
        let node = &mut self.nodes[n];
        node.in_flight += 1;
        let horizon = self.ends.len();
        self.ends[(now + a.duration) as usize % horizon].push(End {
            node: n as u32,
            model: a.model,
            epoch: node.epoch,
        });
        Some(landed)
    }

    fn preload(&mut self, n: usize, model: u32, now: u32) -> bool {
        let node = &self.nodes[n];
        if !node.up || node.ram.iter().any(|s| s.model == model) {
            return false;
        }
        if !self.make_room(n, self.world.sizes[model as usize], now) {
            return false;
        }
        self.ever_loaded[model as usize] = true;
        self.load(n, model, now, 0);
        true
    }

    /// Our view of it: one heartbeat per up node. Returns the table and its node per index.
    fn table(&self, now: u32) -> (Vec<NodeState>, Vec<u32>) {
        let mut table = Vec::with_capacity(self.nodes.len());
        let mut map = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.up {
                continue;
            }
            let mut models = Vec::with_capacity(node.ram.len() + node.disk.len());
            for s in &node.ram {
                let w = if s.ready_at <= now { Warmth::Ram } else { Warmth::Loading };
                models.push((self.world.keys[s.model as usize].clone(), w));
            }
            for &(m, _) in &node.disk {
                if !node.ram.iter().any(|s| s.model == m) {
                    models.push((self.world.keys[m as usize].clone(), Warmth::Disk));
                }
            }
            let idle: u64 = node
                .ram
                .iter()
                .filter(|s| s.in_flight == 0 && s.ready_at <= now)
                .map(|s| self.world.sizes[s.model as usize])
                .sum();
            let free = self.world.ram[i].saturating_sub(node.ram_used);
            let mut state = NodeState::new(self.world.ids[i].clone(), self.world.cap[i], free)
                .with_in_flight(node.in_flight)
                .with_memory_idle(idle);
            state.models = models;
            table.push(state);
            map.push(i as u32);
        }
        (table, map)
    }

    /// Max/mean relative load and utilisation over up nodes.
    fn sample(&self) -> (f64, f64) {
        let (mut load, mut cap, mut max_rel) = (0u64, 0u64, 0.0f64);
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.up {
                continue;
            }
            let c = self.world.cap[i];
            load += u64::from(node.in_flight);
            cap += u64::from(c);
            max_rel = max_rel.max(f64::from(node.in_flight) / f64::from(c.max(1)));
        }
        let mean = if cap == 0 { 0.0 } else { load as f64 / cap as f64 };
        (if mean == 0.0 { 0.0 } else { max_rel / mean }, mean)
    }
}

/// A min-tree over nodes keyed by relative load, for the least-loaded baseline.
struct MinTree {
    size: usize,
    tree: Vec<u64>,
}

impl MinTree {
    fn new(n: usize) -> Self {
        let size = n.next_power_of_two().max(1);
        Self { size, tree: vec![u64::MAX; 2 * size] }
    }

    fn key(load: u32, cap: u32, i: usize) -> u64 {
        ((u64::from(load) << 16) / u64::from(cap.max(1))) << 32 | i as u64
    }

    fn set(&mut self, i: usize, v: u64) {
        let mut at = self.size + i;
        self.tree[at] = v;
        while at > 1 {
            at /= 2;
            self.tree[at] = self.tree[2 * at].min(self.tree[2 * at + 1]);
        }
    }

    fn rebuild(&mut self, fabric: &Fabric<'_>) {
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

/// Runs every policy on the same workload and measures our decision latency.
///
/// # Errors
/// [`ConfigError`] when a field of `cfg` is out of range ([`SimConfig::validate`]).
pub fn run(cfg: &SimConfig) -> Result<SimReport, ConfigError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let capacity = world.cap.iter().map(|&c| u64::from(c)).sum();
    let mut runs: Vec<Option<(PolicyReport, Option<Vec<NodeState>>)>> = vec![None; Policy::ALL.len()];
    if cfg.parallel {
        let world = &world;
        std::thread::scope(|s| {
            let handles: Vec<_> = Policy::ALL.iter().map(|&p| s.spawn(move || run_policy(cfg, world, p))).collect();
            for (slot, h) in runs.iter_mut().zip(handles) {
                *slot = Some(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
        });
    } else {
        for (slot, &p) in runs.iter_mut().zip(Policy::ALL.iter()) {
            *slot = Some(run_policy(cfg, &world, p));
        }
    }
    let mut policies = Vec::new();
    let mut last_table = None;
    for (report, table) in runs.into_iter().flatten() {
        policies.push(report);
        last_table = last_table.or(table);
    }
    // Timed alone, after the runs, on ours' final state.
    let latency = match last_table {
        Some(table) if cfg.latency_samples > 0 => Some(time_decisions(cfg, &world, table)),
        _ => None,
    };
    Ok(SimReport { config: cfg.clone(), arrivals_per_tick: world.arrivals, capacity, policies, latency })
}

/// How the baselines pick, and their state.
struct Baselines {
    rng: Rng,
    cursor: usize,
    tree: MinTree,
}

impl Baselines {
    /// Up to four candidates, best first, into `out` (`usize::MAX` for none).
    fn pick(&mut self, policy: Policy, fabric: &Fabric<'_>, out: &mut [usize; 4]) {
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

/// Runs one policy over the whole workload; for ours, also returns the final node table.
fn run_policy(cfg: &SimConfig, world: &World, policy: Policy) -> (PolicyReport, Option<Vec<NodeState>>) {
    let started = Instant::now();
    let mut fabric = Fabric::new(world, cfg);
    let mut report = PolicyReport::new(policy);
    let mut baselines = Baselines {
        rng: Rng::new(cfg.seed ^ BASELINE_SALT ^ policy as u64),
        cursor: 0,
        tree: MinTree::new(world.cap.len()),
    };
    let mut batch = Vec::new();
    let mut ticks_measured = 0u32;
    for now in 0..cfg.ticks {
        let measured = now >= cfg.warmup;
        let interrupted = fabric.start_tick(now);
        if measured {
            report.interrupted += interrupted;
        }
        arrivals(cfg, world, now, &mut batch);
        // Ours sees the fabric through a snapshot rebuilt each tick (the heartbeat period).
        let snapshot = if policy == Policy::Ours {
            let (table, map) = fabric.table(now);
            Some((Snapshot::build(table, &cfg.policy).unwrap_or_else(|e| panic!("simulated table: {e}")), map))
        } else {
            None
        };
        if policy == Policy::LeastLoaded {
            baselines.tree.rebuild(&fabric);
        }
        for a in &batch {
            let mut candidates = [usize::MAX; 4];
            let mut hint = None;
            let mut decision = None;
            match &snapshot {
                Some((snap, map)) => {
                    let m = a.model as usize;
                    let d = snap.route(&Request::for_model(&world.keys[m], world.sizes[m]).with_key(a.key));
                    for (c, node) in candidates.iter_mut().zip(d.nodes()) {
                        *c = map[node.get()] as usize;
                    }
                    hint = d.preload().map(|h| map[h.get()] as usize);
                    decision = Some(d);
                }
                None => baselines.pick(policy, &fabric, &mut candidates),
            }
            if measured {
                report.requests += 1;
            }
            let mut served = false;
            for (pos, &c) in candidates.iter().enumerate().take_while(|(_, c)| **c != usize::MAX) {
                let Some(landed) = fabric.land(c, a, now) else { continue };
                served = true;
                if let (Some(d), Some((snap, _))) = (&decision, &snapshot)
                    && let Some(cand) = d.candidates().get(pos)
                {
                    snap.begin(cand.node);
                }
                if policy == Policy::LeastLoaded {
                    baselines.tree.set(c, MinTree::key(fabric.nodes[c].in_flight, world.cap[c], c));
                }
                if measured {
                    report.served += 1;
                    report.failovers += u64::from(pos > 0);
                    match landed {
                        Landed::Warm => report.warm_hits += 1,
                        Landed::Joined => report.joined += 1,
                        Landed::Cold { from_disk, first } => {
                            report.cold_loads += 1;
                            report.cold_from_disk += u64::from(from_disk);
                            report.first_loads += u64::from(first);
                        }
                    }
                }
                break;
            }
            if !served && measured {
                report.failed += 1;
            }
            if let Some(h) = hint
                && fabric.preload(h, a.model, now)
                && measured
            {
                report.preloads += 1;
            }
        }
        if measured {
            let (ratio, util) = fabric.sample();
            ticks_measured += 1;
            report.max_over_mean += ratio;
            report.max_over_mean_worst = report.max_over_mean_worst.max(ratio);
            report.utilisation_mean += util;
            report.utilisation_peak = report.utilisation_peak.max(util);
        }
    }
    if ticks_measured > 0 {
        report.max_over_mean /= f64::from(ticks_measured);
        report.utilisation_mean /= f64::from(ticks_measured);
    }
    report.evictions = fabric.evictions;
    report.run_s = started.elapsed().as_secs_f64();
    let table = if policy == Policy::Ours { Some(fabric.table(cfg.ticks).0) } else { None };
    (report, table)
}

/// Times `route` on a snapshot of the fabric's state, counting each decision's first candidate
/// in (and out again 4 096 decisions later) so loads move as they would.
fn time_decisions(cfg: &SimConfig, world: &World, table: Vec<NodeState>) -> Latency {
    let mut builds = Vec::new();
    let mut snap = None;
    for _ in 0..3 {
        let table = table.clone();
        let t = Instant::now();
        let s = Snapshot::build(table, &cfg.policy).unwrap_or_else(|e| panic!("simulated table: {e}"));
        builds.push(t.elapsed().as_secs_f64() * 1e3);
        snap = Some(s);
    }
    builds.sort_by(f64::total_cmp);
    let Some(snap) = snap else { unreachable!("three builds") };
    let mut rng = Rng::new(cfg.seed ^ 0x006c_6174_656e_6379);
    let mut samples = Vec::with_capacity(cfg.latency_samples);
    let mut open: VecDeque<NodeIndex> = VecDeque::new();
    for _ in 0..cfg.latency_samples {
        let m = world.draw_model(&mut rng) as usize;
        let req = Request::for_model(&world.keys[m], world.sizes[m]).with_key(rng.next_u64());
        let t = Instant::now();
        let d = std::hint::black_box(snap.route(std::hint::black_box(&req)));
        samples.push(t.elapsed().as_nanos() as u64);
        if let Some(first) = d.first() {
            snap.begin(first);
            open.push_back(first);
        }
        if open.len() > 4096
            && let Some(done) = open.pop_front()
        {
            snap.end(done);
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        if samples.is_empty() { 0.0 } else { samples[((samples.len() - 1) as f64 * p).round() as usize] as f64 / 1e3 }
    };
    Latency {
        samples: samples.len(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: pct(1.0),
        build_ms: builds.get(1).copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimConfig {
        SimConfig {
            nodes: 300,
            models: 40,
            ticks: 60,
            warmup: 30,
            churn: 0.002,
            latency_samples: 0,
            ..SimConfig::default()
        }
    }

    #[test]
    fn simulation_replays_exactly_from_its_seed() {
        let strip = |mut r: SimReport| {
            for p in &mut r.policies {
                p.run_s = 0.0;
            }
            r
        };
        let mut serial = small();
        serial.parallel = false;
        let a = strip(run(&small()).unwrap());
        let b = strip(run(&serial).unwrap());
        assert_eq!(a.policies, b.policies, "threads or not, the same seed gives the same figures");
        let mut other = small();
        other.seed = 2;
        assert_ne!(strip(run(&other).unwrap()).policies, a.policies);
    }

    #[test]
    fn every_policy_sees_the_same_workload() {
        let r = run(&small()).unwrap();
        let requests: Vec<u64> = r.policies.iter().map(|p| p.requests).collect();
        assert!(requests.iter().all(|&n| n == requests[0] && n == 30 * r.arrivals_per_tick), "{requests:?}");
        let ours = r.policy(Policy::Ours).unwrap();
        for p in &r.policies[1..] {
            assert!(ours.warm_hit_rate() > p.warm_hit_rate(), "{} beats ours", p.policy.name());
        }
        assert!(r.json().starts_with("{\"bench\":\"routing\"") && r.json().ends_with('}'));
    }

    #[test]
    fn a_bad_config_is_an_error_not_a_panic() {
        for cfg in [
            SimConfig { models: 0, ..small() },
            SimConfig { warmup: 60, ..small() },
            SimConfig { concurrency: vec![], ..small() },
            SimConfig { policy: PolicyConfig::default().with_load_factor(0.9), ..small() },
        ] {
            assert!(run(&cfg).is_err());
        }
    }
}
