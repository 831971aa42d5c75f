//! Routers and hosts across real processes: a registry, 2 routers and 3 hosts on
//! loopback; hosts dial the routers over QUIC with registry-issued certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmesh_api::wire::Scope;
use wasmesh_client::Client;
use wasmesh_tests::{
    Process, components_dir, free_addr, model_path, prerequisites, request, runtime, scratch, wait_for,
};

struct Fabric {
    dir: PathBuf,
    registry: Process,
    admin: String,
    invoke: String,
    provider: String,
    routers: Vec<(Process, SocketAddr)>,
    hosts: Vec<Option<Process>>,
    host_addrs: Vec<SocketAddr>,
}

impl Fabric {
    fn start(tag: &str, hosts: usize) -> Self {
        let dir = scratch(tag);
        let (registry, admin) = wasmesh_tests::start_registry(&dir, &["--offline-after-secs", "3"]);
        let addr = registry.addr;
        let rt = runtime();
        let client = Client::new(&format!("http://{addr}"), Some(admin.clone())).unwrap();
        let key = |scope| rt.block_on(client.create_key("test", &[scope])).unwrap().key;
        let (invoke, provider, deployer) = (key(Scope::Invoke), key(Scope::Provider), key(Scope::Deploy));

        // Deploy the demo app (chat and hello).
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
        let client = Client::new(&format!("http://{addr}"), Some(deployer)).unwrap();
        rt.block_on(client.deploy(&app.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();
        // The built-in OpenAI API app.
        let openai = dir.join("openai");
        std::fs::create_dir_all(&openai).unwrap();
        std::fs::copy(components_dir().join("openai.wasm"), openai.join("openai.wasm")).unwrap();
        std::fs::write(
            openai.join("wasmesh.toml"),
            "[app]\nname = \"openai\"\n\n[component.openai]\nsource = \"openai.wasm\"\nmodels = [\"smollm2\"]\n\n[[route]]\npath = \"/v1/...\"\ncomponent = \"openai\"\n",
        )
        .unwrap();
        rt.block_on(client.deploy(&openai.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();

        let mut fabric = Self {
            dir,
            registry,
            admin,
            invoke,
            provider,
            routers: Vec::new(),
            hosts: Vec::new(),
            host_addrs: Vec::new(),
        };
        for i in 0..2 {
            let (process, quic) =
                wasmesh_tests::spawn_router(&fabric.dir, &format!("router-{i}"), &fabric.registry_url(), &fabric.admin);
            fabric.routers.push((process, quic));
        }
        for (router, _) in &mut fabric.routers {
            router.wait_ready(Duration::from_secs(60));
        }
        for i in 0..hosts {
            fabric.host_addrs.push(free_addr());
            fabric.hosts.push(None);
            fabric.start_host(i);
        }
        fabric.wait_for_hosts(hosts);
        fabric
    }

    fn registry_url(&self) -> String {
        format!("http://{}", self.registry.addr)
    }

    fn start_host(&mut self, i: usize) {
        let addr = self.host_addrs[i];
        let model = format!("smollm2={}", model_path().display());
        let data = self.dir.join(format!("host{i}"));
        let mut args: Vec<String> = [
            "host",
            "--listen",
            &addr.to_string(),
            "--registry",
            &self.registry_url(),
            "--key",
            &self.provider,
            "--data",
            data.to_str().unwrap(),
            "--name",
            &format!("host-{i}"),
            "--model",
            &model,
            "--slots",
            "2",
            "--threads",
            "1",
            "--heartbeat-secs",
            "1",
            // Hosts of 2, 3 and 1 lanes (a fabric of one host has two): each is still one
            // host to the routers (`wait_for_hosts` counts them), and requests take every lane.
            "--link-lanes",
            &((i + 1) % 3 + 1).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (_, quic) in &self.routers {
            args.extend(["--router".to_string(), quic.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut host = Process::spawn(&args, addr, self.dir.join(format!("host{i}.log")));
        host.wait_ready(Duration::from_secs(60));
        self.hosts[i] = Some(host);
    }

    fn wait_for_hosts(&self, n: usize) {
        for (router, _) in &self.routers {
            wait_for(&format!("{n} ready hosts on the router"), Duration::from_secs(30), || {
                request(router.addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == n)
            });
        }
    }

    fn call(&self, router: usize, method: &str, path: &str, body: Option<&[u8]>) -> wasmesh_tests::HttpResponse {
        wasmesh_tests::call_with_key(self.routers[router].0.addr, &self.invoke, method, path, body)
    }

    fn host_health(&self, i: usize) -> serde_json::Value {
        request(self.host_addrs[i], "GET", "/health", &[], None).unwrap().json()
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

#[test]
fn requests_through_either_router_reach_the_app_and_land_where_the_model_is_warm() {
    if !prerequisites() {
        return;
    }
    let fabric = Fabric::start("router-warm", 3);
    wait_for("the routers to learn the app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/demo/hello", None).status == 200
            && fabric.call(1, "GET", "/fn/demo/hello", None).status == 200
    });
    for i in 0..20 {
        let r = fabric.call(i % 2, "GET", "/fn/demo/hello", None);
        assert_eq!((r.status, r.text().as_str()), (200, "hello from wasmesh\n"));
    }
    let prompt = br#"{"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0, "chat": true}"#;
    let mut texts = Vec::new();
    for i in 0..8 {
        let r = fabric.call(i % 2, "POST", "/fn/demo/chat", Some(prompt));
        assert_eq!(r.status, 200, "{}", r.text());
        texts.push(r.json()["text"].as_str().unwrap().to_string());
    }
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "greedy answers agree wherever they ran: {texts:?}");

    // The hosts' own view: the model is loaded where chats ran, and not on every node.
    let health: Vec<serde_json::Value> = (0..3).map(|i| fabric.host_health(i)).collect();
    let loaded = health.iter().filter(|h| h["loaded"].as_array().unwrap().iter().any(|m| m == "smollm2")).count();
    assert!((1..3).contains(&loaded), "the model should be warm on some nodes, not all: {health:?}");
    let metrics = request(fabric.routers[0].0.addr, "GET", "/metrics", &[], None).unwrap().text();
    let warm: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmesh_router_routed_total{tier=\"warm\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(warm >= 3, "most chats through router 0 went to a warm node:\n{metrics}");
    // Requests one after another go on the streams earlier ones left open.
    let streams = |how: &str| -> u64 {
        let line = format!("wasmesh_router_host_streams_total{{how=\"{how}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(line.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    assert!(
        streams("reused") >= 10 && streams("opened") <= 6,
        "router 0 reuses its streams to hosts:\n{metrics}\n{}",
        fabric.routers[0].0.log()
    );
    // A body over what goes in one write (64 KiB) streams to the host on a stream of its
    // own; smaller ones after it still go on kept streams.
    let large = vec![b'x'; 200 << 10];
    assert_eq!(fabric.call(0, "POST", "/fn/demo/hello", Some(&large)).text(), "hello from wasmesh\n");
    let small = vec![b'y'; 30 << 10];
    for _ in 0..3 {
        assert_eq!(fabric.call(0, "POST", "/fn/demo/hello", Some(&small)).text(), "hello from wasmesh\n");
    }

    // Callers without a key, with bad requests: clear 4xx, and the router stays up.
    let r = request(fabric.routers[0].0.addr, "GET", "/fn/demo/hello", &[], None).unwrap();
    assert_eq!(r.status, 401);
    let r = request(
        fabric.routers[0].0.addr,
        "GET",
        "/fn/demo/hello",
        &[("Authorization", "Bearer wsk_000000000000_bad")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(fabric.call(0, "GET", "/fn/no-such-app/x", None).status, 404);
    assert_eq!(fabric.call(0, "GET", "/nowhere", None).status, 404);
    let big = vec![b'x'; 17 << 20];
    assert_eq!(fabric.call(0, "POST", "/fn/demo/chat", Some(&big)).status, 413);
    assert_eq!(fabric.call(0, "GET", "/fn/demo/hello", None).status, 200);
}

#[test]
fn killing_a_host_fails_no_request_and_it_rejoins() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("router-kill", 3);
    wait_for("the routers to learn the app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/demo/hello", None).status == 200
            && fabric.call(1, "GET", "/fn/demo/hello", None).status == 200
    });
    let done = Arc::new(AtomicU64::new(0));
    let routers: Vec<SocketAddr> = fabric.routers.iter().map(|(p, _)| p.addr).collect();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (done, routers, key) = (done.clone(), routers.clone(), format!("Bearer {}", fabric.invoke));
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in 0..250 {
                    let r = request(routers[(w + i) % 2], "GET", "/fn/demo/hello", &[("Authorization", &key)], None);
                    match r {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                        Err(e) => failures.push(e.to_string()),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    wait_for("300 requests", Duration::from_secs(60), || done.load(Ordering::Relaxed) >= 300);
    // Kill the host that serves the app (the policy keeps one model-less app on few
    // nodes): the one that has served the most so far.
    let serving = (0..3).max_by_key(|&i| fabric.host_health(i)["served"].as_u64().unwrap_or(0)).unwrap();
    assert!(fabric.host_health(serving)["served"].as_u64().unwrap_or(0) > 0, "some host served");
    fabric.hosts[serving].as_mut().unwrap().kill9();
    let failures: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(done.load(Ordering::Relaxed), 1000);
    assert!(
        failures.is_empty(),
        "{} of 1000 requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let retries: u64 = routers
        .iter()
        .map(|r| {
            let metrics = request(*r, "GET", "/metrics", &[], None).unwrap().text();
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("wasmesh_router_retries_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    eprintln!("requests moved to another host after the kill: {retries}");
    assert!(retries >= 1, "the serving host was killed mid-run, yet no request was retried");
    fabric.wait_for_hosts(2);
    fabric.start_host(serving);
    fabric.wait_for_hosts(3);
}

#[test]
fn a_host_without_a_registry_certificate_cannot_connect() {
    if !prerequisites() {
        return;
    }
    let fabric = Fabric::start("router-cert", 1);
    // The router's CA, as a host has it, so the host side trusts the router...
    let ca = std::fs::read_to_string(fabric.dir.join("host0/ca.pem")).unwrap();
    // ...but presents a certificate from a CA of its own.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["impostor.node.wasmesh".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "impostor");
    let cert = params.self_signed(&key).unwrap();
    let identity = wasmesh_tunnel::TlsIdentity::new(&cert.pem(), &key.serialize_der(), &ca).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let result: Result<(), String> = rt.block_on(async {
        let endpoint = wasmesh_tunnel::host_endpoint(&identity).map_err(|e| e.to_string())?;
        let connection = endpoint
            .connect(fabric.routers[0].1, wasmesh_tunnel::ROUTER_NAME)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3 clients learn of a refused certificate on first use.
        let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
        stream.write_all(b"x").await.map_err(|e| e.to_string())?;
        stream.finish().map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(5), connection.closed())
            .await
            .map_err(|_| "still connected".to_string())?;
        Err::<(), String>("closed".into())
    });
    let message = result.unwrap_err();
    assert_ne!(message, "still connected", "the router accepted a certificate its registry did not issue");
    let health = request(fabric.routers[0].0.addr, "GET", "/health", &[], None).unwrap().json();
    assert_eq!(health["hosts"], 1, "only the real host is connected: {health}");
}

#[test]
fn the_openai_client_completes_a_chat_a_streamed_chat_and_embeddings() {
    if !prerequisites() {
        return;
    }
    let python = wasmesh_tests::cache_dir().join("venv/bin/python");
    if !python.is_file() {
        assert!(std::env::var_os("CI").is_none(), "{} is missing (run `bash deploy/setup.sh`)", python.display());
        eprintln!("skipping: no venv with the openai client");
        return;
    }
    let fabric = Fabric::start("router-openai", 2);
    let router = fabric.routers[1].0.addr;
    wait_for("the routers to learn the openai app", Duration::from_secs(30), || {
        fabric.call(1, "POST", "/v1/embeddings", Some(br#"{"model": "smollm2", "input": "hi"}"#)).status == 200
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("openai_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([&format!("http://{router}/v1"), &fabric.invoke, "smollm2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the openai client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(seen["embedding_dims"].as_u64().unwrap() > 0);
    // A wrong key is refused the OpenAI way (401).
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([&format!("http://{router}/v1"), "wsk_000000000000_wrong", "smollm2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Sends a streamed chat of up to 3,000 tokens to the router at `addr` (with
/// `Connection: close` when `close`); the connection, its answer not yet read.
fn send_long_chat(addr: std::net::SocketAddr, invoke: &str, close: bool) -> std::net::TcpStream {
    use std::io::Write;
    let body = r#"{"prompt": "Write a very long story about the sea.", "max_tokens": 3000, "temperature": 0, "chat": true, "stream": true}"#;
    let close = if close { "Connection: close\r\n" } else { "" };
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "POST /fn/demo/chat HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {invoke}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{close}\r\n{body}",
        body.len()
    )
    .unwrap();
    conn
}

/// A streamed chat of up to 3,000 tokens through router `router`, read up to its first
/// token: the connection (dropping it leaves the generation).
fn long_generation(fabric: &Fabric, router: usize) -> std::net::TcpStream {
    use std::io::Read;
    let mut conn = send_long_chat(fabric.routers[router].0.addr, &fabric.invoke, false);
    conn.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&seen).contains("data: {\"text\"") {
        let n = conn.read(&mut buf).expect("tokens stream");
        assert!(n > 0, "the stream ended before its first token: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    conn
}

/// A caller who leaves in the middle of a streamed answer stops its generation on the
/// host, and the stream it was on is not reused: the requests after it (which go on kept
/// streams) get their own answers, whole.
#[test]
fn a_caller_who_leaves_mid_stream_frees_the_host_and_later_requests_get_their_own_answers() {
    if !prerequisites() {
        return;
    }
    let fabric = Fabric::start("router-leave", 1);
    wait_for("the router to learn the app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/demo/hello", None).status == 200
    });
    let router = fabric.routers[0].0.addr;
    for round in 0..2 {
        let conn = long_generation(&fabric, 0);
        assert!(fabric.host_health(0)["in_flight"].as_u64().unwrap_or(0) > 0, "round {round}: the host generates");
        drop(conn);
        wait_for("the host to stop the generation its caller left", Duration::from_secs(30), || {
            fabric.host_health(0)["in_flight"].as_u64() == Some(0)
        });
        for _ in 0..5 {
            let r = fabric.call(0, "GET", "/fn/demo/hello", None);
            assert_eq!((r.status, r.text().as_str()), (200, "hello from wasmesh\n"));
        }
        let prompt = br#"{"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0, "chat": true}"#;
        let r = fabric.call(0, "POST", "/fn/demo/chat", Some(prompt));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["text"].as_str().is_some_and(|t| !t.contains("sea")), "its own answer: {}", r.text());
    }
    let metrics = request(router, "GET", "/metrics", &[], None).unwrap().text();
    assert!(metrics.contains("wasmesh_router_host_streams_total{how=\"reused\"}"), "{metrics}");
}

/// Requests host `i` served from router `router` (by its QUIC address), per lane, from the
/// host's `wasmesh_host_link_requests_total`.
fn lane_requests(fabric: &Fabric, i: usize, router: SocketAddr) -> Vec<u64> {
    let metrics = request(fabric.host_addrs[i], "GET", "/metrics", &[], None).unwrap().text();
    let mut lanes: Vec<(usize, u64)> = metrics
        .lines()
        .filter(|l| l.starts_with("wasmesh_host_link_requests_total{") && l.contains(&format!("router=\"{router}\"")))
        .map(|l| {
            let lane = l.split("lane=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|n| n.parse().ok());
            let count = l.rsplit(' ').next().and_then(|n| n.parse().ok());
            (lane.expect("a lane label"), count.expect("a count"))
        })
        .collect();
    lanes.sort();
    lanes.into_iter().map(|(_, n)| n).collect()
}

#[test]
fn a_lane_held_by_a_long_answer_gets_few_new_requests() {
    if !prerequisites() {
        return;
    }
    // One host, two lanes to each router.
    let fabric = Fabric::start("router-lanes", 1);
    wait_for("the router to learn the app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/demo/hello", None).status == 200
    });
    let quic = fabric.routers[0].1;
    assert_eq!(lane_requests(&fabric, 0, quic).len(), 2, "two lanes to the router");
    // A long generation holds one lane.
    let conn = long_generation(&fabric, 0);
    let before = lane_requests(&fabric, 0, quic);
    for _ in 0..20 {
        let r = fabric.call(0, "GET", "/fn/demo/hello", None);
        assert_eq!((r.status, r.text().as_str()), (200, "hello from wasmesh\n"));
    }
    assert!(fabric.host_health(0)["in_flight"].as_u64().unwrap_or(0) > 0, "the generation still runs");
    let after = lane_requests(&fabric, 0, quic);
    let took: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(took.iter().sum::<u64>(), 20, "every hello went to a lane of this router: {took:?}");
    // Taken in turn, each lane would get 10; by answers in flight, the free lane gets them
    // (at most a few may see both lanes busy, as a hello's count ends a moment after its answer).
    assert!(took.iter().min().is_some_and(|&n| n <= 3), "the generation's lane took {took:?} of 20 hellos");
    drop(conn);
}

#[test]
fn a_stream_whose_host_dies_ends_with_an_error_event_not_a_hang() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("router-stream", 2);
    wait_for("the routers to learn the app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/demo/hello", None).status == 200
    });
    let (router, invoke) = (fabric.routers[0].0.addr, fabric.invoke.clone());
    // Read the stream as it comes, and say when the first token has arrived.
    let (first_token, got_first) = std::sync::mpsc::channel();
    let stream = std::thread::spawn(move || {
        use std::io::Read;
        let mut conn = send_long_chat(router, &invoke, true);
        let (mut seen, mut buf, mut told) = (Vec::new(), [0u8; 4096], false);
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            if !told && String::from_utf8_lossy(&seen).contains("data: {\"text\"") {
                told = true;
                let _ = first_token.send(());
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    // Once tokens stream, kill the host generating them.
    got_first.recv_timeout(Duration::from_secs(120)).expect("tokens began to stream");
    let serving = (0..2).find(|i| fabric.host_health(*i)["in_flight"].as_u64().unwrap_or(0) > 0);
    let killed = Instant::now();
    fabric.hosts[serving.expect("a host is serving the stream")].as_mut().unwrap().kill9();
    let text = stream.join().unwrap();
    let after_kill = killed.elapsed();
    assert!(text.starts_with("HTTP/1.1 200"), "the stream had started: {text}");
    assert!(text.contains("data: {\"text\""), "tokens arrived before the kill: {text}");
    // (The raw response is chunked: look at the events, not the framing.)
    assert!(
        text.rfind("event: error") > text.rfind("data: {\"text\""),
        "the stream ends with an error event after its tokens: {text}"
    );
    assert!(after_kill < Duration::from_secs(30), "the stream ended {after_kill:?} after the kill");
    // The other host still serves.
    assert_eq!(fabric.call(0, "GET", "/fn/demo/hello", None).status, 200);
}

#[test]
fn a_private_app_runs_only_on_its_network_and_public_apps_never_there() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("router-network", 1);
    // A second host whose provider key puts it in network "acme".
    let rt = runtime();
    let admin = Client::new(&fabric.registry_url(), Some(fabric.admin.clone())).unwrap();
    let acme = rt.block_on(admin.create_network_key("acme-host", &[Scope::Provider], "acme")).unwrap();
    assert_eq!(acme.info.network.as_deref(), Some("acme"));
    fabric.provider = acme.key;
    fabric.host_addrs.push(free_addr());
    fabric.hosts.push(None);
    fabric.start_host(1);
    fabric.wait_for_hosts(2);
    // The private app.
    let app = fabric.dir.join("private");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(components_dir().join("hello.wasm"), app.join("hello.wasm")).unwrap();
    std::fs::write(
        app.join("wasmesh.toml"),
        "[app]\nname = \"private\"\nnetwork = \"acme\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    )
    .unwrap();
    // Only a key of the account that owns the network may deploy to it.
    rt.block_on(admin.create_account("other")).unwrap();
    let other = wasmesh_api::wire::CreateKey {
        name: "deploy".into(),
        scopes: vec![Scope::Deploy],
        network: None,
        account: Some("other".into()),
    };
    let public_deployer = rt.block_on(admin.create_key_with(&other)).unwrap().key;
    let client = Client::new(&fabric.registry_url(), Some(public_deployer)).unwrap();
    match rt.block_on(client.deploy(&app.join("wasmesh.toml"), &wasmesh_client::NoProgress)) {
        Err(wasmesh_client::ClientError::Api { status: 403, .. }) => {}
        other => panic!("another account's key deployed to a private network: {other:?}"),
    }
    let deployer = rt.block_on(admin.create_network_key("acme-deploy", &[Scope::Deploy], "acme")).unwrap().key;
    let client = Client::new(&fabric.registry_url(), Some(deployer)).unwrap();
    rt.block_on(client.deploy(&app.join("wasmesh.toml"), &wasmesh_client::NoProgress)).unwrap();
    wait_for("the router to learn the private app", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/private/hello", None).status == 200
    });
    wait_for("the public app", Duration::from_secs(30), || fabric.call(0, "GET", "/fn/demo/hello", None).status == 200);
    let served = |i: usize| fabric.host_health(i)["served"].as_u64().unwrap();
    let before = (served(0), served(1));
    for i in 0..20 {
        assert_eq!(fabric.call(i % 2, "GET", "/fn/private/hello", None).status, 200);
    }
    let mid = (served(0), served(1));
    assert_eq!(mid.0, before.0, "the public host served a private request");
    assert_eq!(mid.1, before.1 + 20, "the acme host served every private request");
    for i in 0..20 {
        assert_eq!(fabric.call(i % 2, "GET", "/fn/demo/hello", None).status, 200);
    }
    let after = (served(0), served(1));
    assert_eq!(after.1, mid.1, "the acme host served a public request");
    assert_eq!(after.0, mid.0 + 20);
    // Each host loaded only its own network's apps.
    let apps = |i: usize| -> Vec<String> {
        let health = fabric.host_health(i);
        let mut apps: Vec<String> =
            health["routes"].as_array().unwrap().iter().map(|r| r["app"].as_str().unwrap().to_string()).collect();
        apps.sort();
        apps.dedup();
        apps
    };
    assert_eq!(apps(1), ["private"], "the acme host serves only the acme app");
    assert!(!apps(0).contains(&"private".to_string()), "the public host got the private app: {:?}", apps(0));
    // With the acme host gone, the private app is refused, not sent elsewhere.
    fabric.hosts[1].as_mut().unwrap().kill9();
    wait_for("the router to drop the acme host", Duration::from_secs(30), || {
        fabric.call(0, "GET", "/fn/private/hello", None).status == 503
    });
    let r = fabric.call(0, "GET", "/fn/private/hello", None);
    assert!(r.text().contains("private network 'acme'"), "{}", r.text());
}

#[test]
fn revoking_a_providers_key_takes_its_node_out_of_routing() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("router-revoke", 1);
    let rt = runtime();
    let admin = Client::new(&fabric.registry_url(), Some(fabric.admin.clone())).unwrap();
    let second = rt.block_on(admin.create_key("second-provider", &[Scope::Provider])).unwrap();
    fabric.provider = second.key;
    fabric.host_addrs.push(free_addr());
    fabric.hosts.push(None);
    fabric.start_host(1);
    fabric.wait_for_hosts(2);
    wait_for("the app", Duration::from_secs(30), || fabric.call(0, "GET", "/fn/demo/hello", None).status == 200);
    rt.block_on(admin.revoke_key(&second.info.id)).unwrap();
    // Its heartbeats now fail; the registry marks it offline; the routers stop using it.
    wait_for("the routers to drop the revoked node", Duration::from_secs(30), || {
        fabric
            .routers
            .iter()
            .all(|(r, _)| request(r.addr, "GET", "/health", &[], None).is_ok_and(|h| h.json()["ready"] == 1))
    });
    let served = |i: usize| fabric.host_health(i)["served"].as_u64().unwrap();
    let before = served(1);
    for i in 0..20 {
        assert_eq!(fabric.call(i % 2, "GET", "/fn/demo/hello", None).status, 200);
    }
    assert_eq!(served(1), before, "the node of the revoked key still got requests");
}

/// A request to the router from `source` (a loopback address of its own), with `key`.
fn get_from(source: &str, router: SocketAddr, path: &str, key: &str) -> u16 {
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(router).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {router}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let text = String::from_utf8_lossy(&answer);
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {text}"))
    })
}

#[test]
fn bad_secrets_sent_through_a_router_do_not_lock_the_keys_owner_out() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("router-lockout");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
    let url = format!("http://{}", registry.addr);
    let client = Client::new(&url, Some(admin.clone())).unwrap();
    let victim = runtime().block_on(client.create_key("victim", &[Scope::Invoke])).unwrap().key;
    // A router key (not admin) vouches for its callers' addresses.
    let router_key = runtime().block_on(client.create_key("router", &[Scope::Router])).unwrap().key;
    let (mut router, _) = wasmesh_tests::spawn_router(&dir, "router", &url, &router_key);
    router.wait_ready(Duration::from_secs(60));
    let id = victim.split('_').nth(1).unwrap();
    // Someone who knows the victim's key id, from another address, tries six secrets.
    for i in 0..6 {
        let forged = format!("wsk_{id}_{}", format!("{i:x}").repeat(40).chars().take(40).collect::<String>());
        let status = get_from("127.0.0.2", router.addr, "/v1/models", &forged);
        assert!(status == 401 || status == 429, "a forged secret got {status}");
    }
    // The attacker's address is locked for that key id; the owner's is not.
    assert_eq!(get_from("127.0.0.2", router.addr, "/v1/models", &victim), 429, "the attacker's address stays locked");
    assert_eq!(get_from("127.0.0.1", router.addr, "/v1/models", &victim), 200, "the owner was locked out");
    // Only a router may name a caller's address to the registry.
    let r = request(
        registry.addr,
        "GET",
        "/v1/whoami",
        &[("Authorization", &format!("Bearer {victim}")), ("x-wasmesh-caller-addr", "10.0.0.1")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// How many files this process may open (the soft limit in `/proc/self/limits`).
fn open_file_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Max open files"))?.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

#[test]
fn slowloris_connections_are_cut_off_and_real_callers_are_served() {
    if !prerequisites() {
        return;
    }
    let fabric = Fabric::start("router-slowloris", 1);
    wait_for("the app", Duration::from_secs(30), || fabric.call(0, "GET", "/fn/demo/hello", None).status == 200);
    let router = fabric.routers[0].0.addr;
    let before = fabric.routers[0].0.rss_bytes();
    // Thousands of connections (as many as this machine's file limit allows, both ends
    // on it) each sending a request head one byte at a time, never finishing it.
    let n = (open_file_limit() / 3).clamp(500, 3000) as usize;
    let mut trickling: Vec<std::net::TcpStream> = (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(router).unwrap();
            std::io::Write::write_all(&mut s, b"GET /fn/demo/hello HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut served = 0;
    let mut peak = before;
    while started.elapsed() < Duration::from_secs(13) {
        for s in trickling.iter_mut() {
            let _ = std::io::Write::write_all(s, b"X");
        }
        assert_eq!(fabric.call(0, "GET", "/fn/demo/hello", None).status, 200, "a real caller was not served");
        served += 1;
        peak = peak.max(fabric.routers[0].0.rss_bytes());
        std::thread::sleep(Duration::from_millis(500));
    }
    // The router cut every one of them off at its header deadline (10 s).
    let mut open = 0;
    for s in &mut trickling {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 256];
        // Closed: end of stream (or a reset). Still open: the read times out.
        if let Err(e) = std::io::Read::read(s, &mut buf)
            && matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        {
            open += 1;
        }
    }
    let bound = 256u64 << 20;
    eprintln!(
        "slowloris: {n} connections, {served} real requests served, router RSS {} MiB -> peak {} MiB",
        before >> 20,
        peak >> 20
    );
    assert_eq!(open, 0, "connections still open after the header deadline");
    assert!(peak < before + bound, "router memory grew by {} MiB (bound {} MiB)", (peak - before) >> 20, bound >> 20);
}

#[test]
fn a_rogue_host_cannot_open_streams_or_fill_the_routers_memory() {
    if !prerequisites() {
        return;
    }
    let fabric = Fabric::start("router-rogue", 1);
    wait_for("the app", Duration::from_secs(30), || fabric.call(0, "GET", "/fn/demo/hello", None).status == 200);
    let before = fabric.routers[0].0.rss_bytes();
    // A real, registered host identity (an authenticated provider gone rogue).
    let client = Client::new(&fabric.registry_url(), Some(fabric.provider.clone())).unwrap();
    let me = wasmesh_client::NodeIdentity::generate();
    let cert = runtime().block_on(client.register_node(&me, "rogue")).unwrap();
    let identity = wasmesh_tunnel::TlsIdentity::new(&cert.certificate_pem, &me.pkcs8_der(), &cert.ca_pem).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (bidi, uni, flooded) = rt.block_on(async {
        let endpoint = wasmesh_tunnel::host_endpoint(&identity).unwrap();
        let connection = endpoint
            .connect(fabric.routers[0].1, wasmesh_tunnel::ROUTER_NAME)
            .unwrap()
            .await
            .expect("it is a real host");
        // Every stream it can: the router grants no bidirectional stream and two
        // unidirectional ones.
        let wait = Duration::from_millis(500);
        let bidi = tokio::time::timeout(wait, connection.open_bi()).await.is_ok();
        let mut streams = Vec::new();
        while let Ok(Ok(s)) = tokio::time::timeout(wait, connection.open_uni()).await {
            streams.push(s);
            if streams.len() > 100 {
                break;
            }
        }
        // Flood them: 256 MiB each, as fast as the router lets it.
        let mut flooded = 0u64;
        let chunk = vec![0x5au8; 1 << 20];
        for s in &mut streams {
            for _ in 0..256 {
                match tokio::time::timeout(Duration::from_millis(300), s.write_all(&chunk)).await {
                    Ok(Ok(())) => flooded += chunk.len() as u64,
                    _ => break,
                }
            }
        }
        (bidi, streams.len(), flooded)
    });
    let after = fabric.routers[0].0.rss_bytes();
    eprintln!(
        "rogue host: bidi granted {bidi}, uni granted {uni}, {} MiB written, router RSS {} -> {} MiB",
        flooded >> 20,
        before >> 20,
        after >> 20
    );
    assert!(!bidi, "the router granted a host a bidirectional stream");
    assert!(uni <= 2, "the router granted {uni} unidirectional streams");
    assert!(flooded < 512 << 20, "the router took {} MiB from one link", flooded >> 20);
    assert!(after < before + (256 << 20), "router memory grew by {} MiB", (after - before) >> 20);
    for _ in 0..10 {
        assert_eq!(fabric.call(0, "GET", "/fn/demo/hello", None).status, 200, "a real caller was not served");
    }
}
