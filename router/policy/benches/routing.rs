//! Routing policy bench: replays the fabric simulator (`wasmesh_routing::sim`) for our policy
//! and three naive ones on one workload, times our decisions at full scale, prints a table, and
//! ends with one line of JSON holding the figures.
//!
//! ```text
//! cargo bench -p wasmesh-routing --bench routing
//! ```
//!
//! Environment (optional): `ROUTING_BENCH_TICKS`, `ROUTING_BENCH_NODES`, `ROUTING_BENCH_MODELS`,
//! `ROUTING_BENCH_SEED`, `ROUTING_BENCH_ZIPF`, `ROUTING_BENCH_UTIL` override the defaults
//! (200 ticks, 10 000 nodes, 1 000 models, seed 1, Zipf exponent 1.05, utilisation 0.6).

use std::time::Instant;

use wasmesh_routing::sim::{SimConfig, run};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is expected.
    let mut cfg = SimConfig::default();
    cfg.ticks = env_or("ROUTING_BENCH_TICKS", cfg.ticks);
    cfg.warmup = cfg.warmup.min(cfg.ticks / 2);
    cfg.nodes = env_or("ROUTING_BENCH_NODES", cfg.nodes);
    cfg.models = env_or("ROUTING_BENCH_MODELS", cfg.models);
    cfg.seed = env_or("ROUTING_BENCH_SEED", cfg.seed);
    cfg.zipf_s = env_or("ROUTING_BENCH_ZIPF", cfg.zipf_s);
    cfg.utilisation = env_or("ROUTING_BENCH_UTIL", cfg.utilisation);

    println!("routing bench: fabric simulator, same workload and churn for every policy");
    println!(
        "  nodes {}  models {}  zipf s {}  target utilisation {:.0}%  concurrency {:?}  RAM {:?} GiB  disk {:?} GiB",
        cfg.nodes,
        cfg.models,
        cfg.zipf_s,
        100.0 * cfg.utilisation,
        cfg.concurrency,
        cfg.ram_gib,
        cfg.disk_gib
    );
    println!(
        "  model sizes {}-{} GiB log-uniform  request duration {}-{} ticks  ticks {} (warm-up {})  churn {}/tick, down {}-{} ticks",
        cfg.model_gib.0,
        cfg.model_gib.1,
        cfg.duration.0,
        cfg.duration.1,
        cfg.ticks,
        cfg.warmup,
        cfg.churn,
        cfg.downtime.0,
        cfg.downtime.1
    );
    println!(
        "  load from disk {} ticks, from network {} ticks  policy: c = {}, busy {}, min warm {}, max loading {}, warm scan {}",
        cfg.load_ticks_disk,
        cfg.load_ticks_network,
        cfg.policy.load_factor,
        cfg.policy.busy_fraction,
        cfg.policy.min_warm,
        cfg.policy.max_loading,
        cfg.policy.warm_scan
    );
    let started = Instant::now();
    let report = match run(&cfg) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("routing bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "  {} requests/tick, {} slots in all; ran in {:.1} s (per policy: {})",
        report.arrivals_per_tick,
        report.capacity,
        started.elapsed().as_secs_f64(),
        report.policies.iter().map(|p| format!("{} {:.1} s", p.policy.name(), p.run_s)).collect::<Vec<_>>().join(", ")
    );
    println!();
    print!("{}", report.table());
    if let Some(ours) = report.policy(wasmesh_routing::sim::Policy::Ours) {
        println!(
            "targets: warm hits >= 99.9% ({}), max/mean <= 1.25 ({}), decision p99 <= 20 us ({})",
            if ours.warm_hit_rate() >= 0.999 { "met" } else { "MISSED" },
            if ours.max_over_mean <= 1.25 { "met" } else { "MISSED" },
            match &report.latency {
                Some(l) if l.p99_us <= 20.0 => "met",
                Some(_) => "MISSED",
                None => "not measured",
            }
        );
    }
    println!("{}", report.json());
}
