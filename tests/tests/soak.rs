//! The hostile-guest soak: three hostile tenants attack one real host at once (a loop
//! with an enormous `timeout_ms` on every slot it can take, memory bombs and `wasi:nn`
//! tensor floods asking for far more than the node has, a compute flood and prompts of
//! megabytes) while a fourth tenant's app keeps being called. The host must stay up and
//! healthy, its memory under the bound its budget sets, and the other tenant's requests
//! must all succeed; their latency against a baseline measured in the same test is
//! reported (RESILIENCE.md), not asserted.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use wasmesh_tests::*;

/// The node's budget for all guest memory, and each app's share of it.
const BUDGET_MIB: u64 = 768;
const APP_SHARE_MIB: u64 = 192;
/// What the host may hold beyond its guests' budget during the attack: request bodies
/// (prompts of 8 MiB), HTTP and QUIC buffers, the engine's per-request state.
const SLACK_MIB: u64 = 384;
const ATTACK: Duration = Duration::from_secs(15);

fn manifests(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let c = components_dir();
    let apps = [
        (
            "loops",
            format!(
                r#"[component.spin]
source = "{}"
[component.spin.limits]
timeout_ms = 1000000000000
[[route]]
path = "/loop"
component = "spin""#,
                c.join("loop_forever.wasm").display()
            ),
        ),
        (
            "bombs",
            format!(
                r#"[component.bomb]
source = "{}"
[component.bomb.limits]
memory_mb = 4096
[component.flood]
source = "{}"
[component.flood.limits]
memory_mb = 4096
[[route]]
path = "/bomb"
component = "bomb"
[[route]]
path = "/tensors"
component = "flood""#,
                c.join("memory_bomb.wasm").display(),
                c.join("tensor_flood.wasm").display()
            ),
        ),
        (
            "compute",
            format!(
                r#"[component.chat]
source = "{}"
models = ["smollm2"]
[component.chat.limits]
max_request_bytes = 33554432
memory_mb = 128
timeout_ms = 300000
[[route]]
path = "/work"
component = "chat""#,
                c.join("chat.wasm").display()
            ),
        ),
        (
            "victim",
            format!(
                r#"[component.chat]
source = "{}"
models = ["smollm2"]
[component.chat.limits]
timeout_ms = 300000
[component.hello]
source = "{}"
[[route]]
path = "/chat"
component = "chat"
[[route]]
path = "/hello"
component = "hello""#,
                c.join("chat.wasm").display(),
                c.join("hello.wasm").display()
            ),
        ),
    ];
    apps.iter()
        .map(|(name, body)| {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, format!("[app]\nname = \"{name}\"\n\n{body}\n")).expect("write manifest");
            path
        })
        .collect()
}

/// The victim's calls: a hello and a short greedy chat, with their latencies.
fn victim_round(addr: std::net::SocketAddr, hello: &mut Vec<Duration>, chat: &mut Vec<Duration>) {
    let t = Instant::now();
    let r = request(addr, "GET", "/fn/victim/hello", &[], None).expect("victim hello");
    assert_eq!(r.status, 200, "the other tenant's hello failed: {}", r.text());
    hello.push(t.elapsed());
    let t = Instant::now();
    let r = post_json(addr, "/fn/victim/chat", &json!({"prompt": "Name a colour.", "max_tokens": 4, "temperature": 0}));
    assert_eq!(r.status, 200, "the other tenant's chat failed: {}", r.text());
    assert!(!r.json()["text"].as_str().unwrap_or("").is_empty(), "{}", r.text());
    chat.push(t.elapsed());
}

fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[((samples.len() * 99).div_ceil(100)).saturating_sub(1)]
}

