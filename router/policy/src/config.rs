//! The policy's knobs, with their defaults and why.

use std::fmt;

/// The most candidates one decision holds: the router tries them in order, and a request that
/// failed on four nodes in a row is better answered with an error than with a fifth try.
pub const MAX_CANDIDATES: usize = 4;

/// The most nodes probed per cold holder list (and gathered by one placement walk) per decision;
/// bounds the work per request.
pub const MAX_PROBES: usize = 32;

/// How the policy ranks nodes. Start from [`PolicyConfig::default`] and set the public fields;
/// [`Snapshot::build`](crate::Snapshot::build) checks them ([`PolicyConfig::validate`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// `c` of bounded-load consistent hashing: a node whose in-flight count would go above `c`
    /// times the pool's mean (relative to its concurrency) is skipped while another will do.
    /// Default 1.25 (Mirrokni, Thorup, Zadimoghaddam: `1 + ε` with ε = 0.25 keeps the walk
    /// short while no node carries more than a quarter above the mean).
    pub load_factor: f64,
    /// The load, as a fraction of a node's concurrency, under which bounded load never skips
    /// it: at low utilisation "`c` times the mean" is one or two requests, and skipping a warm
    /// node with most of its slots free for a cold one trades a load of seconds for a balance
    /// nobody needs. Above it (the regime balance matters in) the rule applies in full.
    /// Default 0.5; 0 applies the paper's rule at every load.
    pub min_bound: f64,
    /// Candidates per decision, 1 to [`MAX_CANDIDATES`]. Default 4.
    pub max_candidates: usize,
    /// Warm nodes one decision scans at most, from the model's cursor, looking for room. A
    /// model warm on more nodes than this is scanned a window per request (the cursor moves on
    /// when a window is full); its warm set counts as busy only once a scan reaches the end of
    /// the list without finding room. Default 128: well under a microsecond, and the cursor
    /// usually finds room at its first step.
    pub warm_scan: usize,
    /// Nodes probed per holder list of the cold tiers (base warm, loading, disk), in the list's
    /// rendezvous order, 1 to [`MAX_PROBES`]. Default 8.
    pub cold_probes: usize,
    /// A warm node counts as busy once one more request would put it above this fraction of its
    /// limit (the smaller of its concurrency and the bounded-load cap). Requests fill a model's
    /// warm nodes in order up to it; when all of them are busy the decision names a node to
    /// pre-load the model on, while the cap's last margin still takes requests warm.
    /// Default 0.95. `busy_fraction × load_factor` must stay well above 1: below about 1.1 the
    /// packed warm nodes count as busy at the fabric's mean load, every model's warm set keeps
    /// growing, and the pre-loads evict copies that are still in use. In the simulator, 0.9
    /// made eight times as many pre-loads as 0.95 and fell under 99.9 % warm hits.
    pub busy_fraction: f64,
    /// A model with fewer warm copies than this in the pool gets a pre-load hint on each request
    /// (so one node leaving does not leave it cold). Default 2; 0 or 1 turns it off.
    pub min_warm: u32,
    /// No pre-load hint while this many nodes of the pool are already loading the model (or
    /// `loading_per_warm` of its warm count, if more): hints repeat on every request until the
    /// next snapshot shows the load, and a load takes seconds. Default 2.
    pub max_loading: u32,
    /// Loads under way allowed per warm copy, so a model warm on many nodes can grow by many
    /// at once (churn alone takes several of its nodes a minute). While more than one load is
    /// allowed, requests name different nodes for it (the request key picks among the best
    /// cold nodes, at most `placement_window`). Default 1/64: a model warm on 1 000 nodes may
    /// have 15 loads under way.
    pub loading_per_warm: f64,
    /// Points per node on the hash ring. More points spread cold placement more evenly; each
    /// costs 16 bytes and a share of the rebuild's sort. Default 32 (320 000 points at 10 000
    /// nodes, sorted in a few milliseconds).
    pub vnodes: u32,
    /// Ring points walked from one start point before the walk jumps to the next start point
    /// (`hash(start, arc)`). The walk for a model warm on more nodes than this starts at a point
    /// the request key picks instead of the model's home, whose arcs its copies already fill.
    /// Default 32.
    pub ring_arc: usize,
    /// Start points per walk; `ring_arc * ring_arcs` bounds the ring points one decision reads.
    /// Default 8 (at most 256 points).
    pub ring_arcs: usize,
    /// Eligible cold nodes the placement walk gathers before ranking them (on disk, then enough
    /// free memory, then eviction needed, each in ring order). A wider window finds a node that
    /// needs no eviction more often; a narrower one concentrates a model on fewer nodes.
    /// Default 8.
    pub placement_window: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            load_factor: 1.25,
            min_bound: 0.5,
            max_candidates: MAX_CANDIDATES,
            warm_scan: 128,
            cold_probes: 8,
            busy_fraction: 0.95,
            min_warm: 2,
            max_loading: 2,
            loading_per_warm: 1.0 / 64.0,
            vnodes: 32,
            ring_arc: 32,
            ring_arcs: 8,
            placement_window: 8,
        }
    }
}

impl PolicyConfig {
    /// Sets [`PolicyConfig::load_factor`].
    pub fn with_load_factor(mut self, c: f64) -> Self {
        self.load_factor = c;
        self
    }

    /// Checks every field's range.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field out of range and the range it must be in.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, expected| Err(ConfigError { field, expected });
        if !(self.load_factor.is_finite() && self.load_factor >= 1.0) {
            return bad("load_factor", "a number >= 1.0 (1.25 is the default)");
        }
        if !(0.0..=1.0).contains(&self.min_bound) {
            return bad("min_bound", "a number in [0, 1]");
        }
        if !(1..=MAX_CANDIDATES).contains(&self.max_candidates) {
            return bad("max_candidates", "1 to 4");
        }
        if !(1..=1 << 16).contains(&self.warm_scan) {
            return bad("warm_scan", "1 to 65536");
        }
        if !(1..=MAX_PROBES).contains(&self.cold_probes) {
            return bad("cold_probes", "1 to 32");
        }
        if !(self.busy_fraction > 0.0 && self.busy_fraction <= 1.0) {
            return bad("busy_fraction", "a number in (0, 1]");
        }
        if !(self.loading_per_warm.is_finite() && self.loading_per_warm >= 0.0) {
            return bad("loading_per_warm", "a number >= 0");
        }
        if !(1..=1024).contains(&self.vnodes) {
            return bad("vnodes", "1 to 1024");
        }
        if self.ring_arc == 0 || self.ring_arcs == 0 || self.ring_arc.saturating_mul(self.ring_arcs) > 1 << 16 {
            return bad("ring_arc, ring_arcs", "both >= 1, product at most 65536");
        }
        if !(1..=MAX_PROBES).contains(&self.placement_window) {
            return bad("placement_window", "1 to 32");
        }
        Ok(())
    }
}

/// A [`PolicyConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What it must be.
    pub expected: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "routing policy: '{}' must be {}", self.field, self.expected)
    }
}

impl std::error::Error for ConfigError {}
