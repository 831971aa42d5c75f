//! A deterministic fabric simulator for the router's routing policy (`wasmesh-policy`): replays
//! one synthetic workload (Zipf-popular models, node churn) against our policy and three naive
//! ones, and measures how often requests find their model warm, how evenly load spreads, and how
//! long a decision takes.
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
//! # The code
//!
//! One concern per module: the parameters ([`SimConfig`]), the synthetic workload (nodes,
//! models, popularity, churn and arrivals, the same for every policy), the fabric a policy
//! shapes (RAM and disk caches, loads, completions, the node table our policy sees), the policies
//! compared ([`Policy`], and how the naive ones pick), the runs themselves ([`run`]), and the
//! figures ([`SimReport`]).
//!
//! # Example
//!
//! ```
//! use wasmesh_sim::{SimConfig, run};
//! let mut cfg = SimConfig::default();
//! cfg.nodes = 200;
//! cfg.models = 40;
//! cfg.ticks = 40;
//! cfg.warmup = 20;
//! cfg.latency_samples = 1000;
//! let report = run(&cfg)?;
//! let ours = &report.policies[0];
//! assert!(ours.warm_hit_rate() > report.policies[1].warm_hit_rate());
//! # Ok::<(), wasmesh_policy::ConfigError>(())
//! ```
//!
//! [`Snapshot::route`]: wasmesh_policy::Snapshot::route
//! [`Snapshot::begin`]: wasmesh_policy::Snapshot::begin

mod baseline;
mod config;
mod fabric;
mod replay;
mod report;
mod workload;

#[cfg(test)]
mod tests;

pub use baseline::Policy;
pub use config::SimConfig;
pub use replay::run;
pub use report::{Latency, PolicyReport, SimReport};
