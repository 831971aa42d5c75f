//! What a provider does to a running node: pause it (routers stop sending it requests,
//! running ones finish, no caller sees a failure), resume it (traffic comes back), and
//! shrink its memory share (the engine's budget shrinks and an idle model is evicted),
//! through `wasmesh host pause|resume|set|status` on the node's control socket; and stop
//! it as a service manager does (SIGTERM: the running request finishes first).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmesh_api::wire::Scope;
use wasmesh_client::Client;
use wasmesh_tests::{Process, components_dir, model_path, prerequisites, request, runtime, scratch, wait_for};

/// Runs `wasmesh host COMMAND... --data DATA --json`: its answer.
fn control(data: &Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(wasmesh_tests::wasmesh_bin())
        .arg("host")
        .args(args)
        .args(["--data", data.to_str().unwrap(), "--json"])
        .output()
        .expect("the wasmesh binary runs");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("`host {args:?}` printed no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "`host {args:?}` failed: {answer}");
    answer
}

struct Node {
    process: Process,
    data: PathBuf,
    addr: SocketAddr,
}

impl Node {
    fn health(&self) -> serde_json::Value {
        request(self.addr, "GET", "/health", &[], None).unwrap().json()
    }
    fn served(&self) -> u64 {
        self.health()["served"].as_u64().unwrap()
    }
}

/// A 128-token chat through the router, on a thread of its own: (status, body).
fn long_chat(router: SocketAddr, auth: &str) -> std::thread::JoinHandle<(u16, String)> {
    let auth = auth.to_string();
    std::thread::spawn(move || {
        let body =
            br#"{"prompt": "Count from one to twenty in words.", "max_tokens": 128, "temperature": 0, "chat": true}"#;
        let r = request(
            router,
            "POST",
            "/fn/demo/chat",
            &[("Authorization", &auth)],
            Some(wasmesh_tests::Payload::Sized(body)),
        )
        .unwrap();
        (r.status, r.text())
    })
}

#[test]
fn pause_drains_a_node_without_failing_a_caller_and_a_smaller_memory_share_evicts_an_idle_model() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("providers-pause");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
    let url = format!("http://{}", registry.addr);
    let rt = runtime();
    let admin_client = Client::new(&url, Some(admin.clone())).unwrap();
    let key = |scope| rt.block_on(admin_client.create_key("test", &[scope])).unwrap().key;
    let (invoke, provider, deployer) = (key(Scope::Invoke), key(Scope::Provider), key(Scope::Deploy));
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for c in ["chat", "hello"] {
        std::fs::copy(components_dir().join(format!("{c}.wasm")), app.join(format!("{c}.wasm"))).unwrap();
    }
    std::fs::write(
        app.join("wasmesh.toml"),
        "[app]\nname = \"demo\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"smollm2\"]\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    )
    .unwrap();
    let deploy = Client::new(&url, Some(deployer.clone())).unwrap();
    rt.block_on(deploy.deploy(&app.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();
    let (mut router, quic) = wasmesh_tests::spawn_router(&dir, "router", &url, &admin);
    router.wait_ready(Duration::from_secs(60));
    let model = format!("smollm2={}", model_path().display());
    let mut nodes: Vec<Node> = (0..2)
        .map(|i| {
            let name = format!("host{i}");
            let extra = ["--model", &model, "--heartbeat-secs", "30"];
            let process = wasmesh_tests::spawn_host(&dir, &name, &url, &provider, &[quic], &extra);
            let addr = process.addr;
            Node { process, data: dir.join(&name), addr }
        })
        .collect();
    for node in &mut nodes {
        node.process.wait_ready(Duration::from_secs(60));
    }
    let router_addr = router.addr;
    wait_for("2 ready hosts on the router", Duration::from_secs(30), || {
        request(router_addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == 2)
    });
    let auth = format!("Bearer {invoke}");
    let hello = |auth: &str| request(router_addr, "GET", "/fn/demo/hello", &[("Authorization", auth)], None);
    wait_for("the app through the router", Duration::from_secs(30), || hello(&auth).is_ok_and(|r| r.status == 200));

    // Callers keep calling from three threads for the whole test; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, auth) = (stop.clone(), auth.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failures) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match request(router_addr, "GET", "/fn/demo/hello", &[("Authorization", &auth)], None) {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                (ok, failures)
            })
        })
        .collect();

    // A chat running on a node when it is paused finishes.
    let chat = long_chat(router_addr, &auth);
    let mut busy = None;
    wait_for("the chat to start on a node", Duration::from_secs(60), || {
        // The first chat loads the model on the node it runs on (hosts load lazily).
        busy = nodes.iter().position(|n| n.health()["loaded"].as_array().is_some_and(|l| !l.is_empty()));
        busy.is_some() || chat.is_finished()
    });
    let paused = busy.unwrap_or(0);
    let other = 1 - paused;
    let answer = control(&nodes[paused].data, &["pause"]);
    assert_eq!(answer["status"]["state"], "paused", "{answer}");
    let (status, text) = chat.join().unwrap();
    assert_eq!(status, 200, "the chat running when its node paused finishes: {text}");
    assert!(!text.is_empty());

    // No new request reaches the paused node; the registry shows it paused at once.
    std::thread::sleep(Duration::from_millis(500));
    let before = nodes[paused].served();
    let other_before = nodes[other].served();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nodes[paused].served(), before, "a paused node ran new requests");
    assert!(nodes[other].served() > other_before, "the other node took the traffic");
    assert_eq!(nodes[paused].health()["status"], "paused");
    let node_id = answer["status"]["node_id"].as_str().unwrap().to_string();
    wait_for("the registry to list the node as paused", Duration::from_secs(10), || {
        rt.block_on(deploy.nodes())
            .unwrap()
            .iter()
            .any(|n| n.node_id == node_id && n.status == wasmesh_api::wire::NodeStatus::Paused)
    });

    // Resumed, it takes traffic again: pausing the other node leaves it all of it.
    let answer = control(&nodes[paused].data, &["resume"]);
    assert_eq!(answer["status"]["state"], "ready", "{answer}");
    let both_ready = || {
        wait_for("the router to see both nodes ready", Duration::from_secs(10), || {
            request(router_addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == 2)
        })
    };
    both_ready();
    let resumed_from = nodes[paused].served();
    control(&nodes[other].data, &["pause"]);
    wait_for("traffic back on the resumed node", Duration::from_secs(10), || {
        nodes[paused].served() > resumed_from + 20
    });
    control(&nodes[other].data, &["resume"]);
    both_ready();
    stop.store(true, Ordering::Relaxed);
    let mut served_ok = 0;
    for caller in callers {
        let (ok, failures) = caller.join().unwrap();
        served_ok += ok;
        assert!(
            failures.is_empty(),
            "{} callers' requests failed during pause and resume: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
    eprintln!("{served_ok} requests served through pause and resume, none failed");

    // A smaller memory share, at run time: the engine's budget shrinks and the idle
    // model is evicted; the status says so.
    let warm = nodes
        .iter()
        .position(|n| n.health()["loaded"].as_array().is_some_and(|l| l.iter().any(|m| m == "smollm2")))
        .expect("the chat left the model warm");
    // The Grafana dashboard graphs what the host exports (those of fetching and seeding
    // appear once a node fetches from the registry, which these nodes, given their model
    // file, never do).
    let metrics = request(nodes[warm].addr, "GET", "/metrics", &[], None).unwrap().text();
    let dashboard =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana-host.json")).unwrap();
    let mut graphed: Vec<&str> = dashboard
        .match_indices("wasmesh_host_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest[..end].trim_end_matches("_bucket")
        })
        .collect();
    graphed.sort();
    graphed.dedup();
    assert!(graphed.len() >= 10, "{graphed:?}");
    for name in graphed {
        if ["wasmesh_host_fetch_bytes", "wasmesh_host_weight_bytes_total", "wasmesh_host_seed_bytes_total"]
            .contains(&name)
        {
            continue;
        }
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "the dashboard graphs {name}, which /metrics lacks:\n{metrics}"
        );
    }
    assert!(metrics.contains("wasmesh_host_requests_total{app=\"demo\",status=\"200\"}"), "{metrics}");

    let answer = control(&nodes[warm].data, &["set", "memory=1MiB"]);
    assert!(answer["message"].as_str().unwrap().contains("evicted smollm2"), "{answer}");
    assert_eq!(answer["status"]["model_memory_bytes"], 1 << 20, "{answer}");
    assert_eq!(nodes[warm].health()["loaded"], serde_json::json!([]), "the model left memory");
    let answer = control(&nodes[warm].data, &["status"]);
    assert_eq!(answer["status"]["model_memory_used_bytes"], 0, "{answer}");
    // A bad setting is named, and nothing changes.
    let out = std::process::Command::new(wasmesh_tests::wasmesh_bin())
        .args(["host", "set", "memory=lots", "--data", nodes[warm].data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a memory amount"), "{out:?}");
    // Given room again, it serves chats again.
    control(&nodes[warm].data, &["set", "memory=4GiB"]);
    let body = br#"{"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0, "chat": true}"#;
    let r = request(
        router_addr,
        "POST",
        "/fn/demo/chat",
        &[("Authorization", &auth)],
        Some(wasmesh_tests::Payload::Sized(body)),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // A stop (SIGTERM, as systemd sends it) lets the running request finish, then the
    // host exits cleanly.
    let chat = long_chat(router_addr, &auth);
    let mut running = None;
    wait_for("the chat to run on a node", Duration::from_secs(60), || {
        running = nodes.iter().position(|n| n.health()["in_flight"].as_u64() > Some(0));
        running.is_some() || chat.is_finished()
    });
    if let Some(i) = running {
        let status = nodes[i].process.terminate(Duration::from_secs(60)).expect("the host exits after SIGTERM");
        assert!(status.success(), "a stopped host exits cleanly: {status}\n{}", nodes[i].process.log());
        assert!(nodes[i].process.log().contains("letting running requests finish"), "{}", nodes[i].process.log());
    }
    let (status, text) = chat.join().unwrap();
    assert_eq!(status, 200, "the chat running when its host was stopped finishes: {text}");
    assert!(running.is_some(), "the chat ended before the host could be stopped; nothing was shown");

    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
