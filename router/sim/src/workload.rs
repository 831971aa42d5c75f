//! The policy-independent part of a run: the nodes' hardware, the models, their popularity, the
//! churn ([`World`]) and each tick's arrivals ([`arrivals`]), all drawn from the seed so every
//! policy replays the same workload.

use wasmesh_policy::ModelRef;

use crate::config::SimConfig;
use wasmesh_policy::hash::{Rng, combine};

const GIB: u64 = 1 << 30;
const ARRIVAL_SALT: u64 = 0x6172_7269_7661_6c73;
const CHURN_SALT: u64 = 0x6368_7572_6e00_0000;

/// The policy-independent part: nodes' hardware, models, popularity, churn.
pub(crate) struct World {
    /// Per node: its concurrency.
    pub(crate) cap: Vec<u32>,
    /// Per node: its RAM for models, in bytes.
    pub(crate) ram: Vec<u64>,
    /// Per node: its disk cache, in bytes.
    pub(crate) disk: Vec<u64>,
    /// Per node: its id.
    pub(crate) ids: Vec<String>,
    /// Per model: its key.
    pub(crate) keys: Vec<ModelRef>,
    /// Per model: its size in memory, in bytes.
    pub(crate) sizes: Vec<u64>,
    /// Cumulative popularity by rank; `by_rank[r]` is the model of rank `r`.
    cdf: Vec<f64>,
    by_rank: Vec<u32>,
    /// Per tick: nodes leaving (with their downtime applied already) and nodes returning.
    pub(crate) leaves: Vec<Vec<u32>>,
    pub(crate) returns: Vec<Vec<u32>>,
    /// Requests per tick.
    pub(crate) arrivals: u64,
}

impl World {
    /// Draws the world from `cfg.seed` (`cfg` is valid).
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        let mut rng = Rng::new(cfg.seed);
        // Lists are non-empty ([`SimConfig::validate`]).
        let pick = |rng: &mut Rng, list: &[u64]| list[rng.below(list.len())];
        let cap: Vec<u32> = (0..cfg.nodes).map(|_| cfg.concurrency[rng.below(cfg.concurrency.len())]).collect();
        let ram = (0..cfg.nodes).map(|_| pick(&mut rng, &cfg.ram_gib) * GIB).collect();
        let disk = (0..cfg.nodes).map(|_| pick(&mut rng, &cfg.disk_gib) * GIB).collect();
        let ids = (0..cfg.nodes).map(|i| format!("node-{i:05}")).collect();
        let keys = (0..cfg.models)
            .map(|m| ModelRef::new(&format!("model-{m:04}")).unwrap_or_else(|_| unreachable!("a valid key")))
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

    /// A model, drawn by popularity.
    pub(crate) fn draw_model(&self, rng: &mut Rng) -> u32 {
        let u = rng.unit();
        let r = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1);
        self.by_rank[r]
    }
}

/// One arrival.
#[derive(Clone, Copy)]
pub(crate) struct Arrival {
    /// The model it asks for.
    pub(crate) model: u32,
    /// Ticks it lasts.
    pub(crate) duration: u32,
    /// Its request key.
    pub(crate) key: u64,
}

/// Tick `tick`'s arrivals into `out`, the same for every policy.
pub(crate) fn arrivals(cfg: &SimConfig, world: &World, tick: u32, out: &mut Vec<Arrival>) {
    out.clear();
    let mut rng = Rng::new(combine(cfg.seed ^ ARRIVAL_SALT, u64::from(tick)));
    let hi = cfg.duration.1.max(cfg.duration.0);
    for _ in 0..world.arrivals {
        let model = world.draw_model(&mut rng);
        let duration = rng.range_u32(cfg.duration.0.max(1), hi.max(1));
        out.push(Arrival { model, duration, key: rng.next_u64() });
    }
}
