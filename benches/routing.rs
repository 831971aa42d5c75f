//! `cargo bench --bench routing`: the routing policy and the router, in one run.
//!
//! 1. The fabric simulator (`wasmesh_sim`): our policy and three naive ones
//!    (random, round-robin, least-loaded) replay one workload (10,000 nodes, 1,000
//!    models, Zipf popularity, churn); warm-hit rate and max/mean load for each, and
//!    our routing decision's p50/p99 at 10,000 nodes.
//! 2. A real fabric (registry and one host in this process, a `wasmesh router` process
//!    the host joins over QUIC, as deployed): `hello` requests/s, p50/p99 latency and
//!    each proxy's CPU per request under `wrk`, in alternating rounds: straight to the
//!    host, through nginx in front of the host (the anchor: a reverse proxy with
//!    keep-alive upstream, Debian's nginx-light from `benches/setup.sh`), and through the
//!    router and QUIC. Any non-2xx answer fails it.
//!
//! Ends with one line of JSON holding every figure. Environment (optional):
//! `ROUTING_BENCH_{TICKS,NODES,MODELS,SEED,ZIPF,UTIL}` change the simulation;
//! `ROUTING_BENCH_HOLD=SECONDS` keeps the fabric up that long after the rounds, its
//! addresses printed, to profile one path under a load of one's own (`perf record -p`);
//! `ROUTING_BENCH_ROUTER=multi|current|shared` runs the router in the bench's process
//! instead, on a multi-thread runtime of its own, on a current-thread one, or on the
//! bench's runtime beside the host; the router process takes `WASMESH_ROUTER_THREADS=N`
//! from the environment like any `wasmesh router` (its `--threads`: 0, the default, is
//! half the cores; 1 a current-thread runtime); `BENCH_LINK_LANES=N` gives the host N
//! lanes to the router (its `--link-lanes`: 0, the default, is one per four cores).

use std::time::{Duration, Instant};
use wasmesh_api::wire::{ArtifactKind, Scope};
use wasmesh_benches::wrk_stats;
use wasmesh_sim::{SimConfig, run};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut figures = simulate();
    println!();
    match fabric() {
        Ok(f) => {
            for (k, v) in f {
                figures[k] = v;
            }
        }
        Err(e) => {
            eprintln!("router part skipped: {e}");
            figures["router_error"] = serde_json::json!(e);
        }
    }
    println!("{}", figures);
}

