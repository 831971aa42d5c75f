//! `cargo bench --bench placement`: serverless placement, each figure against an anchor
//! measured in the same run, ending with one line of JSON.
//!
//! * **Cold time-to-first-token**: a model on no node, fetched from an S3-compatible
//!   store (s3s-fs) behind a proxy capped at `WASMESH_BENCH_ORIGIN_MIB_S` (default
//!   16 MiB/s), loaded and asked for one token through `wasmesh_agent::OnDemand` over
//!   the llama.cpp engine; against the same three steps measured alone: our fetcher into
//!   an empty cache, llama.cpp's model load (`NativeModel::load`), and one token from a
//!   fresh context (`NativeModel::greedy`). Goal: ratio ≤ 1.1.
//! * **Adapter cold attach**: on a warm base, a request naming a LoRA adapter the node
//!   has never seen (fetched from the registry on loopback, verified, attached without
//!   reloading the base) against the same request once the adapter is attached; the
//!   difference is the fetch and the attach. Goal: ≤ 100 ms (ServerlessLLM reports
//!   83.5 ms to load a LoRA).
//!
//! The registry is the `wasmesh` binary of this profile (build it first:
//! `cargo build -p wasmesh` in the same profile, or set `WASMESH_BIN`).

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_agent::{FetchConfig, Fetcher, OnDemand};
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, native::NativeModel};
use wasmesh_tests::{WeightsFabric, lora_path, model_path};

