//! Indexing a node table: [`Snapshot::build`] and its errors ([`BuildError`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use super::{Holders, Node, Pool, Snapshot, lookup};
use crate::config::{ConfigError, PolicyConfig};
use crate::hash::{StableState, combine, hash_str};
use crate::node::NodeState;
use crate::warmth::Warmth;
use wasmesh_api::ModelRef;

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
    ///
    /// [`NodeIndex`]: crate::NodeIndex
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
                reputation,
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
                reputation,
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
            home[mid as usize] = hash_str(ModelRef::model_of(text));
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
            // Higher reputation first (audits passed), then the model's own order of nodes.
            let rank = |&n: &u32| {
                (std::cmp::Reverse(nodes[n as usize].reputation), combine(home[mid], nodes[n as usize].hash))
            };
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
