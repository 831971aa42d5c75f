//! The mixed-LoRA figures of `cargo bench --bench engine`: 8 concurrent greedy requests
//! (64 tokens each) over 0, 2, 4 and 8 different adapters, request `i` taking adapter
//! `i % k`, each mix's aggregate tokens/s against the same 8 requests without adapters
//! in the same run. Measured three ways, rounds alternating between the mixes:
//!
//! * the engine with per-sequence adapters (our llama.cpp patch: every request in
//!   every step, each with its own adapter);
//! * the engine's fallback, one adapter on the whole context with steps rotating
//!   between adapter groups (what the engine did before the patch);
//! * llama.cpp's `llama-server`, all 8 adapters loaded (`--lora`, not applied), each
//!   request naming its own (`"lora": [{"id": j, "scale": 1}]`), when it is built.

use serde_json::json;
use std::sync::Arc;
use std::time::Instant;
use wasmesh_benches::{median, min_max};
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec};
use wasmesh_tests::{lora_path, model_path};

/// Concurrent requests per round, and the adapter counts of the mixes (0: none, the
/// baseline, always measured).
const REQUESTS: usize = 8;
const MIXES: [usize; 4] = [0, 2, 4, 8];

/// The mixes measured: `WASMESH_BENCH_MIXES=8` narrows them (0 is always kept).
fn mixes() -> Vec<usize> {
    let chosen: Vec<usize> = std::env::var("WASMESH_BENCH_MIXES")
        .ok()
        .map(|m| m.split(',').filter_map(|k| k.trim().parse().ok()).filter(|k| MIXES.contains(k)).collect())
        .unwrap_or_else(|| MIXES.to_vec());
    MIXES.iter().copied().filter(|k| *k == 0 || chosen.contains(k)).collect()
}

/// Whether to measure a way: `WASMESH_BENCH_WAYS=engine` (of engine, rotation, llama-server).
fn wanted(way: &str) -> bool {
    std::env::var("WASMESH_BENCH_WAYS").map_or(true, |w| w.split(',').any(|x| x.trim() == way))
}

/// Prompts that the base model answers at length: every request, with or without an
/// adapter, generates all its tokens (an early end of text would make a mix look faster).
fn prompt(i: usize) -> String {
    const TOPICS: [&str; REQUESTS] = [
        "a lighthouse keeper",
        "a lost robot",
        "two rival bakers",
        "a dragon who could not fly",
        "a city under the sea",
        "a detective cat",
        "a winter journey",
        "a clockmaker's apprentice",
    ];
    format!("<|im_start|>user\nTell me a long story about {}.<|im_end|>\n<|im_start|>assistant\n", TOPICS[i])
}

fn adapter(i: usize, k: usize) -> Option<usize> {
    (k > 0).then(|| i % k)
}

/// Aggregate tokens/s of each round, per mix, for one engine mode.
fn engine_rates(runtime: &tokio::runtime::Runtime, threads: u32, rounds: usize, mixed: bool) -> Vec<Vec<f64>> {
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model_path())].into(),
        loras: (0..REQUESTS)
            .map(|j| (format!("a{j}"), LoraSpec { base: "smollm2".into(), path: lora_path(j as u32 + 1) }))
            .collect(),
        threads: Some(threads),
        slots: REQUESTS as u32,
        mixed_lora: mixed,
        ..Default::default()
    };
    let engine = Arc::new(LlamaEngine::new(config).expect("engine"));
    runtime.block_on(engine.preload("smollm2")).expect("load");
    let round = |k: usize| {
        let started = Instant::now();
        let tokens: usize = runtime.block_on(async {
            let runs = (0..REQUESTS).map(|i| {
                let engine = engine.clone();
                async move {
                    let params = GenerateParams {
                        n_predict: super::TOKENS,
                        lora: adapter(i, k).map(|j| format!("a{j}")),
                        ..Default::default()
                    };
                    engine.generate(GenerateRequest::new("smollm2", prompt(i), params)).await.expect("generate")
                }
            });
            futures::future::join_all(runs).await.iter().map(|g| g.tokens.len()).sum()
        });
        if std::env::var_os("WASMESH_BENCH_VERBOSE").is_some() {
            println!("    {k} adapters: {tokens} tokens in {:.2} s", started.elapsed().as_secs_f64());
        }
        tokens as f64 / started.elapsed().as_secs_f64()
    };
    // Attach every adapter before timing (a first use attaches it).
    round(REQUESTS);
    alternate(rounds, round)
}

