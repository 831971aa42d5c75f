//! LoRA adapters per request on a warm base model, with the real SmolLM2 and
//! adapters written by deploy/make-test-lora.py (deploy/setup.sh makes them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec};

fn engine() -> Option<Arc<LlamaEngine>> {
    engine_with(true, 4)
}

/// SmolLM2 with the test adapters 1-4 as "one".."four"; `mixed`: per-sequence adapters
/// (else rotation between adapter groups).
fn engine_with(mixed: bool, slots: u32) -> Option<Arc<LlamaEngine>> {
    let model = wasmesh_tests::model_path();
    let loras = [1, 2, 3, 4].map(wasmesh_tests::lora_path);
    if !model.is_file() || loras.iter().any(|l| !l.is_file()) {
        assert!(std::env::var_os("CI").is_none(), "missing the test model or adapters: run deploy/setup.sh");
        eprintln!("skipping: missing the test model or adapters (run deploy/setup.sh)");
        return None;
    }
    let names = ["one", "two", "three", "four"];
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model)].into(),
        loras: names
            .iter()
            .zip(&loras)
            .map(|(n, path)| (n.to_string(), LoraSpec { base: "smollm2".into(), path: path.clone() }))
            .collect(),
        threads: Some(2),
        slots,
        mixed_lora: mixed,
        ..Default::default()
    };
    Some(Arc::new(LlamaEngine::new(config).expect("engine")))
}

fn ask(lora: Option<&str>, scale: f32) -> GenerateRequest {
    GenerateRequest::new(
        "smollm2",
        "Describe the ocean in one sentence.",
        GenerateParams {
            n_predict: 24,
            chat: true,
            lora: lora.map(String::from),
            lora_scale: scale,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_changes_the_output_and_removing_it_restores_the_base_exactly() {
    let Some(engine) = engine() else { return };
    let base = engine.generate(ask(None, 1.0)).await.unwrap().tokens;
    let one = engine.generate(ask(Some("one"), 1.0)).await.unwrap().tokens;
    assert_ne!(one, base, "the adapter did not change the greedy output");
    let again = engine.generate(ask(None, 1.0)).await.unwrap().tokens;
    assert_eq!(again, base, "the base output changed after the adapter was removed");
    let zero = engine.generate(ask(Some("one"), 0.0)).await.unwrap().tokens;
    assert_eq!(zero, base, "scale 0 must be the base model");
    let one_again = engine.generate(ask(Some("one"), 1.0)).await.unwrap().tokens;
    assert_eq!(one_again, one, "the adapter's output is not reproducible");

    let err = engine.generate(ask(Some("nope"), 1.0)).await.unwrap_err().to_string();
    assert!(err.contains("'nope'") && err.contains("available:") && err.contains("three"), "{err}");
}

/// The mixed-LoRA guarantee: 8 concurrent greedy requests over four adapters, one of
/// them at two scales, and the base model share decode steps, and each gets exactly
/// the tokens it gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_requests_over_four_adapters_and_none_share_steps_and_each_get_their_solo_tokens() {
    let Some(engine) = engine_with(true, 8) else { return };
    let mix: [(Option<&str>, f32); 8] = [
        (Some("one"), 1.0),
        (Some("two"), 1.0),
        (None, 1.0),
        (Some("three"), 1.0),
        (Some("four"), 1.0),
        (Some("one"), 0.5),
        (None, 1.0),
        (Some("two"), 1.0),
    ];
    let request = |i: usize| {
        let (lora, scale) = mix[i];
        GenerateRequest::new(
            "smollm2",
            wasmesh_tests::CONCURRENT_PROMPTS[i],
            GenerateParams {
                n_predict: 32,
                chat: true,
                lora: lora.map(String::from),
                lora_scale: scale,
                ..Default::default()
            },
        )
    };
    let mut solo = Vec::new();
    for i in 0..mix.len() {
        solo.push(engine.generate(request(i)).await.unwrap().tokens);
    }
    let same_prompt = |lora| {
        GenerateRequest::new(
            "smollm2",
            wasmesh_tests::CONCURRENT_PROMPTS[0],
            GenerateParams { n_predict: 32, chat: true, lora, ..Default::default() },
        )
    };
    let base0 = engine.generate(same_prompt(None)).await.unwrap().tokens;
    assert_ne!(solo[0], base0, "adapter 'one' did not change the greedy output");

    let stats = engine.stats("smollm2").await.unwrap();
    let (mixed0, switches0) =
        (stats.mixed_lora_steps.load(Ordering::Relaxed), stats.lora_switches.load(Ordering::Relaxed));
    // The second half arrives while the first half generates: their prompts are decoded
    // in the same steps as the others' tokens (only some rows of those steps are outputs).
    let handles: Vec<_> = (0..mix.len())
        .map(|i| {
            let engine = engine.clone();
            let request = request(i);
            tokio::spawn(async move {
                if i >= 4 {
                    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
                }
                engine.generate(request).await.unwrap().tokens
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap(), solo[i], "request {i} ({:?}) differs when batched with other adapters", mix[i]);
    }
    let mixed = stats.mixed_lora_steps.load(Ordering::Relaxed) - mixed0;
    assert!(mixed >= 20, "only {mixed} steps carried several adapters: the requests did not share steps");
    assert_eq!(stats.lora_switches.load(Ordering::Relaxed), switches0, "the context-wide adapter rotation ran");
}

/// The fallback (one adapter on the whole context, steps rotating between groups)
/// still gives each request its own output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_rotation_mode_different_adapters_at_once_each_get_their_own_output() {
    let Some(engine) = engine_with(false, 4) else { return };
    let solo: Vec<Vec<i32>> = {
        let mut v = Vec::new();
        for l in [Some("one"), Some("two"), None] {
            v.push(engine.generate(ask(l, 1.0)).await.unwrap().tokens);
        }
        v
    };
    assert_ne!(solo[0], solo[1], "the two test adapters behave the same");
    let stats = engine.stats("smollm2").await.unwrap();
    let switches = stats.lora_switches.load(Ordering::Relaxed);
    let handles: Vec<_> = [Some("one"), Some("two"), None]
        .into_iter()
        .map(|l| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.generate(ask(l, 1.0)).await.unwrap().tokens })
        })
        .collect();
    let mut together = Vec::new();
    for h in handles {
        together.push(h.await.unwrap());
    }
    assert_eq!(together, solo);
    // They were served interleaved (the context switched adapters between steps),
    // not one after the other: far more switches than the three requests.
    let during = stats.lora_switches.load(Ordering::Relaxed) - switches;
    assert!(during > 6, "only {during} adapter switches: the requests were not interleaved");
}
