//! Checked (teacher-forced) generations, the audits' cheap replay, with the real SmolLM2
//! and test adapters: checking the tokens a generation produced, in one pass over the
//! prompt and those tokens, gives exactly that generation (greedy, sampled with a seed,
//! with a repeat penalty, with an adapter, several at once), and a false claim (a token
//! changed, cut short, run on, not in the vocabulary) still gives the honest generation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmesh_engine::{GenerateParams, GenerateRequest, Generation, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec};

fn engine() -> Option<Arc<LlamaEngine>> {
    let model = wasmesh_tests::model_path();
    let lora = wasmesh_tests::lora_path(1);
    if !model.is_file() || !lora.is_file() {
        assert!(std::env::var_os("CI").is_none(), "missing the test model or adapters: run deploy/setup.sh");
        eprintln!("skipping: missing the test model or adapters (run deploy/setup.sh)");
        return None;
    }
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model)].into(),
        loras: [("one".to_string(), LoraSpec { base: "smollm2".into(), path: lora })].into(),
        threads: Some(2),
        slots: 8,
        ..Default::default()
    };
    Some(Arc::new(LlamaEngine::new(config).expect("engine")))
}

/// The mix of requests audits replay: greedy, sampled with a seed, with a repeat
/// penalty, with an adapter; short answers that stop and long ones cut at their length.
fn requests() -> Vec<GenerateRequest> {
    let mut out = Vec::new();
    for (i, prompt) in wasmesh_tests::CONCURRENT_PROMPTS.iter().enumerate().take(6) {
        let mut params = GenerateParams { n_predict: 12 + 8 * (i as u32 % 3), chat: true, ..Default::default() };
        match i % 4 {
            1 => params = GenerateParams { temp: 0.9, top_k: 40, top_p: 0.95, seed: 1000 + i as u32, ..params },
            2 => params = GenerateParams { repeat_penalty: 1.3, ..params },
            3 => params = GenerateParams { lora: Some("one".into()), lora_scale: 1.0, ..params },
            _ => {}
        }
        out.push(GenerateRequest::new("smollm2", *prompt, params));
    }
    // One that ends at the end-of-generation token well before its length.
    out.push(GenerateRequest::new(
        "smollm2",
        "Reply with the single word yes.",
        GenerateParams { n_predict: 64, chat: true, ..Default::default() },
    ));
    out
}

fn same(a: &Generation, b: &Generation) -> bool {
    a.tokens == b.tokens && a.text == b.text && a.finish == b.finish && a.usage == b.usage
}

