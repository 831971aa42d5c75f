//! Shared helpers for wasmesh's benchmarks (see `benches/*.rs`).

/// The allocator of the `wasmesh` binary (see `cli/src/main.rs`), so that a fabric run
/// in a bench's process allocates as the real one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

/// The p-th percentile (0..=100) of `samples`, which it sorts.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Lowest and highest of `values` (infinity and 0 when empty).
pub fn min_max(values: &[f64]) -> (f64, f64) {
    (values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(0.0, f64::max))
}

/// Median of `values`.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() { 0.0 } else { values[values.len() / 2] }
}

/// Runs `wrk` against `url` and returns requests/s, or why it could not.
pub fn wrk_rps(url: &str, connections: u32, seconds: u32) -> Result<f64, String> {
    let out = std::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s"), url])
        .output()
        .map_err(|e| format!("wrk not runnable ({e}); run `bash deploy/setup.sh`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let non2xx = text.lines().find(|l| l.contains("Non-2xx"));
    if let Some(line) = non2xx {
        return Err(format!("wrk saw errors: {line}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").map(|v| v.trim().parse::<f64>()))
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?
        .map_err(|e| e.to_string())
}

/// What `wrk --latency` measured.
#[derive(Debug, Clone, Copy)]
pub struct WrkStats {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

fn wrk_ms(value: &str) -> Option<f64> {
    let value = value.trim();
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

/// Runs `wrk --latency` against `url` with extra `headers` ("Name: value").
pub fn wrk_stats(url: &str, headers: &[&str], connections: u32, seconds: u32) -> Result<WrkStats, String> {
    let mut args =
        vec!["-t1".to_string(), format!("-c{connections}"), format!("-d{seconds}s"), "--latency".to_string()];
    for h in headers {
        args.push("-H".into());
        args.push((*h).to_string());
    }
    args.push(url.to_string());
    let out = std::process::Command::new("wrk")
        .args(&args)
        .output()
        .map_err(|e| format!("wrk not runnable ({e}); run `bash deploy/setup.sh`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx") || l.contains("Socket errors")) {
        return Err(format!("wrk saw errors: {line}\n{text}"));
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:").and_then(|v| v.trim().parse::<f64>().ok()))
        .ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let percentile = |p: &str| {
        text.lines().find_map(|l| {
            let l = l.trim();
            l.strip_prefix(p).and_then(wrk_ms)
        })
    };
    Ok(WrkStats {
        rps,
        p50_ms: percentile("50%").ok_or_else(|| format!("no 50% line in wrk output:\n{text}"))?,
        p99_ms: percentile("99%").ok_or_else(|| format!("no 99% line in wrk output:\n{text}"))?,
    })
}

/// Where `benches/build-llama-server.sh` puts llama-server (or `$LLAMA_SERVER`).
pub fn llama_server_path() -> std::path::PathBuf {
    match std::env::var_os("LLAMA_SERVER") {
        Some(p) => p.into(),
        None => wasmesh_tests::cache_dir().join("tools/llama-server/bin/llama-server"),
    }
}

/// Starts llama-server on `model` with `args` (threads, context, slots, ...), on a free
/// loopback port, its prompt cache off and no web UI; waits until it answers. `Err`
/// says how to build it when it is missing.
pub fn start_llama_server(model: &std::path::Path, args: &[&str], tag: &str) -> Result<wasmesh_tests::Process, String> {
    let program = llama_server_path();
    if !program.is_file() {
        return Err(format!("{} not found: run `bash benches/build-llama-server.sh`", program.display()));
    }
    let addr = wasmesh_tests::free_addr();
    let port = addr.port().to_string();
    let mut all = vec!["-m", model.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--cache-ram", "0", "--no-webui", "--host", "127.0.0.1", "--port", &port]);
    let log = std::env::temp_dir().join(format!("wasmesh-bench-llama-server-{tag}-{}.log", std::process::id()));
    let mut process = wasmesh_tests::Process::spawn_program(&program, &all, &[], addr, log);
    process.wait_ready(Duration::from_secs(120));
    Ok(process)
}

/// A host with the fake engine in this process, joined to the registry at `registry`
/// with a provider key and linked to `routers`, ready; it runs until the process ends.
pub async fn start_host(
    registry: &str,
    provider: String,
    data_dir: std::path::PathBuf,
    routers: Vec<std::net::SocketAddr>,
) -> Result<std::sync::Arc<wasmesh_runtime::Host>, String> {
    let engine = std::sync::Arc::new(wasmesh_engine::fake::FakeEngine::new(Vec::<String>::new()));
    let host = wasmesh_runtime::Host::new(wasmesh_runtime::HostConfig::default(), engine).map_err(|e| e.to_string())?;
    let agent = wasmesh_agent::Agent::start(
        host.clone(),
        wasmesh_agent::AgentConfig {
            registry: registry.to_string(),
            key: provider,
            data_dir,
            name: "bench-host".into(),
            heartbeat_interval: Duration::from_secs(10),
            share: wasmesh_api::wire::ResourceShare { model_memory_bytes: 1 << 30, max_concurrency: 256 },
            pressure: Default::default(),
            routers,
            // The host's default (one lane per core) unless `BENCH_LINK_LANES` says otherwise.
            link_lanes: std::env::var("BENCH_LINK_LANES").ok().and_then(|n| n.parse().ok()).unwrap_or(0),
        },
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    // The bench's process ends with it.
    std::mem::forget(agent);
    host.set_ready(true);
    Ok(host)
}