/// `rounds` rounds, each running every mix once in turn: per mix, each round's rate.
fn alternate(rounds: usize, mut round: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    let mixes = mixes();
    let mut rates = vec![Vec::new(); mixes.len()];
    for _ in 0..rounds {
        for (m, &k) in mixes.iter().enumerate() {
            rates[m].push(round(k));
            super::settle();
        }
    }
    rates
}

/// The same rounds against llama-server with the 8 adapters loaded.
fn server_rates(threads: u32, rounds: usize) -> Result<Vec<Vec<f64>>, String> {
    let mut args = super::llama_server_args(threads, REQUESTS);
    args.push("--lora-init-without-apply".into());
    for j in 0..REQUESTS {
        args.extend(["--lora".to_string(), lora_path(j as u32 + 1).display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = wasmesh_benches::start_llama_server(&model_path(), &args, "mixed-lora")?;
    let addr = server.addr;
    let round = |k: usize| {
        super::server_round(addr, REQUESTS, |i| {
            // Every adapter named, the request's own at scale 1 (none: all at 0).
            let lora: Vec<_> = (0..REQUESTS)
                .map(|j| json!({"id": j, "scale": if adapter(i, k) == Some(j) { 1.0 } else { 0.0 }}))
                .collect();
            json!({
                "prompt": prompt(i), "n_predict": super::TOKENS, "temperature": 0.0,
                "cache_prompt": false, "lora": lora,
            })
        })
    };
    round(REQUESTS);
    Ok(alternate(rounds, round))
}

/// Prints one line per way, and returns the figures for the bench's JSON.
pub(crate) fn run(runtime: &tokio::runtime::Runtime, threads: u32, rounds: usize) -> serde_json::Value {
    // Medians per mix, and each round's rate over the same round's rate without adapters
    // (rounds alternate between the mixes, so drift between rounds cancels in the ratio).
    let show = |name: &str, rounds: &[Vec<f64>]| -> serde_json::Value {
        let mixes = mixes();
        let rates: Vec<f64> = rounds.iter().map(|r| median(&mut r.clone())).collect();
        let paired: Vec<Vec<f64>> =
            rounds.iter().map(|r| r.iter().zip(&rounds[0]).map(|(k, none)| k / none).collect()).collect();
        let ratio: Vec<f64> = paired.iter().map(|p| median(&mut p.clone())).collect();
        let cells: Vec<String> = mixes
            .iter()
            .zip(&rates)
            .zip(&paired)
            .skip(1)
            .map(|((k, r), p)| {
                let (low, high) = min_max(p);
                format!("{k}: {r:5.1} ({:.2}×, rounds {low:.2}–{high:.2})", median(&mut p.clone()))
            })
            .collect();
        println!("{name:<28}none {:5.1} tok/s; {}", rates[0], cells.join("; "));
        let map = |values: &[f64], scale: f64| -> serde_json::Map<String, serde_json::Value> {
            mixes.iter().zip(values).map(|(k, v)| (k.to_string(), json!((v * scale).round() / scale))).collect()
        };
        json!({"tok_s": map(&rates, 10.0), "vs_none": map(&ratio, 1000.0)})
    };
    println!("mixed LoRA, {REQUESTS} concurrent requests of {} tokens, request i on adapter i % k:", super::TOKENS);
    let mut mixed = json!(null);
    if wanted("engine") {
        mixed = show("  engine, per-sequence:", &engine_rates(runtime, threads, rounds, true));
        super::settle();
    }
    let mut rotation = json!(null);
    if wanted("rotation") {
        rotation = show("  engine, rotation fallback:", &engine_rates(runtime, threads, rounds, false));
        super::settle();
    }
    let mut server = json!(null);
    if wanted("llama-server") {
        server = match server_rates(threads, rounds) {
            Ok(rates) => show("  llama-server:", &rates),
            Err(why) => {
                println!("  llama-server: absent ({why})");
                json!(null)
            }
        };
    }
    json!({"engine": mixed, "rotation": rotation, "llama_server": server})
}
