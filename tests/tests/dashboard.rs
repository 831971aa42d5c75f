//! The web dashboard in a real browser, against real processes: a registry, a router
//! and two hosts of account A serving the test model (pushed to the registry, fetched
//! by the hosts), one app of A's, one host paused; account B beside it. Debian's
//! Chromium, driven by `tests/browser/dashboard.mjs` (Playwright), signs in as A's
//! member, reads the Nodes page, watches a CLI deploy appear without a reload, rolls it
//! back with the page's button, renders every page (on a phone-sized screen too), then
//! signs in as B's member and must not see A's app.
//!
//! Node.js, Chromium and the script's `node_modules` are this test's own prerequisites:
//! when one is missing the test fails (never skips), naming `bash deploy/setup.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wasmesh_api::wire::{ModelState, NodeInfo, Price, Scope};
use wasmesh_client::Client;
use wasmesh_tests::{
    account_key, call_with_key, cli_json, components_dir, model_path, prerequisites, request, runtime, scratch,
    spawn_host, spawn_router, start_registry, wait_for, wasmesh_bin,
};

const APP: &str = "dash-demo";
const MODEL: &str = "smollm2";
const A_EMAIL: &str = "ana@acme.example";
const A_PASSWORD: &str = "acme dashboard passphrase";
const B_EMAIL: &str = "bo@bravo.example";
const B_PASSWORD: &str = "bravo dashboard passphrase";
const CHAT: &[u8] = br#"{"prompt": "Name a colour.", "max_tokens": 3, "temperature": 0, "chat": true}"#;

/// `tests/browser`: the Playwright script and its `node_modules`.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The Chromium the script drives: `$CHROMIUM`, or Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fails (locally too) when Node.js, Chromium or the script's packages are missing.
fn require_browser() {
    let mut missing = Vec::new();
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        missing.push("node (Node.js 20 or later)".to_string());
    }
    if !chromium().is_file() {
        missing.push(format!("{} (Debian's chromium package)", chromium().display()));
    }
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        missing.push(format!("{} (npm ci --prefix tests/browser)", playwright.display()));
    }
    assert!(
        missing.is_empty(),
        "the dashboard's browser test needs:\n  {}\nrun `bash deploy/setup.sh`, which installs them",
        missing.join("\n  ")
    );
}

/// Whether `node` lists `model` as warm (loaded) in its last heartbeat.
fn warm_on(node: &NodeInfo, model: &str) -> bool {
    node.heartbeat.as_ref().is_some_and(|h| h.models.iter().any(|m| m.name == model && m.state == ModelState::Loaded))
}

