//! The router's cache-aware routing policy: which nodes should serve a request, best first.
//!
//! A pure function of a node table, in the manner of pingora's selection modules: build an
//! index from the table once ([`Snapshot::build`]), then ask it for candidates per request
//! ([`Snapshot::route`]). The policy does no I/O and never blocks; the router rebuilds the
//! snapshot from heartbeats (every second or so) and swaps it in atomically (`ArcSwap`), keeps
//! the per-node in-flight counts current ([`Snapshot::begin`], [`Snapshot::end`]), and tries
//! the candidates in order. The fabric simulator that measures the policy against naive ones
//! lives in its own crate, `wasmesh-sim`.
//!
//! # The order
//!
//! Only nodes that are **ready** and in the request's **network** are ever candidates (a node
//! of a private network serves only that network; a request held to a network with no node in
//! the snapshot gets none). Among them, for a request that names a model:
//!
//! 1. **Warm**: the model (and its LoRA adapter, if any) is in RAM. The model's warm nodes are
//!    kept in **rendezvous order** (by `hash(model, node)`, the same on every router)
//!    and requests **fill them in that order**, each up to its busy threshold (below); only when
//!    none has room do warm nodes between the threshold and their cap come next. Packing rather
//!    than least-loaded, because RAM is what is scarce: a model's copies further down its order
//!    get only its overflow, so when its demand falls they drain, their memory turns idle and
//!    can be given to a model that needs it. Spread evenly over every copy, no copy would ever
//!    drain and the fabric's memory would stay frozen in whatever shape the first minutes gave
//!    it (the simulator shows hot models starving for nodes that way). A per-model cursor skips
//!    the copies found full, so a model warm on thousands of nodes costs a step, not thousands.
//! 2. **Base warm** (adapters only): the base model is in RAM; the adapter (megabytes) loads first.
//! 3. **Loading**: a load of the model is under way there; the request waits for it instead of
//!    starting a second one elsewhere.
//! 4. **Disk**: the model is on the node's disk; a load, no download.
//! 5. **Fits**, then 6. **Evict**: the node has enough free memory to load the model, or must
//!    first evict idle models ([`NodeState::memory_idle`]: loaded, no request in flight). A node
//!    whose free plus idle memory is smaller than the model is never asked to load it: it would
//!    have to refuse, or make the request wait for other requests to finish.
//!
//! Tiers 2–4 are probed in the model's rendezvous order too. Tiers 5–6 (and any holder the
//! probes missed) come from **bounded-load consistent hashing per model** (Mirrokni, Thorup and
//! Zadimoghaddam, *Consistent Hashing with Bounded Loads*): the walk starts at the ring point of
//! the model's hash (of its base, so adapters meet their base), skips nodes above their cap, and
//! ranks the first `placement_window` eligible nodes by tier, ring order within a tier. So every
//! router loads a given model on the same few nodes, and a model concentrates there instead of
//! being loaded everywhere. A model already warm on more nodes than a ring arc holds has filled
//! the arcs near its home point: its spill walks from where the request key points (spreading
//! over many nodes rather than piling onto a few), its pre-load hints from a point set by its
//! warm count. When the walk meets no node with the memory, the nodes with the most free and
//! idle memory are probed.
//!
//! **Bounded load** applies to every tier: a node whose in-flight count is at its cap —
//! `c` (default 1.25) times its fair share of the pool's in-flight requests (including this one),
//! in proportion to its concurrency — is skipped while any node under its cap will do, and
//! listed only after all of them. The cap never falls under `min_bound` (default half) of the
//! node's concurrency: at low load, "`c` times the mean" is one or two requests, and turning
//! a request away from a warm node with free slots to load the model elsewhere would trade
//! seconds for a balance nobody needs. A node at its **concurrency** limit is never listed: the
//! request **spills** to the next warm node, then to the cold tiers. For a request that needs no
//! model the request key itself is hashed onto the ring (the paper's setting).
//!
//! **Pre-load hint.** When the model's warm nodes are all busy (one more request would put each
//! above `busy_fraction`, default 95 %, of its cap), or the model has fewer than `min_warm` warm
//! copies, the decision names the best node without the model (tiers 2, 4, 5, 6) for the router
//! to pre-load it on, so the warm set grows before requests spill to cold loads. At most
//! `max(max_loading, loading_per_warm × warm copies)` loads of a model are under way at once;
//! when several may start, the request key spreads the hints over the best cold nodes.

//! # LoRA adapters
//!
//! A key is `MODEL` or `MODEL:ADAPTER` ([`ModelRef`]), as heartbeats name them. An adapter is
//! warm on a node only when the node reports both the adapter and its base in RAM; an adapter
//! reported in RAM over a base that is not is counted as on disk. An adapter request's memory
//! ([`Request::model_bytes`]) is the base's plus the adapter's.
//!
//! # Cost
//!
//! A decision reads at most `warm_scan` warm nodes, `cold_probes` entries per other holder list,
//! `ring_arc × ring_arcs` ring points and [`MAX_PROBES`] entries of the most-memory list, whatever
//! the number of nodes: about half a microsecond for a warm hit, a few microseconds for a cold
//! placement, and no allocation ([`Decision`] has a fixed capacity). The only writes are the
//! relaxed per-model cursors. Building a snapshot of 10 000 nodes takes some 20–40 ms.
//!
//! # Example
//!
//! ```
//! use wasmesh_policy::{ModelRef, NodeState, PolicyConfig, Request, Snapshot, Tier, Warmth};
//! const GIB: u64 = 1 << 30;
//! let llama = ModelRef::new("llama-3-8b")?;
//! let table = vec![
//!     NodeState::new("a", 8, 0).with_model(llama.clone(), Warmth::Ram),
//!     NodeState::new("b", 8, 16 * GIB).with_model(llama.clone(), Warmth::Disk),
//!     NodeState::new("c", 8, 16 * GIB).with_ready(false).with_model(llama.clone(), Warmth::Ram),
//! ];
//! let snapshot = Snapshot::build(table, &PolicyConfig::default())?;
//! let decision = snapshot.route(&Request::for_model(&llama, 5 * GIB).with_key(7));
//! let order: Vec<_> = decision.candidates().iter().map(|c| (snapshot.node_id(c.node), c.tier)).collect();
//! assert_eq!(order, [(Some("a"), Tier::Warm), (Some("b"), Tier::Disk)]);
//! // The router sends it to "a" and counts it until it completes.
//! let first = decision.first().expect("a candidate");
//! snapshot.begin(first);
//! snapshot.end(first);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
pub mod hash;
mod node;
mod snapshot;
mod warmth;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, MAX_CANDIDATES, MAX_PROBES, PolicyConfig};
pub use node::{NodeIndex, NodeState};
pub use snapshot::{BuildError, Candidate, Decision, Request, Snapshot, Tier};
pub use warmth::Warmth;
pub use wasmesh_api::{MAX_MODEL_REF_LEN, ModelRef, ModelRefError};
