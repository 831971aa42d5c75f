//! Weights spread between hosts: real `wasmesh host` processes fetch the test model
//! over BitTorrent (librqbit) and from an S3-compatible store (s3s-fs, started here,
//! its egress counted by a proxy in front of it), every byte verified.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use wasmesh_api::wire::Scope;
use wasmesh_client::{Client, NoProgress};
use wasmesh_tests::{
    Process, WeightsFabric as Fabric, blake3_of, free_addr, model_path, prerequisites, request, runtime, scratch,
    start_registry, wait_for,
};

/// `wasmesh_host_weight_bytes_total{source=...}` summed over models, from `/metrics`.
fn weight_bytes(host: SocketAddr, source: &str) -> u64 {
    let metrics = request(host, "GET", "/metrics", &[], None).unwrap().text();
    metrics
        .lines()
        .filter(|l| l.starts_with("wasmesh_host_weight_bytes_total") && l.contains(&format!("source=\"{source}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn four_hosts_fetch_one_model_together_and_the_origin_serves_it_about_once() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("weights-four");
    // The origin's uplink capped at 32 MB/s, so the hosts' fetches overlap.
    let Some(fabric) = Fabric::start(&dir, Some(32 << 20)) else { return };
    let size = fabric.model.size;
    let started = Instant::now();
    let mut hosts: Vec<Process> = (0..4).map(|i| fabric.host(&format!("h{i}"), &[])).collect();
    for host in &mut hosts {
        host.wait_ready(Duration::from_secs(300));
    }
    let took = started.elapsed();
    let egress = fabric.origin.egress();
    let original = blake3_of(&model_path());
    let mut from_peers = 0;
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(blake3_of(&fabric.cached(&format!("h{i}"))), original, "host {i}'s copy differs");
        from_peers += weight_bytes(host.addr, "peers");
    }
    eprintln!(
        "4 hosts hold the model ({} MiB) after {took:.1?}; origin egress {} MiB ({:.2}× the model); {} MiB came from peers",
        size >> 20,
        egress >> 20,
        egress as f64 / size as f64,
        from_peers >> 20
    );
    assert!(egress as f64 <= 1.2 * size as f64, "origin egress {egress} > 1.2 × {size}");
    assert!(from_peers as f64 >= 2.0 * size as f64, "the hosts traded only {from_peers} bytes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_serving_corrupt_pieces_is_rejected_and_reported_and_the_fetch_completes() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("weights-corrupt");
    let Some(fabric) = Fabric::start(&dir, None) else { return };
    // A registered provider that seeds the model with a byte flipped in every piece.
    let bad_log = dir.join("bad-seeder.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bad-seeder"));
    command.args([
        &fabric.url(),
        &fabric.provider,
        "smollm2",
        model_path().to_str().unwrap(),
        dir.join("bad").to_str().unwrap(),
    ]);
    command.env("RUST_LOG", "warn");
    let bad = Process::from_command(command, free_addr(), bad_log.clone());
    wait_for("the bad seeder", Duration::from_secs(60), || bad.log().contains("seeding on"));
    let bad_node = bad.log().split(" as ").nth(1).unwrap().trim().to_string();

    // The only peer is the bad one: the host takes nothing from the origin at
    // first, rejects every piece the peer sends, and finishes from the store.
    let mut host = fabric.host("h", &["--p2p-stall-secs", "3"]);
    host.wait_ready(Duration::from_secs(180));
    assert_eq!(blake3_of(&fabric.cached("h")), blake3_of(&model_path()), "a bad piece reached the cache");
    let log = host.log();
    assert!(log.contains("did not validate"), "librqbit never saw a bad piece:\n{log}");
    assert!(log.contains("reported a peer that sent bad pieces"), "{log}");
    let nodes = fabric.nodes();
    let reported = nodes.as_array().unwrap().iter().find(|n| n["node_id"] == bad_node.as_str()).unwrap();
    assert!(reported["peer_reports"].as_u64().unwrap() >= 1, "{reported}");
    let honest = nodes.as_array().unwrap().iter().find(|n| n["name"] == "h").unwrap();
    assert_eq!(honest["peer_reports"], 0);
    assert!(weight_bytes(host.addr, "origin") >= fabric.model.size - fabric.model.pieces.piece_length);
    drop(bad);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn when_every_peer_is_gone_mid_transfer_the_object_store_serves_the_rest() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("weights-gone");
    let Some(fabric) = Fabric::start(&dir, None) else { return };
    // A seeds within a budget of 4 MiB/s, so B's transfer takes a while.
    let mut seeder = fabric.host("a", &["--seed-kib-s", "4096"]);
    seeder.wait_ready(Duration::from_secs(120));
    fabric.origin.reset();
    let mut fetcher = fabric.host("b", &["--p2p-stall-secs", "3"]);
    wait_for("B to get a fifth of the model from A", Duration::from_secs(120), || fetcher.log().contains("percent=20"));
    seeder.kill9();
    fetcher.wait_ready(Duration::from_secs(180));
    assert_eq!(blake3_of(&fabric.cached("b")), blake3_of(&model_path()));
    let (peers, origin) = (weight_bytes(fetcher.addr, "peers"), weight_bytes(fetcher.addr, "origin"));
    eprintln!("B: {} MiB from A before it died, {} MiB from the object store", peers >> 20, origin >> 20);
    assert!(peers >= fabric.model.size / 5, "{peers}");
    assert!(origin > 0 && peers + origin >= fabric.model.size, "{peers} + {origin}");
    assert!(fabric.origin.egress() < fabric.model.size, "the store served what A had already given");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_tracker_answers_only_registered_nodes_about_the_swarms_they_joined() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("weights-tracker");
    let (registry, admin) = start_registry(&dir, &[]);
    let rt = runtime();
    let admin = Client::new(&format!("http://{}", registry.addr), Some(admin)).unwrap();
    let deployer = admin.with_key(&rt.block_on(admin.create_key("d", &[Scope::Deploy])).unwrap().key);
    let provider = admin.with_key(&rt.block_on(admin.create_key("p", &[Scope::Provider])).unwrap().key);
    let model = rt.block_on(deployer.push_model(&model_path(), "smollm2", &NoProgress)).unwrap();
    let identity = wasmesh_client::NodeIdentity::load_or_create(&dir.join("node.key")).unwrap();
    rt.block_on(provider.register_node(&identity, "n")).unwrap();
    let grant = rt.block_on(provider.join_swarm(&identity, &model.blake3, true)).unwrap();
    assert_eq!(grant.origin_pieces.len(), model.pieces.hashes.len().div_ceil(16), "the first batch of the origin");
    let path = grant.announce.strip_prefix(&format!("http://{}", registry.addr)).unwrap().to_string();
    let encoded = |hex: &str| {
        hex.as_bytes().chunks(2).map(|c| format!("%{}", std::str::from_utf8(c).unwrap())).collect::<String>()
    };
    let announce = |path: &str, info_hash: &str| {
        let r = request(
            registry.addr,
            "GET",
            &format!("{path}?info_hash={}&port=4000&left=0", encoded(info_hash)),
            &[],
            None,
        )
        .unwrap();
        (r.status, r.body)
    };
    let info_hash = model.pieces.info_hash.clone().unwrap();
    let (status, body) = announce(&path, &info_hash);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(body.starts_with(b"d8:completei0e10:incompletei0e8:intervali5e"), "{}", String::from_utf8_lossy(&body));
    // A token opens only the swarm it was granted for.
    let (status, body) = announce(&path, &"ab".repeat(20));
    assert_eq!(status, 403);
    assert!(body.starts_with(b"d14:failure reason"));
    assert!(String::from_utf8_lossy(&body).contains("for this swarm"), "{}", String::from_utf8_lossy(&body));
    let forged = path.replace(&grant.announce.split('/').nth(6).unwrap().to_string(), &"0".repeat(32));
    assert_eq!(announce(&forged, &info_hash).0, 403);
    // The token expires with the node's certificate (here: as if hours passed without a
    // renewal), and lives again when the node registers again.
    let db = format!("sqlite://{}", dir.join("registry/registry.db").display());
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db).await.unwrap();
        sqlx::query("UPDATE nodes SET cert_expires_at = 1").execute(&pool).await.unwrap();
        pool.close().await;
    });
    let (status, body) = announce(&path, &info_hash);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("expired"), "{}", String::from_utf8_lossy(&body));
    rt.block_on(provider.register_node(&identity, "n")).unwrap();
    assert_eq!(announce(&path, &info_hash).0, 200, "renewed: the same token works again");
    // The token dies with the key that registered the node.
    let key_id = rt.block_on(provider.whoami()).unwrap().id;
    rt.block_on(admin.revoke_key(&key_id)).unwrap();
    let (status, body) = announce(&path, &info_hash);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("revoked"), "{}", String::from_utf8_lossy(&body));
    let _ = std::fs::remove_dir_all(&dir);
}