/// Starts `n` threads that call `call` until the attack ends, counting answers by status.
fn attackers(
    n: usize,
    stop: &Arc<AtomicBool>,
    statuses: &Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    call: impl Fn() -> Option<(u16, String)> + Send + Sync + 'static,
    name: &'static str,
) -> Vec<std::thread::JoinHandle<()>> {
    let call = Arc::new(call);
    (0..n)
        .map(|_| {
            let (stop, statuses, call) = (stop.clone(), statuses.clone(), call.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let answer = call();
                    let key = match &answer {
                        Some((status, _)) => format!("{name} {status}"),
                        None => format!("{name} dropped"),
                    };
                    *statuses.lock().unwrap().entry(key).or_default() += 1;
                    if matches!(answer, Some((503, _)) | None) {
                        // Turned away (per-app cap, budget): come straight back, as a
                        // hostile client would, but not in a busy loop on 2 cores.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect()
}

#[test]
fn hostile_tenants_cannot_take_a_node_from_another() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("soak");
    let addr = free_addr();
    let model = format!("smollm2={}", model_path().display());
    let mut args: Vec<String> = vec!["host".into()];
    for manifest in manifests(&dir) {
        args.extend(["--app".into(), manifest.display().to_string()]);
    }
    for flag in [
        ["--model", model.as_str()],
        ["--listen", &addr.to_string()],
        ["--threads", "2"],
        ["--preload", ""],
        ["--max-instances", "64"],
        ["--cap-instances-per-app", "8"],
        // Long enough for the victim's chat among the compute flood on 2 cores while CI
        // runs another test beside this one (8 s was not; 20 s once was not, before the
        // spare slot and the app CPU share); loops still reach it before their callers
        // are joined.
        ["--cap-timeout-ms", "30000"],
        ["--cap-memory-mb", "1024"],
        ["--instance-memory-mb", &BUDGET_MIB.to_string()],
        ["--cap-app-memory-mb", &APP_SHARE_MIB.to_string()],
    ] {
        args.extend(flag.iter().filter(|a| !a.is_empty()).map(|a| a.to_string()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut host = Process::spawn(&args, addr, dir.join("host.log"));
    host.wait_ready(Duration::from_secs(120));

    // Baseline: the victim alone (after one warm-up round).
    let (mut hello, mut chat) = (Vec::new(), Vec::new());
    victim_round(addr, &mut Vec::new(), &mut Vec::new());
    for _ in 0..10 {
        victim_round(addr, &mut hello, &mut chat);
    }
    let (base_hello, base_chat) = (p99(&mut hello), p99(&mut chat));
    let rss_before = host.rss_bytes();
    let hwm_before = host.peak_rss_bytes();

    // The attack.
    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let get =
        move |path: &'static str| move || request(addr, "GET", path, &[], None).ok().map(|r| (r.status, r.text()));
    let mut threads = Vec::new();
    // More loopers than the app may run: the rest are turned away at once.
    threads.extend(attackers(12, &stop, &statuses, get("/fn/loops/loop"), "loop"));
    threads.extend(attackers(5, &stop, &statuses, get("/fn/bombs/bomb"), "bomb"));
    threads.extend(attackers(5, &stop, &statuses, get("/fn/bombs/tensors"), "tensors"));
    let compute_body = Arc::new(
        serde_json::to_vec(&json!({"prompt": "Count to one hundred:", "max_tokens": 48, "temperature": 0.8})).unwrap(),
    );
    let compute = move || {
        let json = [("content-type", "application/json")];
        let r = request(addr, "POST", "/fn/compute/work", &json, Some(Payload::Sized(&compute_body)));
        r.ok().map(|r| (r.status, r.text()))
    };
    threads.extend(attackers(4, &stop, &statuses, compute, "compute"));
    let huge_prompt = Arc::new(serde_json::to_vec(&json!({"prompt": "x".repeat(8 << 20), "max_tokens": 8})).unwrap());
    let huge = move || {
        let r = request(
            addr,
            "POST",
            "/fn/compute/work",
            &[("content-type", "application/json")],
            Some(Payload::Sized(&huge_prompt)),
        );
        r.ok().map(|r| (r.status, r.text()))
    };
    threads.extend(attackers(1, &stop, &statuses, huge, "huge-prompt"));
    // The host's health and memory, sampled through the attack.
    let peak_sampled = Arc::new(AtomicU64::new(0));
    let unhealthy = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let pid_rss = {
        let (stop, peak, unhealthy) = (stop.clone(), peak_sampled.clone(), unhealthy.clone());
        let status_path = format!("/proc/{}/status", host.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = std::fs::read_to_string(&status_path)
                    .ok()
                    .and_then(|s| {
                        s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()
                    })
                    .unwrap_or(0)
                    << 10;
                peak.fetch_max(rss, Ordering::Relaxed);
                match request(addr, "GET", "/health", &[], None) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => unhealthy.lock().unwrap().push(format!("{} {}", r.status, r.text())),
                    Err(e) => unhealthy.lock().unwrap().push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let (mut hello_attacked, mut chat_attacked) = (Vec::new(), Vec::new());
    while started.elapsed() < ATTACK {
        victim_round(addr, &mut hello_attacked, &mut chat_attacked);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    pid_rss.join().unwrap();

    let statuses = statuses.lock().unwrap().clone();
    let unhealthy = unhealthy.lock().unwrap().clone();
    assert!(host.is_running(), "the host died under attack:\n{}", host.log());
    assert!(unhealthy.is_empty(), "/health failed under attack: {unhealthy:?}");
    let health = request(addr, "GET", "/health", &[], None).unwrap().json();
    let budget = (BUDGET_MIB << 20) as f64;
    assert!(health["instance_memory"]["limit_bytes"].as_f64() == Some(budget), "{health}");

    // Each attack met the limit meant for it.
    let count = |key: &str| statuses.get(key).copied().unwrap_or(0);
    assert!(
        count("loop 504") > 0 && count("loop 503") > 0,
        "loops hit the node's deadline cap and the per-app cap: {statuses:?}"
    );
    assert_eq!(count("loop 200") + count("bomb 200") + count("tensors 200"), 0, "{statuses:?}");
    assert!(count("bomb 503") + count("tensors 503") > 0, "the bombs met the app's memory share: {statuses:?}");
    assert!(count("huge-prompt 400") + count("huge-prompt 413") > 0, "huge prompts were refused: {statuses:?}");
    assert!(count("compute 200") > 0, "the compute flood was served too: {statuses:?}");

    let peak_sampled = peak_sampled.load(Ordering::Relaxed);
    let hwm_after = host.peak_rss_bytes();
    let bound = rss_before + ((BUDGET_MIB + SLACK_MIB) << 20);
    let (hello_p99, chat_p99) = (p99(&mut hello_attacked), p99(&mut chat_attacked));
    let report = json!({
        "test": "soak",
        "victim_rounds": chat_attacked.len(),
        "hello_p99_ms": [base_hello.as_secs_f64() * 1e3, hello_p99.as_secs_f64() * 1e3],
        "chat_p99_ms": [base_chat.as_secs_f64() * 1e3, chat_p99.as_secs_f64() * 1e3],
        "chat_p99_ratio": chat_p99.as_secs_f64() / base_chat.as_secs_f64(),
        "hello_p99_ratio": hello_p99.as_secs_f64() / base_hello.as_secs_f64(),
        "rss_mib": { "before": rss_before >> 20, "peak_sampled": peak_sampled >> 20, "peak": hwm_after >> 20, "bound": bound >> 20 },
        "attacks": statuses,
    });
    eprintln!("{report}");
    assert!(
        peak_sampled <= bound,
        "host memory reached {} MiB, over the bound of {} MiB",
        peak_sampled >> 20,
        bound >> 20
    );
    assert!(
        hwm_after <= bound.max(hwm_before),
        "host memory peaked at {} MiB, over the bound of {} MiB",
        hwm_after >> 20,
        bound >> 20
    );
    // After the attack the victim is served as before.
    victim_round(addr, &mut Vec::new(), &mut Vec::new());
}

/// One app's busy guests keep at most its share of the node's cores: four loops of an
/// app capped at half a core use about half a core of the host's CPU time between them
/// (without the share they take both cores), and each still meets its deadline.
#[test]
fn one_apps_busy_loops_get_only_its_share_of_the_cores() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("cpu-share");
    let manifest = dir.join("loops.toml");
    std::fs::write(
        &manifest,
        format!(
            "[app]\nname = \"loops\"\n\n[component.spin]\nsource = \"{}\"\n[component.spin.limits]\ntimeout_ms = 3000\n\n[[route]]\npath = \"/loop\"\ncomponent = \"spin\"\n",
            components_dir().join("loop_forever.wasm").display()
        ),
    )
    .unwrap();
    let addr = free_addr();
    let args = ["host", "--app", manifest.to_str().unwrap(), "--listen", &addr.to_string(), "--cap-app-cores", "0.5"];
    let mut host = Process::spawn(&args, addr, dir.join("host.log"));
    host.wait_ready(Duration::from_secs(60));
    let before = host.cpu_time();
    let started = Instant::now();
    let loops: Vec<_> =
        (0..4).map(|_| std::thread::spawn(move || request(addr, "GET", "/loop", &[], None).unwrap())).collect();
    for l in loops {
        let r = l.join().unwrap();
        assert_eq!(r.status, 504, "a throttled loop still meets its deadline: {}", r.text());
    }
    let (used, wall) = (host.cpu_time() - before, started.elapsed());
    let cores = used.as_secs_f64() / wall.as_secs_f64();
    eprintln!("{}", json!({"test": "cpu_share", "share": 0.5, "cores_used": cores, "wall_s": wall.as_secs_f64()}));
    // The share, its 50 ms burst, and the host's own work (HTTP, the epoch ticker).
    assert!(cores <= 0.5 * 1.25 + 0.1, "four loops of an app capped at 0.5 cores used {cores:.2} cores");
    assert!(host.is_running(), "{}", host.log());
    let _ = std::fs::remove_dir_all(&dir);
}
