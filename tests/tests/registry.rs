//! The registry and the CLI, end to end, across real processes: `wasmesh
//! registry`, `wasmesh host --registry`, `wasmesh deploy`, against SQLite and the
//! local filesystem (the default) and against PostgreSQL and an S3-compatible
//! server (s3s-fs, started here; both installed by deploy/setup.sh).

use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmesh_api::wire::{ArtifactKind, Heartbeat, Scope};
use wasmesh_client::{Client, ClientError, NoProgress, NodeIdentity};
use wasmesh_tests::{
    Payload, Process, S3Server, components_dir, free_addr, lora_path, model_path, prerequisites, request, runtime,
    scratch, skip_or_fail, wait_for, wasmesh_bin,
};

/// Where state lives.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    /// SQLite and the local filesystem under the data directory.
    Default,
    /// PostgreSQL (a fresh database) and s3s-fs.
    PostgresS3,
}

/// A registry process and what it needs.
struct Registry {
    process: Process,
    admin: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: PathBuf,
    _pg: Option<wasmesh_tests::Postgres>,
    _s3: Option<S3Server>,
}

impl Registry {
    fn start(backend: Backend, dir: &Path, _tag: &str) -> Option<Self> {
        let addr = free_addr();
        let key_file = dir.join("admin.key");
        let mut args = wasmesh_tests::registry_args(addr, dir, &[]);
        let mut envs = Vec::new();
        let (mut pg, mut s3) = (None, None);
        if backend == Backend::PostgresS3 {
            // A PostgreSQL server of this test's own, started here.
            let db = match wasmesh_tests::Postgres::start(&dir.join("pg")) {
                Ok(db) => db,
                Err(e) => {
                    skip_or_fail(&format!("cannot start PostgreSQL: {e}"));
                    return None;
                }
            };
            eprintln!("PostgreSQL started by the harness: {}", db.url);
            let server = S3Server::start(dir)?;
            args.extend(["--database".into(), db.url.clone(), "--store".into(), S3Server::store_url(server.addr())]);
            envs.extend(S3Server::credentials().map(|(k, v)| (k.to_string(), v.to_string())));
            pg = Some(db);
            s3 = Some(server);
        }
        let mut registry = Self {
            process: Self::spawn(&args, &envs, addr, dir),
            admin: String::new(),
            args,
            envs,
            dir: dir.to_owned(),
            _pg: pg,
            _s3: s3,
        };
        registry.process.wait_ready(Duration::from_secs(60));
        registry.admin = std::fs::read_to_string(key_file).expect("admin key file").trim().to_string();
        Some(registry)
    }

    fn spawn(args: &[String], envs: &[(String, String)], addr: SocketAddr, dir: &Path) -> Process {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Process::spawn_program(&wasmesh_bin(), &args, &envs, addr, dir.join("registry.log"))
    }

    /// Kill -9, then start again on the same state.
    fn crash_and_restart(&mut self) {
        self.process.kill9();
        let addr = self.process.addr;
        self.process = Self::spawn(&self.args, &self.envs, addr, &self.dir);
        self.process.wait_ready(Duration::from_secs(60));
    }

    fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    fn client(&self, key: &str) -> Client {
        Client::new(&self.url(), Some(key.to_string())).unwrap()
    }

    fn key(&self, scopes: &[Scope]) -> String {
        runtime().block_on(self.client(&self.admin).create_key("test", scopes)).unwrap().key
    }

    /// Runs `wasmesh ARGS --registry URL --key KEY --json`; returns stdout, or the exit code and stderr.
    fn cli(&self, key: &str, args: &[&str]) -> Result<serde_json::Value, (i32, String)> {
        let out = Command::new(wasmesh_bin())
            .args(args)
            .args(["--registry", &self.url(), "--key", key, "--json"])
            .env("WASMESH_CONFIG", self.dir.join("no-config.toml"))
            .output()
            .unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))))
        } else {
            Err((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
        }
    }
}

