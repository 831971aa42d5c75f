//! `cargo bench --bench engine`: the llama.cpp engine under concurrency, in one run.
//!
//! * aggregate tokens/s at 1, 4, 8 and 16 concurrent greedy requests (64 tokens
//!   each, different prompts) through the continuous-batching engine, against
//!   native llama.cpp serving the same requests one after another (a plain greedy
//!   loop in a child process of its own: the anchor);
//! * LoRA switch time on a warm base (two adapters, requests interleaved, the
//!   engine's own counters);
//! * time to first token of a streamed request, alone on the engine;
//! * mixed LoRA: 8 concurrent requests over 2, 4 and 8 different adapters against the
//!   same 8 without adapters, with per-sequence adapters, with the rotation fallback,
//!   and on llama-server given the same mix (`engine_mixed_lora.rs`).
//!
//! * llama.cpp's own `llama-server`, built from the same llama.cpp revision by
//!   `benches/build-llama-server.sh` and run with the same slots (16), context per
//!   slot (4096), batch (512), threads and per-slot KV streams, serving the same
//!   requests at each concurrency (greedy, prompt cache off): the anchor the
//!   aggregate figures are compared with. When it is not built, the bench says so
//!   and the JSON marks it absent.
//!
//! Ends with one line of JSON holding the figures. `WASMESH_BENCH_LEVELS=1,8` runs
//! some levels only, `WASMESH_BENCH_ROUNDS=9` more rounds per level,
//! `WASMESH_BENCH_ONLY=mixed_lora` the mixed-LoRA figures only (`WASMESH_BENCH_MIXES=8`,
//! `WASMESH_BENCH_WAYS=engine,rotation,llama-server` narrow those).

#[path = "engine_mixed_lora.rs"]
mod mixed_lora;

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_benches::{median, min_max};
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec, native::NativeModel};
use wasmesh_tests::{CONCURRENT_PROMPTS, lora_path, model_path};

const TOKENS: u32 = 64;
const LEVELS: [usize; 4] = [1, 4, 8, 16];

