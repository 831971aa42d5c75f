//! The fabric as one policy shapes it ([`Fabric`]): each node's RAM and disk caches (LRU), the
//! loads and completions, churn, and the node table our policy sees each tick.

use wasmesh_policy::{NodeState, Warmth};

use crate::config::SimConfig;
use crate::workload::{Arrival, World};

#[derive(Debug, Clone, Copy)]
struct Slot {
    model: u32,
    ready_at: u32,
    last_used: u32,
    in_flight: u32,
}

/// One node's state in the fabric.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimNode {
    /// Whether it is up (not away by churn).
    pub(crate) up: bool,
    epoch: u32,
    /// Requests in flight on it.
    pub(crate) in_flight: u32,
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

/// How a request landed on a node.
pub(crate) enum Landed {
    Warm,
    Joined,
    Cold { from_disk: bool, first: bool },
}

/// The fabric as one policy shapes it.
pub(crate) struct Fabric<'w> {
    pub(crate) world: &'w World,
    cfg: &'w SimConfig,
    pub(crate) nodes: Vec<SimNode>,
    ends: Vec<Vec<End>>,
    ever_loaded: Vec<bool>,
    /// Models evicted from RAM so far.
    pub(crate) evictions: u64,
}

impl<'w> Fabric<'w> {
    /// Every node up, every cache empty.
    pub(crate) fn new(world: &'w World, cfg: &'w SimConfig) -> Self {
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
    pub(crate) fn start_tick(&mut self, now: u32) -> u64 {
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

    /// Lands `a` on node `n` if it can take it (up, a free slot, the model in RAM or room for it).
    pub(crate) fn land(&mut self, n: usize, a: &Arrival, now: u32) -> Option<Landed> {
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

    /// Starts a background load of `model` on node `n`; returns whether one started.
    pub(crate) fn preload(&mut self, n: usize, model: u32, now: u32) -> bool {
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
    pub(crate) fn table(&self, now: u32) -> (Vec<NodeState>, Vec<u32>) {
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
    pub(crate) fn sample(&self) -> (f64, f64) {
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
