//! Tenants, end to end with real processes: two accounts (acme and bravo) on one
//! registry (SQLite, then PostgreSQL), a router with a `router` key, a host in acme's
//! private network and a public host of bravo's. Every documented registry operation
//! (from `openapi.json`, with the scopes and owner each declares) and the router's
//! endpoints are tried with every key of bravo's; nothing of acme's may be read,
//! changed or served to bravo, and acme's apps answer as before. Then revocation,
//! router keys, and an upgrade from the schema before accounts.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wasmesh_api::wire::{self, Heartbeat, Scope};
use wasmesh_client::{Client, NodeIdentity};
use wasmesh_tests::{
    Payload, Process, components_dir, free_addr, lora_path, model_path, prerequisites, request, runtime, scratch,
    skip_or_fail, spawn_host, spawn_router, start_registry, wait_for, wasmesh_bin,
};

/// One account's keys.
struct Tenant {
    deploy: String,
    provider: String,
    invoke: String,
}

fn client(url: &str, key: &str) -> Client {
    Client::new(url, Some(key.to_string())).unwrap()
}

fn make_key(url: &str, admin: &str, account: &str, scopes: &[Scope], network: Option<&str>) -> String {
    wasmesh_tests::account_key(url, admin, account, scopes, network)
}

fn tenant(url: &str, admin: &str, account: &'static str) -> Tenant {
    runtime().block_on(client(url, admin).create_account(account)).unwrap();
    Tenant {
        deploy: make_key(url, admin, account, &[Scope::Deploy], None),
        provider: make_key(url, admin, account, &[Scope::Provider], None),
        invoke: make_key(url, admin, account, &[Scope::Invoke], None),
    }
}

fn cli(url: &str, key: &str, args: &[&str]) -> Result<serde_json::Value, (i32, String)> {
    wasmesh_tests::cli_json(url, key, args)
}

/// An app folder with `components` (name, wasm file) and `text` as its manifest.
fn app(dir: &Path, name: &str, components: &[(&str, &str)], text: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for (file, wasm) in components {
        std::fs::copy(components_dir().join(wasm), folder.join(file)).unwrap();
    }
    let path = folder.join("wasmesh.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One HTTP call with an optional key and JSON body: status and body text.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    let r = request(addr, method, path, &headers, bytes.as_deref().map(Payload::Sized))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.text())
}

/// A node-signed POST made with `identity` claiming to be node `node`.
fn signed(
    addr: SocketAddr,
    key: &str,
    identity: &NodeIdentity,
    node: &str,
    what: &str,
    body: &serde_json::Value,
) -> (u16, String) {
    let bytes = serde_json::to_vec(body).unwrap();
    let path = format!("/v1/nodes/{node}/{what}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let signature = identity.sign_hex(&wire::request_message("POST", &path, now, &bytes));
    let auth = format!("Bearer {key}");
    let now = now.to_string();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
        (wire::node_auth::NODE, node),
        (wire::node_auth::TIMESTAMP, now.as_str()),
        (wire::node_auth::SIGNATURE, signature.as_str()),
    ];
    let r = request(addr, "POST", &path, &headers, Some(Payload::Sized(&bytes))).unwrap();
    (r.status, r.text())
}

/// The documented operations: (method, path, scopes, owner).
fn documented() -> Vec<(String, String, Vec<String>, String)> {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../registry/server/openapi.json")).expect("openapi.json parses");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let scopes = op["x-wasmesh-scopes"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} declares no x-wasmesh-scopes"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            let owner = op["x-wasmesh-owner"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} declares no x-wasmesh-owner"))
                .to_string();
            ops.push((method.to_uppercase(), path.clone(), scopes, owner));
        }
    }
    ops
}

/// What a key with `scopes` gets for an operation documented with `documented` scopes:
/// whether the scope check lets it through.
fn scope_passes(documented: &[String], scopes: &[Scope]) -> bool {
    documented.is_empty()
        || documented.iter().any(|d| d == "any")
        || scopes.iter().any(|s| s == &Scope::Admin || documented.iter().any(|d| d == s.as_str()))
}