fn threads() -> u32 {
    std::env::var("WASMESH_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
}

/// Rounds per level (median taken): `WASMESH_BENCH_ROUNDS`, default 3.
fn rounds() -> usize {
    std::env::var("WASMESH_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3).max(1)
}

/// Concurrency levels measured: `WASMESH_BENCH_LEVELS` (e.g. `8` or `1,8`), default all.
fn chosen_levels() -> Vec<usize> {
    std::env::var("WASMESH_BENCH_LEVELS")
        .ok()
        .map(|l| l.split(',').filter_map(|n| n.trim().parse().ok()).filter(|n| LEVELS.contains(n)).collect())
        .filter(|l: &Vec<usize>| !l.is_empty())
        .unwrap_or_else(|| LEVELS.to_vec())
}

fn prompt(i: usize) -> String {
    format!("<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", CONCURRENT_PROMPTS[i % CONCURRENT_PROMPTS.len()])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::args().any(|a| a == "--native-child") {
        return native_child();
    }
    let threads = threads();
    assert!(model_path().is_file(), "missing {}: run `bash deploy/setup.sh`", model_path().display());
    println!("machine: {threads} inference threads; SmolLM2-135M-Instruct Q4_1; {TOKENS} tokens per request, greedy");
    if std::env::var("WASMESH_BENCH_ONLY").is_ok_and(|only| only == "mixed_lora") {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        let mixed = mixed_lora::run(&runtime, threads, rounds());
        let line = json!({"bench": "engine", "threads": threads, "tokens_per_request": TOKENS,
            "mixed_lora_8_adapters_vs_none": mixed["engine"]["vs_none"]["8"].clone(), "mixed_lora": mixed});
        println!("{line}");
        return;
    }

    // The anchor: native llama.cpp, the same 16 requests one after another, in a
    // child process (two OpenMP pools in one process fight on a small machine).
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--native-child")
        .env("WASMESH_BENCH_THREADS", threads.to_string())
        .output()
        .expect("run the native child");
    assert!(out.status.success(), "native child failed: {}", String::from_utf8_lossy(&out.stderr));
    let native_tok_s: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("native tok/s");
    println!("native llama.cpp, sequential:  {native_tok_s:8.1} tok/s");

    // The anchor at each concurrency: llama-server, in its own process, idle while
    // the engine runs and the other way round; rounds alternate between the two.
    let server = LlamaServer::start(threads);

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model_path())].into(),
        loras: [
            ("one".to_string(), LoraSpec { base: "smollm2".into(), path: lora_path(1) }),
            ("two".to_string(), LoraSpec { base: "smollm2".into(), path: lora_path(2) }),
        ]
        .into(),
        threads: Some(threads),
        slots: 16,
        ..Default::default()
    };
    let engine = Arc::new(LlamaEngine::new(config).expect("engine"));
    runtime.block_on(engine.preload("smollm2")).expect("load");

    // Aggregate tokens/s at each concurrency (median of `rounds()`, default 3), each engine round
    // right after a llama-server round on the same requests.
    let stats = runtime.block_on(engine.stats("smollm2")).expect("loaded");
    let counters = || {
        use std::sync::atomic::Ordering::Relaxed;
        (stats.steps.load(Relaxed), stats.batched_tokens.load(Relaxed), stats.compactions.load(Relaxed))
    };
    let mut levels = serde_json::Map::new();
    let mut ours = std::collections::BTreeMap::new();
    let mut anchor = std::collections::BTreeMap::new();
    // Each engine round over the llama-server round just before it: drift between
    // rounds cancels in these, so their spread shows the run's noise.
    let mut paired = serde_json::Map::new();
    let rounds = rounds();
    for n in chosen_levels() {
        let mut rates = Vec::new();
        let mut server_rates = Vec::new();
        let (steps0, tokens0, moves0) = counters();
        for _ in 0..rounds {
            if let Ok(server) = &server {
                server_rates.push(server.round(n));
                settle();
            }
            let started = Instant::now();
            let tokens: usize = runtime.block_on(async {
                let runs = (0..n).map(|i| {
                    let engine = engine.clone();
                    async move {
                        let params = GenerateParams { n_predict: TOKENS, ..Default::default() };
                        engine.generate(GenerateRequest::new("smollm2", prompt(i), params)).await.expect("generate")
                    }
                });
                futures::future::join_all(runs).await.iter().map(|g| g.tokens.len()).sum()
            });
            rates.push(tokens as f64 / started.elapsed().as_secs_f64());
            settle();
        }
        let mut pairs: Vec<f64> = rates.iter().zip(&server_rates).map(|(ours, server)| ours / server).collect();
        let (steps1, tokens1, moves1) = counters();
        let rate = median(&mut rates);
        let versus_server = if server_rates.is_empty() {
            String::new()
        } else {
            let server_rate = median(&mut server_rates);
            anchor.insert(n, server_rate);
            println!("llama-server, {n:2} concurrent:  {server_rate:8.1} tok/s aggregate");
            let (low, high) = min_max(&pairs);
            let spread = format!("paired rounds {low:.2}–{high:.2}, median {:.2}", median(&mut pairs));
            paired.insert(n.to_string(), json!((median(&mut pairs) * 1000.0).round() / 1000.0));
            format!(", {:.2}× llama-server; {spread}", rate / server_rate)
        };
        println!(
            "engine, {n:2} concurrent:        {rate:8.1} tok/s aggregate  ({:.2}× native sequential{versus_server})",
            rate / native_tok_s
        );
        println!(
            "  engine decode steps per round: {:.0}, tokens per step: {:.1}, slot compactions per round: {:.1}",
            (steps1 - steps0) as f64 / rounds as f64,
            (tokens1 - tokens0) as f64 / (steps1 - steps0).max(1) as f64,
            (moves1 - moves0) as f64 / rounds as f64
        );
        levels.insert(n.to_string(), json!((rate * 10.0).round() / 10.0));
        ours.insert(n, rate);
    }
    let (server_levels, ratios, server_note) = match server.map(|_| &anchor) {
        Ok(rates) => {
            let levels: serde_json::Map<String, serde_json::Value> =
                rates.iter().map(|(n, r)| (n.to_string(), json!((r * 10.0).round() / 10.0))).collect();
            let ratios: serde_json::Map<String, serde_json::Value> =
                rates.iter().map(|(n, r)| (n.to_string(), json!((ours[n] / r * 1000.0).round() / 1000.0))).collect();
            (json!(levels), json!(ratios), "llama-server b11434 (same llama.cpp sources as the engine)".to_string())
        }
        Err(why) => (json!(null), json!(null), format!("absent: {why}")),
    };

    // LoRA switch time: requests with two adapters interleaved on one warm base.
    let (switches0, ns0) = (
        stats.lora_switches.load(std::sync::atomic::Ordering::Relaxed),
        stats.lora_switch_ns.load(std::sync::atomic::Ordering::Relaxed),
    );
    runtime.block_on(async {
        let runs = (0..8).map(|i| {
            let engine = engine.clone();
            async move {
                let params = GenerateParams {
                    n_predict: 16,
                    lora: Some(if i % 2 == 0 { "one" } else { "two" }.to_string()),
                    ..Default::default()
                };
                engine.generate(GenerateRequest::new("smollm2", prompt(i), params)).await.expect("lora generate")
            }
        });
        futures::future::join_all(runs).await
    });
    let switches = stats.lora_switches.load(std::sync::atomic::Ordering::Relaxed) - switches0;
    let switch_ns = stats.lora_switch_ns.load(std::sync::atomic::Ordering::Relaxed) - ns0;
    let lora_switch_ms = switch_ns as f64 / switches.max(1) as f64 / 1e6;
    println!("LoRA switch on a warm base:     {lora_switch_ms:8.3} ms mean over {switches} switches");

    // Time to first token, streamed, alone (median of 9).
    let mut ttft = Vec::new();
    for i in 0..9 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut request =
            GenerateRequest::new("smollm2", prompt(i), GenerateParams { n_predict: 16, ..Default::default() });
        request.stream = Some(tx);
        let started = Instant::now();
        let first = runtime.block_on(async {
            let engine = engine.clone();
            let run = tokio::spawn(async move { engine.generate(request).await });
            let first = rx.recv().await.map(|_| started.elapsed());
            let _ = run.await;
            first
        });
        ttft.push(first.unwrap_or(Duration::ZERO).as_secs_f64() * 1000.0);
    }
    let ttft_ms = median(&mut ttft);
    println!("time to first token (streamed): {ttft_ms:8.2} ms median, alone");

    let mixed = mixed_lora::run(&runtime, threads, rounds);
    let mixed_8 = mixed["engine"]["vs_none"]["8"].clone();

    let at8 = levels.get("8").and_then(|v| v.as_f64()).unwrap_or(0.0);
    println!(
        "{}",
        json!({
            "bench": "engine",
            "threads": threads,
            "tokens_per_request": TOKENS,
            "native_sequential_tok_s": (native_tok_s * 10.0).round() / 10.0,
            "aggregate_tok_s": levels,
            "ratio_at_8_vs_native_sequential": (at8 / native_tok_s * 1000.0).round() / 1000.0,
            "llama_server_anchor": server_note,
            "llama_server_tok_s": server_levels,
            "ratio_vs_llama_server": ratios,
            "paired_ratio_median_vs_llama_server": paired,
            "lora_switch_ms": (lora_switch_ms * 1000.0).round() / 1000.0,
            "lora_switches": switches,
            "ttft_ms": (ttft_ms * 100.0).round() / 100.0,
            "mixed_lora_8_adapters_vs_none": mixed_8,
            "mixed_lora": mixed,
        })
    );
}

