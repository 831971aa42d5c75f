//! The runs: every policy over the same workload ([`run`]), one tick at a time, then our
//! decision latency timed on the final state.

use std::collections::VecDeque;
use std::time::Instant;

use wasmesh_policy::{ConfigError, NodeIndex, NodeState, Request, Snapshot};

use crate::baseline::{Baselines, MinTree, Policy};
use crate::config::SimConfig;
use crate::fabric::{Fabric, Landed};
use crate::report::{Latency, PolicyReport, SimReport};
use crate::workload::{World, arrivals};
use wasmesh_policy::hash::Rng;

const BASELINE_SALT: u64 = 0x6261_7365_6c69_6e65;

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
