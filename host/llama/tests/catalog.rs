//! The engine's run-time catalog with the real llama.cpp: models and adapters added
//! while it runs, eviction under a memory budget that never takes a model with a
//! request in flight, adapters attached to a warm base (and freed, least recently
//! used) without reloading it, and a GGUF without a chat template.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine, Residency};
use wasmesh_llama::{LlamaConfig, LlamaEngine, LoraSpec, native::NativeModel};

fn have(paths: &[&std::path::Path]) -> bool {
    if paths.iter().all(|p| p.is_file()) {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "missing a test model or adapter: run deploy/setup.sh");
    eprintln!("skipping: missing a test model or adapter (run deploy/setup.sh)");
    false
}

fn ask(model: &str, n: u32, lora: Option<&str>) -> GenerateRequest {
    GenerateRequest::new(
        model,
        "Describe the ocean in one sentence.",
        GenerateParams { n_predict: n, chat: true, lora: lora.map(String::from), ..Default::default() },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_of_one_model_evicts_the_idle_one_and_never_one_in_use() {
    let model = wasmesh_tests::model_path();
    if !have(&[&model]) {
        return;
    }
    let size = std::fs::metadata(&model).unwrap().len();
    // Room for one copy, not two; the same file under two names makes two models whose
    // outputs must be identical.
    let config = LlamaConfig { memory_budget_bytes: size * 3 / 2, threads: Some(1), slots: 2, ..Default::default() };
    let engine = Arc::new(LlamaEngine::new(config).unwrap());
    assert!(engine.models().is_empty());
    engine.add_model("a", model.clone()).unwrap();
    engine.add_model("b", model.clone()).unwrap();
    let reference = engine.generate(ask("a", 16, None)).await.unwrap().tokens;
    assert_eq!(engine.loaded_models(), vec!["a"]);

    // Alternating: each load evicts the other.
    for name in ["b", "a", "b"] {
        let out = engine.generate(ask(name, 16, None)).await.unwrap();
        assert_eq!(out.tokens, reference, "model '{name}' answered differently");
        assert_eq!(engine.loaded_models(), vec![name.to_string()], "only the last used model stays loaded");
        assert!(engine.memory_used() <= size * 3 / 2);
    }

    assert_eq!(engine.loads(), 4, "a, then b, a, b: each a load");

    // Concurrent requests for both: none fails, none is cut short by an eviction, and
    // while a request runs its model stays loaded.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let engine = engine.clone();
        let name = if i % 2 == 0 { "a" } else { "b" };
        tasks.push(tokio::spawn(async move { (name, engine.generate(ask(name, 16, None)).await) }));
    }
    let watcher = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut over = 0;
            for _ in 0..200 {
                if engine.memory_used() > size * 3 / 2 {
                    over += 1;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            over
        })
    };
    for task in tasks {
        let (name, out) = task.await.unwrap();
        let out = out.unwrap_or_else(|e| panic!("request for '{name}' failed: {e}"));
        assert_eq!(out.tokens, reference, "a request for '{name}' was cut short or changed");
    }
    assert_eq!(watcher.await.unwrap(), 0, "the budget was exceeded while models swapped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_shrunk_at_run_time_evicts_idle_models_but_not_pinned_or_running_ones() {
    let model = wasmesh_tests::model_path();
    if !have(&[&model]) {
        return;
    }
    let size = std::fs::metadata(&model).unwrap().len();
    let config = LlamaConfig { memory_budget_bytes: size * 4, threads: Some(1), slots: 1, ..Default::default() };
    let engine = Arc::new(LlamaEngine::new(config).unwrap());
    for name in ["a", "b", "c"] {
        engine.add_model(name, model.clone()).unwrap();
        engine.generate(ask(name, 2, None)).await.unwrap();
    }
    assert_eq!(engine.loaded_models(), vec!["a", "b", "c"]);
    assert_eq!(engine.memory_budget(), Some(size * 4));

    // Room for two: the least recently used idle model goes at once.
    let evicted = engine.set_memory_budget(size * 5 / 2).unwrap();
    assert_eq!(evicted, vec!["a"]);
    assert_eq!(engine.loaded_models(), vec!["b", "c"]);
    assert_eq!(engine.memory_budget(), Some(size * 5 / 2));

    // Room for none: a pinned model and one a request is running on both stay.
    engine.set_pinned("b", true);
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.generate(ask("c", 48, None)).await })
    };
    let busy = std::time::Instant::now();
    while engine.memory_idle() > 0 && busy.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let evicted = engine.set_memory_budget(1).unwrap();
    assert!(evicted.is_empty(), "nothing idle and unpinned to evict: {evicted:?}");
    running.await.unwrap().expect("the running request finishes");
    assert_eq!(engine.loaded_models(), vec!["b", "c"]);
    // Once idle, a second shrink takes it; the pinned one stays.
    assert_eq!(engine.set_memory_budget(1).unwrap(), vec!["c"]);
    assert_eq!(engine.loaded_models(), vec!["b"]);
    // A load that does not fit the budget now says so.
    let err = engine.generate(ask("a", 2, None)).await.unwrap_err().to_string();
    assert!(err.contains("memory budget"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_added_at_run_time_attach_to_the_warm_base_and_match_adapters_given_at_start() {
    let (model, one, two) = (wasmesh_tests::model_path(), wasmesh_tests::lora_path(1), wasmesh_tests::lora_path(2));
    if !have(&[&model, &one, &two]) {
        return;
    }
    // The reference: adapters given at start.
    let at_start = LlamaEngine::new(LlamaConfig {
        models: [("smollm2".to_string(), model.clone())].into(),
        loras: [
            ("one".to_string(), LoraSpec { base: "smollm2".into(), path: one.clone() }),
            ("two".to_string(), LoraSpec { base: "smollm2".into(), path: two.clone() }),
        ]
        .into(),
        threads: Some(1),
        ..Default::default()
    })
    .unwrap();
    let want_one = at_start.generate(ask("smollm2", 16, Some("one"))).await.unwrap().tokens;
    let want_two = at_start.generate(ask("smollm2", 16, Some("two"))).await.unwrap().tokens;
    drop(at_start);

    // One adapter place: alternating adapters frees the least recently used each time.
    let engine = LlamaEngine::new(LlamaConfig { threads: Some(1), max_adapters: 1, ..Default::default() }).unwrap();
    engine.add_model("smollm2", model).unwrap();
    let base = engine.generate(ask("smollm2", 16, None)).await.unwrap().tokens;
    let err = engine.generate(ask("smollm2", 16, Some("one"))).await.unwrap_err().to_string();
    assert!(err.contains("'one'") && err.contains("loras push"), "{err}");
    engine.add_adapter("smollm2", "one", one).unwrap();
    engine.add_adapter("smollm2", "two", two).unwrap();
    let states = engine.catalog();
    let state = |name: &str| states.iter().find(|e| e.name == name).map(|e| e.residency);
    assert_eq!(state("smollm2"), Some(Residency::Warm));
    assert_eq!(state("smollm2:one"), Some(Residency::OnDisk), "an adapter is not warm before it is attached");
    for (name, want) in [("one", &want_one), ("two", &want_two), ("one", &want_one)] {
        let got = engine.generate(ask("smollm2", 16, Some(name))).await.unwrap().tokens;
        assert_eq!(&got, want, "adapter '{name}' attached at run time answers differently");
    }
    assert_eq!(engine.generate(ask("smollm2", 16, None)).await.unwrap().tokens, base);
    let stats = engine.stats("smollm2").await.unwrap();
    assert_eq!(stats.lora_attaches.load(Ordering::Relaxed), 3, "one attach per switch with one place");
    assert_eq!(stats.lora_evictions.load(Ordering::Relaxed), 2);
    let states = engine.catalog();
    let state = |name: &str| states.iter().find(|e| e.name == name).map(|e| e.residency);
    assert_eq!(state("smollm2:one"), Some(Residency::Warm), "the adapter used last is attached");
    assert_eq!(state("smollm2:two"), Some(Residency::OnDisk));
    let mean_ms = stats.lora_attach_ns.load(Ordering::Relaxed) as f64 / 3.0 / 1e6;
    eprintln!("adapter attach on a warm base: {mean_ms:.2} ms mean");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gguf_without_a_chat_template_chats_and_parses_special_tokens_like_llama_cpp() {
    let model = wasmesh_tests::second_model_path();
    if !have(&[&model]) {
        return;
    }
    let engine = LlamaEngine::new(LlamaConfig { threads: Some(1), n_ctx: 512, ..Default::default() }).unwrap();
    engine.add_model("gemma", model.clone()).unwrap();
    // chat: true uses the built-in template of the architecture (the GGUF has none).
    let chat = engine.generate(ask("gemma", 8, None)).await.unwrap();
    assert!(chat.usage.output_tokens > 0);
    // Hand-written turn markers are special tokens, not text: the same tokens as
    // llama.cpp's own tokenizer with special parsing on (what llama-server does).
    let prompt = "<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\n";
    let raw = engine
        .generate(GenerateRequest::new("gemma", prompt, GenerateParams { n_predict: 12, ..Default::default() }))
        .await
        .unwrap();
    let native = NativeModel::load(&model, 0).unwrap().greedy(prompt, 12, 512, 1).unwrap();
    assert_eq!(raw.usage.input_tokens as usize, native.prompt_tokens);
    // <bos> and four markers and a few words: the markers are single tokens.
    assert!(native.prompt_tokens < 16, "turn markers were split into text: {} tokens", native.prompt_tokens);
    assert_eq!(raw.tokens, native.tokens, "the engine's tokens differ from llama.cpp's");
}
