//! Metering end to end, across real processes: a registry, two routers and two hosts
//! (the real llama.cpp), a calling account with credits and a providing account. Every
//! request is held against the caller's credits, receipted by its host, charged by
//! the registry; the books must balance to the micro, on SQLite and on PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasmesh_api::wire::{Price, Scope};
use wasmesh_client::{Client, NodeIdentity};
use wasmesh_tests::{
    HttpResponse, Payload, Process, components_dir, model_path, prerequisites, request, runtime, scratch, skip_or_fail,
    wait_for,
};

struct Fabric {
    dir: PathBuf,
    registry: Process,
    admin: String,
    /// The calling account's invoke key.
    caller: String,
    /// The providing account's provider key.
    provider: String,
    routers: Vec<(Process, SocketAddr)>,
    hosts: Vec<Process>,
    registry_args: Vec<String>,
    router_args: Vec<String>,
    _pg: Option<wasmesh_tests::Postgres>,
}

impl Fabric {
    fn start(tag: &str, postgres: bool) -> Option<Self> {
        Self::start_with(tag, postgres, &[])
    }

    /// With `router_args` on both routers.
    fn start_with(tag: &str, postgres: bool, router_args: &[&str]) -> Option<Self> {
        let dir = scratch(tag);
        let mut extra = vec!["--fee-percent".to_string(), "10".into(), "--settle-secs".into(), "1".into()];
        let pg = if postgres {
            match wasmesh_tests::Postgres::start(&dir.join("pg")) {
                Ok(pg) => {
                    extra.extend(["--database".to_string(), pg.url.clone()]);
                    Some(pg)
                }
                Err(e) => {
                    skip_or_fail(&format!("cannot start PostgreSQL: {e}"));
                    return None;
                }
            }
        } else {
            None
        };
        let registry_args = extra.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (registry, admin) = wasmesh_tests::start_registry(&dir, &extra);
        let url = format!("http://{}", registry.addr);
        let rt = runtime();
        let client = Client::new(&url, Some(admin.clone())).unwrap();
        for account in ["acme", "prov"] {
            rt.block_on(client.create_account(account)).unwrap();
        }
        let key = |account: &str, scope: Scope| wasmesh_tests::account_key(&url, &admin, account, &[scope], None);
        let (caller, provider, deployer) =
            (key("acme", Scope::Invoke), key("prov", Scope::Provider), key("default", Scope::Deploy));
        let deployer = Client::new(&url, Some(deployer)).unwrap();
        for (name, manifest) in [
            (
                "demo",
                "[app]\nname = \"demo\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"smollm2\"]\n\n[component.embeddings]\nsource = \"embeddings.wasm\"\nmodels = [\"smollm2\"]\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n[[route]]\npath = \"/embed\"\ncomponent = \"embeddings\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
            ),
            (
                "openai",
                "[app]\nname = \"openai\"\n\n[component.openai]\nsource = \"openai.wasm\"\nmodels = [\"smollm2\"]\n\n[[route]]\npath = \"/v1/...\"\ncomponent = \"openai\"\n",
            ),
        ] {
            let folder = dir.join(name);
            std::fs::create_dir_all(&folder).unwrap();
            for c in ["chat", "embeddings", "hello", "openai"] {
                std::fs::copy(components_dir().join(format!("{c}.wasm")), folder.join(format!("{c}.wasm"))).unwrap();
            }
            std::fs::write(folder.join("wasmesh.toml"), manifest).unwrap();
            rt.block_on(deployer.deploy(&folder.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();
        }
        // Prices: 1,000 credits per million tokens in (a milli-credit per token), 3,000 out,
        // and a micro-credit... per call of a component that uses no model.
        for price in [
            Price {
                model: "smollm2".into(),
                input_per_mtok: 1_000_000_000,
                output_per_mtok: 3_000_000_000,
                per_call: 0,
            },
            Price { model: "-".into(), input_per_mtok: 0, output_per_mtok: 0, per_call: 100 },
        ] {
            rt.block_on(client.set_price(&price)).unwrap();
        }
        let mut fabric = Self {
            dir,
            registry,
            admin,
            caller,
            provider,
            routers: Vec::new(),
            hosts: Vec::new(),
            registry_args,
            router_args: router_args.iter().map(|a| a.to_string()).collect(),
            _pg: pg,
        };
        for i in 0..2 {
            let quic = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).unwrap();
            let name = format!("router-{i}");
            let http = wasmesh_tests::free_addr();
            let process =
                wasmesh_tests::spawn_router_at(&fabric.dir, &name, &url, &fabric.admin, http, quic, router_args);
            fabric.routers.push((process, quic));
        }
        for (router, _) in &mut fabric.routers {
            router.wait_ready(Duration::from_secs(60));
        }
        for i in 0..2 {
            fabric.start_host(i);
        }
        for (router, _) in &fabric.routers {
            wait_for("2 ready hosts on the router", Duration::from_secs(60), || {
                request(router.addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == 2)
            });
        }
        Some(fabric)
    }

    fn url(&self) -> String {
        format!("http://{}", self.registry.addr)
    }

    fn admin(&self) -> Client {
        Client::new(&self.url(), Some(self.admin.clone())).unwrap()
    }

    fn start_host(&mut self, i: usize) {
        let model = format!("smollm2={}", model_path().display());
        let quics: Vec<SocketAddr> = self.routers.iter().map(|(_, q)| *q).collect();
        let url = self.url();
        let extra = ["--model", &model, "--slots", "4", "--heartbeat-secs", "1"];
        let mut host = wasmesh_tests::spawn_host(&self.dir, &format!("host-{i}"), &url, &self.provider, &quics, &extra);
        host.wait_ready(Duration::from_secs(60));
        self.hosts.push(host);
    }

    fn call(&self, router: usize, key: &str, method: &str, path: &str, body: Option<&[u8]>) -> HttpResponse {
        wasmesh_tests::call_with_key(self.routers[router].0.addr, key, method, path, body)
    }

    /// Kills router `i` (`kill -9`).
    fn kill_router(&mut self, i: usize) {
        self.routers[i].0.kill9();
    }

    /// Starts router `i` again on its addresses and data (its queue of receipts).
    fn restart_router(&mut self, i: usize) {
        let (http, quic) = (self.routers[i].0.addr, self.routers[i].1);
        let args: Vec<&str> = self.router_args.iter().map(String::as_str).collect();
        let mut process = wasmesh_tests::spawn_router_at(
            &self.dir,
            &format!("router-{i}"),
            &self.url(),
            &self.admin,
            http,
            quic,
            &args,
        );
        process.wait_ready(Duration::from_secs(60));
        self.routers[i].0 = process;
    }

    /// Kills the registry (`kill -9`) and starts it again on its address and data.
    fn restart_registry(&mut self, down_while: impl FnOnce(&Self)) {
        self.registry.kill9();
        down_while(self);
        let addr = self.registry.addr;
        let extra: Vec<&str> = self.registry_args.iter().map(String::as_str).collect();
        let args = wasmesh_tests::registry_args(addr, &self.dir, &extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.registry = Process::spawn(&args, addr, self.dir.join("registry.log"));
        self.registry.wait_ready(Duration::from_secs(60));
    }

    fn served_by_hosts(&self) -> u64 {
        self.hosts
            .iter()
            .map(|h| request(h.addr, "GET", "/health", &[], None).unwrap().json()["served"].as_u64().unwrap())
            .sum()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.hosts.clear();
        self.routers.clear();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

const CHAT: &[u8] = br#"{"prompt": "Name a colour.", "max_tokens": 3, "temperature": 0, "chat": true}"#;
const STREAM: &[u8] =
    br#"{"prompt": "Name a fruit.", "max_tokens": 3, "temperature": 0, "chat": true, "stream": true}"#;
const EMBED: &[u8] = br#"{"input": "a short text to embed", "model": "smollm2"}"#;
const OPENAI: &[u8] =
    br#"{"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0}"#;

fn mixed(fabric: &Fabric, n: usize) -> usize {
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let ok = &ok;
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    let (method, path, body) = match i % 4 {
                        0 => ("POST", "/fn/demo/chat", CHAT),
                        1 => ("POST", "/fn/demo/chat", STREAM),
                        2 => ("POST", "/fn/demo/embed", EMBED),
                        _ => ("POST", "/v1/chat/completions", OPENAI),
                    };
                    let r = fabric.call(i % 2, &fabric.caller, method, path, Some(body));
                    assert_eq!(r.status, 200, "{path}: {}", r.text());
                    assert!(r.header(wasmesh_api::REQUEST_ID_HEADER).is_some(), "{path} names its request id");
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    ok.into_inner()
}

fn books_balance(postgres: bool, tag: &str) {
    if !prerequisites() {
        return;
    }
    let Some(fabric) = Fabric::start(tag, postgres) else { return };
    let rt = runtime();
    let admin = fabric.admin();
    rt.block_on(admin.grant("acme", 50_000_000, "test", None)).unwrap();
    wait_for("the routers to learn the apps and prices", Duration::from_secs(30), || {
        fabric.call(0, &fabric.caller, "POST", "/fn/demo/chat", Some(CHAT)).status == 200
            && fabric.call(1, &fabric.caller, "POST", "/v1/chat/completions", Some(OPENAI)).status == 200
    });
    const N: usize = 500;
    assert_eq!(mixed(&fabric, N), N);
    let caller = Client::new(&fabric.url(), Some(fabric.caller.clone())).unwrap();
    // Every receipt reaches the registry, and every lease is closed once idle.
    wait_for("every receipt to be charged and every lease closed", Duration::from_secs(60), || {
        let requests: u64 = rt.block_on(caller.usage("acme", "app")).unwrap().iter().map(|r| r.requests).sum();
        requests >= N as u64 + 2 && rt.block_on(caller.balance("acme")).unwrap().reserved == 0
    });
    let usage = rt.block_on(caller.usage("acme", "model")).unwrap();
    let receipts_cost: u64 = usage.iter().map(|r| r.cost).sum();
    let balance = rt.block_on(caller.balance("acme")).unwrap();
    assert!(receipts_cost > 0, "{usage:?}");
    assert_eq!(balance.debits_posted as u64, receipts_cost, "the caller paid exactly its receipts: {usage:?}");
    assert_eq!(balance.available, 50_000_000 - balance.debits_posted);
    // The provider's earnings plus the platform's fee are what the caller paid.
    let provider = Client::new(&fabric.url(), Some(fabric.provider.clone())).unwrap();
    let earned = rt.block_on(provider.balance("prov")).unwrap();
    let check = rt.block_on(admin.ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
    assert_eq!(
        (earned.pending_earnings + earned.credits_posted + check.fees) as u64,
        receipts_cost,
        "{earned:?} {check:?}"
    );
    let requests: u64 = usage.iter().map(|r| r.requests).sum();
    let fees = check.fees as u64;
    assert!(
        fees <= receipts_cost / 10 && fees + requests >= receipts_cost / 10,
        "a tenth, rounded down per request: {check:?}"
    );
    // Earnings settle after the window (1 s here).
    wait_for("the provider's earnings to settle", Duration::from_secs(30), || {
        let b = rt.block_on(provider.balance("prov")).unwrap();
        b.pending_earnings == 0 && b.available > 0
    });
    // One request's record, for its own account only.
    let r = fabric.call(0, &fabric.caller, "POST", "/fn/demo/chat", Some(CHAT));
    let id = r.header(wasmesh_api::REQUEST_ID_HEADER).unwrap().to_string();
    wait_for("the request's receipt", Duration::from_secs(30), || rt.block_on(caller.generation(&id)).is_ok());
    let g = rt.block_on(caller.generation(&id)).unwrap();
    assert_eq!((g.app.as_str(), g.output_tokens, g.models.as_slice()), ("demo", 3, &["smollm2".to_string()][..]));
    assert_eq!(g.cost, g.input_tokens * 1_000 + 3 * 3_000, "{g:?}");
    assert_eq!(g.finish_reason.as_deref(), Some("length"), "3 tokens of max_tokens 3: {g:?}");
    // Its receipt commits to what it asked and generated, on which engine build and CPU
    // class: the same request again (through the other router, on whichever node) commits
    // alike; another prompt does not.
    let commitment = g.commitment.clone().expect("a generation commits");
    assert!(wasmesh_api::wire::is_blake3_hex(&commitment), "{g:?}");
    assert!(g.engine.starts_with("llama.cpp") && g.cpu_class.starts_with(std::env::consts::ARCH), "{g:?}");
    let again = |router: usize, body: &[u8]| {
        let r = fabric.call(router, &fabric.caller, "POST", "/fn/demo/chat", Some(body));
        let id = r.header(wasmesh_api::REQUEST_ID_HEADER).unwrap().to_string();
        wait_for("the request's receipt", Duration::from_secs(30), || rt.block_on(caller.generation(&id)).is_ok());
        rt.block_on(caller.generation(&id)).unwrap().commitment
    };
    assert_eq!(again(1, CHAT), Some(commitment.clone()), "the same request commits alike");
    let other = br#"{"prompt": "Name a fruit.", "max_tokens": 3, "temperature": 0, "chat": true}"#;
    assert_ne!(again(0, other), Some(commitment), "another request commits otherwise");
    assert!(rt.block_on(provider.generation(&id)).is_err(), "another account does not see it");

    // The OpenAI API answers with the cost in `usage`, and a last usage chunk when asked.
    let r = fabric.call(1, &fabric.caller, "POST", "/v1/chat/completions", Some(OPENAI));
    let usage = &r.json()["usage"];
    let id = r.header(wasmesh_api::REQUEST_ID_HEADER).unwrap().to_string();
    wait_for("the request's receipt", Duration::from_secs(30), || rt.block_on(caller.generation(&id)).is_ok());
    assert_eq!(usage["cost_micros"].as_u64(), Some(rt.block_on(caller.generation(&id)).unwrap().cost), "{usage}");
    let streamed = br#"{"model": "smollm2", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "stream": true, "stream_options": {"include_usage": true}}"#;
    let text = fabric.call(0, &fabric.caller, "POST", "/v1/chat/completions", Some(streamed)).text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| e.starts_with("data: ")).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]["data: ".len()..]).unwrap();
    assert_eq!(last["choices"], serde_json::json!([]), "{text}");
    assert_eq!(last["usage"]["completion_tokens"], 3, "{text}");
    assert!(last["usage"]["cost_micros"].as_u64().unwrap() > 0, "{text}");
}

#[test]
fn every_credit_is_accounted_on_sqlite() {
    books_balance(false, "metering-sqlite");
}

#[test]
fn every_credit_is_accounted_on_postgres() {
    books_balance(true, "metering-pg");
}

/// Too little credit: 402 with what is needed, and no host sees the request. Two
/// routers racing for an account's last credits never overdraw it.
#[test]
fn too_little_credit_is_402_and_racing_routers_never_overdraw() {
    if !prerequisites() {
        return;
    }
    let Some(fabric) = Fabric::start("metering-402", false) else { return };
    let rt = runtime();
    let admin = fabric.admin();
    // The most a chat of 3 tokens with this body may cost: (body + 64) in, 3 out.
    let most = (CHAT.len() as i64 + 64) * 1_000 + 3 * 3_000;
    rt.block_on(admin.grant("acme", (most - 1) as u64, "too little", None)).unwrap();
    wait_for("the routers to learn the prices", Duration::from_secs(30), || {
        fabric.call(0, &fabric.caller, "GET", "/fn/demo/hello", None).status == 200
    });
    let served = fabric.served_by_hosts();
    let r = fabric.call(0, &fabric.caller, "POST", "/fn/demo/chat", Some(CHAT));
    assert_eq!(r.status, 402, "{}", r.text());
    assert!(r.text().contains("wasmesh credits grant acme"), "{}", r.text());
    assert_eq!(fabric.served_by_hosts(), served, "no host saw the refused request");

    // Enough for exactly 5 chats at their most; 20 at once through both routers.
    rt.block_on(admin.grant("acme", (5 * most + 1) as u64, "five more", None)).unwrap();
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..20 {
            let ok = &ok;
            let fabric = &fabric;
            s.spawn(move || {
                let r = fabric.call(i % 2, &fabric.caller, "POST", "/fn/demo/chat", Some(CHAT));
                match r.status {
                    200 => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    402 => {}
                    other => panic!("{other}: {}", r.text()),
                }
            });
        }
    });
    let ok = ok.into_inner();
    assert!((1..=6).contains(&ok), "at most what the credits cover ran: {ok}");
    let caller = Client::new(&fabric.url(), Some(fabric.caller.clone())).unwrap();
    wait_for("the leases to close", Duration::from_secs(60), || {
        rt.block_on(caller.balance("acme")).unwrap().reserved == 0
    });
    let b = rt.block_on(caller.balance("acme")).unwrap();
    assert!(b.available >= 0 && b.debits_posted <= b.credits_posted, "{b:?}");
    let check = rt.block_on(admin.ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
}

/// Receipts not signed by the serving node's key are refused; a receipt sent twice is
/// charged once.
#[test]
fn forged_and_replayed_receipts_charge_nothing() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("metering-forged");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
    let url = format!("http://{}", registry.addr);
    let rt = runtime();
    let client = Client::new(&url, Some(admin.clone())).unwrap();
    rt.block_on(client.create_account("acme")).unwrap();
    rt.block_on(client.grant("acme", 1_000_000, "", None)).unwrap();
    let provider = rt.block_on(client.create_key("p", &[Scope::Provider])).unwrap().key;
    let node = NodeIdentity::generate();
    let cert = rt.block_on(Client::new(&url, Some(provider)).unwrap().register_node(&node, "n1")).unwrap();
    let mac_key: [u8; 32] = wasmesh_api::wire::from_hex(&cert.receipt_key).unwrap().try_into().unwrap();
    let lease = rt
        .block_on(client.lease(&wasmesh_api::wire::LeaseRequest {
            account: "acme".into(),
            amount: 1_000,
            min_amount: 1_000,
            ttl_s: 60,
        }))
        .unwrap();
    use wasmesh_api::wire::{ReceiptBatch, ReceiptOutcome};
    let text_of = |id: &str| {
        let r = wasmesh_api::wire::Receipt {
            request_id: id.into(),
            node: node.node_id().into(),
            app: "demo".into(),
            output_tokens: 3,
            status: 200,
            ..Default::default()
        };
        serde_json::to_string(&r).unwrap()
    };
    let metered = |signed: wasmesh_api::wire::SignedReceipt| wasmesh_api::wire::MeteredReceipt {
        signed,
        account: "acme".into(),
        key_id: "k".into(),
        lease: Some(lease.id.clone()),
        cost: 100,
        reserved: 100,
        router_ms: 1,
    };
    // Receipts with a MAC under the node's receipt key (what hosts send): one under
    // another key, and one whose text changed after its MAC was made, are refused.
    let with_mac = |key: &[u8; 32], id: &str, claimed: Option<&str>| {
        let text = text_of(id);
        let mac = wasmesh_api::wire::receipt_mac(key, &text);
        let receipt = claimed.map(|c| text.replace("\"output_tokens\":3", c)).unwrap_or(text);
        metered(wasmesh_api::wire::SignedReceipt { receipt, signature: String::new(), mac })
    };
    let outcomes = rt
        .block_on(client.post_receipts(&ReceiptBatch {
            receipts: vec![
                with_mac(&[7; 32], "m1", None),
                with_mac(&mac_key, "m2", Some("\"output_tokens\":3000")),
                with_mac(&mac_key, "m3", None),
            ],
        }))
        .unwrap();
    assert!(
        matches!((&outcomes[0], &outcomes[1]), (ReceiptOutcome::Refused { reason: a }, ReceiptOutcome::Refused { reason: b })
            if a.contains("not signed") && b.contains("not signed")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], ReceiptOutcome::Posted);
    let receipt = |signer: &NodeIdentity, id: &str| {
        let text = text_of(id);
        metered(wasmesh_api::wire::SignedReceipt {
            signature: signer.sign_hex(text.as_bytes()),
            receipt: text,
            mac: String::new(),
        })
    };
    let forger = NodeIdentity::generate();
    let outcomes = rt
        .block_on(client.post_receipts(&ReceiptBatch { receipts: vec![receipt(&forger, "r1"), receipt(&node, "r2")] }))
        .unwrap();
    assert!(
        matches!(&outcomes[0], ReceiptOutcome::Refused { reason } if reason.contains("not signed")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], ReceiptOutcome::Posted);
    let again = rt.block_on(client.post_receipts(&ReceiptBatch { receipts: vec![receipt(&node, "r2")] })).unwrap();
    assert_eq!(again, [ReceiptOutcome::Duplicate]);
    let b = rt.block_on(client.balance("acme")).unwrap();
    assert_eq!((b.debits_posted, b.reserved), (200, 800), "two charges of 100, the rest of the lease still held");
    rt.block_on(client.close_lease(&lease.id)).unwrap();
    let b = rt.block_on(client.balance("acme")).unwrap();
    assert_eq!((b.debits_posted, b.reserved, b.available), (200, 0, 999_800));
    let check = rt.block_on(client.ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
    assert_eq!((check.fees, check.escrow), (20, 180), "a tenth to the fee, the rest held for the provider");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` of a router in the middle of streamed requests, and of the registry while
/// receipts wait in a router's queue: after both restart, every receipt is charged
/// once, the killed router's holds are released by expiry, and the books balance.
#[test]
fn killed_routers_and_registries_lose_no_credit_and_charge_nothing_twice() {
    if !prerequisites() {
        return;
    }
    let Some(mut fabric) = Fabric::start_with("metering-crash", false, &["--lease-secs", "4"]) else { return };
    let rt = runtime();
    rt.block_on(fabric.admin().grant("acme", 50_000_000, "test", None)).unwrap();
    wait_for("both routers to serve", Duration::from_secs(30), || {
        (0..2).all(|i| fabric.call(i, &fabric.caller, "POST", "/fn/demo/chat", Some(CHAT)).status == 200)
    });
    // 1. Streams through router 0; it dies while they run.
    let long = br#"{"prompt": "Tell a long story.", "max_tokens": 64, "temperature": 0, "chat": true, "stream": true}"#;
    let before = fabric.served_by_hosts();
    std::thread::scope(|s| {
        let fabric_ref = &fabric;
        let streams: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let auth = format!("Bearer {}", fabric_ref.caller);
                    // Cut short by the kill: an error or a truncated body, never a hang.
                    let _ = request(
                        fabric_ref.routers[0].0.addr,
                        "POST",
                        "/fn/demo/chat",
                        &[("Authorization", &auth), ("Content-Type", "application/json")],
                        Some(Payload::Sized(long)),
                    );
                })
            })
            .collect();
        wait_for("the streams to start", Duration::from_secs(30), || fabric_ref.served_by_hosts() > before);
        std::thread::sleep(Duration::from_millis(300));
        // By pid: the streams share the fabric, so it cannot be borrowed mutably here.
        let pid = fabric_ref.routers[0].0.pid();
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
        for t in streams {
            t.join().unwrap();
        }
    });
    fabric.kill_router(0);
    fabric.restart_router(0);

    // 2. The registry dies while router 1 serves on the lease it holds: its receipts
    //    wait in its queue, and post once the registry is back.
    assert_eq!(fabric.call(1, &fabric.caller, "GET", "/fn/demo/hello", None).status, 200);
    let mut ids = Vec::new();
    fabric.restart_registry(|f| {
        for _ in 0..20 {
            let r = f.call(1, &f.caller, "GET", "/fn/demo/hello", None);
            assert_eq!(r.status, 200, "a held lease serves while the registry is down: {}", r.text());
            ids.push(r.header(wasmesh_api::REQUEST_ID_HEADER).unwrap().to_string());
        }
        // The queue's segment closes within 250 ms, and stays while the registry is away.
        wait_for("receipts to wait in the router's queue", Duration::from_secs(10), || {
            let health = request(f.routers[1].0.addr, "GET", "/health", &[], None).unwrap().json();
            health["receipt_segments_waiting"].as_u64().unwrap() >= 1
        });
    });
    let caller = Client::new(&fabric.url(), Some(fabric.caller.clone())).unwrap();
    wait_for("queued receipts to post and every hold to be released", Duration::from_secs(90), || {
        ids.iter().all(|id| rt.block_on(caller.generation(id)).is_ok())
            && rt.block_on(caller.balance("acme")).unwrap().reserved == 0
    });
    for id in &ids {
        assert_eq!(rt.block_on(caller.generation(id)).unwrap().cost, 100, "a hello costs its per-call price once");
    }
    let usage = rt.block_on(caller.usage("acme", "app")).unwrap();
    let receipts_cost: u64 = usage.iter().map(|r| r.cost).sum();
    let balance = rt.block_on(caller.balance("acme")).unwrap();
    assert_eq!(balance.debits_posted as u64, receipts_cost, "{usage:?}");
    assert_eq!(balance.available, 50_000_000 - balance.debits_posted);
    let check = rt.block_on(fabric.admin().ledger_check()).unwrap();
    assert!(check.ok, "{check:?}");
}
