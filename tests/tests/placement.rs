//! Serverless placement across real processes: a registry, a router and three hosts
//! started with no `--model`. Hosts fetch models and adapters when first asked for
//! (verified, from peers or the object store) and load them; the router sends each
//! request where its model and adapter are warm; pinned models stay warm on N nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasmesh_api::wire::Scope;
use wasmesh_client::{Client, NoProgress};
use wasmesh_tests::{
    Payload, Process, components_dir, free_addr, lora_path, model_path, prerequisites, request, runtime, scratch,
    second_model_path, wait_for,
};

struct Fabric {
    dir: PathBuf,
    _registry: Process,
    deployer: Client,
    invoke: String,
    router: Process,
    hosts: Vec<Option<Process>>,
    host_addrs: Vec<SocketAddr>,
}

fn manifest(app: &str, component: &str, models: &[&str], route: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[app]\nname = \"{app}\"\n\n[component.{component}]\nsource = \"{component}.wasm\"\nmodels = [{}]\n\n[[route]]\npath = \"{route}\"\ncomponent = \"{component}\"\n",
        models.join(", ")
    )
}

impl Fabric {
    /// Pushes SmolLM2 and two adapters, deploys `demo` (chat) and `openai` granting
    /// `models`, starts a router and `hosts` hosts with no model.
    fn start(tag: &str, hosts: usize, models: &[&str]) -> Self {
        let dir = scratch(tag);
        let (registry, admin) = wasmesh_tests::start_registry(&dir, &["--offline-after-secs", "3"]);
        let url = format!("http://{}", registry.addr);
        let rt = runtime();
        let client = Client::new(&url, Some(admin.clone())).unwrap();
        let key = |scope| rt.block_on(client.create_key("test", &[scope])).unwrap().key;
        let (invoke, provider, deploy) = (key(Scope::Invoke), key(Scope::Provider), key(Scope::Deploy));
        let deployer = client.with_key(&deploy);
        rt.block_on(deployer.push_model(&model_path(), "smollm2", &NoProgress)).unwrap();
        for (seed, name) in [(1, "one"), (2, "two")] {
            rt.block_on(deployer.push_lora(&lora_path(seed), name, "smollm2", &NoProgress)).unwrap();
        }
        let fabric_dir = dir.clone();
        let deploy_app = |app: &str, component: &str, route: &str| {
            let folder = fabric_dir.join(app);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::copy(components_dir().join(format!("{component}.wasm")), folder.join(format!("{component}.wasm")))
                .unwrap();
            std::fs::write(folder.join("wasmesh.toml"), manifest(app, component, models, route)).unwrap();
            rt.block_on(deployer.deploy(&folder.join("wasmesh.toml"), &NoProgress)).unwrap();
        };
        deploy_app("demo", "chat", "/chat");
        deploy_app("openai", "openai", "/v1/...");

        let (mut router, quic) = wasmesh_tests::spawn_router(&dir, "router", &url, &admin);
        router.wait_ready(Duration::from_secs(60));
        let mut fabric =
            Self { dir, _registry: registry, deployer, invoke, router, hosts: Vec::new(), host_addrs: Vec::new() };
        for i in 0..hosts {
            let extra = ["--p2p-listen", "127.0.0.1:0", "--slots", "2", "--heartbeat-secs", "1"];
            let mut host =
                wasmesh_tests::spawn_host(&fabric.dir, &format!("host{i}"), &url, &provider, &[quic], &extra);
            host.wait_ready(Duration::from_secs(60));
            let addr = host.addr;
            fabric.hosts.push(Some(host));
            fabric.host_addrs.push(addr);
        }
        let router_addr = fabric.router.addr;
        wait_for(&format!("{hosts} ready hosts on the router"), Duration::from_secs(30), || {
            request(router_addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == hosts)
        });
        fabric
    }

