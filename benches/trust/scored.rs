//! Part 3 of `cargo bench --bench trust`: scored audits across engine builds.
//!
//! Where no auditor of a node's engine build and CPU class is connected, an auditor of
//! another scores the node's token ids (`GenerateRequest::scoring`,
//! `wasmesh_api::wire::ClaimScore`) and `wasmesh_trust::score_passes` judges them
//! against a tolerance. This part measures that tolerance's false-positive rate and
//! what it catches, with two builds of one machine: llama.cpp's fast CPU kernels
//! (`WASMESH_LLAMA_FAST_KERNELS=1`, whose rounding depends on the batch's shape, as
//! another CPU's SIMD paths would differ) serve, and the reference kernels audit.
//!
//! The bench runs itself again as a child with the fast kernels (`TRUST_BENCH_CLAIMS`),
//! which generates, 8 requests at once, honest answers and four kinds of cheated ones,
//! and prints them as JSON lines; this process scores each claim on the reference
//! kernels, 8 at once.

use std::sync::Arc;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec};
use wasmesh_trust::{ScoreFigures, TrustConfig, score_passes};

/// What a generation does to the request it was asked.
const KINDS: [&str; 5] = ["honest", "adapter", "skip_adapter", "truncate", "reseed"];
const TOKENS: u32 = 48;

fn engine() -> Arc<LlamaEngine> {
    let lora = |n: u32| LoraSpec { base: "smollm2".into(), path: wasmesh_tests::lora_path(n) };
    Arc::new(
        LlamaEngine::new(LlamaConfig {
            models: [("smollm2".to_string(), wasmesh_tests::model_path())].into(),
            loras: [("one".to_string(), lora(1)), ("two".to_string(), lora(2))].into(),
            threads: Some(2),
            slots: 8,
            ..Default::default()
        })
        .expect("engine"),
    )
}

/// A system prompt long enough (over 64 tokens) that the fast kernels' prompt pass
/// takes their tiled attention: the two builds then round differently from the first
/// generated token on, as two CPU classes would.
const SYSTEM: &str = "You are a careful writing assistant for a small newspaper. Answer in plain \
    English, in complete sentences, without lists or headings. Prefer concrete details to general \
    statements, short words to long ones, and the active voice to the passive. Do not mention that \
    you are an assistant, do not apologise, and do not repeat the question. If a topic is unclear, \
    choose the most ordinary reading of it and write about that.";

/// The `i`th request asked: greedy or sampled in turn (with the seed a router would
/// give it), a third of them with adapter `one`, a quarter with a repeat penalty.
fn asked(i: usize) -> GenerateRequest {
    let topics = ["the sea", "a city at night", "bread", "a chess game", "winter", "a library", "rain", "trains"];
    let prompt = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWrite two sentences about {} (note {i}).<|im_end|>\n<|im_start|>assistant\n",
        topics[i % topics.len()]
    );
    let mut params = GenerateParams { n_predict: TOKENS, ..Default::default() };
    if i % 2 == 1 {
        params.temp = 0.8;
        params.seed = i as u32 + 1;
    }
    if i % 3 == 2 {
        params.lora = Some("one".into());
    }
    if i % 4 == 3 {
        params.repeat_penalty = 1.1;
    }
    GenerateRequest::new("smollm2", prompt, params)
}

/// What a node of `kind` generates for `request`.
fn served(kind: &str, mut request: GenerateRequest, i: usize) -> GenerateRequest {
    let p = &mut request.params;
    match kind {
        "adapter" => p.lora = Some(if p.lora.is_some() { "two" } else { "one" }.into()),
        "skip_adapter" => p.lora = None,
        "truncate" => p.n_predict /= 2,
        "reseed" => {
            p.temp = 0.9;
            p.seed = (i as u32).wrapping_mul(2_654_435_761) | 1;
        }
        _ => {}
    }
    request
}

/// How many requests of each kind (`TRUST_BENCH_SCORED`, default 240 honest; cheated
/// ones a quarter of that each).
fn counts() -> (usize, usize) {
    let honest = std::env::var("TRUST_BENCH_SCORED").ok().and_then(|v| v.parse().ok()).unwrap_or(240usize);
    (honest, (honest / 4).max(1))
}

/// The child: generates every claim on the fast kernels and prints one JSON line each.
pub fn claims_child() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let engine = engine();
    let (honest, cheated) = counts();
    let mut jobs = Vec::new();
    for kind in KINDS {
        let n = if kind == "honest" { honest } else { cheated };
        for i in 0..n {
            // A skipped adapter needs a request that asks for one.
            let i = if kind == "skip_adapter" { i * 3 + 2 } else { i };
            jobs.push((kind, i));
        }
    }
    runtime.block_on(async {
        use futures::StreamExt;
        let mut done = futures::stream::iter(jobs)
            .map(|(kind, i)| {
                let engine = engine.clone();
                async move { (kind, i, engine.generate(served(kind, asked(i), i)).await.expect("generate")) }
            })
            .buffer_unordered(8);
        while let Some((kind, i, g)) = done.next().await {
            // A generation cut at half its length that would have ended there anyway is
            // no cheat: only those that ran to the cut count.
            let cheated = kind != "honest" && (kind != "truncate" || g.finish == wasmesh_engine::FinishReason::Length);
            println!("{}", serde_json::json!({"kind": kind, "i": i, "tokens": g.tokens, "cheated": cheated}));
        }
    });
}