fn status_of(node: &NodeInfo) -> String {
    serde_json::to_value(node.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The last `n` lines of a process log, for failure messages.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn the_dashboard_shows_the_fabric_live_in_a_real_browser() {
    require_browser();
    if !prerequisites() {
        return;
    }
    let dir = scratch("dashboard");
    let rt = runtime();
    let (registry, admin) = start_registry(&dir, &[]);
    let url = format!("http://{}", registry.addr);
    let admin_client = Client::new(&url, Some(admin.clone())).unwrap();
    for account in ["acme", "bravo"] {
        rt.block_on(admin_client.create_account(account)).unwrap();
    }
    let key = |account: &str, scope: Scope| account_key(&url, &admin, account, &[scope], None);
    let (a_deploy, a_provider, a_invoke) =
        (key("acme", Scope::Deploy), key("acme", Scope::Provider), key("acme", Scope::Invoke));
    let router_key = key("default", Scope::Router);
    let a_client = Client::new(&url, Some(a_deploy.clone())).unwrap();
    rt.block_on(a_client.add_member("acme", A_EMAIL, A_PASSWORD)).unwrap();
    rt.block_on(admin_client.add_member("bravo", B_EMAIL, B_PASSWORD)).unwrap();

    // A's model and app; credits and prices, so the Usage page has something to draw.
    cli_json(&url, &a_deploy, &["models", "push", model_path().to_str().unwrap(), "--name", MODEL]).unwrap();
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for c in ["chat", "hello"] {
        std::fs::copy(components_dir().join(format!("{c}.wasm")), app.join(format!("{c}.wasm"))).unwrap();
    }
    let manifest = app.join("wasmesh.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"{APP}\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"{MODEL}\"]\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n"
        ),
    )
    .unwrap();
    let deployed = cli_json(&url, &a_deploy, &["deploy", "-f", manifest.to_str().unwrap()]).unwrap();
    assert_eq!(deployed["version"], 1, "{deployed}");
    rt.block_on(admin_client.grant("acme", 10_000_000, "dashboard test", None)).unwrap();
    for price in [
        Price { model: MODEL.into(), input_per_mtok: 1_000_000_000, output_per_mtok: 3_000_000_000, per_call: 0 },
        Price { model: "-".into(), input_per_mtok: 0, output_per_mtok: 0, per_call: 100 },
    ] {
        rt.block_on(admin_client.set_price(&price)).unwrap();
    }

    // The fabric: a router and two hosts of A's, which fetch the model on demand.
    let (mut router, quic) = spawn_router(&dir, "router", &url, &router_key);
    router.wait_ready(Duration::from_secs(60));
    let mut hosts = Vec::new();
    for name in ["host-0", "host-1"] {
        hosts.push(spawn_host(&dir, name, &url, &a_provider, &[quic], &["--heartbeat-secs", "1"]));
    }
    for host in &mut hosts {
        host.wait_ready(Duration::from_secs(60));
    }
    wait_for("2 ready hosts on the router", Duration::from_secs(60), || {
        request(router.addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == 2)
    });
    // One chat makes a host fetch and load the model.
    wait_for("a chat through the router", Duration::from_secs(180), || {
        call_with_key(router.addr, &a_invoke, "POST", &format!("/fn/{APP}/chat"), Some(CHAT)).status == 200
    });
    let nodes = || rt.block_on(a_client.nodes()).unwrap();
    wait_for("the registry to list the model warm on a node", Duration::from_secs(30), || {
        nodes().iter().any(|n| warm_on(n, MODEL))
    });

    // Pause a host where the model is not warm (host-1 when it is warm on both).
    let listed = nodes();
    let paused = ["host-0", "host-1"]
        .iter()
        .filter_map(|name| listed.iter().find(|n| n.name == *name))
        .find(|n| !warm_on(n, MODEL))
        .or_else(|| listed.iter().find(|n| n.name == "host-1"))
        .expect("A's hosts are listed")
        .clone();
    let out = Command::new(wasmesh_bin())
        .args(["host", "pause", "--data", dir.join(&paused.name).to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`wasmesh host pause` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the registry to list the paused host as paused", Duration::from_secs(30), || {
        nodes().iter().any(|n| n.node_id == paused.node_id && status_of(n) == "paused")
    });
    assert!(nodes().iter().any(|n| n.node_id != paused.node_id && warm_on(n, MODEL)), "{:?}", nodes());

    // The browser.
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    println!("dashboard screenshots: {}", screenshots.display());
    let out = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("DASHBOARD_URL", format!("{url}/dashboard"))
        .env("A_EMAIL", A_EMAIL)
        .env("A_PASSWORD", A_PASSWORD)
        .env("B_EMAIL", B_EMAIL)
        .env("B_PASSWORD", B_PASSWORD)
        .env("WASMESH_BIN", wasmesh_bin())
        .env("REGISTRY", url.as_str())
        .env("A_DEPLOY_KEY", a_deploy.as_str())
        .env("APP_NAME", APP)
        .env("APP_MANIFEST", manifest.as_os_str())
        .env("PAUSED_NODE", paused.node_id.as_str())
        .env("WARM_MODEL", MODEL)
        .env("SCREENSHOTS", screenshots.as_os_str())
        .env("CHROMIUM", chromium())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "tests/browser/dashboard.mjs failed ({}); screenshots in {}:\n{stdout}{stderr}\n--- registry log (tail):\n{}",
        out.status,
        screenshots.display(),
        tail(&registry.log(), 40)
    );
    drop(hosts);
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
}