    fn call(&self, method: &str, path: &str, body: &serde_json::Value) -> wasmesh_tests::HttpResponse {
        let auth = format!("Bearer {}", self.invoke);
        let body = body.to_string();
        request(
            self.router.addr,
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", "application/json")],
            Some(Payload::Sized(body.as_bytes())),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `POST /fn/demo/chat`, retried while the answer is 503 (a fetch past the bound).
    fn chat(&self, body: serde_json::Value) -> wasmesh_tests::HttpResponse {
        let mut last = None;
        wait_for("a chat answer", Duration::from_secs(180), || {
            let r = self.call("POST", "/fn/demo/chat", &body);
            let done = r.status != 503;
            last = Some(r);
            done
        });
        last.unwrap()
    }

    fn routed(&self, tier: &str) -> u64 {
        let metrics = request(self.router.addr, "GET", "/metrics", &[], None).unwrap().text();
        let prefix = format!("wasmesh_router_routed_total{{tier=\"{tier}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    fn warm_on(&self) -> serde_json::Value {
        let auth = format!("Bearer {}", self.invoke);
        let r = request(self.router.addr, "GET", "/v1/models", &[("Authorization", &auth)], None).unwrap();
        let mut out = serde_json::Map::new();
        for m in r.json()["data"].as_array().unwrap() {
            out.insert(m["id"].as_str().unwrap().to_string(), m["warm_on"].clone());
        }
        serde_json::Value::Object(out)
    }

    /// Which live hosts hold `model` loaded.
    fn loaded_on(&self, model: &str) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].is_some())
            .filter(|&i| {
                request(self.host_addrs[i], "GET", "/health", &[], None)
                    .is_ok_and(|r| r.json()["loaded"].as_array().is_some_and(|l| l.iter().any(|m| m == model)))
            })
            .collect()
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

/// What a host started locally with the model and both adapters answers.
fn local_answers(dir: &std::path::Path, bodies: &[serde_json::Value]) -> Vec<String> {
    let app = dir.join("local");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(components_dir().join("chat.wasm"), app.join("chat.wasm")).unwrap();
    std::fs::write(
        app.join("wasmesh.toml"),
        manifest("local", "chat", &["smollm2", "smollm2:one", "smollm2:two"], "/chat"),
    )
    .unwrap();
    let addr = free_addr();
    let (model, one, two) = (
        format!("smollm2={}", model_path().display()),
        format!("one=smollm2:{}", lora_path(1).display()),
        format!("two=smollm2:{}", lora_path(2).display()),
    );
    let (listen, manifest_path) = (addr.to_string(), app.join("wasmesh.toml").display().to_string());
    let mut host = Process::spawn(
        &[
            "host",
            "--app",
            &manifest_path,
            "--model",
            &model,
            "--lora",
            &one,
            "--lora",
            &two,
            "--listen",
            &listen,
            "--slots",
            "2",
            "--threads",
            "1",
        ],
        addr,
        dir.join("local.log"),
    );
    host.wait_ready(Duration::from_secs(60));
    bodies
        .iter()
        .map(|body| {
            let body = body.to_string();
            let r = request(
                addr,
                "POST",
                "/chat",
                &[("Content-Type", "application/json")],
                Some(Payload::Sized(body.as_bytes())),
            )
            .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["text"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn hosts_without_models_fetch_on_demand_route_by_adapter_and_take_a_new_architecture() {
    if !prerequisites() {
        return;
    }
    let second = second_model_path();
    assert!(second.is_file() || std::env::var_os("CI").is_none(), "missing {}: run deploy/setup.sh", second.display());
    let fabric = Fabric::start(
        "placement-fetch",
        3,
        // "nope" is granted but never pushed.
        &["smollm2", "smollm2:one", "smollm2:two", "smollm2:nope", "gemma"],
    );
    for health in fabric.host_addrs.iter().map(|a| request(*a, "GET", "/health", &[], None).unwrap().json()) {
        assert_eq!(health["models"], serde_json::json!([]), "hosts start with no model: {health}");
    }
    let ask = |lora: Option<&str>| {
        let mut body = serde_json::json!({"prompt": "Name a colour.", "max_tokens": 8, "temperature": 0, "chat": true});
        if let Some(l) = lora {
            body["lora"] = l.into();
        }
        body
    };
    // The first request waits for the fetch and the load.
    let first = fabric.chat(ask(None));
    assert_eq!(first.status, 200, "{}", first.text());
    let bodies = [ask(None), ask(Some("one")), ask(Some("two"))];
    let fabric_texts: Vec<String> = bodies
        .iter()
        .map(|b| {
            let r = fabric.chat(b.clone());
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["text"].as_str().unwrap().to_string()
        })
        .collect();
    let local = local_answers(&fabric.dir, &bodies);
    assert_eq!(fabric_texts, local, "the fabric's answers differ from a host started with the model and adapters");
    assert_ne!(fabric_texts[1], fabric_texts[0], "the adapter changed nothing");

    // The same adapter again goes where it is warm.
    let warm_before = fabric.routed("warm");
    let again = fabric.chat(ask(Some("one")));
    assert_eq!(again.json()["text"].as_str().unwrap(), fabric_texts[1]);
    assert_eq!(fabric.routed("warm"), warm_before + 1, "the second request for an adapter was not routed warm");
    let warm = fabric.warm_on();
    assert!(warm["smollm2"].as_u64().unwrap() >= 1 && warm["smollm2:one"].as_u64().unwrap() >= 1, "{warm}");

    // An adapter the registry does not have: a clear error naming it and the next step.
    let r = fabric.chat(ask(Some("nope")));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("nope") && r.text().contains("loras push"), "{}", r.text());

    // A model of another architecture, without a chat template in its GGUF, pushed while
    // the fabric runs: /fn chat with chat: true, and the OpenAI API's streamed chat.
    if !second.is_file() {
        return;
    }
    runtime().block_on(fabric.deployer.push_model(&second, "gemma", &NoProgress)).unwrap();
    let r =
        fabric.chat(serde_json::json!({"model": "gemma", "prompt": "Name a colour.", "max_tokens": 8, "chat": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["usage"]["output_tokens"].as_u64().unwrap() > 0);
    // The official OpenAI client: a chat, a streamed chat equal to it, a completion,
    // embeddings, the model list, and an unknown model refused.
    let python = wasmesh_tests::cache_dir().join("venv/bin/python");
    assert!(
        python.is_file() || std::env::var_os("CI").is_none(),
        "{} is missing (run deploy/setup.sh)",
        python.display()
    );
    if !python.is_file() {
        return;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openai_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([&format!("http://{}/v1", fabric.router.addr), &fabric.invoke, "gemma"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the openai client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_pinned_model_stays_warm_on_n_nodes_and_is_restored_when_one_dies() {
    if !prerequisites() {
        return;
    }
    let mut fabric = Fabric::start("placement-pin", 3, &["smollm2"]);
    assert!(fabric.loaded_on("smollm2").is_empty(), "no request, no pin: nothing loaded");

    // A deploy reaches hosts one by one: a caller is never answered a host's "no route"
    // 404 while the app is on its way (the router tries the hosts that have it first,
    // retries one that has not, and says "not loaded yet" when none has).
    let folder = fabric.dir.join("fresh");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(components_dir().join("hello.wasm"), folder.join("hello.wasm")).unwrap();
    std::fs::write(folder.join("wasmesh.toml"), manifest("fresh", "hello", &[], "/hello")).unwrap();
    runtime().block_on(fabric.deployer.deploy(&folder.join("wasmesh.toml"), &NoProgress)).unwrap();
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    wait_for("the new app to answer", Duration::from_secs(60), || {
        let r = fabric.call("GET", "/fn/fresh/hello", &serde_json::json!({}));
        let text = r.text();
        assert!(!text.contains("no route for"), "a host's 404 reached the caller: {text}");
        *answers.entry(format!("{} {}", r.status, text.chars().take(40).collect::<String>())).or_default() += 1;
        r.status == 200
    });
    for _ in 0..30 {
        let r = fabric.call("GET", "/fn/fresh/hello", &serde_json::json!({}));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    eprintln!("answers while the deploy spread: {answers:?}");
    let pinned = runtime().block_on(fabric.deployer.pin_model("smollm2", 2)).unwrap();
    assert_eq!(pinned.min_warm, 2);
    // No request arrives: the router places it.
    wait_for("two warm copies", Duration::from_secs(120), || fabric.loaded_on("smollm2").len() == 2);
    let warm = fabric.loaded_on("smollm2");
    let victim = warm[0];
    fabric.hosts[victim].as_mut().unwrap().kill9();
    fabric.hosts[victim] = None;
    wait_for("the third host to take the dead one's copy", Duration::from_secs(120), || {
        fabric.loaded_on("smollm2").len() == 2
    });
    let now = fabric.loaded_on("smollm2");
    assert!(!now.contains(&victim));

    // Unpinned, the count is no longer kept: the registry records it.
    let unpinned = runtime().block_on(fabric.deployer.pin_model("smollm2", 0)).unwrap();
    assert_eq!(unpinned.min_warm, 0);
    let r = runtime().block_on(fabric.deployer.pin_model("no-such-model", 1)).unwrap_err().to_string();
    assert!(r.contains("no model named"), "{r}");
}
