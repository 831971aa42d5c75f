//! `cargo bench --bench credits`: what metering costs, and how fast the ledger posts.
//!
//! 1. The ledger in batches of 3,000 transfers (a router's batch of 1,000 receipts, each
//!    a post from a lease, a fee and a pending earning), on SQLite and on PostgreSQL (a server of the
//!    bench's own), against the anchor of one transfer per database transaction
//!    measured in the same run. Goal: at least 20,000 transfers/s.
//! 2. A fabric (registry and one host in this process, two `wasmesh router` processes:
//!    one metering, one not): `hello` requests/s through each under `wrk`, in
//!    alternating rounds, with a per-call price set so every metered request is held,
//!    receipted and charged. Goal: metered >= 0.98x unmetered.
//!    `CREDITS_BENCH_ROUTER=shared` runs both routers on this process's runtime instead
//!    (as the bench did before: router and host tasks then share two worker threads).
//!
//! Ends with one line of JSON holding every figure.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_api::wire::{ArtifactKind, Price, Scope};
use wasmesh_benches::wrk_stats;
use wasmesh_registry::db::Db;
use wasmesh_registry::ledger::{ESCROW, FEES, MINT, NO_OVERDRAFT, SqlLedger, Transfer};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut figures = serde_json::Map::new();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    let dir = std::env::temp_dir().join(format!("wasmesh-credits-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");

    println!("credits bench: the ledger, receipt-shaped transfers (post from a lease, fee, pending earning)");
    let pg = wasmesh_tests::Postgres::start(&dir.join("pg"));
    let mut backends = vec![("sqlite", Db::sqlite_url(&dir))];
    match &pg {
        Ok(pg) => backends.push(("postgres", pg.url.clone())),
        Err(e) => eprintln!("PostgreSQL part skipped: {e}"),
    }
    for (name, url) in backends {
        let (batched, single) = runtime.block_on(ledger(&url));
        println!(
            "  {name:9} batches of 3000: {batched:8.0} transfers/s   one per transaction: {single:7.0} transfers/s   ratio {:.1}x   goal >= 20000/s: {}",
            batched / single,
            if batched >= 20_000.0 { "met" } else { "MISSED" }
        );
        figures.insert(format!("ledger_{name}_batched_tps"), serde_json::json!(batched.round()));
        figures.insert(format!("ledger_{name}_single_tps"), serde_json::json!(single.round()));
    }
    drop(pg);

    println!();
    match runtime.block_on(fabric(&dir)) {
        Ok((on, off, invoke, routers)) => {
            let auth = format!("Authorization: Bearer {invoke}");
            // CREDITS_BENCH_HOLD=SECONDS: the fabric stays up that long first, its addresses
            // printed, to profile a path under a load of one's own (`perf record -p`).
            let hold: u64 = std::env::var("CREDITS_BENCH_HOLD").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
            if hold > 0 {
                println!(
                    "holding for {hold} s: metered {on}, unmetered {off} (pid {}; header {auth:?})",
                    std::process::id()
                );
                std::thread::sleep(std::time::Duration::from_secs(hold));
            }
            const ROUNDS: usize = 2;
            let (mut metered, mut plain) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                match (
                    wrk_stats(&format!("{off}/fn/bench/hello"), &[&auth], 16, 5),
                    wrk_stats(&format!("{on}/fn/bench/hello"), &[&auth], 16, 5),
                ) {
                    (Ok(p), Ok(m)) => {
                        plain.push(p);
                        metered.push(m);
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("router part failed: {e}");
                        figures.insert("router_error".into(), serde_json::json!(e));
                        break;
                    }
                }
            }
            drop(routers);
            if !plain.is_empty() {
                let mean = |v: &[wasmesh_benches::WrkStats]| v.iter().map(|r| r.rps).sum::<f64>() / v.len() as f64;
                let (p, m) = (mean(&plain), mean(&metered));
                println!(
                    "hello through a router, wrk -t1 -c16 -d5s, {ROUNDS} alternating rounds: metering off {p:.0} req/s, on {m:.0} req/s: {:.3}x (goal >= 0.98: {})",
                    m / p,
                    if m / p >= 0.98 { "met" } else { "MISSED" }
                );
                figures.insert("hello_unmetered_rps".into(), serde_json::json!(p.round()));
                figures.insert("hello_metered_rps".into(), serde_json::json!(m.round()));
                figures
                    .insert("hello_metered_vs_unmetered".into(), serde_json::json!((m / p * 1000.0).round() / 1000.0));
            }
        }
        Err(e) => {
            eprintln!("router part skipped: {e}");
            figures.insert("router_error".into(), serde_json::json!(e));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::Value::Object(figures));
    std::process::exit(0);
}

