//! `cargo bench --bench weights`: N = 1, 4 and 8 `wasmesh host` processes fetch the
//! test model at once from an S3-compatible store (s3s-fs) whose uplink is capped by
//! a metering proxy, with our fetcher (the origin's shares, then peers over
//! BitTorrent) and with the object store alone (`--no-p2p`, the anchor). Prints the
//! time until every host holds the verified model and the origin's egress, and ends
//! with one line of JSON.
//!
//! The `wasmesh` binary comes from `WASMESH_BIN`, or beside this bench's profile
//! folder (build it first: `cargo build -p wasmesh` in the same profile).
//! `WASMESH_BENCH_ORIGIN_MIB_S` sets the origin's cap (default 8 MiB/s).

use std::time::{Duration, Instant};
use wasmesh_tests::{WeightsFabric, blake3_of, model_path};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !wasmesh_tests::prerequisites() {
        eprintln!("prerequisites missing: run `bash deploy/setup.sh` and build `wasmesh` in this profile");
        return;
    }
    let cap_mib: u64 = std::env::var("WASMESH_BENCH_ORIGIN_MIB_S").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let size = std::fs::metadata(model_path()).expect("test model").len();
    println!(
        "model {} MiB; origin capped at {cap_mib} MiB/s (one copy takes {:.1} s); hosts on loopback, {} cores",
        size >> 20,
        size as f64 / (cap_mib << 20) as f64,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("{:>3} {:>12} {:>10} {:>14} {:>12}", "N", "fetcher", "time s", "origin bytes", "× model");
    let mut figures = serde_json::Map::new();
    figures.insert("model_bytes".into(), size.into());
    figures.insert("origin_cap_mib_s".into(), cap_mib.into());
    for n in [1usize, 4, 8] {
        for (mode, extra) in [("ours", &[][..]), ("store_only", &["--no-p2p"][..])] {
            let (secs, egress) = run(n, mode, extra, cap_mib << 20);
            println!("{n:>3} {mode:>12} {secs:>10.1} {egress:>14} {:>12.2}", egress as f64 / size as f64);
            figures.insert(format!("{mode}_n{n}_s"), serde_json::json!((secs * 100.0).round() / 100.0));
            figures.insert(
                format!("{mode}_n{n}_origin_x"),
                serde_json::json!(((egress as f64 / size as f64) * 1000.0).round() / 1000.0),
            );
        }
    }
    let get = |k: &str| figures[k].as_f64().unwrap_or(0.0);
    let ratio = get("ours_n8_s") / get("ours_n1_s");
    let speedup = get("store_only_n8_s") / get("ours_n8_s");
    println!(
        "ours: time at N=8 / time at N=1 = {ratio:.2} (target ≤ 1.5); at N=8 ours is {speedup:.2}× faster than the store alone"
    );
    figures.insert("ours_n8_over_n1".into(), serde_json::json!((ratio * 100.0).round() / 100.0));
    figures.insert("speedup_n8_vs_store_only".into(), serde_json::json!((speedup * 100.0).round() / 100.0));
    println!("{}", serde_json::Value::Object(figures));
}

/// Starts a fresh fabric and `n` hosts at once; returns seconds until all are
/// ready with the verified model, and the origin's egress.
fn run(n: usize, mode: &str, extra: &[&str], cap: u64) -> (f64, u64) {
    let dir = std::env::temp_dir().join(format!("wasmesh-weights-bench-{}-{mode}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fabric = WeightsFabric::start(&dir, Some(cap)).expect("s3s-fs (run `bash deploy/setup.sh`)");
    let start = Instant::now();
    let mut hosts: Vec<_> = (0..n).map(|i| fabric.host(&format!("h{i}"), extra)).collect();
    for host in &mut hosts {
        host.wait_ready(Duration::from_secs(1200));
    }
    let secs = start.elapsed().as_secs_f64();
    let egress = fabric.origin.egress();
    let original = blake3_of(&model_path());
    for i in 0..n {
        assert_eq!(blake3_of(&fabric.cached(&format!("h{i}"))), original, "host {i} holds a different file");
    }
    drop(hosts);
    drop(fabric);
    let _ = std::fs::remove_dir_all(&dir);
    (secs, egress)
}