/// Starts a registry, a router and a host in this process and measures `hello`
/// both ways with `wrk`.
fn fabric() -> Result<Vec<(&'static str, serde_json::Value)>, String> {
    let hello = wasmesh_tests::components_dir().join("hello.wasm");
    if !hello.is_file() {
        return Err(format!("{} is missing: run `bash guest-components/build.sh`", hello.display()));
    }
    let router_runtime = match std::env::var("ROUTING_BENCH_ROUTER").as_deref() {
        Ok("shared") => RouterRuntime::Shared,
        Ok("current") => RouterRuntime::Current,
        Ok("multi") => RouterRuntime::Multi,
        Ok("process") | Err(_) => RouterRuntime::Process,
        Ok(other) => return Err(format!("ROUTING_BENCH_ROUTER={other}: use process, multi, current or shared")),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("wasmesh-routing-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (router_url, host_url, invoke, router_process) = runtime.block_on(async {
        let registry = wasmesh_registry::Registry::open(wasmesh_registry::RegistryConfig::new(dir.join("registry")))
            .await
            .map_err(|e| e.to_string())?;
        let admin = registry.create_admin_key_if_none().await.map_err(|e| e.to_string())?.ok_or("no admin key")?;
        let provider = registry.create_key("bench-host", &[Scope::Provider]).await.map_err(|e| e.to_string())?;
        let invoke = registry.create_key("bench-caller", &[Scope::Invoke]).await.map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let registry_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(async move { registry.serve(listener, std::future::pending()).await });

        let client = wasmesh_client::Client::new(&registry_url, Some(admin.clone())).map_err(|e| e.to_string())?;
        let blob = client
            .upload_bytes(std::fs::read(&hello).map_err(|e| e.to_string())?.into(), ArtifactKind::Component)
            .await
            .map_err(|e| e.to_string())?;
        let manifest = "[app]\nname = \"bench\"\n\n[component.hello]\nsource = \"hello.wasm\"\n\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n";
        client
            .deploy_uploaded("bench", manifest, [("hello".to_string(), blob.blake3)].into())
            .await
            .map_err(|e| e.to_string())?;

        let quic = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_err(|e| e.to_string())?;
        let mut config = wasmesh_router::RouterConfig::new(registry_url.clone(), admin, dir.join("router"), quic);
        // A throughput test with one caller key: no per-key limit. The hop alone, as
        // nginx does it: metering's own cost is `cargo bench --bench credits`.
        config.per_key_rps = 1e9;
        config.metering.enabled = false;
        let mut router_process = None;
        let router_url = match router_runtime {
            RouterRuntime::Process => {
                let (process, url) = router_process_start(&config, &dir)?;
                router_process = Some(process);
                url
            }
            RouterRuntime::Shared => {
                let router = wasmesh_router::Router::start(config).await.map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
                let router_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
                tokio::spawn(async move { router.serve(listener, std::future::pending()).await });
                router_url
            }
            own => tokio::task::spawn_blocking(move || router_thread(own, config))
                .await
                .map_err(|e| e.to_string())??,
        };

        let host = wasmesh_benches::start_host(&registry_url, provider, dir.join("host"), vec![quic]).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let host_url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        tokio::spawn(async move { host.serve(listener).await });
        Ok::<_, String>((router_url, host_url, invoke, router_process))
    })?;
    // Wait until the router routes to the host.
    let auth = format!("Authorization: Bearer {invoke}");
    let started = Instant::now();
    loop {
        let ok = std::process::Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-H", &auth, &format!("{router_url}/fn/bench/hello")])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the router never routed to the host".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // nginx in front of the same host: the anchor for the router's hop.
    let nginx = Nginx::start(&dir.join("nginx"), host_url.trim_start_matches("http://"))?;
    let nginx_url = format!("http://{}", nginx.addr);
    // Alternating rounds, so a noisy moment does not fall on one path only.
    const ROUNDS: usize = 3;
    const SECONDS: u32 = 5;
    let (mut direct, mut proxied, mut routed) = (Vec::new(), Vec::new(), Vec::new());
    // CPU the proxies themselves spent, per request (a router of its own process only).
    let (mut nginx_cpu, mut router_cpu) = (Duration::ZERO, Duration::ZERO);
    // And the host's (the bench's process: the host, and a registry that is idle then),
    // on each path: its HTTP side straight and behind nginx, its QUIC side behind the router.
    let own = std::process::id();
    let mut host_cpu = [Duration::ZERO; 3];
    for _ in 0..ROUNDS {
        let host_before = wasmesh_tests::cpu_time_of(own);
        direct.push(wrk_stats(&format!("{host_url}/fn/bench/hello"), &[], 16, SECONDS)?);
        host_cpu[0] += wasmesh_tests::cpu_time_of(own) - host_before;
        let (before, host_before) = (nginx.cpu_time(), wasmesh_tests::cpu_time_of(own));
        proxied.push(wrk_stats(&format!("{nginx_url}/fn/bench/hello"), &[], 16, SECONDS)?);
        nginx_cpu += nginx.cpu_time() - before;
        host_cpu[1] += wasmesh_tests::cpu_time_of(own) - host_before;
        let (before, host_before) = (router_process.as_ref().map(|p| p.cpu_time()), wasmesh_tests::cpu_time_of(own));
        let (datagrams_before, switches_before) =
            (udp_datagrams(), router_process.as_ref().map(|p| context_switches(p.pid())));
        let round = wrk_stats(&format!("{router_url}/fn/bench/hello"), &[&auth], 16, SECONDS)?;
        let round_host = wasmesh_tests::cpu_time_of(own) - host_before;
        host_cpu[2] += round_host;
        // Each round's own figures: the spread between runs shows here as rounds whose
        // CPU per request and datagrams per request move together.
        let requests = round.rps * f64::from(SECONDS);
        let per = |n: f64| n / requests;
        let mut line = format!(
            "  router round {}: {:.0} req/s, host {:.1} µs, {:.2} UDP datagrams",
            routed.len() + 1,
            round.rps,
            per(round_host.as_secs_f64() * 1e6),
            per(udp_datagrams().saturating_sub(datagrams_before) as f64)
        );
        if let (Some(p), Some(before), Some(switches)) = (&router_process, before, switches_before) {
            let spent = p.cpu_time() - before;
            router_cpu += spent;
            line += &format!(
                ", router {:.1} µs and {:.2} context switches",
                per(spent.as_secs_f64() * 1e6),
                per(context_switches(p.pid()).saturating_sub(switches) as f64)
            );
        }
        println!("{line} per request");
        routed.push(round);
    }
    let hold: u64 = env_or("ROUTING_BENCH_HOLD", 0);
    if hold > 0 {
        println!(
            "holding for {hold} s: direct {host_url}, nginx {nginx_url}, router {router_url} (pid {}; header {auth:?})",
            std::process::id()
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
    drop(nginx);
    drop(router_process);
    let mean = |runs: &[wasmesh_benches::WrkStats]| wasmesh_benches::WrkStats {
        rps: runs.iter().map(|r| r.rps).sum::<f64>() / runs.len() as f64,
        p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / runs.len() as f64,
        p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / runs.len() as f64,
    };
    let (direct, proxied, routed) = (mean(&direct), mean(&proxied), mean(&routed));
    let per_request_us = |cpu: Duration, mean: &wasmesh_benches::WrkStats| {
        let requests = mean.rps * f64::from(SECONDS) * ROUNDS as f64;
        (cpu.as_secs_f64() * 1e6 / requests * 10.0).round() / 10.0
    };
    let nginx_us = per_request_us(nginx_cpu, &proxied);
    let router_us = matches!(router_runtime, RouterRuntime::Process).then(|| per_request_us(router_cpu, &routed));
    let host_us = [
        per_request_us(host_cpu[0], &direct),
        per_request_us(host_cpu[1], &proxied),
        per_request_us(host_cpu[2], &routed),
    ];
    println!(
        "hello, wrk -t1 -c16 -d5s, one host on loopback, {ROUNDS} alternating rounds (means; only 2xx counted; router runtime: {router_runtime:?}):"
    );
    for (name, r) in [("straight to the host:", &direct), ("nginx in front:", &proxied), ("router + QUIC:", &routed)] {
        println!("  {name:22} {:8.0} req/s  p50 {:6.3} ms  p99 {:6.3} ms", r.rps, r.p50_ms, r.p99_ms);
    }
    let added = |r: &wasmesh_benches::WrkStats| r.p99_ms - direct.p99_ms;
    println!(
        "  router/nginx throughput {:.3}, router/direct {:.3}; p99 added by the hop: router {:.3} ms, nginx {:.3} ms",
        routed.rps / proxied.rps,
        routed.rps / direct.rps,
        added(&routed),
        added(&proxied)
    );
    println!(
        "  CPU per request of the proxy itself: nginx {nginx_us} µs, router {}",
        router_us.map_or("(not measured: a router in the bench's process)".to_string(), |us| format!("{us} µs"))
    );
    println!(
        "  CPU per request of the host (its HTTP side straight, behind nginx; its QUIC side behind the router{}): {} µs, {} µs, {} µs",
        if matches!(router_runtime, RouterRuntime::Process) { "" } else { ", with the router's own" },
        host_us[0],
        host_us[1],
        host_us[2]
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(runtime);
    Ok(vec![
        ("hello_direct_rps", serde_json::json!(direct.rps.round())),
        ("hello_direct_p50_ms", serde_json::json!(direct.p50_ms)),
        ("hello_direct_p99_ms", serde_json::json!(direct.p99_ms)),
        ("hello_router_rps", serde_json::json!(routed.rps.round())),
        ("hello_router_p50_ms", serde_json::json!(routed.p50_ms)),
        ("hello_router_p99_ms", serde_json::json!(routed.p99_ms)),
        ("hello_router_vs_direct", serde_json::json!((routed.rps / direct.rps * 1000.0).round() / 1000.0)),
        ("hello_nginx_rps", serde_json::json!(proxied.rps.round())),
        ("hello_nginx_p50_ms", serde_json::json!(proxied.p50_ms)),
        ("hello_nginx_p99_ms", serde_json::json!(proxied.p99_ms)),
        ("hello_router_vs_nginx", serde_json::json!((routed.rps / proxied.rps * 1000.0).round() / 1000.0)),
        ("hello_p99_added_router_ms", serde_json::json!(added(&routed))),
        ("hello_p99_added_nginx_ms", serde_json::json!(added(&proxied))),
        ("hello_nginx_cpu_us_per_request", serde_json::json!(nginx_us)),
        ("hello_router_cpu_us_per_request", serde_json::json!(router_us)),
        ("hello_host_cpu_us_per_request_direct", serde_json::json!(host_us[0])),
        ("hello_host_cpu_us_per_request_nginx", serde_json::json!(host_us[1])),
        ("hello_host_cpu_us_per_request_router", serde_json::json!(host_us[2])),
        ("hello_router_runtime", serde_json::json!(format!("{router_runtime:?}").to_lowercase())),
        (
            "hello_router_threads",
            serde_json::json!(std::env::var("WASMESH_ROUTER_THREADS").unwrap_or_else(|_| "0".into())),
        ),
        ("hello_host_link_lanes", serde_json::json!(std::env::var("BENCH_LINK_LANES").unwrap_or_else(|_| "0".into()))),
    ])
}

/// UDP datagrams on this machine so far (`/proc/net/snmp`: received and sent, halved,
/// since on loopback each is both); during a router round, the QUIC link's.
fn udp_datagrams() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { return 0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| matches!(*name, "InDatagrams" | "OutDatagrams"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum::<u64>()
        / 2
}

/// Context switches of every thread of process `pid` so far (voluntary and not).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Where the router's tasks run.
#[derive(Clone, Copy, Debug)]
enum RouterRuntime {
    /// A `wasmesh router` process, as users run it (the default).
    Process,
    /// On the bench's runtime, beside the host and the registry.
    Shared,
    /// On a multi-thread runtime of its own in the bench's process (the runtime
    /// `wasmesh router` builds).
    Multi,
    /// On a current-thread runtime of its own (one thread).
    Current,
}

/// Runs `wasmesh router` (the binary beside the bench: `cargo build -p wasmesh`) with
/// `config`'s registry, key and QUIC address, not metering; the process and its address.
fn router_process_start(
    config: &wasmesh_router::RouterConfig,
    dir: &std::path::Path,
) -> Result<(wasmesh_tests::Process, String), String> {
    let bin = wasmesh_tests::wasmesh_bin();
    if !bin.is_file() {
        return Err(format!("{} is missing: run `cargo build -p wasmesh` (same profile as the bench)", bin.display()));
    }
    let listen = wasmesh_tests::free_addr();
    let args = wasmesh_tests::router_args(
        dir,
        "router",
        &config.registry,
        &config.key,
        listen,
        config.quic_listen,
        &["--no-metering"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // Its threads: `WASMESH_ROUTER_THREADS` of the environment, which it inherits.
    let mut process = wasmesh_tests::Process::spawn_program(&bin, &args, &[], listen, dir.join("router.log"));
    process.wait_ready(Duration::from_secs(30));
    Ok((process, format!("http://{listen}")))
}

/// Starts the router on a runtime of its own, on a thread of its own that serves it
/// until the process ends; its address once it listens.
fn router_thread(kind: RouterRuntime, config: wasmesh_router::RouterConfig) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("router".into()).spawn(move || {
        // Named, so that a profile (`perf report --sort comm`) tells its threads apart.
        let runtime = match kind {
            RouterRuntime::Current => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            _ => tokio::runtime::Builder::new_multi_thread().thread_name("router-worker").enable_all().build(),
        };
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => return drop(tx.send(Err(e.to_string()))),
        };
        runtime.block_on(async move {
            let started = async {
                let router = wasmesh_router::Router::start(config).await.map_err(|e| e.to_string())?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
                let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
                Ok::<_, String>((router, listener, url))
            };
            match started.await {
                Ok((router, listener, url)) => {
                    let _ = tx.send(Ok(url));
                    let _ = router.serve(listener, std::future::pending()).await;
                }
                Err(e) => drop(tx.send(Err(e))),
            }
        });
    });
    thread.map_err(|e| format!("cannot start the router's thread: {e}"))?;
    rx.recv().map_err(|_| "the router's thread ended".to_string())?
}

/// nginx as a reverse proxy (HTTP/1.1 keep-alive to the upstream), in a folder of its
/// own; stopped when dropped. `benches/setup.sh` installs it (Debian's nginx-light).
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Nginx {
    fn start(dir: &std::path::Path, upstream: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let addr =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
        let d = dir.display();
        let conf = format!(
            "user root;\nworker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream host {{ server {upstream}; keepalive 32; }}\n\
               server {{ listen {addr}; location / {{ proxy_pass http://host; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| e.to_string())?;
        let nginx = if std::path::Path::new("/usr/sbin/nginx").is_file() { "/usr/sbin/nginx" } else { "nginx" };
        let child = std::process::Command::new(nginx)
            .arg("-c")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("nginx not runnable ({e}); run `bash benches/setup.sh` (it installs nginx-light)"))?;
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("nginx did not listen on {addr}: see {d}/error.log"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, addr })
    }

    /// CPU time (user and system) of the master and its workers so far.
    fn cpu_time(&self) -> Duration {
        let master = self.child.id();
        let workers = std::process::Command::new("pgrep").args(["-P", &master.to_string()]).output();
        let mut pids = vec![master];
        if let Ok(out) = workers {
            pids.extend(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
        pids.into_iter().map(wasmesh_tests::cpu_time_of).sum()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers (a killed master would orphan them).
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn simulate() -> serde_json::Value {
    let mut cfg = SimConfig::default();
    cfg.ticks = env_or("ROUTING_BENCH_TICKS", cfg.ticks);
    cfg.warmup = cfg.warmup.min(cfg.ticks / 2);
    cfg.nodes = env_or("ROUTING_BENCH_NODES", cfg.nodes);
    cfg.models = env_or("ROUTING_BENCH_MODELS", cfg.models);
    cfg.seed = env_or("ROUTING_BENCH_SEED", cfg.seed);
    cfg.zipf_s = env_or("ROUTING_BENCH_ZIPF", cfg.zipf_s);
    cfg.utilisation = env_or("ROUTING_BENCH_UTIL", cfg.utilisation);

    println!("routing bench: fabric simulator, same workload and churn for every policy");
    println!(
        "  nodes {}  models {}  zipf s {}  target utilisation {:.0}%  concurrency {:?}  RAM {:?} GiB  disk {:?} GiB",
        cfg.nodes,
        cfg.models,
        cfg.zipf_s,
        100.0 * cfg.utilisation,
        cfg.concurrency,
        cfg.ram_gib,
        cfg.disk_gib
    );
    println!(
        "  model sizes {}-{} GiB log-uniform  request duration {}-{} ticks  ticks {} (warm-up {})  churn {}/tick, down {}-{} ticks",
        cfg.model_gib.0,
        cfg.model_gib.1,
        cfg.duration.0,
        cfg.duration.1,
        cfg.ticks,
        cfg.warmup,
        cfg.churn,
        cfg.downtime.0,
        cfg.downtime.1
    );
    println!(
        "  load from disk {} ticks, from network {} ticks  policy: c = {}, busy {}, min warm {}, max loading {}, warm scan {}",
        cfg.load_ticks_disk,
        cfg.load_ticks_network,
        cfg.policy.load_factor,
        cfg.policy.busy_fraction,
        cfg.policy.min_warm,
        cfg.policy.max_loading,
        cfg.policy.warm_scan
    );
    let started = Instant::now();
    let report = match run(&cfg) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("routing bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "  {} requests/tick, {} slots in all; ran in {:.1} s (per policy: {})",
        report.arrivals_per_tick,
        report.capacity,
        started.elapsed().as_secs_f64(),
        report.policies.iter().map(|p| format!("{} {:.1} s", p.policy.name(), p.run_s)).collect::<Vec<_>>().join(", ")
    );
    println!();
    print!("{}", report.table());
    if let Some(ours) = report.policy(wasmesh_sim::Policy::Ours) {
        println!(
            "targets: warm hits >= 99.9% ({}), max/mean <= 1.25 ({}), decision p99 <= 20 us ({})",
            if ours.warm_hit_rate() >= 0.999 { "met" } else { "MISSED" },
            if ours.max_over_mean <= 1.25 { "met" } else { "MISSED" },
            match &report.latency {
                Some(l) if l.p99_us <= 20.0 => "met",
                Some(_) => "MISSED",
                None => "not measured",
            }
        );
    }
    serde_json::from_str(&report.json()).expect("the simulator's JSON parses")
}