/// Writes the demo manifest (v1) or one with an extra `/v2` route (v2) next to
/// copies of the components.
fn demo_manifest(dir: &Path, v2: bool) -> PathBuf {
    let app = dir.join(if v2 { "app-v2" } else { "app-v1" });
    std::fs::create_dir_all(&app).unwrap();
    for c in ["chat", "hello"] {
        std::fs::copy(components_dir().join(format!("{c}.wasm")), app.join(format!("{c}.wasm"))).unwrap();
    }
    let mut text = String::from(
        "[app]\nname = \"demo\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [\"smollm2\"]\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
    );
    if v2 {
        text.push_str("\n[[route]]\npath = \"/v2\"\ncomponent = \"hello\"\n");
    }
    let path = app.join("wasmesh.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn status(addr: SocketAddr, path: &str) -> u16 {
    request(addr, "GET", path, &[], None).map(|r| r.status).unwrap_or(0)
}

fn deploy_call_update_and_roll_back(backend: Backend, tag: &str) {
    if !prerequisites() {
        return;
    }
    let dir = scratch(tag);
    let Some(registry) = Registry::start(backend, &dir, tag) else { return };
    let deployer = registry.key(&[Scope::Deploy]);
    let provider = registry.key(&[Scope::Provider]);

    let host_addr = free_addr();
    let model = format!("smollm2={}", model_path().display());
    let mut host = Process::spawn(
        &[
            "host",
            "--listen",
            &host_addr.to_string(),
            "--registry",
            &registry.url(),
            "--key",
            &provider,
            "--data",
            dir.join("host").to_str().unwrap(),
            "--name",
            "test-host",
            "--heartbeat-secs",
            "1",
            "--model",
            &model,
            "--slots",
            "2",
            "--threads",
            "1",
        ],
        host_addr,
        dir.join("host.log"),
    );
    host.wait_ready(Duration::from_secs(60));

    // Deploy v1 with the CLI; the host picks it up.
    let v1 = registry.cli(&deployer, &["deploy", "-f", demo_manifest(&dir, false).to_str().unwrap()]).unwrap();
    assert_eq!(v1["version"], 1, "{v1}");
    wait_for("the host to serve v1", Duration::from_secs(30), || status(host_addr, "/fn/demo/hello") == 200);
    let chat = wasmesh_tests::post_json(
        host_addr,
        "/fn/demo/chat",
        &serde_json::json!({ "prompt": "What is the capital of France?", "max_tokens": 12, "temperature": 0, "chat": true }),
    );
    assert_eq!(chat.status, 200, "{}", chat.text());
    let text = chat.json()["text"].as_str().unwrap_or_default().to_string();
    assert!(!text.trim().is_empty(), "no generated text: {}", chat.text());
    assert_eq!(status(host_addr, "/fn/demo/v2"), 404);

    // Requests run throughout the update and the rollback; none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match request(host_addr, "GET", "/fn/demo/hello", &[], None) {
                    Ok(r) if r.status == 200 && r.text() == "hello from wasmesh\n" => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        })
    };
    let v2 = registry.cli(&deployer, &["deploy", "-f", demo_manifest(&dir, true).to_str().unwrap()]).unwrap();
    assert_eq!(v2["version"], 2);
    wait_for("the host to serve v2", Duration::from_secs(30), || status(host_addr, "/fn/demo/v2") == 200);
    let rolled = registry.cli(&deployer, &["rollback", "demo", "1"]).unwrap();
    assert_eq!(rolled["current_version"], 1, "{rolled}");
    wait_for("the host to roll back to v1", Duration::from_secs(30), || status(host_addr, "/fn/demo/v2") == 404);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let failures = load.join().unwrap();
    assert!(failures.is_empty(), "requests failed during the update: {failures:?}");
    assert!(served.load(Ordering::Relaxed) > 10, "too few requests ran during the update");

    let versions = registry.cli(&deployer, &["apps", "versions", "demo"]).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2);
    let apps = registry.cli(&deployer, &["apps", "ls"]).unwrap();
    assert_eq!(apps[0]["current_version"], 1);

    // The host registered and heartbeats, with its hardware and models.
    wait_for("the node to be online", Duration::from_secs(20), || {
        let nodes = registry.cli(&registry.admin, &["nodes", "ls"]).unwrap();
        nodes[0]["status"] == "online"
    });
    let nodes = registry.cli(&registry.admin, &["nodes", "ls"]).unwrap();
    let node = &nodes[0];
    assert_eq!(node["name"], "test-host");
    assert!(node["heartbeat"]["hardware"]["cpu_cores"].as_u64().unwrap() >= 1);
    assert!(node["heartbeat"]["hardware"]["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(node["heartbeat"]["models"][0]["name"], "smollm2");
    assert_eq!(node["heartbeat"]["models"][0]["state"], "loaded", "the chat request loaded it: {node}");
    assert!(dir.join("host/node.pem").is_file(), "the host keeps the certificate the registry issued");

    // A node that stops heartbeating goes offline.
    drop(host);
    wait_for("the node to go offline", Duration::from_secs(60), || {
        registry.cli(&registry.admin, &["nodes", "ls"]).unwrap()[0]["status"] == "offline"
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_call_update_and_roll_back_on_sqlite() {
    deploy_call_update_and_roll_back(Backend::Default, "deploy-sqlite");
}

#[test]
fn deploy_call_update_and_roll_back_on_postgres_and_s3() {
    deploy_call_update_and_roll_back(Backend::PostgresS3, "deploy-pg");
}

fn hello_manifest(i: usize) -> String {
    format!(
        "[app]\nname = \"churn\"\ndescription = \"deploy {i}\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n"
    )
}

fn acknowledged_deploys_survive_kill_9(backend: Backend, tag: &str) {
    if !prerequisites() {
        return;
    }
    let dir = scratch(tag);
    let Some(mut registry) = Registry::start(backend, &dir, tag) else { return };
    let deployer = registry.key(&[Scope::Deploy]);
    let rt = runtime();
    let client = registry.client(&deployer);
    let hello = Bytes::from(std::fs::read(components_dir().join("hello.wasm")).unwrap());
    let blob = rt.block_on(client.upload_bytes(hello, ArtifactKind::Component)).unwrap();
    let components = std::collections::BTreeMap::from([("hello".to_string(), blob.blake3.clone())]);

    // Deploy as fast as the registry acknowledges, and kill it mid-run.
    let acked = Arc::new(AtomicU64::new(0));
    let deploys = {
        let (acked, components) = (acked.clone(), components.clone());
        // Its own client: a reqwest connection belongs to the runtime that opened it.
        let client = registry.client(&deployer);
        std::thread::spawn(move || {
            let rt = runtime();
            let mut acknowledged = Vec::new();
            for i in 1..=100 {
                match rt.block_on(client.deploy_uploaded("churn", &hello_manifest(i), components.clone())) {
                    Ok(v) => {
                        acknowledged.push((i, v.version));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return (acknowledged, i, Some(e.to_string())),
                }
            }
            (acknowledged, 101, None)
        })
    };
    // Deploys take about a millisecond each on SQLite: watch closely and kill the
    // moment the 40th is acknowledged, while the next ones are in flight.
    let started = Instant::now();
    while acked.load(Ordering::SeqCst) < 40 && !deploys.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(120), "timed out waiting for 40 deploys");
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(
        !deploys.is_finished(),
        "deploys stopped early: {:?}\n{}",
        deploys.join().unwrap().2,
        registry.process.log()
    );
    registry.crash_and_restart();
    let (acknowledged, next, error) = deploys.join().unwrap();
    assert!(next <= 100, "the kill did not interrupt the run");
    eprintln!("killed the registry after {} acknowledged deploys; the next failed with: {error:?}", acknowledged.len());
    // A new client: the old one's pooled connections died with the process.
    let client = registry.client(&deployer);

    let versions = rt.block_on(client.versions("churn")).unwrap();
    // Every acknowledged deploy is there, whole, with its own manifest.
    for (i, version) in &acknowledged {
        let v = versions
            .iter()
            .find(|v| v.version == *version)
            .unwrap_or_else(|| panic!("acknowledged version {version} is lost"));
        assert_eq!(v.manifest, hello_manifest(*i));
        assert_eq!(v.components, components);
    }
    // Nothing half-written: versions are 1..=N with at most the one in flight beyond those acknowledged.
    let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    assert!(
        numbers.len() <= acknowledged.len() + 1,
        "{} versions for {} acknowledged",
        numbers.len(),
        acknowledged.len()
    );
    for v in &versions {
        assert!(v.manifest.contains("deploy "), "version {} has a broken manifest", v.version);
    }
    let app = rt.block_on(client.apps()).unwrap().into_iter().find(|a| a.name == "churn").unwrap();
    assert_eq!(app.current_version, numbers.len() as u64);
    assert_eq!(app.versions, numbers.len() as u64);
    // The artifact is intact, and deploying goes on where it stopped.
    let back = dir.join("hello-back.wasm");
    rt.block_on(client.download(&blob.blake3, &back, &NoProgress)).unwrap();
    for i in next..=100 {
        rt.block_on(client.deploy_uploaded("churn", &hello_manifest(i), components.clone())).unwrap();
    }
    assert_eq!(rt.block_on(client.versions("churn")).unwrap().len(), numbers.len() + (101 - next));
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acknowledged_deploys_survive_kill_9_on_sqlite() {
    acknowledged_deploys_survive_kill_9(Backend::Default, "kill-sqlite");
}

#[test]
fn acknowledged_deploys_survive_kill_9_on_postgres_and_s3() {
    acknowledged_deploys_survive_kill_9(Backend::PostgresS3, "kill-pg");
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api { status, code, message }) => (status, code, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn bad_inputs_are_refused_and_change_nothing(backend: Backend, tag: &str) {
    if !prerequisites() {
        return;
    }
    let dir = scratch(tag);
    let Some(registry) = Registry::start(backend, &dir, tag) else { return };
    let rt = runtime();
    let deployer = registry.key(&[Scope::Deploy]);
    let client = registry.client(&deployer);
    let components = components_dir();

    // Keys: none, wrong, without the scope.
    let anonymous = Client::new(&registry.url(), None).unwrap();
    assert_eq!(api_error(rt.block_on(anonymous.apps())).0, 401);
    let wrong = registry.client("wsk_000000000000_notakey");
    assert_eq!(api_error(rt.block_on(wrong.apps())).0, 401);
    let invoker = registry.client(&registry.key(&[Scope::Invoke]));
    let (status, code, message) = api_error(rt.block_on(invoker.apps()));
    assert_eq!((status, code.as_str()), (403, "missing_scope"), "{message}");
    assert!(message.contains("--scope deploy"), "{message}");
    // The CLI's exit code says what kind of failure it was.
    let (exit, stderr) = registry.cli("wsk_000000000000_notakey", &["apps", "ls"]).unwrap_err();
    assert_eq!(exit, 3, "{stderr}");

    let deploy = |manifest: &str, blob: &str| {
        let components = std::collections::BTreeMap::from([("web".to_string(), blob.to_string())]);
        rt.block_on(client.deploy_uploaded("bad", manifest, components))
    };
    let manifest = "[app]\nname = \"bad\"\n\n[component.web]\nsource = \"web.wasm\"\n\n[[route]]\npath = \"/\"\ncomponent = \"web\"\n";

    // Not a component: text, then a core module.
    let text =
        rt.block_on(client.upload_bytes(Bytes::from_static(b"hello, not wasm"), ArtifactKind::Component)).unwrap();
    let (status, code, message) = api_error(deploy(manifest, &text.blake3));
    assert_eq!((status, code.as_str()), (400, "invalid_component"));
    assert!(message.contains("not a WebAssembly file"), "{message}");
    let core =
        rt.block_on(client.upload_bytes(Bytes::from_static(b"\0asm\x01\0\0\0"), ArtifactKind::Component)).unwrap();
    let (_, _, message) = api_error(deploy(manifest, &core.blake3));
    assert!(message.contains("core WebAssembly module"), "{message}");
    // A component that imports an interface no host provides.
    let unknown = Bytes::from(std::fs::read(components.join("unknown_import.wasm")).unwrap());
    let unknown = rt.block_on(client.upload_bytes(unknown, ArtifactKind::Component)).unwrap();
    let (status, code, message) = api_error(deploy(manifest, &unknown.blake3));
    assert_eq!((status, code.as_str()), (400, "invalid_component"));
    assert!(message.contains("example:unknown/frobnicator"), "{message}");

    // Manifests: an unknown key, a typo'd field, a route to nothing.
    let hello = Bytes::from(std::fs::read(components.join("hello.wasm")).unwrap());
    let hello = rt.block_on(client.upload_bytes(hello, ArtifactKind::Component)).unwrap().blake3;
    for (bad, expect) in [
        (format!("{manifest}\n[extra]\nx = 1\n"), "extra"),
        (manifest.replace("source = \"web.wasm\"", "source = \"web.wasm\"\nmodles = [\"smollm2\"]"), "modles"),
        (manifest.replace("component = \"web\"", "component = \"webb\""), "webb"),
    ] {
        let (status, code, message) = api_error(deploy(&bad, &hello));
        assert_eq!((status, code.as_str()), (400, "invalid_manifest"), "{message}");
        assert!(message.contains(expect), "message should name '{expect}': {message}");
    }
    // Bad JSON and unknown JSON fields.
    let addr = registry.process.addr;
    let auth = format!("Bearer {deployer}");
    let r = request(
        addr,
        "POST",
        "/v1/apps/bad/versions",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(Payload::Sized(b"{not json")),
    )
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        addr,
        "POST",
        "/v1/models",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(Payload::Sized(br#"{"name": "x", "blake3": "00", "colour": "red"}"#)),
    )
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("colour"), "{}", r.text());

    // A model that is not GGUF, via the CLI.
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let (exit, stderr) =
        registry.cli(&deployer, &["models", "push", junk.to_str().unwrap(), "--name", "junk"]).unwrap_err();
    assert_eq!(exit, 5, "{stderr}");
    assert!(stderr.contains("not a GGUF file"), "{stderr}");

    // The real model and adapter go in; an adapter with the wrong shapes does not.
    let model =
        registry.cli(&deployer, &["models", "push", model_path().to_str().unwrap(), "--name", "smollm2"]).unwrap();
    assert_eq!(model["facts"]["architecture"], "llama");
    assert_eq!(model["facts"]["quantization"], "Q4_1");
    assert_eq!(model["min_warm"], 0, "a new model is not pinned");
    // Pins: set, refused out of range or for an unknown model, cleared.
    let pinned = registry.cli(&deployer, &["models", "pin", "smollm2", "--min-warm", "2"]).unwrap();
    assert_eq!(pinned["min_warm"], 2);
    let (exit, stderr) = registry.cli(&deployer, &["models", "pin", "smollm2", "--min-warm", "5000"]).unwrap_err();
    assert_eq!(exit, 5, "{stderr}");
    assert!(stderr.contains("min_warm must be"), "{stderr}");
    let (exit, stderr) = registry.cli(&deployer, &["models", "pin", "nope", "--min-warm", "1"]).unwrap_err();
    assert_eq!(exit, 4, "{stderr}");
    let listed = registry.cli(&deployer, &["models", "ls"]).unwrap();
    assert_eq!(listed[0]["min_warm"], 2, "{listed}");
    assert_eq!(registry.cli(&deployer, &["models", "unpin", "smollm2"]).unwrap()["min_warm"], 0);
    let wrong = dir.join("wrong-lora.gguf");
    wasmesh_gguf::fixture::write_gguf(
        &wrong,
        &[
            ("general.architecture", wasmesh_gguf::Value::String("llama".into())),
            ("general.type", wasmesh_gguf::Value::String("adapter".into())),
            ("adapter.type", wasmesh_gguf::Value::String("lora".into())),
        ],
        &[("blk.0.attn_q.weight.lora_a", &[960, 8], 0), ("blk.0.attn_q.weight.lora_b", &[8, 960], 0)],
    )
    .unwrap();
    let (exit, stderr) = registry
        .cli(&deployer, &["loras", "push", wrong.to_str().unwrap(), "--base", "smollm2", "--name", "wrong"])
        .unwrap_err();
    assert_eq!(exit, 5, "{stderr}");
    assert!(stderr.contains("blk.0.attn_q.weight"), "{stderr}");
    let (exit, stderr) = registry
        .cli(&deployer, &["loras", "push", lora_path(1).to_str().unwrap(), "--base", "no-such-model", "--name", "x"])
        .unwrap_err();
    assert_eq!(exit, 4, "{stderr}");
    let lora = registry
        .cli(&deployer, &["loras", "push", lora_path(1).to_str().unwrap(), "--base", "smollm2", "--name", "test-one"])
        .unwrap();
    assert_eq!(lora["rank"], 8);

    // Nothing of the refused inputs stuck.
    assert!(rt.block_on(client.apps()).unwrap().is_empty(), "a refused deploy created an app");
    let models: Vec<String> = rt.block_on(client.models()).unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(models, ["smollm2"]);
    let loras: Vec<String> = rt.block_on(client.loras()).unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(loras, ["test-one"]);

    // Repeated failures lock a key out, even for its right secret.
    let victim = registry.key(&[Scope::Deploy]);
    let id = &victim[4..16];
    for _ in 0..5 {
        assert_eq!(api_error(rt.block_on(registry.client(&format!("wsk_{id}_wrongsecret")).apps())).0, 401);
    }
    let (status, _, message) = api_error(rt.block_on(registry.client(&victim).apps()));
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("locked"), "{message}");

    // The registry is still up and answers normal requests.
    assert_eq!(status_with(addr, "/health"), 200);
    assert!(rt.block_on(client.apps()).is_ok());
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

fn status_with(addr: SocketAddr, path: &str) -> u16 {
    status(addr, path)
}

#[test]
fn bad_inputs_are_refused_and_change_nothing_on_sqlite() {
    bad_inputs_are_refused_and_change_nothing(Backend::Default, "bad-sqlite");
}

#[test]
fn bad_inputs_are_refused_and_change_nothing_on_postgres_and_s3() {
    bad_inputs_are_refused_and_change_nothing(Backend::PostgresS3, "bad-pg");
}

#[test]
fn a_stolen_node_identity_is_refused() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("identity");
    let Some(registry) = Registry::start(Backend::Default, &dir, "identity") else { return };
    let rt = runtime();
    let provider = registry.client(&registry.key(&[Scope::Provider]));
    let real = NodeIdentity::generate();
    let thief = NodeIdentity::generate();
    let cert = rt.block_on(provider.register_node(&real, "real")).unwrap();
    assert!(cert.certificate_pem.contains("BEGIN CERTIFICATE"));
    assert!(cert.ca_pem.contains("BEGIN CERTIFICATE"));
    rt.block_on(provider.heartbeat(&real, &Heartbeat { ready: true, ..Default::default() })).unwrap();

    // Heartbeats for the real node's id, signed with another key.
    let path = format!("/v1/nodes/{}/heartbeat", real.node_id());
    let body = serde_json::to_vec(&Heartbeat::default()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let signature = thief.sign_hex(&wasmesh_api::wire::request_message("POST", &path, now, &body));
    let auth = format!("Bearer {}", registry.key(&[Scope::Provider]));
    let now_s = now.to_string();
    let r = request(
        registry.process.addr,
        "POST",
        &path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("x-wasmesh-node", real.node_id()),
            ("x-wasmesh-timestamp", &now_s),
            ("x-wasmesh-signature", &signature),
        ],
        Some(Payload::Sized(&body)),
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("identity_mismatch"), "{}", r.text());

    // Registering the real node's id with the thief's key.
    let message = wasmesh_api::wire::registration_message(real.node_id(), &thief.public_key_hex(), now);
    let forged = serde_json::json!({
        "node_id": real.node_id(), "public_key": thief.public_key_hex(), "name": "thief",
        "timestamp_ms": now, "signature": thief.sign_hex(&message),
    });
    let r = request(
        registry.process.addr,
        "POST",
        "/v1/nodes/register",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        Some(Payload::Sized(forged.to_string().as_bytes())),
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());

    // The real node is unaffected.
    let nodes = rt.block_on(provider.nodes()).unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "real");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn registry_serves_openapi_metrics_and_health() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("openapi");
    let Some(registry) = Registry::start(Backend::Default, &dir, "openapi") else { return };
    let addr = registry.process.addr;
    let doc = request(addr, "GET", "/openapi.json", &[], None).unwrap().json();
    assert_eq!(doc["openapi"], "3.0.3");
    // Every documented path exists (answers something other than the fallback's 404).
    let auth = format!("Bearer {}", registry.admin);
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete =
            path.replace("{name}", "demo").replace("{id}", "x").replace("{hash}", "x").replace("{part}", "0");
        for method in ops.as_object().unwrap().keys() {
            let r = request(addr, &method.to_uppercase(), &concrete, &[("Authorization", &auth)], None).unwrap();
            assert!(
                !(r.status == 404 && r.text().contains("no such endpoint")) && r.status != 405,
                "{method} {path} is documented but not served: {} {}",
                r.status,
                r.text()
            );
        }
    }
    let metrics = request(addr, "GET", "/metrics", &[], None).unwrap().text();
    assert!(metrics.contains("wasmesh_registry_requests_total"), "{metrics}");
    assert_eq!(request(addr, "GET", "/health", &[], None).unwrap().json()["database"], "ok");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_runs_the_demo_fabric_through_its_registry_and_router() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("up");
    let (addr, registry_addr, quic) =
        (free_addr(), free_addr(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap());
    let hosts = format!("{},{}", free_addr(), free_addr());
    let mut up = Process::spawn(
        &[
            "up",
            "--listen",
            &addr.to_string(),
            "--registry-listen",
            &registry_addr.to_string(),
            "--quic",
            &quic.to_string(),
            "--hosts",
            &hosts,
            "--data",
            dir.to_str().unwrap(),
            "--slots",
            "1",
            "--threads",
            "1",
        ],
        addr,
        dir.join("up.log"),
    );
    up.wait_ready(Duration::from_secs(120));
    let key = std::fs::read_to_string(dir.join("up-invoke.key")).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    // Through the router: the demo app and the OpenAI API.
    let r = request(addr, "GET", "/fn/demo/hello", &headers, None).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello from wasmesh\n"), "{}", up.log());
    let body = br#"{"prompt": "Say hi.", "max_tokens": 8, "temperature": 0, "chat": true}"#;
    let r = request(addr, "POST", "/fn/demo/chat", &headers, Some(Payload::Sized(body))).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = br#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 4}"#;
    let r = request(addr, "POST", "/v1/chat/completions", &headers, Some(Payload::Sized(body))).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion");
    // Without the key the router refuses.
    assert_eq!(request(addr, "GET", "/fn/demo/hello", &[], None).unwrap().status, 401);
    // The registry is real: the demo's deploy key lists the apps it deployed, and both hosts joined.
    let key = std::fs::read_to_string(dir.join("up-deploy.key")).unwrap();
    let client = Client::new(&format!("http://{registry_addr}"), Some(key)).unwrap();
    let apps: Vec<String> = runtime().block_on(client.apps()).unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(apps, ["demo", "openai"]);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn uploads_resume_where_they_stopped_and_login_remembers_the_registry() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("resume");
    let Some(registry) = Registry::start(Backend::Default, &dir, "resume") else { return };
    let deployer = registry.key(&[Scope::Deploy]);
    let addr = registry.process.addr;
    let auth = format!("Bearer {deployer}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];

    // An interrupted upload of the model: only part 1 arrived.
    let model = std::fs::read(model_path()).unwrap();
    let hash = wasmesh_client::NoProgress;
    let hash = runtime().block_on(wasmesh_client::hash_file(&model_path(), model.len() as u64, &hash)).unwrap();
    let start = serde_json::json!({ "blake3": hash, "size": model.len(), "kind": "model" }).to_string();
    let session =
        request(addr, "POST", "/v1/uploads", &headers, Some(Payload::Sized(start.as_bytes()))).unwrap().json();
    let (id, part_size) =
        (session["id"].as_str().unwrap().to_string(), session["part_size"].as_u64().unwrap() as usize);
    assert!(session["parts"].as_u64().unwrap() > 2, "the model spans several parts");
    let part = &model[part_size..2 * part_size];
    let r =
        request(addr, "PUT", &format!("/v1/uploads/{id}/parts/1"), &headers[..1], Some(Payload::Sized(part))).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // Completing now names the missing parts.
    let r = request(addr, "POST", &format!("/v1/uploads/{id}/complete"), &headers[..1], None).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("have not arrived"), "{}", r.text());

    // `wasmesh login` stores the registry and key; later commands need neither flag.
    let config = dir.join("config.toml");
    let out = Command::new(wasmesh_bin())
        .args(["login", "--registry", &registry.url(), "--key", &deployer])
        .env("WASMESH_CONFIG", &config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600, "the key file is private");
    }
    // The push resumes the same upload and sends only what is missing.
    let out = Command::new(wasmesh_bin())
        .args(["models", "push", model_path().to_str().unwrap(), "--name", "smollm2", "--json"])
        .env("WASMESH_CONFIG", &config)
        .env_remove("WASMESH_REGISTRY")
        .env_remove("WASMESH_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pushed["blake3"], hash);
    assert_eq!(pushed["size"], model.len());
    let pieces = pushed["pieces"]["hashes"].as_array().unwrap();
    let piece_length = pushed["pieces"]["piece_length"].as_u64().unwrap() as usize;
    assert_eq!(pieces.len(), model.len().div_ceil(piece_length));
    assert_eq!(pieces[0], blake3::hash(&model[..piece_length]).to_hex().as_str());
    // Bytes received: the whole model once (part 1 was not sent twice).
    let metrics = request(addr, "GET", "/metrics", &[], None).unwrap().text();
    let received: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmesh_registry_upload_bytes_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert_eq!(received, model.len() as u64, "a resumed upload sends each part once");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hosts_fetch_models_from_the_registry_verified_piece_by_piece() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("fetch");
    let Some(registry) = Registry::start(Backend::Default, &dir, "fetch") else { return };
    let rt = runtime();
    let deployer = registry.client(&registry.key(&[Scope::Deploy]));
    let pushed = rt.block_on(deployer.push_model(&model_path(), "smollm2", &NoProgress)).unwrap();
    let original = std::fs::read(model_path()).unwrap();
    let provider_key = registry.key(&[Scope::Provider]);
    let provider = registry.client(&provider_key);
    let piece = pushed.pieces.piece_length as usize;

    // An interrupted download whose second piece was damaged on disk: the fetch keeps
    // the verified first piece, fetches the rest, and the result is the model.
    let dest = dir.join("models").join(format!("{}.gguf", pushed.blake3));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let mut partial = original[..piece * 2 + piece / 2].to_vec();
    partial[piece + 10] ^= 0xff;
    std::fs::write(dest.with_extension("partial"), &partial).unwrap();
    let path = rt.block_on(provider.fetch_model("smollm2", &dir.join("models"), &NoProgress)).unwrap();
    assert_eq!(path, dest);
    assert!(std::fs::read(&dest).unwrap() == original, "the fetched model differs from the pushed one");

    // The store serves a damaged piece: the fetch refuses it and keeps only what verified.
    let stored = dir.join("registry/artifacts/blobs").join(&pushed.blake3[..2]).join(&pushed.blake3);
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[piece * 3 + 5] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let other = dir.join("other");
    let err = rt.block_on(provider.fetch_model("smollm2", &other, &NoProgress)).unwrap_err();
    assert!(err.to_string().contains("piece 3") && err.to_string().contains("failed verification"), "{err}");
    assert!(!other.join(format!("{}.gguf", pushed.blake3)).exists(), "a damaged model was kept");
    let kept = std::fs::metadata(other.join(format!("{}.partial", pushed.blake3))).unwrap().len();
    assert_eq!(kept, (piece * 3) as u64, "only the verified pieces before the damage are kept");
    std::fs::write(&stored, &original).unwrap();

    // A host started with `--model smollm2` and no path fetches it, and serves chat with it.
    let deploy_key = registry.key(&[Scope::Deploy]);
    registry.cli(&deploy_key, &["deploy", "-f", demo_manifest(&dir, false).to_str().unwrap()]).unwrap();
    let addr = free_addr();
    let mut host = Process::spawn(
        &[
            "host",
            "--listen",
            &addr.to_string(),
            "--registry",
            &registry.url(),
            "--key",
            &provider_key,
            "--data",
            dir.join("host").to_str().unwrap(),
            "--model",
            "smollm2",
            "--threads",
            "1",
        ],
        addr,
        dir.join("host.log"),
    );
    host.wait_ready(Duration::from_secs(120));
    assert!(dir.join("host/models").join(format!("{}.gguf", pushed.blake3)).is_file());
    wait_for("the host to serve the app", Duration::from_secs(30), || status(addr, "/fn/demo/hello") == 200);
    let chat = wasmesh_tests::post_json(
        addr,
        "/fn/demo/chat",
        &serde_json::json!({ "prompt": "Say hi.", "max_tokens": 4, "temperature": 0, "chat": true }),
    );
    assert_eq!(chat.status, 200, "{}", chat.text());
    drop(host);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn abandoned_uploads_are_dropped_with_their_parts() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("ttl");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &["--upload-ttl-secs", "2"]);
    let addr = registry.addr;
    let auth = format!("Bearer {}", admin.trim());
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let data = vec![7u8; 2000];
    let start =
        serde_json::json!({ "blake3": blake3::hash(&data).to_hex().to_string(), "size": 2000, "kind": "component" });
    let session = request(addr, "POST", "/v1/uploads", &headers, Some(Payload::Sized(start.to_string().as_bytes())))
        .unwrap()
        .json();
    let id = session["id"].as_str().unwrap().to_string();
    let r =
        request(addr, "PUT", &format!("/v1/uploads/{id}/parts/0"), &headers[..1], Some(Payload::Sized(&data))).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(dir.join("registry/uploads").join(&id).join("0.part").is_file(), "the part is staged");
    // Never finished: gone after its TTL, staged parts and all.
    // The row goes first, then the staged files: wait for both.
    wait_for("the upload and its staged parts to expire", Duration::from_secs(20), || {
        request(addr, "GET", &format!("/v1/uploads/{id}"), &headers[..1], None).unwrap().status == 404
            && !dir.join("registry/uploads").join(&id).exists()
    });
    // One that keeps sending parts lives past the TTL counted from its start: sessions
    // expire by their last touch.
    let data = vec![8u8; 2000];
    let start =
        serde_json::json!({ "blake3": blake3::hash(&data).to_hex().to_string(), "size": 2000, "kind": "component" });
    let session = request(addr, "POST", "/v1/uploads", &headers, Some(Payload::Sized(start.to_string().as_bytes())))
        .unwrap()
        .json();
    let id = session["id"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let put =
            request(addr, "PUT", &format!("/v1/uploads/{id}/parts/0"), &headers[..1], Some(Payload::Sized(&data)));
        assert_eq!(put.unwrap().status, 204);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(request(addr, "GET", &format!("/v1/uploads/{id}"), &headers[..1], None).unwrap().status, 200);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_and_addresses_are_rate_limited_with_a_retry_after() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("rate");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &["--rate-per-key", "1", "--rate-per-address", "1000"]);
    let auth = format!("Bearer {admin}");
    // Bursts of twice the rate pass; then 429 with a Retry-After.
    let statuses: Vec<u16> = (0..4)
        .map(|_| request(registry.addr, "GET", "/v1/whoami", &[("Authorization", &auth)], None).unwrap().status)
        .collect();
    assert_eq!(&statuses[..2], [200, 200]);
    let limited = request(registry.addr, "GET", "/v1/whoami", &[("Authorization", &auth)], None).unwrap();
    assert_eq!(limited.status, 429, "{statuses:?}");
    assert!(limited.headers.iter().any(|(k, v)| k == "retry-after" && v.parse::<u64>().is_ok_and(|s| s >= 1)));
    assert!(limited.text().contains("rate limit"), "{}", limited.text());
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);

    // Per source address, keyed or not.
    let dir = scratch("rate-address");
    let (registry, _) = wasmesh_tests::start_registry(&dir, &["--rate-per-address", "1"]);
    let statuses: Vec<u16> =
        (0..5).map(|_| request(registry.addr, "GET", "/health", &[], None).unwrap().status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_weight_cache_evicts_the_least_recently_used_model_never_one_in_use() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("weight-cache");
    let Some(registry) = Registry::start(Backend::Default, &dir, "weight-cache") else { return };
    let rt = runtime();
    let deployer = registry.client(&registry.key(&[Scope::Deploy]));
    // Three 1 MiB models (their tensors differ, so their hashes do).
    let mut pushed = Vec::new();
    for (i, name) in ["model-a", "model-b", "model-c"].into_iter().enumerate() {
        let path = dir.join(format!("{name}.gguf"));
        let tensor = format!("blk.{i}.ffn_up.weight");
        wasmesh_gguf::fixture::write_gguf(
            &path,
            &[("general.architecture", wasmesh_gguf::Value::String("llama".into()))],
            &[(tensor.as_str(), &[256, 1024], 0)],
        )
        .unwrap();
        let info = rt.block_on(deployer.push_model(&path, name, &NoProgress)).unwrap();
        pushed.push((info, std::fs::read(&path).unwrap()));
    }
    let size = pushed[0].0.size;
    let provider = registry.client(&registry.key(&[Scope::Provider]));
    // Room for two models, not three.
    let cache = wasmesh_weights::WeightCache::open(dir.join("cache"), size * 2 + size / 2).unwrap();
    let fetch = |name: &str| rt.block_on(wasmesh_weights::fetch_model_cached(&provider, name, &cache, &NoProgress));

    // A is in use (held for the whole test); B was fetched and let go.
    let (a_path, _a_in_use) = fetch("model-a").unwrap();
    let (b_path, b_lease) = fetch("model-b").unwrap();
    drop(b_lease);
    // Fetching C must evict B (the least recently used unused model), never A.
    let (c_path, _c) = fetch("model-c").unwrap();
    assert!(a_path.is_file(), "the model in use was evicted");
    assert!(!b_path.exists(), "the unused model was kept past the bound");
    for (path, (info, bytes)) in [(&a_path, &pushed[0]), (&c_path, &pushed[2])] {
        assert!(std::fs::read(path).unwrap() == *bytes, "{} differs from what was pushed", info.name);
        assert_eq!(cache.path_for(&info.blake3), *path);
    }
    assert!(cache.used().unwrap() <= cache.bound());

    // With A and C in use, B no longer fits: a clear error, and nothing is deleted.
    let err = fetch("model-b").unwrap_err();
    assert!(err.to_string().contains("--cache-mb") && err.to_string().contains("in use"), "{err}");
    assert!(a_path.is_file() && c_path.is_file());
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_blob_is_detected_and_an_upload_repairs_it() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("durability");
    let Some(registry) = Registry::start(Backend::Default, &dir, "durability") else { return };
    let deployer = registry.key(&[Scope::Deploy]);
    let manifest = demo_manifest(&dir, false);
    assert_eq!(registry.cli(&deployer, &["deploy", "-f", manifest.to_str().unwrap()]).unwrap()["version"], 1);
    let hello = std::fs::read(components_dir().join("hello.wasm")).unwrap();
    let hash = blake3::hash(&hello).to_hex().to_string();
    let stored = dir.join("registry/artifacts/blobs").join(&hash[..2]).join(&hash);
    assert_eq!(std::fs::read(&stored).unwrap(), hello, "the blob is stored whole");

    // After its row committed, the file loses its second half (a power cut before the
    // data reached the disk, a bad sector, a hand in the data folder).
    std::fs::OpenOptions::new().write(true).open(&stored).unwrap().set_len(hello.len() as u64 / 2).unwrap();
    let auth = format!("Bearer {deployer}");
    let r =
        request(registry.process.addr, "GET", &format!("/v1/blobs/{hash}"), &[("Authorization", &auth)], None).unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("damaged_artifact") && r.text().contains("upload the file again"), "{}", r.text());
    let scrub = |args: &[&str]| {
        Command::new(wasmesh_bin())
            .args(["registry", "scrub", "--data", dir.join("registry").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = scrub(&["--json"]);
    assert!(!out.status.success(), "scrub exits non-zero when it finds damage");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["damaged"], serde_json::json!([hash]), "{report}");

    // Deploying again uploads the file again (the damaged copy does not count as
    // present), which repairs it.
    assert_eq!(registry.cli(&deployer, &["deploy", "-f", manifest.to_str().unwrap()]).unwrap()["version"], 2);
    assert_eq!(std::fs::read(&stored).unwrap(), hello, "the upload repaired the stored copy");
    let r =
        request(registry.process.addr, "GET", &format!("/v1/blobs/{hash}"), &[("Authorization", &auth)], None).unwrap();
    assert_eq!((r.status, blake3::hash(&r.body).to_hex().to_string()), (200, hash.clone()));
    let out = scrub(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("checked 2 artifacts"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_accounts_uploads_stop_at_its_quota() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("quota");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &["--account-quota-mb", "1"]);
    let client = Client::new(&format!("http://{}", registry.addr), Some(admin.clone())).unwrap();
    let deployer = runtime().block_on(client.create_key("d", &[Scope::Deploy])).unwrap().key;
    let start = |key: &str, seed: &[u8], size: u64| {
        let body =
            serde_json::json!({ "blake3": blake3::hash(seed).to_hex().to_string(), "size": size, "kind": "component" });
        let auth = format!("Bearer {key}");
        let r = request(
            registry.addr,
            "POST",
            "/v1/uploads",
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            Some(Payload::Sized(body.to_string().as_bytes())),
        )
        .unwrap();
        (r.status, r.text())
    };
    // Unfinished uploads count: the second 600 KiB file would take the account past 1 MiB.
    assert_eq!(start(&deployer, b"one", 600 << 10).0, 201);
    assert_eq!(start(&deployer, b"one", 600 << 10).0, 201, "resuming the same file is not counted twice");
    let (status, text) = start(&deployer, b"two", 600 << 10);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("quota_exceeded") && text.contains("--account-quota-mb"), "{text}");
    assert_eq!(start(&deployer, b"small", 100 << 10).0, 201, "what fits under the quota still goes");
    assert_eq!(start(&admin, b"two", 600 << 10).0, 201, "the operator's admin key is exempt");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn long_polls_are_capped_per_key_and_metrics_count_nodes_without_reading_heartbeats() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("long-polls");
    let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
    let client = Client::new(&format!("http://{}", registry.addr), Some(admin.clone())).unwrap();
    let provider = runtime().block_on(client.create_key("p", &[Scope::Provider])).unwrap().key;
    // Twelve long polls of one key: eight wait, the rest are answered at once.
    let returned = Arc::new(AtomicU64::new(0));
    let polls: Vec<_> = (0..12)
        .map(|_| {
            let (returned, addr, auth) = (returned.clone(), registry.addr, format!("Bearer {provider}"));
            std::thread::spawn(move || {
                let r = request(addr, "GET", "/v1/deployments?since=0&wait_s=8", &[("Authorization", &auth)], None);
                returned.fetch_add(1, Ordering::SeqCst);
                r.unwrap().status
            })
        })
        .collect();
    wait_for("the polls over the cap to be answered", Duration::from_secs(5), || returned.load(Ordering::SeqCst) >= 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(returned.load(Ordering::SeqCst), 4, "eight polls of the key still wait");
    assert!(polls.into_iter().all(|p| p.join().unwrap() == 200));

    // A node that heartbeats ready is counted online by /metrics.
    let node = NodeIdentity::generate();
    let as_provider = client.with_key(&provider);
    runtime().block_on(as_provider.register_node(&node, "n")).unwrap();
    runtime().block_on(as_provider.heartbeat(&node, &Heartbeat { ready: true, ..Default::default() })).unwrap();
    let metrics = request(registry.addr, "GET", "/metrics", &[], None).unwrap().text();
    assert!(metrics.contains("wasmesh_registry_nodes{status=\"online\"} 1"), "{metrics}");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}
