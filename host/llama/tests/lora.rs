//! LoRA adapters per request on a warm base model, with the real SmolLM2 and
//! adapters written by deploy/make-test-lora.py (deploy/setup.sh makes them).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec};

fn engine() -> Option<Arc<LlamaEngine>> {
    let model = wasmesh_tests::model_path();
    let dir = model.parent().unwrap().to_path_buf();
    let loras = [1, 2].map(|seed| dir.join(format!("smollm2-test-lora-{seed}.gguf")));
    if !model.is_file() || loras.iter().any(|l| !l.is_file()) {
        assert!(std::env::var_os("CI").is_none(), "missing the test model or adapters: run deploy/setup.sh");
        eprintln!("skipping: missing the test model or adapters (run deploy/setup.sh)");
        return None;
    }
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model)].into(),
        loras: [
            ("one".to_string(), LoraSpec { base: "smollm2".into(), path: loras[0].clone() }),
            ("two".to_string(), LoraSpec { base: "smollm2".into(), path: loras[1].clone() }),
        ]
        .into(),
        threads: Some(2),
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
    assert!(err.contains("'nope'") && err.contains("one, two"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_adapters_at_once_each_get_their_own_output() {
    let Some(engine) = engine() else { return };
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
