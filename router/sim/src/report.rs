//! The figures a run produces: per policy ([`PolicyReport`]), our decision latency
//! ([`Latency`]), and the whole ([`SimReport`]) as a table for people or a line of JSON.

use std::fmt::Write as _;

use crate::baseline::Policy;
use crate::config::SimConfig;

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
    /// A report with every figure at zero.
    pub(crate) fn new(policy: Policy) -> Self {
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
