//! `cargo bench --bench host`: the host runtime against its anchors, in one run.
//!
//! * generation tokens/s, native llama.cpp (a fresh context, a plain greedy loop)
//!   versus the `chat` component over HTTP through the host, same prompt, same
//!   token count, both timed end to end (prompt + generation);
//! * instantiation p50/p99 of `hello` with the pooling allocator and `InstancePre`
//!   (median of 5 rounds of 20 000), and of `chat` beside it for comparison;
//! * `hello` requests/s under `wrk` through the host, versus the same component
//!   under `wasmtime serve` (wasmtime-cli of the same version, `benches/setup.sh`);
//! * the engine's fixed cost per inference (all but prompt processing and decoding).
//!
//! Ends with one line of JSON holding the figures.
//!
//! `cargo bench --bench host -- --instantiate-only` measures instantiation alone
//! (no model is loaded; a few seconds), for work on the host's per-request cost.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_benches::{median, min_max, percentile, wrk_rps};
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, native::NativeModel};
use wasmesh_runtime::{Host, HostConfig};
use wasmesh_tests::{components_dir, model_path, post_json};

const PROMPT: &str =
    "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n";
const TOKENS: usize = 64;
const RUNS: usize = 7;

fn threads() -> u32 {
    std::env::var("WASMESH_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list.
    }
    if std::env::args().any(|a| a == "--native-child") {
        return native_child();
    }
    let model = model_path();
    let components = components_dir();
    assert!(model.is_file(), "missing {}: run `bash deploy/setup.sh`", model.display());
    assert!(components.join("chat.wasm").is_file(), "missing components: run `bash guest-components/build.sh`");
    let threads = threads();
    println!(
        "machine: {} cores available, {threads} inference threads",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // 1. Native llama.cpp runs in child processes of its own: two OpenMP thread pools
    //    in one process (the native loop's and the engine's) spin against each other
    //    on a small machine and slow whichever runs second. One child per round,
    //    alternating with the engine and the component, so drift hits all alike.
    let native_run = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--native-child")
            .env("WASMESH_BENCH_THREADS", threads.to_string())
            .output()
            .expect("run the native child");
        assert!(out.status.success(), "native child failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().expect("native tok/s")
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if std::env::args().any(|a| a == "--instantiate-only") {
        return instantiate_only(&runtime, &model, &components);
    }
    let slots =
        std::env::var("WASMESH_BENCH_SLOTS").ok().and_then(|s| s.parse().ok()).unwrap_or(LlamaConfig::default().slots);
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model.clone())].into(),
        threads: Some(threads),
        slots,
        ..Default::default()
    };
    let engine: Arc<dyn InferenceEngine> = Arc::new(LlamaEngine::new(config).expect("engine"));
    let host = Host::new(HostConfig::default(), engine.clone()).expect("host");
    let manifest = wasmesh_api::AppManifest::parse(include_str!("../examples/demo/wasmesh.toml")).unwrap();
    let addr = runtime.block_on(async {
        host.load_app(manifest, &components).await.expect("load demo app");
        engine.preload("smollm2").await.expect("load model");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = host.clone();
        tokio::spawn(async move { h.serve(listener).await });
        addr
    });
    host.set_ready(true);

    // 2. Rounds of: native (child), the engine alone (no Wasm, no HTTP), the chat
    //    component through the host over HTTP; the same prompt and token count.
    let body = json!({"prompt": PROMPT, "max_tokens": TOKENS, "temperature": 0});
    post_json(addr, "/chat", &body);
    let (mut native_rates, mut engine_rates, mut wasm_rates) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        native_rates.push(native_run());
        let t = Instant::now();
        let g = runtime
            .block_on(engine.generate(GenerateRequest::new(
                "smollm2",
                PROMPT,
                GenerateParams { n_predict: TOKENS as u32, ..Default::default() },
            )))
            .expect("generate");
        engine_rates.push(g.tokens.len() as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let r = post_json(addr, "/chat", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        let n = r.json()["usage"]["output_tokens"].as_u64().unwrap() as f64;
        wasm_rates.push(n / t.elapsed().as_secs_f64());
    }
    let native_tok_s = median(&mut native_rates);
    let engine_tok_s = median(&mut engine_rates);
    let wasm_tok_s = median(&mut wasm_rates);
    let ratio = wasm_tok_s / native_tok_s;
    println!(
        "native llama.cpp:   {native_tok_s:8.1} tok/s ({TOKENS} tokens, prompt included, context creation not; own process)"
    );
    println!("engine (direct):    {engine_tok_s:8.1} tok/s ({slots} slots, median of {RUNS} rounds)");
    println!("chat component:     {wasm_tok_s:8.1} tok/s (over HTTP)  ratio {ratio:.3} (target >= 0.98)");

    // 3. Fixed cost per inference inside the engine.
    let mut fixed = Vec::new();
    runtime.block_on(async {
        for _ in 0..20 {
            let g = engine
                .generate(GenerateRequest::new(
                    "smollm2",
                    PROMPT,
                    GenerateParams { n_predict: 8, ..Default::default() },
                ))
                .await
                .expect("generate");
            fixed.push(g.fixed_cost.as_secs_f64() * 1000.0);
        }
    });
    let fixed_cost_ms = median(&mut fixed);
    println!("fixed cost / inference: {fixed_cost_ms:.3} ms (median of 20; target <= 1 ms)");

    // 4. Instantiation of `hello` (and of `chat`, for comparison).
    let i = instantiation(&runtime, &host);

    // 5. hello under load: our host, then `wasmtime serve`.
    let hello_rps = wrk_rps(&format!("http://{addr}/hello"), 16, 5).expect("wrk against the host");
    println!("hello via host:     {hello_rps:8.0} req/s (wrk -c16 -d5s)");
    let (wasmtime_rps, hello_vs_wasmtime_serve) = match wasmtime_serve_rps(&components.join("hello.wasm")) {
        Ok(rps) => {
            println!("hello via wasmtime serve: {rps:8.0} req/s  ratio {:.3} (target >= 1.0)", hello_rps / rps);
            (Some(rps), Some(hello_rps / rps))
        }
        Err(e) => {
            println!("wasmtime serve: not measured: {e}");
            (None, None)
        }
    };

    let mut figures = i.json();
    figures.extend(
        [
            ("bench", json!("host")),
            ("native_tok_s", json!(round(native_tok_s, 1))),
            ("engine_tok_s", json!(round(engine_tok_s, 1))),
            ("wasm_tok_s", json!(round(wasm_tok_s, 1))),
            ("ratio", json!(round(ratio, 3))),
            ("hello_rps", json!(round(hello_rps, 0))),
            ("wasmtime_serve_rps", json!(wasmtime_rps.map(|v| round(v, 0)))),
            ("hello_vs_wasmtime_serve", json!(hello_vs_wasmtime_serve.map(|v| round(v, 3)))),
            ("fixed_cost_ms", json!(round(fixed_cost_ms, 3))),
            ("threads", json!(threads)),
        ]
        .map(|(key, value)| (key.to_string(), value)),
    );
    println!("{}", serde_json::Value::Object(figures));
}