fn isolation_matrix(postgres: bool, tag: &str) {
    if !prerequisites() {
        return;
    }
    let dir = scratch(tag);
    let mut extra = Vec::new();
    let _pg = if postgres {
        match wasmesh_tests::Postgres::start(&dir.join("pg")) {
            Ok(pg) => {
                extra = vec!["--database".to_string(), pg.url.clone()];
                Some(pg)
            }
            Err(e) => {
                skip_or_fail(&format!("cannot start PostgreSQL: {e}"));
                return;
            }
        }
    } else {
        None
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let (registry, admin) = start_registry(&dir, &extra);
    let url = format!("http://{}", registry.addr);
    let reg = registry.addr;

    let a = tenant(&url, &admin, "acme");
    let b = tenant(&url, &admin, "bravo");
    let a_net_provider = make_key(&url, &admin, "acme", &[Scope::Provider], Some("acme-net"));
    let router_key = make_key(&url, &admin, "default", &[Scope::Router], None);

    // Acme: a private model and adapter, a public app and one in its private network.
    cli(&url, &a.deploy, &["models", "push", model_path().to_str().unwrap(), "--name", "a-model"]).unwrap();
    cli(&url, &a.deploy, &["loras", "push", lora_path(1).to_str().unwrap(), "--base", "a-model", "--name", "a-lora"])
        .unwrap();
    let a_pub = app(
        &dir,
        "a-pub",
        &[("hello.wasm", "hello.wasm")],
        "[app]\nname = \"a-pub\"\n\n[component.hello]\nsource = \"hello.wasm\"\nenv = { SECRET = \"a-pub-env\" }\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    );
    let a_priv = app(
        &dir,
        "a-priv",
        &[("chat.wasm", "chat.wasm"), ("hello.wasm", "hello.wasm")],
        "[app]\nname = \"a-priv\"\nnetwork = \"acme-net\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"a-model\"]\nenv = { SECRET = \"a-priv-env\" }\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    );
    cli(&url, &a.deploy, &["deploy", "-f", a_pub.to_str().unwrap()]).unwrap();
    cli(&url, &a.deploy, &["deploy", "-f", a_priv.to_str().unwrap()]).unwrap();
    let chat_hash = wasmesh_tests::blake3_of(&components_dir().join("chat.wasm"));
    let hello_hash = wasmesh_tests::blake3_of(&components_dir().join("hello.wasm"));
    // An upload acme started and has not finished.
    let (status, body) = call(
        reg,
        "POST",
        "/v1/uploads",
        Some(&a.deploy),
        Some(
            &serde_json::json!({ "blake3": blake3::hash(b"acme half-upload").to_hex().to_string(), "size": 16, "kind": "component" }),
        ),
    );
    assert_eq!(status, 201, "{body}");
    let a_upload = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].as_str().unwrap().to_string();
    let a_key_id = runtime().block_on(client(&url, &a.invoke).whoami()).unwrap().id;
    runtime().block_on(client(&url, &a.deploy).add_member("acme", "ana@acme.example", "acme passphrase one")).unwrap();
    // Bravo's member signs in as the dashboard does: a session key of bravo's.
    runtime()
        .block_on(client(&url, &b.deploy).add_member("bravo", "bo@bravo.example", "bravo passphrase one"))
        .unwrap();
    let (status, body) = call(
        reg,
        "POST",
        "/v1/sessions",
        None,
        Some(&serde_json::json!({ "email": "bo@bravo.example", "password": "bravo passphrase one", "session": true })),
    );
    assert_eq!(status, 200, "{body}");
    let b_session =
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["session_key"].as_str().unwrap().to_string();

    // The fabric: a router with a router key; acme's private host, bravo's public host.
    let (mut router, quic) = spawn_router(&dir, "router", &url, &router_key);
    router.wait_ready(Duration::from_secs(60));
    let mut host_a = spawn_host(&dir, "host-a", &url, &a_net_provider, &[quic], &["--heartbeat-secs", "1"]);
    let mut host_b = spawn_host(&dir, "host-b", &url, &b.provider, &[quic], &["--heartbeat-secs", "1"]);
    host_a.wait_ready(Duration::from_secs(60));
    host_b.wait_ready(Duration::from_secs(60));
    let via_router = |app: &str, key: &str| call(router.addr, "GET", &format!("/fn/{app}/hello"), Some(key), None);
    wait_for("acme's apps to answer through the router", Duration::from_secs(60), || {
        via_router("a-pub", &a.invoke).0 == 200 && via_router("a-priv", &a.invoke).0 == 200
    });
    let a_node = runtime()
        .block_on(client(&url, &a.deploy).nodes())
        .unwrap()
        .into_iter()
        .find(|n| n.name == "host-a")
        .expect("acme sees its own node")
        .node_id;

    // Every documented operation, with every key of bravo's. Path parameters name
    // acme's things; bodies are what an attacker would send.
    let b_identity = NodeIdentity::generate();
    let register_as_a = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let public_key = b_identity.public_key_hex();
        let signature = b_identity.sign_hex(&wire::registration_message(&a_node, &public_key, now));
        serde_json::json!({ "node_id": a_node, "public_key": public_key, "name": "stolen", "timestamp_ms": now, "signature": signature })
    };
    let b_hello = serde_json::json!({ "manifest": "[app]\nname = \"a-pub\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hijacked\"\ncomponent = \"hello\"\n", "components": { "hello": hello_hash } });
    let row = |method: &str, path: &str| -> (String, Option<serde_json::Value>) {
        let p = path
            .replace("/v1/accounts/{name}", "/v1/accounts/acme")
            .replace("/v1/credits/{account}", "/v1/credits/acme")
            .replace("/v1/prices/{model}", "/v1/prices/a-model")
            .replace("/v1/leases/{id}", "/v1/leases/lease:0123456789ab")
            .replace("/v1/generation", "/v1/generation?id=req-of-acme")
            .replace("/v1/apps/{name}", "/v1/apps/a-priv")
            .replace("/v1/models/{name}", "/v1/models/a-model")
            .replace("/v1/loras/{name}", "/v1/loras/a-lora")
            .replace("/v1/keys/{id}", &format!("/v1/keys/{a_key_id}"))
            .replace("/v1/uploads/{id}", &format!("/v1/uploads/{a_upload}"))
            .replace("{part}", "0")
            .replace("{hash}", &chat_hash)
            .replace("/v1/nodes/{id}", &format!("/v1/nodes/{a_node}"))
            .replace("{node}", &a_node)
            .replace("{token}", "00000000000000000000000000000000")
            .replace("{asset}", "app.js");
        let body = match (method, path) {
            ("POST", "/v1/accounts") => Some(serde_json::json!({ "name": "bravo-2" })),
            ("POST", "/v1/accounts/{name}/members") => {
                Some(serde_json::json!({ "email": "mallory@bravo.example", "password": "bravo passphrase" }))
            }
            ("POST", "/v1/sessions") => {
                // Not ana's email: five keys guessing hers would lock her out before the
                // lockout test below.
                Some(serde_json::json!({ "email": "ann@acme.example", "password": "guessing it wrong" }))
            }
            ("POST", "/v1/keys") => Some(serde_json::json!({ "name": "x", "scopes": ["deploy"], "account": "acme" })),
            ("POST", "/v1/uploads") => Some(
                serde_json::json!({ "blake3": chat_hash, "size": std::fs::metadata(components_dir().join("chat.wasm")).unwrap().len(), "kind": "component" }),
            ),
            ("POST", "/v1/apps/{name}/versions") => Some(b_hello.clone()),
            ("POST", "/v1/apps/{name}/rollback") => Some(serde_json::json!({ "version": 1 })),
            ("POST", "/v1/models") => {
                Some(serde_json::json!({ "name": "b-copy", "blake3": wasmesh_tests::blake3_of(&model_path()) }))
            }
            ("PUT", "/v1/models/{name}/pin") => Some(serde_json::json!({ "min_warm": 1 })),
            ("PUT", "/v1/models/{name}/public") | ("PUT", "/v1/loras/{name}/public") => {
                Some(serde_json::json!({ "public": true }))
            }
            ("POST", "/v1/loras") => Some(
                serde_json::json!({ "name": "b-lora", "base": "a-model", "blake3": wasmesh_tests::blake3_of(&lora_path(2)) }),
            ),
            ("POST", "/v1/nodes/register") => Some(register_as_a.clone()),
            ("POST", "/v1/credits/grants") => Some(serde_json::json!({ "account": "bravo", "amount": 1_000_000 })),
            ("PUT", "/v1/prices/{model}") => Some(serde_json::json!({ "input_per_mtok": 0 })),
            ("POST", "/v1/leases") => {
                Some(serde_json::json!({ "account": "acme", "amount": 1, "min_amount": 1, "ttl_s": 60 }))
            }
            ("POST", "/v1/receipts") => Some(serde_json::json!({ "receipts": [] })),
            ("PUT", "/v1/nodes/{id}/trust") => Some(serde_json::json!({ "trusted": true })),
            ("POST", "/v1/audits") => {
                Some(serde_json::json!({ "original": { "receipt": "{}", "signature": "" }, "replays": [] }))
            }
            _ => None,
        };
        (p, body)
    };
    // What bravo must never see: acme's private app, model, adapter, env and members.
    let secrets = ["a-priv", "a-model", "a-lora", "a-priv-env", "ana@acme", &chat_hash];
    let keys: [(&str, Option<&str>, Vec<Scope>); 5] = [
        ("bravo deploy", Some(&b.deploy), vec![Scope::Deploy]),
        ("bravo session", Some(&b_session), vec![Scope::Deploy, Scope::Invoke, Scope::Provider]),
        ("bravo provider", Some(&b.provider), vec![Scope::Provider]),
        ("bravo invoke", Some(&b.invoke), vec![Scope::Invoke]),
        ("no key", None, vec![]),
    ];
    let mut tried = BTreeSet::new();
    for (method, path, scopes, owner) in documented() {
        let (p, body) = row(&method, &path);
        for (who, key, key_scopes) in &keys {
            let (status, text) =
                if path.ends_with("/heartbeat") || path.ends_with("/swarm") || path.ends_with("/reports") {
                    // Node-signed: bravo cannot sign as acme's node; it tries with its own key pair.
                    signed(
                        reg,
                        key.unwrap_or("wsk_000000000000_000000000000000000000000000000000000000000000000"),
                        &b_identity,
                        &a_node,
                        path.rsplit('/').next().unwrap(),
                        &serde_json::json!({ "blob": chat_hash, "fetching": true }),
                    )
                } else {
                    call(reg, &method, &p, *key, body.as_ref())
                };
            let context = format!("{who}: {method} {p} ({owner}, scopes {scopes:?}) -> {status} {text}");
            let needs_key = !scopes.is_empty();
            if needs_key && key.is_none() {
                assert_eq!(status, 401, "{context}");
            } else if !scope_passes(&scopes, key_scopes) {
                assert!(status == 403 || status == 401, "the documented scopes refuse it: {context}");
            } else {
                match owner.as_str() {
                    // Public service paths.
                    "none"
                        if path == "/health"
                            || path == "/metrics"
                            || path == "/openapi.json"
                            || path.starts_with("/dashboard") =>
                    {
                        assert_eq!(status, 200, "{context}");
                    }
                    // Names nothing owned: a password, a token, a node's own signature.
                    "none" => assert!((400..500).contains(&status), "{context}"),
                    // Answers with the caller's own: allowed, but nothing of acme's in it.
                    "caller" => {
                        let shown: Vec<&&str> = secrets.iter().filter(|s| text.contains(**s)).collect();
                        if method == "POST" && path == "/v1/uploads" {
                            // Holding acme's hash is not holding its bytes: bravo must upload them.
                            assert_eq!(status, 201, "{context}");
                            assert!(text.contains("\"complete\":false"), "{context}");
                        } else if method == "POST" {
                            assert!((400..500).contains(&status), "{context}");
                        } else {
                            assert!(status < 300 && shown.is_empty(), "acme's {shown:?} shown to bravo: {context}");
                        }
                        if path == "/v1/deployments" && who.contains("deploy") {
                            assert!(!text.contains("a-pub"), "another account's deployments: {context}");
                        }
                    }
                    // Names one of acme's: refused, and existence not revealed (404), or 403.
                    _ => assert!(status == 403 || status == 404, "{context}"),
                }
            }
            assert!(status != 500, "{context}");
        }
        tried.insert(format!("{method} {path}"));
    }
    assert!(tried.len() >= 40, "the document lists every operation: {tried:?}");

    // Bravo cannot take over acme's public app either (a redeploy would send acme's
    // callers to bravo's code).
    let hijack = app(
        &dir,
        "hijack",
        &[("hello.wasm", "hello.wasm")],
        "[app]\nname = \"a-pub\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hijacked\"\ncomponent = \"hello\"\n",
    );
    let (_, err) = cli(&url, &b.deploy, &["deploy", "-f", hijack.to_str().unwrap()]).unwrap_err();
    assert!(err.contains("belongs to another account"), "{err}");

    // Nothing changed: acme's versions, keys, model, adapter and upload are as they were,
    // and its apps answer with its version.
    let a_client = client(&url, &a.deploy);
    for name in ["a-pub", "a-priv"] {
        assert_eq!(runtime().block_on(a_client.versions(name)).unwrap().len(), 1, "{name} kept one version");
    }
    assert!(runtime().block_on(client(&url, &a.invoke).whoami()).is_ok(), "bravo could not revoke acme's key");
    let model = runtime().block_on(a_client.model("a-model")).unwrap();
    assert!(!model.public && model.min_warm == 0, "{model:?}");
    assert!(!runtime().block_on(a_client.loras()).unwrap()[0].public);
    assert_eq!(call(reg, "GET", &format!("/v1/uploads/{a_upload}"), Some(&a.deploy), None).0, 200);
    let (status, text) = via_router("a-pub", &a.invoke);
    assert_eq!((status, text.as_str()), (200, "hello from wasmesh\n"));
    assert_eq!(call(router.addr, "GET", "/fn/a-pub/hijacked", Some(&a.invoke), None).0, 404);

    // Bravo's provider sees the public app its node may run, not acme's private one.
    let seen = runtime().block_on(client(&url, &b.provider).deployments(None, Duration::ZERO)).unwrap();
    assert_eq!(seen.apps.iter().map(|v| v.app.as_str()).collect::<Vec<_>>(), ["a-pub"]);
    assert_eq!(call(reg, "GET", &format!("/v1/blobs/{hello_hash}"), Some(&b.provider), None).0, 200);
    // Bravo's node never received acme's private app: it does not serve it and never
    // fetched its component, while acme's node does.
    assert_eq!(call(host_b.addr, "GET", "/fn/a-priv/hello", None, None).0, 404);
    assert!(!dir.join("host-b/components").join(format!("{chat_hash}.wasm")).exists());
    assert!(dir.join("host-a/components").join(format!("{chat_hash}.wasm")).exists());

    // The router: bravo's deploy and provider keys are refused; an invoke key calls
    // public functions (what callers are for) but lists none of acme's private models.
    for key in [&b.deploy, &b.provider] {
        assert_eq!(via_router("a-pub", key).0, 403);
    }
    assert_eq!(via_router("a-pub", &b.invoke).0, 200);
    let (status, models) = call(router.addr, "GET", "/v1/models", Some(&b.invoke), None);
    assert_eq!(status, 200);
    assert!(!models.contains("a-model"), "acme's private model listed to bravo: {models}");
    let (_, models) = call(router.addr, "GET", "/v1/models", Some(&a.invoke), None);
    assert!(models.contains("a-model"), "acme lists its own model: {models}");

    // Bravo cannot grant acme's private model; once acme publishes it, it can.
    let b_app = app(
        &dir,
        "b-app",
        &[("chat.wasm", "chat.wasm")],
        "[app]\nname = \"b-app\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"a-model\"]\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n",
    );
    let (code, err) = cli(&url, &b.deploy, &["deploy", "-f", b_app.to_str().unwrap()]).unwrap_err();
    assert!(code != 0 && err.contains("private to another account"), "{err}");
    cli(&url, &a.deploy, &["models", "publish", "a-model"]).unwrap();
    let deployed = cli(&url, &b.deploy, &["deploy", "-f", b_app.to_str().unwrap()]).unwrap();
    assert_eq!(deployed["version"], 1, "{deployed}");

    // Members sign in with their password; a wrong one is refused, and repeated wrong
    // ones lock that address out.
    let signed_in =
        runtime().block_on(Client::new(&url, None).unwrap().sign_in("ana@acme.example", "acme passphrase one"));
    assert_eq!(signed_in.unwrap().account, "acme");
    let mut last = 0;
    for _ in 0..6 {
        last = call(
            reg,
            "POST",
            "/v1/sessions",
            None,
            Some(&serde_json::json!({ "email": "ana@acme.example", "password": "wrong wrong wrong" })),
        )
        .0;
    }
    assert_eq!(last, 429, "repeated failures lock the email out for this address");
    assert!(host_a.is_running() && host_b.is_running(), "no host fell over");
    drop((host_a, host_b, router, registry));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_key_of_one_account_reaches_anothers_work_on_sqlite() {
    isolation_matrix(false, "tenants-sqlite");
}

#[test]
fn no_key_of_one_account_reaches_anothers_work_on_postgres() {
    isolation_matrix(true, "tenants-pg");
}

/// Revoking a provider key takes its node offline and out of the router at once; a
/// heartbeat signed by the node but sent with another key is refused; a router needs
/// a router key (an invoke or deploy key is refused registration); certificates are
/// short-lived and hosts and routers renew them at half their life.
#[test]
fn revoked_keys_silence_their_nodes_and_routers_need_a_router_key() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("tenants-revoke");
    // Certificates of one minute: renewed after 30 s.
    let (registry, admin) = start_registry(&dir, &["--cert-ttl-secs", "60"]);
    let url = format!("http://{}", registry.addr);
    let a = tenant(&url, &admin, "acme");
    let spare = make_key(&url, &admin, "acme", &[Scope::Provider], None);

    // Invoke and deploy keys cannot run a router.
    for key in [&a.invoke, &a.deploy] {
        let out = Command::new(wasmesh_bin())
            .args(["router", "--listen", &free_addr().to_string(), "--quic", "127.0.0.1:0", "--registry", &url])
            .args(["--key", key, "--data", dir.join("bad-router").to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("router scope"), "{err}");
    }
    let router_key = make_key(&url, &admin, "default", &[Scope::Router], None);
    let (mut router, quic) = spawn_router(&dir, "router", &url, &router_key);
    router.wait_ready(Duration::from_secs(60));
    let mut host = spawn_host(&dir, "host", &url, &a.provider, &[quic], &["--heartbeat-secs", "1"]);
    host.wait_ready(Duration::from_secs(60));
    let manifest = app(
        &dir,
        "demo",
        &[("hello.wasm", "hello.wasm")],
        "[app]\nname = \"demo\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    );
    cli(&url, &a.deploy, &["deploy", "-f", manifest.to_str().unwrap()]).unwrap();
    let hello = || call(router.addr, "GET", "/fn/demo/hello", Some(&a.invoke), None).0;
    wait_for("the router to serve through the host", Duration::from_secs(60), || hello() == 200);
    let cert = runtime().block_on(client(&url, &spare).register_node(&NodeIdentity::generate(), "probe")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(cert.expires_at_ms > now && cert.expires_at_ms <= now + 61_000, "a one-minute certificate: {cert:?}");
    wait_for("the host and the router to renew their certificates", Duration::from_secs(60), || {
        host.log().contains("node certificate renewed") && router.log().contains("router certificate renewed")
    });
    assert_eq!(hello(), 200, "still serving after the renewal");
    // A host dialing now meets the router's renewed certificate.
    let mut late = spawn_host(&dir, "late", &url, &spare, &[quic], &["--heartbeat-secs", "1"]);
    late.wait_ready(Duration::from_secs(60));
    wait_for("a new host to link to the renewed router", Duration::from_secs(30), || {
        request(router.addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["hosts"] == 2)
    });
    drop(late);

    // The node's own signature with another key of the same account: refused.
    let identity = NodeIdentity::load_or_create(&dir.join("host/node.key")).unwrap();
    let beat: Heartbeat = runtime()
        .block_on(client(&url, &admin).nodes())
        .unwrap()
        .into_iter()
        .find(|n| n.name == "host")
        .and_then(|n| n.heartbeat)
        .expect("the host heartbeats");
    let refused = runtime().block_on(client(&url, &spare).heartbeat(&identity, &beat)).unwrap_err();
    assert!(refused.to_string().contains("registered with another API key"), "{refused}");
    assert!(runtime().block_on(client(&url, &a.provider).heartbeat(&identity, &beat)).is_ok());

    // Revoke: the node is offline at once, and the router stops sending it requests
    // within its next poll of the registry (2 s; the host heartbeats every second).
    let provider_id = runtime().block_on(client(&url, &a.provider).whoami()).unwrap().id;
    runtime().block_on(client(&url, &a.deploy).revoke_key(&provider_id)).unwrap();
    let nodes = runtime().block_on(client(&url, &admin).nodes()).unwrap();
    let node = nodes.iter().find(|n| n.name == "host").unwrap();
    assert_eq!(node.status, wire::NodeStatus::Offline, "offline the moment its key is revoked: {node:?}");
    wait_for("the router to drop the revoked node", Duration::from_secs(10), || hello() != 200);
    let status = hello();
    assert!(status == 503 || status == 404, "no node left to serve: {status}");
    assert!(runtime().block_on(client(&url, &a.provider).heartbeat(&identity, &beat)).is_err());
    drop((host, router, registry));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A registry database written by the schema before accounts (migration 5) starts,
/// moves everything into the account `default`, and serves its app unchanged: the
/// old keys work, and a host runs the app.
#[test]
fn a_registry_from_before_accounts_upgrades_in_place() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("tenants-upgrade");
    let data = dir.join("registry");
    std::fs::create_dir_all(&data).unwrap();
    let hello = std::fs::read(components_dir().join("hello.wasm")).unwrap();
    let hash = blake3::hash(&hello).to_hex().to_string();
    let blob_dir = data.join("artifacts/blobs").join(&hash[..2]);
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(blob_dir.join(&hash), &hello).unwrap();
    // The rows the previous schema's registry wrote for one admin key, one provider key
    // and one deployed app.
    let secret = "a".repeat(48);
    let provider_secret = "b".repeat(48);
    let admin = format!("wsk_0123456789ab_{secret}");
    let provider = format!("wsk_0123456789ac_{provider_secret}");
    let manifest = "[app]\nname = \"old\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n";
    runtime().block_on(async {
        let db = wasmesh_registry::db::Db::open_at(&wasmesh_registry::db::Db::sqlite_url(&data), 5).await.unwrap();
        let rows = [
            format!("INSERT INTO keys (id, name, hash, scopes, created_at, revoked) VALUES ('0123456789ab', 'admin', '{}', 'admin', 1, 0)", blake3::hash(secret.as_bytes()).to_hex()),
            format!("INSERT INTO keys (id, name, hash, scopes, created_at, revoked) VALUES ('0123456789ac', 'host', '{}', 'provider', 1, 0)", blake3::hash(provider_secret.as_bytes()).to_hex()),
            format!("INSERT INTO blobs (hash, size, kind, created_at) VALUES ('{hash}', {}, 'component', 1)", hello.len()),
            format!("INSERT INTO validated_components (hash, created_at) VALUES ('{hash}', 1)"),
            "INSERT INTO apps (name, current_version, latest_version, updated_at) VALUES ('old', 1, 1, 1)".to_string(),
            format!("INSERT INTO app_versions (app, version, manifest, components, created_at, deployed_by) VALUES ('old', 1, '{}', '{{\"hello\":\"{hash}\"}}', 1, '0123456789ab')", manifest.replace('\'', "''")),
            "UPDATE meta SET value = '1' WHERE name = 'deployments_revision'".to_string(),
        ];
        for sql in rows {
            sqlx::query(&sql).execute(&db.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        db.pool.close().await;
    });

    let addr = free_addr();
    let args = wasmesh_tests::registry_args(addr, &dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut registry = Process::spawn(&args, addr, dir.join("registry.log"));
    registry.wait_ready(Duration::from_secs(60));
    let url = format!("http://{addr}");
    assert!(!dir.join("admin.key").exists(), "an upgraded registry keeps its keys: no new admin key");
    let me = runtime().block_on(client(&url, &admin).whoami()).unwrap();
    assert_eq!(me.account, "default");
    let apps = runtime().block_on(client(&url, &admin).apps()).unwrap();
    assert_eq!((apps.len(), apps[0].name.as_str(), apps[0].account.as_str()), (1, "old", "default"));
    let versions = runtime().block_on(client(&url, &admin).versions("old")).unwrap();
    assert_eq!(versions[0].manifest, manifest);
    // The host's component cache holds a damaged copy (as after a disk fault): it is
    // checked against its hash before use and fetched again.
    std::fs::create_dir_all(dir.join("host/components")).unwrap();
    std::fs::write(dir.join("host/components").join(format!("{hash}.wasm")), &hello[..hello.len() / 2]).unwrap();
    let mut host = spawn_host(&dir, "host", &url, &provider, &[], &["--heartbeat-secs", "1"]);
    host.wait_ready(Duration::from_secs(60));
    wait_for("the upgraded registry's app to be served", Duration::from_secs(30), || {
        request(host.addr, "GET", "/fn/old/hello", &[], None)
            .is_ok_and(|r| r.status == 200 && r.text() == "hello from wasmesh\n")
    });
    assert!(host.log().contains("cached component is damaged"), "{}", host.log());
    drop((host, registry));
    let _ = std::fs::remove_dir_all(&dir);
}