const PROMPT: &str = "The capital of France is";
const REPS: usize = 3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !wasmesh_tests::prerequisites() {
        eprintln!("prerequisites missing: run `bash deploy/setup.sh` and build `wasmesh` in this profile");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cap_mib: u64 = std::env::var("WASMESH_BENCH_ORIGIN_MIB_S").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let threads = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let size = std::fs::metadata(model_path()).expect("test model").len();
    println!("model {} MiB; origin capped at {cap_mib} MiB/s; {threads} threads; median of {REPS} runs", size >> 20);
    let mut figures = serde_json::Map::new();
    figures.insert("bench".into(), "placement".into());
    figures.insert("origin_cap_mib_s".into(), cap_mib.into());

    // WASMESH_BENCH_ONLY=fabric runs the warm-hit part alone.
    if std::env::var("WASMESH_BENCH_ONLY").as_deref() != Ok("fabric") {
        // Cold time-to-first-token.
        let dir = scratch("cold");
        let fabric = WeightsFabric::start(&dir, Some(cap_mib << 20)).expect("s3s-fs (run `bash deploy/setup.sh`)");
        let mut ours = Vec::new();
        let mut alone = Vec::new();
        for rep in 0..REPS {
            let engine = LlamaEngine::new(LlamaConfig { threads: Some(threads), ..Default::default() }).unwrap();
            let fetcher = rt
                .block_on(Fetcher::open(
                    &fetch_config(&fabric.url(), &fabric.provider, &dir, &format!("ours{rep}")),
                    &prometheus(),
                ))
                .unwrap();
            let node = OnDemand::new(Arc::new(engine), fetcher, Duration::from_secs(600));
            let t = Instant::now();
            let out = rt.block_on(node.generate(one_token(None))).unwrap();
            assert!(out.usage.output_tokens <= 1);
            ours.push(t.elapsed().as_secs_f64());
            drop(node);

            let fetcher = rt
                .block_on(Fetcher::open(
                    &fetch_config(&fabric.url(), &fabric.provider, &dir, &format!("alone{rep}")),
                    &prometheus(),
                ))
                .unwrap();
            let t = Instant::now();
            let (path, _lease) = rt.block_on(fetcher.model("smollm2", Arc::new(wasmesh_client::NoProgress))).unwrap();
            let fetch = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let model = NativeModel::load(&path, 0).unwrap();
            let load = t.elapsed().as_secs_f64();
            let t = Instant::now();
            // A context as large as the engine's (4 slots of 4096 tokens): the same KV cache to allocate.
            model.greedy(PROMPT, 1, 4 * 4096, threads as i32).unwrap();
            let first = t.elapsed().as_secs_f64();
            alone.push((fetch, load, first));
            println!(
                "run {rep}: ours {:.3} s; alone: fetch {fetch:.3} + load {load:.3} + first token {first:.3} = {:.3} s",
                ours[rep],
                fetch + load + first
            );
        }
        drop(fabric);
        let ours_s = median(ours.clone());
        let fetch_s = median(alone.iter().map(|a| a.0).collect());
        let load_s = median(alone.iter().map(|a| a.1).collect());
        let first_s = median(alone.iter().map(|a| a.2).collect());
        let ratio = ours_s / (fetch_s + load_s + first_s);
        println!(
            "cold TTFT: ours {ours_s:.3} s vs fetch {fetch_s:.3} + load {load_s:.3} + first token {first_s:.3} s alone: ratio {ratio:.3} (goal ≤ 1.1)"
        );
        figures.insert("cold_ttft_s".into(), round(ours_s, 3));
        figures.insert("anchor_fetch_s".into(), round(fetch_s, 3));
        figures.insert("anchor_load_s".into(), round(load_s, 3));
        figures.insert("anchor_first_token_s".into(), round(first_s, 3));
        figures.insert("cold_ttft_ratio".into(), round(ratio, 3));

        // Adapter cold attach, on loopback: a registry storing on its own disk (no cap).
        let dir = scratch("adapter");
        let (registry, admin_key) = wasmesh_tests::start_registry(&dir, &[]);
        let url = format!("http://{}", registry.addr);
        let admin = wasmesh_client::Client::new(&url, Some(admin_key)).unwrap();
        let provider = rt.block_on(admin.create_key("bench", &[wasmesh_api::wire::Scope::Provider])).unwrap().key;
        rt.block_on(admin.push_model(&model_path(), "smollm2", &wasmesh_client::NoProgress)).unwrap();
        let engine = Arc::new(LlamaEngine::new(LlamaConfig { threads: Some(threads), ..Default::default() }).unwrap());
        let fetcher =
            rt.block_on(Fetcher::open(&fetch_config(&url, &provider, &dir, "adapter"), &prometheus())).unwrap();
        let node = OnDemand::new(engine.clone(), fetcher, Duration::from_secs(600));
        rt.block_on(node.generate(one_token(None))).unwrap(); // the base, warm
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for rep in 0..REPS {
            let name = format!("a{rep}");
            rt.block_on(admin.push_lora(&lora_path(1 + rep as u32), &name, "smollm2", &wasmesh_client::NoProgress))
                .unwrap();
            let t = Instant::now();
            rt.block_on(node.generate(one_token(Some(&name)))).unwrap();
            cold.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            rt.block_on(node.generate(one_token(Some(&name)))).unwrap();
            warm.push(t.elapsed().as_secs_f64());
            println!("adapter {name}: first request {:.1} ms, next {:.1} ms", cold[rep] * 1e3, warm[rep] * 1e3);
        }
        let attach_ms = (median(cold.clone()) - median(warm.clone())) * 1e3;
        let stats = rt.block_on(engine.stats("smollm2")).expect("the base is loaded");
        let llama_attach_ms = stats.lora_attach_ns.load(std::sync::atomic::Ordering::Relaxed) as f64
            / stats.lora_attaches.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64
            / 1e6;
        println!(
            "adapter cold attach (fetch + verify + attach on a warm base): {attach_ms:.1} ms (goal ≤ 100 ms), \
             of which llama.cpp's attach {llama_attach_ms:.1} ms"
        );
        figures.insert("adapter_llama_attach_ms".into(), round(llama_attach_ms, 1));
        // The fetch alone (registry lookup, download, verification), for the breakdown.
        let fetcher =
            rt.block_on(Fetcher::open(&fetch_config(&url, &provider, &dir, "fetch-only"), &prometheus())).unwrap();
        let mut fetch_only = Vec::new();
        for rep in 0..REPS {
            let name = format!("f{rep}");
            rt.block_on(admin.push_lora(&lora_path(4 + rep as u32), &name, "smollm2", &wasmesh_client::NoProgress))
                .unwrap();
            let t = Instant::now();
            rt.block_on(fetcher.lora(&name, Arc::new(wasmesh_client::NoProgress))).unwrap();
            fetch_only.push(t.elapsed().as_secs_f64());
        }
        let fetch_ms = median(fetch_only) * 1e3;
        println!("adapter fetch alone (lookup + download + verify, loopback): {fetch_ms:.1} ms");
        figures.insert("adapter_fetch_ms".into(), round(fetch_ms, 1));
        figures.insert("adapter_cold_attach_ms".into(), round(attach_ms, 1));
        figures.insert("adapter_warm_request_ms".into(), round(median(warm) * 1e3, 1));
        drop(node);
        drop(registry);
    }

    if std::env::var("WASMESH_BENCH_ONLY").as_deref() != Ok("fabric") {
        special_tokens_against_llama_server(&rt, &mut figures);
    }

    if std::env::var("WASMESH_BENCH_FABRIC").as_deref() != Ok("0") {
        let requests: usize = std::env::var("WASMESH_BENCH_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        let trace = fabric::zipf_trace(requests + fabric::WARMUP, 1.1, 7);
        let ours = fabric::warm_hits(&trace, fabric::Via::Router);
        let rr = fabric::warm_hits(&trace, fabric::Via::RoundRobin);
        println!(
            "warm-hit rate over {requests} requests after {} of warm-up (4 hosts, 2 models, 6 adapters, Zipf 1.1): \
             router {:.2}% vs round-robin {:.2}% (goal ≥ 99%)",
            fabric::WARMUP,
            ours * 100.0,
            rr * 100.0
        );
        figures.insert("warm_hit_rate".into(), round(ours, 4));
        figures.insert("warm_hit_rate_round_robin".into(), round(rr, 4));
        figures.insert("fabric_requests".into(), requests.into());
    }
    println!("{}", serde_json::Value::Object(figures));
}

/// The warm-hit rate on a real fabric: a registry, a router and 4 hosts (each with
/// model memory for one of the two models), 2 models (SmolLM2 and Gemma 3) and 6 adapters.
mod fabric {
    use std::net::SocketAddr;
    use std::time::Duration;
    use wasmesh_api::wire::Scope;
    use wasmesh_client::{Client, NoProgress};
    use wasmesh_tests::{Payload, components_dir, lora_path, model_path, request, second_model_path};

    pub(crate) const WARMUP: usize = 200;
    const HOSTS: usize = 4;

    pub(crate) enum Via {
        Router,
        RoundRobin,
    }

    /// The keys: SmolLM2 alone, with each of 6 adapters, and Gemma.
    fn keys() -> Vec<(&'static str, Option<String>)> {
        let mut keys = vec![("smollm2", None)];
        keys.extend((1..=6).map(|i| ("smollm2", Some(format!("l{i}")))));
        keys.push(("gemma", None));
        keys
    }

    /// `n` key indices, Zipf-distributed with exponent `s` (a fixed seed: both runs
    /// replay the same trace).
    pub(crate) fn zipf_trace(n: usize, s: f64, seed: u64) -> Vec<usize> {
        let k = keys().len();
        let weights: Vec<f64> = (1..=k).map(|r| 1.0 / (r as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let mut x = (state >> 11) as f64 / (1u64 << 53) as f64 * total;
                for (i, w) in weights.iter().enumerate() {
                    if x < *w {
                        return i;
                    }
                    x -= w;
                }
                k - 1
            })
            .collect()
    }

    /// Replays `trace` on a fresh fabric; returns the share of requests after the
    /// warm-up that ran where their model and adapter were warm.
    pub(crate) fn warm_hits(trace: &[usize], via: Via) -> f64 {
        let tag = match via {
            Via::Router => "router",
            Via::RoundRobin => "rr",
        };
        let dir = super::scratch(&format!("fabric-{tag}"));
        let (registry, admin) = wasmesh_tests::start_registry(&dir, &[]);
        let url = format!("http://{}", registry.addr);
        let rt = wasmesh_tests::runtime();
        let client = Client::new(&url, Some(admin.clone())).unwrap();
        let key = |scope| rt.block_on(client.create_key("bench", &[scope])).unwrap().key;
        let (invoke, provider) = (key(Scope::Invoke), key(Scope::Provider));
        rt.block_on(client.push_model(&model_path(), "smollm2", &NoProgress)).unwrap();
        rt.block_on(client.push_model(&second_model_path(), "gemma", &NoProgress)).unwrap();
        let mut grants = vec!["\"smollm2\"".to_string(), "\"gemma\"".to_string()];
        for i in 1..=6u32 {
            rt.block_on(client.push_lora(&lora_path(i), &format!("l{i}"), "smollm2", &NoProgress)).unwrap();
            grants.push(format!("\"smollm2:l{i}\""));
        }
        let app = dir.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::copy(components_dir().join("chat.wasm"), app.join("chat.wasm")).unwrap();
        std::fs::write(
            app.join("wasmesh.toml"),
            format!(
                "[app]\nname = \"demo\"\n\n[component.chat]\nsource = \"chat.wasm\"\nmodels = [{}]\n\n[[route]]\npath = \"/chat\"\ncomponent = \"chat\"\n",
                grants.join(", ")
            ),
        )
        .unwrap();
        rt.block_on(client.deploy(&app.join("wasmesh.toml"), &NoProgress)).unwrap();
        let (mut router, quic) = wasmesh_tests::spawn_router(&dir, "router", &url, &admin);
        let http = router.addr;
        router.wait_ready(Duration::from_secs(60));
        let mut hosts = Vec::new();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for i in 0..HOSTS {
            let extra = ["--no-p2p", "--slots", "2", "--model-memory-mb", "300"];
            let mut host = wasmesh_tests::spawn_host(&dir, &format!("host{i}"), &url, &provider, &[quic], &extra);
            host.wait_ready(Duration::from_secs(60));
            let addr = host.addr;
            hosts.push(host);
            addrs.push(addr);
        }
        wasmesh_tests::wait_for("4 hosts on the router", Duration::from_secs(30), || {
            request(http, "GET", "/health", &[], None).is_ok_and(|r| r.json()["ready"] == HOSTS)
        });
        wasmesh_tests::wait_for("hosts to load the app", Duration::from_secs(30), || {
            addrs.iter().all(|a| {
                request(*a, "GET", "/health", &[], None)
                    .is_ok_and(|r| r.json()["routes"].as_array().is_some_and(|r| !r.is_empty()))
            })
        });
        let auth = format!("Bearer {invoke}");
        let keys = keys();
        let warm_metric = || {
            let text = request(http, "GET", "/metrics", &[], None).unwrap().text();
            text.lines()
                .find_map(|l| l.strip_prefix("wasmesh_router_routed_total{tier=\"warm\"} "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut hits = 0usize;
        let mut warm_at_warmup = 0;
        for (i, &k) in trace.iter().enumerate() {
            if i == WARMUP {
                warm_at_warmup = warm_metric();
            }
            let (model, lora) = &keys[k];
            let mut body = serde_json::json!({"model": model, "prompt": "Hi", "max_tokens": 1, "temperature": 0});
            if let Some(l) = lora {
                body["lora"] = l.clone().into();
            }
            let body = body.to_string();
            let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
            let r = match via {
                Via::Router => request(http, "POST", "/fn/demo/chat", &headers, Some(Payload::Sized(body.as_bytes()))),
                Via::RoundRobin => {
                    let host = addrs[i % HOSTS];
                    if i >= WARMUP {
                        let want = match lora {
                            Some(l) => format!("{model}:{l}"),
                            None => model.to_string(),
                        };
                        let health = request(host, "GET", "/health", &[], None).unwrap().json();
                        if health["warm"].as_array().is_some_and(|w| w.iter().any(|m| m == want.as_str())) {
                            hits += 1;
                        }
                    }
                    request(host, "POST", "/fn/demo/chat", &headers, Some(Payload::Sized(body.as_bytes())))
                }
            }
            .unwrap();
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
        }
        if let Via::Router = via {
            hits = (warm_metric() - warm_at_warmup) as usize;
        }
        drop(hosts);
        drop(router);
        drop(registry);
        if std::env::var_os("WASMESH_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!("logs kept in {}", dir.display());
        }
        hits as f64 / (trace.len() - WARMUP) as f64
    }
}

/// A raw prompt with hand-written turn markers, to a model whose GGUF has no chat
/// template (Gemma 3 270M): the engine's prompt tokens and greedy output against
/// llama-server built from the same llama.cpp sources (`benches/build-llama-server.sh`),
/// with the same KV cache shape (`--swa-full`).
fn special_tokens_against_llama_server(
    rt: &tokio::runtime::Runtime,
    figures: &mut serde_json::Map<String, serde_json::Value>,
) {
    const RAW: &str = "<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n";
    let model = wasmesh_tests::second_model_path();
    if !model.is_file() {
        println!("special tokens vs llama-server: skipped ({} missing: run `bash deploy/setup.sh`)", model.display());
        figures.insert("special_tokens_match_llama_server".into(), serde_json::Value::Null);
        return;
    }
    let engine =
        LlamaEngine::new(LlamaConfig { threads: Some(1), n_ctx: 512, slots: 1, ..Default::default() }).unwrap();
    engine.add_model("gemma", model.clone()).unwrap();
    let ours = rt
        .block_on(engine.generate(GenerateRequest::new(
            "gemma",
            RAW,
            GenerateParams { n_predict: 12, ..Default::default() },
        )))
        .unwrap();
    // The engine's context keeps the whole window of sliding-window layers (llama.cpp's C
    // default); llama-server keeps only the window unless told (`--swa-full`).
    let args = ["-t", "1", "-tb", "1", "-c", "512", "-np", "1", "--swa-full"];
    let server = match wasmesh_benches::start_llama_server(&model, &args, "placement") {
        Ok(server) => server,
        Err(why) => {
            println!("special tokens vs llama-server: skipped ({why})");
            figures.insert("special_tokens_match_llama_server".into(), serde_json::Value::Null);
            return;
        }
    };
    let addr = server.addr;
    let body = serde_json::json!({"prompt": RAW, "n_predict": 12, "temperature": 0.0, "cache_prompt": false, "return_tokens": true});
    let theirs = wasmesh_tests::post_json(addr, "/completion", &body).json();
    let their_tokens: Vec<i64> =
        theirs["tokens"].as_array().map(|a| a.iter().filter_map(|t| t.as_i64()).collect()).unwrap_or_default();
    let their_prompt = theirs["tokens_evaluated"].as_u64().unwrap_or(0);
    let our_tokens: Vec<i64> = ours.tokens.iter().map(|&t| i64::from(t)).collect();
    let same = our_tokens == their_tokens && u64::from(ours.usage.input_tokens) == their_prompt;
    println!(
        "special tokens vs llama-server (gemma3, no template in its GGUF): prompt {} vs {} tokens, output {:?} vs {:?}: {}",
        ours.usage.input_tokens,
        their_prompt,
        our_tokens,
        their_tokens,
        if same { "identical" } else { "DIFFERENT" }
    );
    figures.insert("special_tokens_match_llama_server".into(), same.into());
    figures.insert("special_prompt_tokens".into(), ours.usage.input_tokens.into());
}

fn one_token(lora: Option<&str>) -> GenerateRequest {
    GenerateRequest::new(
        "smollm2",
        PROMPT,
        GenerateParams { n_predict: 1, lora: lora.map(String::from), ..Default::default() },
    )
}

fn fetch_config(registry: &str, key: &str, dir: &std::path::Path, name: &str) -> FetchConfig {
    FetchConfig {
        registry: registry.to_string(),
        key: key.to_string(),
        data_dir: dir.join(name),
        name: name.to_string(),
        cache_bytes: 4 << 30,
        no_p2p: true,
        p2p_listen: "127.0.0.1:0".parse().unwrap(),
        upload_bps: None,
        stall: wasmesh_weights::StallPolicy { min_rate: 1 << 20, window: Duration::from_secs(15) },
    }
}

fn prometheus() -> prometheus::Registry {
    prometheus::Registry::new()
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-placement-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(x: f64, digits: i32) -> serde_json::Value {
    let p = 10f64.powi(digits);
    serde_json::json!((x * p).round() / p)
}