/// What scoring found for one kind.
#[derive(Default)]
struct Found {
    requests: usize,
    failed: usize,
    worst_gap: Vec<f32>,
    worst_draw_gap: Vec<f64>,
    miss_share: Vec<f64>,
    by_gap: usize,
    by_draws: usize,
    by_z: usize,
    z: Vec<f64>,
    score_ms: Vec<f64>,
}

/// Part 3: runs the child, scores its claims here, prints what was found; the figures.
pub fn run(config: &TrustConfig) -> serde_json::Map<String, serde_json::Value> {
    let started = std::time::Instant::now();
    let output = std::process::Command::new(std::env::current_exe().expect("the bench's path"))
        .env("TRUST_BENCH_CLAIMS", "1")
        .env("WASMESH_LLAMA_FAST_KERNELS", "1")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("the claims child runs");
    assert!(output.status.success(), "the claims child failed");
    let claims: Vec<(String, usize, Vec<i32>)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "honest" || v["cheated"] == true)
        .map(|v| {
            let tokens = v["tokens"].as_array().expect("tokens").iter().map(|t| t.as_i64().unwrap() as i32).collect();
            (v["kind"].as_str().unwrap().to_string(), v["i"].as_u64().unwrap() as usize, tokens)
        })
        .collect();
    let generated = started.elapsed();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let engine = engine();
    let scored = runtime.block_on(async {
        use futures::StreamExt;
        futures::stream::iter(claims)
            .map(|(kind, i, tokens)| {
                let engine = engine.clone();
                async move {
                    let g = engine.generate(asked(i).scoring(tokens.clone().into())).await.expect("score");
                    assert!(
                        g.tokens.len() <= tokens.len() && tokens.starts_with(&g.tokens),
                        "scoring changed the claim"
                    );
                    (kind, g)
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await
    });
    let mut found: std::collections::BTreeMap<String, Found> = Default::default();
    for (kind, g) in scored {
        let score = g.score.expect("a scored generation has a score");
        let f = found.entry(kind).or_default();
        f.requests += 1;
        let figures = ScoreFigures {
            worst_gap: score.worst_gap,
            draws: score.draws,
            draw_misses: score.draw_misses,
            z: score.z(),
        };
        f.failed += usize::from(!score_passes(&figures, config));
        f.worst_gap.push(score.worst_gap);
        f.worst_draw_gap.push(score.worst_draw_gap);
        f.miss_share.push(score.draw_miss_share());
        f.by_gap += usize::from(score.worst_gap > config.score_max_gap);
        f.by_draws += usize::from(score.draw_misses as f64 > config.score_max_draw_misses * score.draws as f64 + 1.0);
        f.by_z += usize::from(score.z() > config.score_max_z);
        f.z.push(score.z());
        f.score_ms.push(g.compute_time.as_secs_f64() * 1000.0);
    }
    println!(
        "scored audits across builds (served on the fast kernels, scored on the reference ones; {:.0} s to generate, {:.0} s in all); tolerance: gap ≤ {} logits, draws missed ≤ {} of them + 1, z ≤ {}",
        generated.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        config.score_max_gap,
        config.score_max_draw_misses,
        config.score_max_z
    );
    let mut figures = serde_json::Map::new();
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    for kind in KINDS {
        let Some(f) = found.get_mut(kind) else { continue };
        f.worst_gap.sort_by(f32::total_cmp);
        f.worst_draw_gap.sort_by(f64::total_cmp);
        f.z.sort_by(f64::total_cmp);
        let max_gap = f.worst_gap.last().copied().unwrap_or(0.0);
        let max_draw = f.worst_draw_gap.last().copied().unwrap_or(0.0);
        let nonzero = f.worst_gap.iter().filter(|&&g| g > 0.0).count();
        f.miss_share.sort_by(f64::total_cmp);
        let max_miss = f.miss_share.last().copied().unwrap_or(0.0);
        let mean_miss = f.miss_share.iter().sum::<f64>() / f.miss_share.len().max(1) as f64;
        let max_z = f.z.last().copied().unwrap_or(0.0);
        let median_gap = f.worst_gap[f.worst_gap.len() / 2];
        let rate = f.failed as f64 / f.requests as f64;
        println!(
            "{kind:<13} {} requests: {} failed ({:.1}%; by gap {}, by draws {}, by z {}); worst gap median {median_gap:.3}, max {max_gap:.3} (above 0 in {nonzero}); draws missed: mean {:.3}, max {max_miss:.3} (largest miss {max_draw:.3}); z max {max_z:.2}; scoring {:.0} ms median",
            f.requests,
            f.failed,
            rate * 100.0,
            f.by_gap,
            f.by_draws,
            f.by_z,
            mean_miss,
            wasmesh_benches::median(&mut f.score_ms)
        );
        if kind == "honest" {
            figures.insert("scored_honest_requests".into(), f.requests.into());
            figures.insert("scored_honest_failed".into(), f.failed.into());
            figures.insert("scored_honest_max_gap".into(), serde_json::json!(round(f64::from(max_gap), 4)));
            figures.insert("scored_honest_max_z".into(), serde_json::json!(round(max_z, 2)));
            figures.insert("scored_honest_max_draw_miss_share".into(), serde_json::json!(round(max_miss, 4)));
            figures.insert("scored_honest_gap_above_0".into(), nonzero.into());
        } else {
            figures.insert(format!("scored_caught_{kind}"), serde_json::json!(round(rate, 4)));
        }
    }
    figures
}