/// Lets OpenMP threads that spin after a decode go idle before the other side runs.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

/// llama-server's flags for the engine's settings: `slots` slots of 4096 tokens each, the
/// engine's threads, per-slot KV streams (as the engine uses), batches of 512.
fn llama_server_args(threads: u32, slots: usize) -> Vec<String> {
    let (threads, slots, ctx) = (threads.to_string(), slots.to_string(), (4096 * slots).to_string());
    let (threads, slots, ctx) = (threads.as_str(), slots.as_str(), ctx.as_str());
    ["-t", threads, "-tb", threads, "-c", ctx, "-np", slots, "-b", "512", "-ub", "512", "--no-kv-unified"]
        .map(String::from)
        .to_vec()
}

/// llama-server with the engine's slots (16), context per slot (4096), batch (512),
/// threads and per-slot KV streams, prompt cache off.
struct LlamaServer {
    process: wasmesh_tests::Process,
}

impl LlamaServer {
    fn start(threads: u32) -> Result<Self, String> {
        let args = llama_server_args(threads, LEVELS[LEVELS.len() - 1]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = wasmesh_benches::start_llama_server(&model_path(), &args, "engine")
            .inspect_err(|why| println!("llama-server anchor: {why}"))?;
        Ok(Self { process })
    }

    /// One round: `n` requests at once; aggregate generated tokens/s.
    fn round(&self, n: usize) -> f64 {
        server_round(
            self.process.addr,
            n,
            |i| json!({"prompt": prompt(i), "n_predict": TOKENS, "temperature": 0.0, "cache_prompt": false}),
        )
    }
}

/// One round against llama-server: `n` requests at once to `/completion`, request `i`
/// with `body(i)`; aggregate generated tokens/s.
fn server_round(addr: std::net::SocketAddr, n: usize, body: impl Fn(usize) -> serde_json::Value + Sync) -> f64 {
    let started = Instant::now();
    let tokens: u64 = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..n)
            .map(|i| {
                let body = &body;
                scope.spawn(move || {
                    let r = wasmesh_tests::post_json(addr, "/completion", &body(i));
                    assert_eq!(r.status, 200, "llama-server: {}", r.text());
                    r.json()["tokens_predicted"].as_u64().expect("tokens_predicted")
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().expect("request thread")).sum()
    });
    tokens as f64 / started.elapsed().as_secs_f64()
}

/// The anchor: the 16 requests of the top level, one after another, with a plain
/// greedy loop (prompt processing and generation counted, context creation not).
fn native_child() {
    let threads = threads() as i32;
    let native = NativeModel::load(&model_path(), 0).expect("load model");
    native.greedy(&prompt(0), 8, 4096, threads).expect("warm-up");
    let (mut tokens, mut seconds) = (0usize, 0f64);
    for i in 0..16 {
        let run = native.greedy(&prompt(i), TOKENS as usize, 4096, threads).expect("native run");
        tokens += run.tokens.len();
        seconds += (run.prompt_time + run.gen_time).as_secs_f64();
    }
    println!("{}", tokens as f64 / seconds);
}