/// Instantiation figures: medians over rounds of 20 000 instantiations each.
struct Instantiation {
    /// `hello` (no_std: only the `wasi:http` and `wasi:io` imports it calls).
    hello_p50: f64,
    hello_p99: f64,
    /// The per-round p50s of `hello`, lowest and highest.
    hello_p50_range: (f64, f64),
    /// `hello` with its store's creation (WASI, `wasi:http`, `wasi:nn` state, limits).
    hello_store_p50: f64,
    /// `chat`, a typical component (Rust std, serde, `wasi:nn`).
    chat_p50: f64,
}

impl Instantiation {
    /// The figures as they appear in the bench's JSON line.
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        [
            ("instantiate_p50_us", json!(round(self.hello_p50, 2))),
            ("instantiate_p50_us_range", json!([round(self.hello_p50_range.0, 2), round(self.hello_p50_range.1, 2)])),
            ("instantiate_p99_us", json!(round(self.hello_p99, 2))),
            ("store_and_instantiate_p50_us", json!(round(self.hello_store_p50, 2))),
            ("instantiate_chat_p50_us", json!(round(self.chat_p50, 2))),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect()
    }
}

const INSTANTIATE_ROUNDS: usize = 5;
const INSTANTIATE_RUNS: usize = 20_000;

