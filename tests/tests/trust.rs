//! Trust end to end, across real processes: a registry, a router that replays every
//! metered request on an auditor, two auditors, honest hosts and a cheating one (the
//! `cheating-host` binary: the real engine, with an adapter nobody asked for). The cheater
//! is caught, confirmed, evicted and its escrowed earnings refunded to its callers; the
//! honest hosts, serving concurrent batched requests (sampled and greedy, with and without
//! an adapter), are never accused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasmesh_api::wire::{NodeAudits, Price, Scope};
use wasmesh_client::Client;
use wasmesh_tests::{
    Process, components_dir, free_addr, lora_path, model_path, prerequisites, request, runtime, scratch, wait_for,
};

struct Fabric {
    dir: PathBuf,
    registry: Process,
    admin: String,
    caller: String,
    router: Process,
    quic: SocketAddr,
    hosts: Vec<Process>,
    /// Last: dropped after the processes that use it.
    _pg: Option<wasmesh_tests::Postgres>,
}

impl Fabric {
    /// A registry (settlement after an hour: earnings stay in escrow), one router that
    /// audits every metered request, and two trusted auditors.
    /// On PostgreSQL when `postgres` (a server of the test's own), else SQLite.
    fn start(tag: &str, postgres: bool) -> Self {
        let dir = scratch(tag);
        let mut extra = vec!["--fee-percent".to_string(), "10".into(), "--settle-secs".into(), "3600".into()];
        let pg = postgres.then(|| wasmesh_tests::Postgres::start(&dir.join("pg")).expect("PostgreSQL starts"));
        if let Some(pg) = &pg {
            extra.extend(["--database".to_string(), pg.url.clone()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (registry, admin) = wasmesh_tests::start_registry(&dir, &extra);
        let url = format!("http://{}", registry.addr);
        let rt = runtime();
        let client = Client::new(&url, Some(admin.clone())).unwrap();
        for account in ["acme", "prov", "shady", "audit"] {
            rt.block_on(client.create_account(account)).unwrap();
        }
        let caller = wasmesh_tests::account_key(&url, &admin, "acme", &[Scope::Invoke], None);
        rt.block_on(client.grant("acme", 1_000_000_000, "trust test", None)).unwrap();
        rt.block_on(client.set_price(&Price {
            model: "smollm2".into(),
            input_per_mtok: 1_000_000_000,
            output_per_mtok: 3_000_000_000,
            per_call: 0,
        }))
        .unwrap();
        let deployer = wasmesh_tests::account_key(&url, &admin, "default", &[Scope::Deploy], None);
        let folder = dir.join("demo");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(components_dir().join("chat.wasm"), folder.join("chat.wasm")).unwrap();
        std::fs::write(
            folder.join("wasmesh.toml"),
            "[app]\nname = \"demo\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"smollm2\", \"smollm2:one\"]\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n",
        )
        .unwrap();
        let deployer = Client::new(&url, Some(deployer)).unwrap();
        rt.block_on(deployer.deploy(&folder.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();

        let quic = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).unwrap();
        let mut router = wasmesh_tests::spawn_router_at(
            &dir,
            "router",
            &url,
            &admin,
            free_addr(),
            quic,
            &["--audit-share", "1", "--audit-probation-share", "1"],
        );
        router.wait_ready(Duration::from_secs(60));
        let mut fabric = Self { _pg: pg, dir, registry, admin, caller, router, quic, hosts: Vec::new() };
        let audit = fabric.key("audit");
        for i in 0..2 {
            let name = format!("auditor-{i}");
            fabric.host(&name, &audit);
            let id = fabric.node_id(&name);
            let trusted = wasmesh_tests::cli_json(&fabric.url(), &fabric.admin, &["nodes", "trust", &id]).unwrap();
            assert_eq!(trusted["trusted"], true, "{trusted}");
        }
        fabric
    }

    fn url(&self) -> String {
        format!("http://{}", self.registry.addr)
    }

    fn admin(&self) -> Client {
        Client::new(&self.url(), Some(self.admin.clone())).unwrap()
    }

    fn key(&self, account: &str) -> String {
        wasmesh_tests::account_key(&self.url(), &self.admin, account, &[Scope::Provider], None)
    }

    /// An honest host of the account whose provider key is `key`.
    fn host(&mut self, name: &str, key: &str) {
        self.host_with_env(name, key, &[]);
    }

    /// An honest host with extra environment variables (`FAST`: another engine build).
    fn host_with_env(&mut self, name: &str, key: &str, envs: &[(&str, &str)]) {
        let model = format!("smollm2={}", model_path().display());
        let one = format!("one=smollm2:{}", lora_path(1).display());
        let extra =
            ["--model", &model, "--lora", &one, "--slots", "4", "--max-instances", "4", "--heartbeat-secs", "1"];
        let mut host =
            wasmesh_tests::spawn_host_with_env(&self.dir, name, &self.url(), key, &[self.quic], &extra, envs);
        host.wait_ready(Duration::from_secs(60));
        self.hosts.push(host);
    }

    /// The cheating host, of the account whose provider key is `key`: it applies adapter
    /// `two` to every generation that asked for none.
    fn cheater(&mut self, key: &str) -> usize {
        self.cheater_with_env(key, &[])
    }

    /// [`Fabric::cheater`] with extra environment variables.
    fn cheater_with_env(&mut self, key: &str, envs: &[(&str, &str)]) -> usize {
        let addr = free_addr();
        let data = self.dir.join("cheater");
        let args = [
            self.url(),
            key.to_string(),
            data.display().to_string(),
            self.quic.to_string(),
            addr.to_string(),
            model_path().display().to_string(),
            "adapter".into(),
            "1".into(),
            lora_path(2).display().to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let one = lora_path(1).display().to_string();
        let mut envs = envs.to_vec();
        envs.push(("CHEATER_LORA_ONE", one.as_str()));
        let mut host = Process::spawn_program(
            std::path::Path::new(env!("CARGO_BIN_EXE_cheating-host")),
            &args,
            &envs,
            addr,
            self.dir.join("cheater.log"),
        );
        host.wait_ready(Duration::from_secs(60));
        self.hosts.push(host);
        self.hosts.len() - 1
    }

    fn node_id(&self, name: &str) -> String {
        let mut id = None;
        wait_for(&format!("node {name} registered"), Duration::from_secs(30), || {
            id = runtime()
                .block_on(self.admin().nodes())
                .unwrap()
                .into_iter()
                .find(|n| n.name == name)
                .map(|n| n.node_id);
            id.is_some()
        });
        id.unwrap()
    }

    fn audits(&self, node: &str) -> NodeAudits {
        runtime().block_on(self.admin().node_audits(node)).unwrap()
    }

    /// Waits until the router routes to `serving` hosts (auditors apart) and is linked to `linked`.
    fn wait_routing(&self, serving: u64, linked: u64) {
        wait_for("the router's table", Duration::from_secs(60), || {
            request(self.router.addr, "GET", "/health", &[], None)
                .is_ok_and(|r| r.json()["ready"] == serving && r.json()["hosts"] == linked)
        });
    }

    /// `n` chat requests from `threads` callers at once: greedy, sampled (no seed: the
    /// router's), and with adapter `one`, in turn. Every answer must be a 200 (a 503 of
    /// hosts all at their cap is retried, as a caller would).
    fn chats(&self, n: usize, threads: usize, max_tokens: u32) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let mut body = serde_json::json!({
                            "prompt": format!("Name a colour, number {i}."),
                            "max_tokens": max_tokens,
                            "chat": true,
                        });
                        match i % 3 {
                            0 => body["temperature"] = 0.0.into(),
                            1 => body["temperature"] = 0.8.into(),
                            _ => {
                                body["temperature"] = 0.0.into();
                                body["lora"] = "one".into();
                            }
                        }
                        let body = body.to_string();
                        let call = || {
                            wasmesh_tests::call_with_key(
                                self.router.addr,
                                &self.caller,
                                "POST",
                                "/fn/demo/chat",
                                Some(body.as_bytes()),
                            )
                        };
                        let mut r = call();
                        // Every host at its cap (the router does not queue): a caller retries,
                        // for up to a minute (a host left alone once a cheater is evicted,
                        // with another test beside this one on 2 cores, can stay full for long).
                        for _ in 0..300 {
                            if r.status != 503 {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                            r = call();
                        }
                        assert_eq!(r.status, 200, "request {i}: {}", r.text());
                    }
                });
            }
        });
    }

    fn served(&self, host: usize) -> u64 {
        request(self.hosts[host].addr, "GET", "/health", &[], None).unwrap().json()["served"].as_u64().unwrap()
    }

    fn router_metric(&self, outcome: &str) -> u64 {
        self.router_counter(&format!("wasmesh_router_audits_total{{outcome=\"{outcome}\"}}"))
    }

    /// Audit replays run, by way: `checked` (teacher-forced over the node's token ids),
    /// `scored` (the same ids scored by an auditor of another build) or `generated`.
    fn replays(&self, way: &str) -> u64 {
        self.router_counter(&format!("wasmesh_router_audit_replays_total{{way=\"{way}\"}}"))
    }

    /// Waits until `n` audits of the nodes `ids` are accounted for: recorded by the
    /// registry, or counted by the router under one of `unreported` (outcomes that never
    /// reach the registry). Audits on 2 cores shared with another test can take minutes,
    /// so this fails when none has been accounted for in `stall` (or after `limit` in
    /// all), and then says where every count stands.
    fn wait_audits(&self, ids: &[String], n: u64, unreported: &[&str], stall: Duration, limit: Duration) {
        let started = std::time::Instant::now();
        let (mut best, mut moved) = (0, started);
        loop {
            let recorded: u64 =
                ids.iter().map(|id| self.audits(id).trust).map(|t| t.passed + t.failed + t.inconclusive).sum();
            let done = recorded + unreported.iter().map(|o| self.router_metric(o)).sum::<u64>();
            if done >= n {
                return;
            }
            if done > best {
                (best, moved) = (done, std::time::Instant::now());
            }
            if moved.elapsed() > stall || started.elapsed() > limit {
                let nodes: Vec<String> = ids.iter().map(|id| format!("{id}: {:?}", self.audits(id).trust)).collect();
                let outcomes = ["skipped", "no_auditor", "dropped", "error", "passed", "failed", "inconclusive"];
                let router: Vec<String> = outcomes.iter().map(|o| format!("{o} {}", self.router_metric(o))).collect();
                let replays: Vec<String> =
                    ["checked", "scored", "generated"].iter().map(|w| format!("{w} {}", self.replays(w))).collect();
                panic!(
                    "{done} of {n} audits accounted for after {:?} ({:?} without one more); registry: {}; \
                     router's audits: {}; replays: {}",
                    started.elapsed(),
                    moved.elapsed(),
                    nodes.join(", "),
                    router.join(", "),
                    replays.join(", ")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn router_counter(&self, series: &str) -> u64 {
        let text = request(self.router.addr, "GET", "/metrics", &[], None).unwrap().text();
        let line = format!("{series} ");
        text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().unwrap())
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.hosts.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn a_cheater_is_caught_evicted_and_refunded_while_honest_hosts_pass() {
    cheater_is_caught("trust-cheater", false);
}

#[test]
fn a_cheater_is_caught_evicted_and_refunded_on_postgres() {
    cheater_is_caught("trust-cheater-pg", true);
}

fn cheater_is_caught(tag: &str, postgres: bool) {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start(tag, postgres);
    let (prov, shady) = (fabric.key("prov"), fabric.key("shady"));
    fabric.host("host-0", &prov);
    // The cheater's provider runs an honest node too.
    fabric.host("host-1", &shady);
    let cheater = fabric.cheater(&shady);
    let ids: Vec<String> = ["host-0", "host-1", "cheater"].iter().map(|n| fabric.node_id(n)).collect();
    fabric.wait_routing(3, 5);

    // Enough callers at once that every host serves (each takes 4, and the router packs
    // requests onto the first until it is busy).
    fabric.chats(48, 8, 8);
    assert!(fabric.served(cheater) > 0, "the cheater served nothing: the test proves nothing");
    let mut caught = fabric.audits(&ids[2]);
    wait_for("the cheater caught, evicted and refunded", Duration::from_secs(240), || {
        caught = fabric.audits(&ids[2]);
        caught.trust.evicted && caught.refunded > 0
    });
    println!("cheater: {:?}, refunded {} micros", caught.trust, caught.refunded);
    assert!(caught.trust.failed >= 1 && caught.trust.score == 0, "{:?}", caught.trust);
    let failed = caught.audits.iter().find(|a| a.verdict == "failed").expect("a failed audit is listed");
    assert_eq!(failed.replays.len(), 2, "a conviction is confirmed by a second replay: {failed:?}");
    assert_eq!(failed.replays[0], failed.replays[1]);
    assert_ne!(failed.commitment, failed.replays[0]);
    assert_ne!(failed.auditors[0], failed.auditors[1], "two different auditors confirmed it");
    // The first replay checked the cheater's token ids; the confirmation generated.
    assert!(fabric.replays("checked") >= 1 && fabric.replays("generated") >= 1);

    // The honest hosts were audited and never accused; the cheater's provider's other
    // node is audited more from now on.
    fabric.wait_audits(&ids, 48, &["error", "no_auditor"], Duration::from_secs(180), Duration::from_secs(900));
    for (i, id) in ids[..2].iter().enumerate() {
        let audits = fabric.audits(id);
        println!("host-{i}: {:?}", audits.trust);
        assert!(audits.trust.passed > 0, "host-{i} was never audited: {:?}", audits.trust);
        assert_eq!((audits.trust.failed, audits.trust.inconclusive), (0, 0), "host-{i}: {:?}", audits.trust);
        assert!(!audits.trust.evicted);
        assert_eq!(audits.trust.flagged, i == 1, "only the cheater's provider's nodes are flagged");
    }

    // The refunds went through the ledger, to the caller, and the books balance.
    let rt = runtime();
    // (Receipts of the cheater that reach the registry late are refunded by the settlement
    // job: the two figures agree once it has run.)
    let refunds = || -> (i64, i64) {
        let history = rt.block_on(fabric.admin().credit_history("acme", 1000)).unwrap();
        (history.iter().filter(|e| e.code == "refund").map(|e| e.amount).sum(), fabric.audits(&ids[2]).refunded)
    };
    wait_for("the refunds in acme's history equal what the node forfeited", Duration::from_secs(30), || {
        let (in_history, forfeited) = refunds();
        in_history == forfeited && forfeited >= caught.refunded
    });
    let check = rt.block_on(fabric.admin().ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
    let shown = wasmesh_tests::cli_json(&fabric.url(), &fabric.admin, &["nodes", "audits", &ids[2]]).unwrap();
    assert_eq!(shown["trust"]["evicted"], true, "{shown}");

    // Evicted: the router sends the cheater nothing more.
    fabric.wait_routing(2, 5);
    let before = fabric.served(cheater);
    fabric.chats(12, 4, 4);
    assert_eq!(fabric.served(cheater), before, "an evicted node got traffic");
}

#[test]
fn a_thousand_audited_honest_requests_accuse_nobody() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("trust-honest", false);
    let prov = fabric.key("prov");
    fabric.host("host-0", &prov);
    fabric.host("host-1", &prov);
    let ids: Vec<String> = ["host-0", "host-1"].iter().map(|n| fabric.node_id(n)).collect();
    fabric.wait_routing(2, 4);
    let n = 1000;
    fabric.chats(n, 8, 4);
    let total = || -> (u64, u64, u64) {
        ids.iter()
            .map(|id| fabric.audits(id).trust)
            .fold((0, 0, 0), |(p, f, i), t| (p + t.passed, f + t.failed, i + t.inconclusive))
    };
    fabric.wait_audits(&ids, n as u64, &[], Duration::from_secs(180), Duration::from_secs(1200));
    let (passed, failed, inconclusive) = total();
    println!(
        "{n} requests audited: passed {passed}, failed {failed}, inconclusive {inconclusive}; router: dropped {}, errors {}",
        fabric.router_metric("dropped"),
        fabric.router_metric("error")
    );
    assert_eq!((passed, failed, inconclusive), (n as u64, 0, 0));
    // Every replay checked the host's token ids (teacher-forced) and agreed with it at
    // once: the check commits exactly as generating does, under concurrency.
    let (checked, generated) = (fabric.replays("checked"), fabric.replays("generated"));
    println!("replays: {checked} checked, {generated} generated");
    assert_eq!((checked, generated), (n as u64, 0));
}

/// Another engine build: llama.cpp's fast CPU kernels, whose rounding differs from the
/// auditors' reference kernels (as another CPU's would), so the engine's build id differs.
const FAST: (&str, &str) = ("WASMESH_LLAMA_FAST_KERNELS", "1");

#[test]
fn nodes_of_another_build_are_scored_and_a_cheater_among_them_is_caught() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("trust-scored", false);
    let (prov, shady) = (fabric.key("prov"), fabric.key("shady"));
    // No auditor shares these nodes' build: every audit scores their token ids.
    fabric.host_with_env("host-0", &prov, &[FAST]);
    let cheater = fabric.cheater_with_env(&shady, &[FAST]);
    let ids: Vec<String> = ["host-0", "cheater"].iter().map(|n| fabric.node_id(n)).collect();
    fabric.wait_routing(2, 4);

    fabric.chats(48, 8, 16);
    assert!(fabric.served(cheater) > 0, "the cheater served nothing: the test proves nothing");
    let mut caught = fabric.audits(&ids[1]);
    wait_for("the cheater caught by scored audits and evicted", Duration::from_secs(240), || {
        caught = fabric.audits(&ids[1]);
        caught.trust.evicted
    });
    println!("cheater: {:?}, refunded {} micros", caught.trust, caught.refunded);
    let failed = caught.audits.iter().find(|a| a.verdict == "failed").expect("a failed audit is listed");
    assert_eq!(failed.replays.len(), 2, "a conviction is confirmed by a second replay: {failed:?}");
    assert_eq!(failed.replays[0], failed.replays[1]);
    assert!(failed.replays[0].ends_with("/beyond-tolerance"), "{failed:?}");
    assert_ne!(failed.auditors[0], failed.auditors[1], "two different auditors confirmed it");

    let outcomes = ["error", "no_auditor", "dropped", "skipped"];
    fabric.wait_audits(&ids, 48, &outcomes, Duration::from_secs(180), Duration::from_secs(900));
    for outcome in outcomes {
        assert_eq!(fabric.router_metric(outcome), 0, "audits that ended {outcome}");
    }
    let honest = fabric.audits(&ids[0]);
    println!("host-0 (another build): {:?}", honest.trust);
    assert!(honest.trust.passed > 0, "host-0 was never audited: {:?}", honest.trust);
    assert_eq!((honest.trust.failed, honest.trust.inconclusive), (0, 0), "{:?}", honest.trust);
    // Nothing was checked exactly or generated: no auditor shares the nodes' build.
    let (scored, checked, generated) =
        (fabric.replays("scored"), fabric.replays("checked"), fabric.replays("generated"));
    println!("replays: {scored} scored, {checked} checked, {generated} generated");
    assert!(
        scored >= 48 && checked == 0 && generated == 0,
        "{scored} scored, {checked} checked, {generated} generated"
    );
    let check = runtime().block_on(fabric.admin().ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
}