async fn all(engine: &Arc<LlamaEngine>, requests: Vec<GenerateRequest>) -> Vec<Generation> {
    let runs = requests.into_iter().map(|r| {
        let engine = engine.clone();
        async move { engine.generate(r).await.expect("generation") }
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_a_true_claim_gives_the_generation_and_a_false_one_the_honest_generation() {
    let Some(engine) = engine() else { return };
    let asked = requests();
    let generated = all(&engine, asked.clone()).await;
    assert!(generated.iter().any(|g| g.finish == wasmesh_engine::FinishReason::Stop), "none stopped early");
    assert!(generated.iter().any(|g| g.finish == wasmesh_engine::FinishReason::Length), "none ran to length");
    let stats = engine.stats("smollm2").await.expect("loaded");
    let counts = || {
        (
            stats.checked_requests.load(Ordering::Relaxed),
            stats.checked_tokens.load(Ordering::Relaxed),
            stats.check_divergences.load(Ordering::Relaxed),
            stats.steps.load(Ordering::Relaxed),
        )
    };

    // True claims, all checked at once: exactly the generations, every token taken from
    // the claim, in far fewer steps than generating took.
    let before = counts();
    let claims = asked.iter().zip(&generated).map(|(r, g)| r.clone().checking(g.tokens.clone().into()));
    let checked = all(&engine, claims.collect()).await;
    let after = counts();
    for (i, (g, c)) in generated.iter().zip(&checked).enumerate() {
        assert!(same(g, c), "request {i}: checking its own tokens gave {c:?}, generating gave {g:?}");
    }
    let claimed: usize = generated.iter().map(|g| g.tokens.len()).sum();
    assert_eq!(after.0 - before.0, asked.len() as u64);
    assert_eq!(after.1 - before.1, claimed as u64, "every claimed token was the model's own pick");
    assert_eq!(after.2, before.2, "no divergence on a true claim");
    let longest = generated.iter().map(|g| g.tokens.len()).max().unwrap_or(0) as u64;
    assert!(after.3 - before.3 < longest / 2, "{} steps to check claims of up to {longest} tokens", after.3 - before.3);

    // False claims: one token changed, cut short, run on past the end, tokens outside
    // the vocabulary. Each still gives the honest generation.
    let mut lies = Vec::new();
    for (r, g) in asked.iter().zip(&generated) {
        let t = &g.tokens;
        assert!(!t.is_empty(), "{r:?} generated nothing");
        let mut changed = t.clone();
        let k = changed.len() / 2;
        changed[k] = if changed[k] == 42 { 43 } else { 42 };
        lies.push((r.clone(), changed, g));
        lies.push((r.clone(), t[..t.len() / 3].to_vec(), g));
        lies.push((r.clone(), t.iter().copied().chain([11, 12, 13, 14]).collect(), g));
        let at = t.len().min(2);
        lies.push((r.clone(), [&t[..at], &[-7, i32::MAX][..], &t[at..]].concat(), g));
    }
    let before = counts();
    let runs = lies.iter().map(|(r, claim, _)| r.clone().checking(claim.clone().into())).collect();
    let honest = all(&engine, runs).await;
    for ((_, claim, g), h) in lies.iter().zip(&honest) {
        assert!(same(g, h), "claim {claim:?} gave {:?}, the honest tokens are {:?}", h.tokens, g.tokens);
    }
    let after = counts();
    assert!(after.2 - before.2 >= asked.len() as u64, "the changed tokens were not seen as divergences");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_takes_every_claimed_token_and_fails_false_claims() {
    let Some(engine) = engine() else { return };
    let config = wasmesh_trust::TrustConfig::default();
    let asked = requests();
    let generated = all(&engine, asked.clone()).await;

    // True claims: taken as they are, ending as the generation did, and on this same
    // build every claimed token (and every end of text) was exactly the sampler's to pick.
    let claims = asked.iter().zip(&generated).map(|(r, g)| r.clone().scoring(g.tokens.clone().into()));
    let scored = all(&engine, claims.collect()).await;
    for (i, (g, s)) in generated.iter().zip(&scored).enumerate() {
        assert!(same(g, s), "request {i}: scoring its own tokens gave {s:?}, generating gave {g:?}");
        let score = s.score.expect("a scored generation has a score");
        let ends = usize::from(g.finish == wasmesh_engine::FinishReason::Stop);
        assert_eq!(score.positions, (g.tokens.len() + ends) as u64, "request {i}");
        assert_eq!(score.worst_gap, 0.0, "request {i}: {score:?}");
        assert!(
            score.worst_draw_gap < 1e-6 && score.draw_misses == 0,
            "request {i}: the seeded draws replayed: {score:?}"
        );
        let figures = wasmesh_trust::ScoreFigures {
            worst_gap: score.worst_gap,
            draws: score.draws,
            draw_misses: score.draw_misses,
            z: score.z(),
        };
        assert!(wasmesh_trust::score_passes(&figures, &config), "request {i}: {score:?}");
    }
    assert!(
        scored.iter().any(|s| s.score.is_some_and(|c| c.sampled > 0 && c.draws > 0)),
        "no seeded sampled position was scored"
    );

    // False claims: one token changed to one the model would not pick, or (greedy) cut
    // short where the model would go on. Each is taken as claimed; greedy ones fail, and
    // a sampled one scores worse than the truth.
    for ((r, g), truth) in asked.iter().zip(&generated).zip(&scored) {
        let mut changed = g.tokens.clone();
        let k = changed.len() / 2;
        changed[k] = if changed[k] == 42 { 43 } else { 42 };
        let s = engine.generate(r.clone().scoring(changed.clone().into())).await.expect("scoring");
        assert!(changed.starts_with(&s.tokens), "scoring changed the claim");
        let score = s.score.expect("a score");
        if r.params.is_greedy() {
            assert!(score.worst_gap > config.score_max_gap, "a changed token passed: {score:?}");
        } else {
            let truth = truth.score.expect("a score");
            assert!(score.worst_gap > 0.0 || score.surprisal > truth.surprisal, "{score:?} against {truth:?}");
        }
        if r.params.is_greedy() && g.finish == wasmesh_engine::FinishReason::Length {
            let cut = g.tokens[..g.tokens.len() / 2].to_vec();
            let s = engine.generate(r.clone().scoring(cut.into())).await.expect("scoring");
            let score = s.score.expect("a score");
            assert_eq!(s.finish, wasmesh_engine::FinishReason::Stop, "a short claim ends at its end");
            assert!(score.worst_gap > config.score_max_gap, "a truncated claim passed: {score:?}");
        }
    }
}