/// Rounds of 20 000 instantiations of `hello` then `chat`, alternating, so that
/// drift in the machine's speed hits both; each figure is the median over rounds.
fn instantiation(runtime: &tokio::runtime::Runtime, host: &Host) -> Instantiation {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (mut p50s, mut p99s, mut store_p50s, mut chat_p50s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..INSTANTIATE_ROUNDS {
        let times =
            runtime.block_on(host.measure_instantiation("/hello", INSTANTIATE_RUNS)).expect("instantiate hello");
        let (mut inst, mut with_store): (Vec<Duration>, Vec<Duration>) = times.into_iter().unzip();
        p50s.push(us(percentile(&mut inst, 50.0)));
        p99s.push(us(percentile(&mut inst, 99.0)));
        store_p50s.push(us(percentile(&mut with_store, 50.0)));
        let times = runtime.block_on(host.measure_instantiation("/chat", INSTANTIATE_RUNS)).expect("instantiate chat");
        let mut inst: Vec<Duration> = times.into_iter().map(|(inst, _)| inst).collect();
        chat_p50s.push(us(percentile(&mut inst, 50.0)));
    }
    let range = min_max(&p50s);
    let figures = Instantiation {
        hello_p50: median(&mut p50s),
        hello_p99: median(&mut p99s),
        hello_p50_range: range,
        hello_store_p50: median(&mut store_p50s),
        chat_p50: median(&mut chat_p50s),
    };
    println!(
        "instantiate hello:  p50 {:.2} us (rounds {:.2}-{:.2})  p99 {:.1} us (pooling + InstancePre; median of {INSTANTIATE_ROUNDS} rounds of {INSTANTIATE_RUNS}; target p50 <= 5 us)",
        figures.hello_p50, range.0, range.1, figures.hello_p99
    );
    println!("  with the store (WASI, wasi:http, wasi:nn state, limits): p50 {:.2} us", figures.hello_store_p50);
    println!("instantiate chat:   p50 {:.2} us (Rust std, serde, wasi:nn: a typical component)", figures.chat_p50);
    figures
}

/// `--instantiate-only`: the demo app on a host whose model is never loaded.
fn instantiate_only(runtime: &tokio::runtime::Runtime, model: &std::path::Path, components: &std::path::Path) {
    let config = LlamaConfig { models: [("smollm2".to_string(), model.to_path_buf())].into(), ..Default::default() };
    let engine: Arc<dyn InferenceEngine> = Arc::new(LlamaEngine::new(config).expect("engine"));
    let host = Host::new(HostConfig::default(), engine).expect("host");
    let manifest = wasmesh_api::AppManifest::parse(include_str!("../examples/demo/wasmesh.toml")).unwrap();
    runtime.block_on(host.load_app(manifest, components)).expect("load demo app");
    let i = instantiation(runtime, &host);
    let mut figures = i.json();
    figures.insert("bench".into(), json!("host-instantiate"));
    println!("{}", serde_json::Value::Object(figures));
}

/// The native anchor: one plain greedy run after a warm-up; prints its tokens/s over
/// prompt processing plus generation (its context creation is not counted, so the
/// anchor is as strict as it can be).
fn native_child() {
    let threads = threads() as i32;
    let native = NativeModel::load(&model_path(), 0).expect("load model");
    native.greedy(PROMPT, 8, 4096, threads).expect("warm-up");
    let run = native.greedy(PROMPT, TOKENS, 4096, threads).expect("native run");
    println!("{}", run.tokens.len() as f64 / (run.prompt_time + run.gen_time).as_secs_f64());
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Starts `wasmtime serve` on `hello.wasm` and measures it with the same `wrk` load.
fn wasmtime_serve_rps(hello: &std::path::Path) -> Result<f64, String> {
    let bin = std::env::var_os("WASMTIME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| wasmesh_tests::cache_dir().join("tools/bin/wasmtime"));
    if !bin.is_file() {
        return Err(format!("{} not found: run `bash benches/setup.sh`", bin.display()));
    }
    let addr = wasmesh_tests::free_addr();
    let mut child = std::process::Command::new(&bin)
        .args(["serve", "-S", "cli", "--addr", &addr.to_string(), hello.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return Err("wasmtime serve did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rps = wrk_rps(&format!("http://{addr}/"), 16, 5);
    let _ = child.kill();
    let _ = child.wait();
    rps
}
