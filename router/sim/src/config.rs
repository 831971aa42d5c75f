//! The simulation's parameters ([`SimConfig`]), with their defaults and ranges.

use wasmesh_policy::{ConfigError, PolicyConfig};

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