/// Transfers per second: batched (1,000 per call) and one per call.
async fn ledger(url: &str) -> (f64, f64) {
    let db = Db::open(url).await.expect("the database opens");
    let ledger = SqlLedger::new(db);
    for a in ["caller", "provider"] {
        ledger.ensure_account(a, NO_OVERDRAFT).await.unwrap();
    }
    ledger.transfer(&[Transfer::posted("grant", MINT, "caller", i64::MAX / 4, "grant")]).await.unwrap();
    // Receipt-shaped: each lease pays up to 20,000 receipts of 1,000 micros.
    let receipts = |lease: &str, from: usize, n: usize| -> Vec<Transfer> {
        (from..from + n)
            .flat_map(|i| {
                [
                    Transfer::post(format!("spend:{lease}:{i}"), lease, 1_000, "spend"),
                    Transfer::posted(format!("fee:{lease}:{i}"), ESCROW, FEES, 100, "fee"),
                    Transfer::pending(format!("earn:{lease}:{i}"), ESCROW, "provider", 900, 0, "earning"),
                ]
            })
            .collect()
    };
    let lease = |id: &str| Transfer::pending(id, "caller", ESCROW, 1_000 * 20_000, 0, "reserve");
    ledger.transfer(&[lease("lease-a")]).await.unwrap();
    let started = Instant::now();
    let mut moved = 0;
    // A router sends up to 1,000 receipts per batch: 3,000 transfers.
    for chunk in 0..10 {
        let batch = receipts("lease-a", chunk * 1000, 1000);
        moved += batch.len();
        ledger.transfer(&batch).await.unwrap();
    }
    let batched = moved as f64 / started.elapsed().as_secs_f64();
    ledger.transfer(&[lease("lease-b")]).await.unwrap();
    let started = Instant::now();
    let mut moved = 0;
    for t in receipts("lease-b", 0, 200) {
        ledger.transfer(std::slice::from_ref(&t)).await.unwrap();
        moved += 1;
    }
    let single = moved as f64 / started.elapsed().as_secs_f64();
    let check = ledger.check().await.unwrap();
    assert!(check.ok, "{check:?}");
    (batched, single)
}

/// A registry and one host in this process, and two routers (`wasmesh router`
/// processes, or on this process's runtime with `CREDITS_BENCH_ROUTER=shared`); the
/// routers' URLs (metering on, off), an invoke key with plenty of credits, and the
/// router processes (stopped when dropped).
async fn fabric(dir: &std::path::Path) -> Result<(String, String, String, Vec<wasmesh_tests::Process>), String> {
    let shared = std::env::var("CREDITS_BENCH_ROUTER").is_ok_and(|v| v == "shared");
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let hello = wasmesh_tests::components_dir().join("hello.wasm");
    if !hello.is_file() {
        return Err(format!("{} is missing: run `bash guest-components/build.sh`", hello.display()));
    }
    let registry = wasmesh_registry::Registry::open(wasmesh_registry::RegistryConfig::new(dir.join("registry")))
        .await
        .map_err(|e| s(&e))?;
    let admin = registry.create_admin_key_if_none().await.map_err(|e| s(&e))?.ok_or("no admin key")?;
    let provider = registry.create_key("bench-host", &[Scope::Provider]).await.map_err(|e| s(&e))?;
    let invoke = registry.create_key("bench-caller", &[Scope::Invoke]).await.map_err(|e| s(&e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| s(&e))?;
    let registry_url = format!("http://{}", listener.local_addr().map_err(|e| s(&e))?);
    tokio::spawn(async move { registry.serve(listener, std::future::pending()).await });
    let client = wasmesh_client::Client::new(&registry_url, Some(admin.clone())).map_err(|e| s(&e))?;
    let blob = client
        .upload_bytes(std::fs::read(&hello).map_err(|e| s(&e))?.into(), ArtifactKind::Component)
        .await
        .map_err(|e| s(&e))?;
    let manifest = "[app]\nname = \"bench\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n";
    client.deploy_uploaded("bench", manifest, [("hello".to_string(), blob.blake3)].into()).await.map_err(|e| s(&e))?;
    client.set_price(&Price { model: "-".into(), per_call: 1, ..Default::default() }).await.map_err(|e| s(&e))?;
    // The largest grant: a billion credits.
    client.grant(wasmesh_api::wire::DEFAULT_ACCOUNT, 1_000_000_000_000_000, "bench", None).await.map_err(|e| s(&e))?;

    let mut urls = Vec::new();
    let mut quics = Vec::new();
    let mut processes = Vec::new();
    for metering in [true, false] {
        let quic = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_err(|e| s(&e))?;
        let name = if metering { "router-on" } else { "router-off" };
        if !shared {
            let bin = wasmesh_tests::wasmesh_bin();
            if !bin.is_file() {
                return Err(format!("{} is missing: run `cargo build -p wasmesh` (same profile)", bin.display()));
            }
            let http = wasmesh_tests::free_addr();
            // A lease of a million credits: the account's lease is asked for once.
            let extra: &[&str] = if metering { &["--lease-credits", "1000000"] } else { &["--no-metering"] };
            let mut router = wasmesh_tests::spawn_router_at(dir, name, &registry_url, &admin, http, quic, extra);
            router.wait_ready(Duration::from_secs(30));
            urls.push(format!("http://{http}"));
            quics.push(quic);
            processes.push(router);
            continue;
        }
        let mut config = wasmesh_router::RouterConfig::new(registry_url.clone(), admin.clone(), dir.join(name), quic);
        config.per_key_rps = 1e9;
        config.metering.enabled = metering;
        config.metering.lease_micros = 1 << 40;
        let router = Arc::new(wasmesh_router::Router::start(config).await.map_err(|e| s(&e))?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| s(&e))?;
        urls.push(format!("http://{}", listener.local_addr().map_err(|e| s(&e))?));
        tokio::spawn(async move { router.serve(listener, std::future::pending()).await });
        quics.push(quic);
    }
    wasmesh_benches::start_host(&registry_url, provider, dir.join("host"), quics).await?;
    let auth = format!("Authorization: Bearer {invoke}");
    let started = Instant::now();
    for url in &urls {
        loop {
            let ok = tokio::process::Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-H", &auth, &format!("{url}/fn/bench/hello")])
                .status()
                .await
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("{url} never routed to the host"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((urls[0].clone(), urls[1].clone(), invoke, processes))
}
