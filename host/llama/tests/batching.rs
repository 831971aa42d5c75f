//! The llama.cpp engine with the real SmolLM2: continuous batching gives each
//! request exactly what it gets alone (also after a sequence moved into a freed slot),
//! and a dropped request frees its slot.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmesh_engine::{GenerateParams, GenerateRequest, InferenceEngine};
use wasmesh_llama::{LlamaConfig, LlamaEngine};

fn engine(slots: u32) -> Option<Arc<LlamaEngine>> {
    let model = wasmesh_tests::model_path();
    if !model.is_file() {
        assert!(std::env::var_os("CI").is_none(), "missing {}: run deploy/setup.sh", model.display());
        eprintln!("skipping: missing {}", model.display());
        return None;
    }
    let config =
        LlamaConfig { models: [("smollm2".to_string(), model)].into(), threads: Some(2), slots, ..Default::default() };
    Some(Arc::new(LlamaEngine::new(config).expect("engine")))
}

fn request(prompt: &str, n: u32) -> GenerateRequest {
    GenerateRequest::new("smollm2", prompt, GenerateParams { n_predict: n, chat: true, ..Default::default() })
}

use wasmesh_tests::CONCURRENT_PROMPTS as PROMPTS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_exactly_what_they_get_alone() {
    let Some(engine) = engine(8) else { return };
    let mut alone = Vec::new();
    for p in PROMPTS {
        alone.push(engine.generate(request(p, 24)).await.expect("alone").tokens);
    }
    let stats = engine.stats("smollm2").await.expect("loaded");
    let steps_before = stats.steps.load(Ordering::Relaxed);
    let tokens_before = stats.batched_tokens.load(Ordering::Relaxed);
    let together = futures_join(engine.clone(), &PROMPTS, 24).await;
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} ({:?}) differs when batched", PROMPTS[i]);
    }
    // They really shared decode steps: more tokens per step than one sequence gives.
    let steps = stats.steps.load(Ordering::Relaxed) - steps_before;
    let tokens = stats.batched_tokens.load(Ordering::Relaxed) - tokens_before;
    let generated: usize = together.iter().map(Vec::len).sum();
    assert!(steps < generated as u64, "{steps} steps for {generated} generated tokens: not batched");
    assert!(tokens / steps > 1, "mean batch {} tokens", tokens / steps);
}

/// A request that ends early leaves a free slot below busy ones; the highest busy
/// sequence moves down into it (its KV stream copied) and still gets exactly its
/// solo tokens, as do the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_ends_early_makes_room_and_the_moved_one_keeps_its_tokens() {
    let Some(engine) = engine(4) else { return };
    let (short, long) = (PROMPTS[0], &PROMPTS[1..4]);
    let mut alone = Vec::new();
    for p in long {
        alone.push(engine.generate(request(p, 24)).await.expect("alone").tokens);
    }
    let stats = engine.stats("smollm2").await.expect("loaded");
    let moves_before = stats.compactions.load(Ordering::Relaxed);
    // The short request takes slot 0 before the others arrive (they join within a
    // step of it), so its end frees the lowest slot while three longer ones still
    // run above it.
    let first = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.generate(request(short, 6)).await.expect("short").tokens })
    };
    while stats.active.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let together = futures_join(engine.clone(), long, 24).await;
    assert!(first.await.expect("task").len() <= 6);
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {} ({:?}) differs after the slots were compacted", i + 1, long[i]);
    }
    let moves = stats.compactions.load(Ordering::Relaxed) - moves_before;
    assert!(moves >= 1, "no sequence moved into the freed slot");
}

async fn futures_join(engine: Arc<LlamaEngine>, prompts: &[&str], n: u32) -> Vec<Vec<i32>> {
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let engine = engine.clone();
            let r = request(p, n);
            tokio::spawn(async move { engine.generate(r).await.expect("batched").tokens })
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_frees_its_slot() {
    let Some(engine) = engine(1) else { return };
    engine.preload("smollm2").await.unwrap();
    let stats = engine.stats("smollm2").await.expect("loaded");
    // A long generation (the model keeps counting), abandoned once it is running, as a
    // stopped guest or a gone caller abandons it.
    let steps_before = stats.steps.load(Ordering::Relaxed);
    let long = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .generate(GenerateRequest::new(
                    "smollm2",
                    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
                    GenerateParams { n_predict: 4000, ..Default::default() },
                ))
                .await
        })
    };
    while stats.steps.load(Ordering::Relaxed) < steps_before + 8 {
        tokio::task::yield_now().await;
    }
    long.abort();
    assert!(long.await.unwrap_err().is_cancelled(), "the long request ended on its own before it was dropped");
    // The only slot is free again: the next request is served, and the drop was counted.
    let next = engine.generate(request("Name a fruit.", 8)).await.expect("served after the cancel");
    assert!(!next.tokens.is_empty());
    assert_eq!(stats.cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(stats.active.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pieces_add_up_to_the_whole_text() {
    let Some(engine) = engine(4) else { return };
    let (sink, mut pieces) = tokio::sync::mpsc::unbounded_channel();
    let mut r = request("Write a haiku about the sea.", 32);
    r.stream = Some(sink);
    let generation = engine.generate(r).await.expect("streamed");
    let mut streamed = Vec::new();
    while let Some(p) = pieces.recv().await {
        streamed.push(p);
    }
    assert!(streamed.len() > 1, "one piece only: not streamed");
    assert_eq!(streamed.concat(), generation.text);
    let plain = engine.generate(request("Write a haiku about the sea.", 32)).await.unwrap();
    assert_eq!(plain.text, generation.text, "streaming changed the text");
}

/// The order in which a flood of five requests from one tenant and one request from
/// another, sent while the flood's first runs, finish on a one-slot engine.
async fn flood_then_other(engine: Arc<LlamaEngine>) -> Vec<String> {
    let done = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let submit = |tenant: &str, i: usize, delay_ms: u64| {
        let (engine, done, tenant) = (engine.clone(), done.clone(), tenant.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            // Every flood request asks for a long story, so none ends early: whichever of
            // them the engine admits first (the five are sent at once) runs its 96 tokens.
            // (A flood of short questions once let "What is the capital of France?" run
            // first, finish in a few tokens and beat the other tenant's request.)
            let (prompt, n) = if tenant == "flood" {
                ("Write a very long story about the sea.", 96)
            } else {
                (PROMPTS[i % PROMPTS.len()], 8)
            };
            let ask = request(prompt, n).for_tenant(Arc::from(tenant.as_str()));
            engine.generate(ask).await.expect("generate");
            done.lock().unwrap().push(format!("{tenant}{i}"));
        })
    };
    let mut tasks: Vec<_> = (0..5).map(|i| submit("flood", i, 0)).collect();
    // Sent while the flood's first request runs and four wait: watched, not timed (a
    // loaded machine may take longer than any fixed delay to load the model and admit).
    loop {
        if let Some(stats) = engine.stats("smollm2").await
            && stats.active.load(Ordering::Relaxed) >= 1
            && stats.queued.load(Ordering::Relaxed) >= 4
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tasks.push(submit("other", 0, 0));
    for t in tasks {
        t.await.unwrap();
    }
    done.lock().unwrap().clone()
}

/// One tenant floods a one-slot engine; another tenant's single request, sent after
/// the flood, is admitted at once into the spare slot (no spare: at the next free
/// slot), not after the whole flood. A prompt of megabytes is refused before it is
/// tokenized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_flood_does_not_starve_another_and_huge_prompts_are_refused_untokenized() {
    let Some(engine) = engine(1) else { return };
    let order = flood_then_other(engine.clone()).await;
    assert_eq!(order[0], "other0", "with a spare slot the other tenant runs beside the flood at once: {order:?}");

    let model = wasmesh_tests::model_path();
    let config = LlamaConfig {
        models: [("smollm2".to_string(), model)].into(),
        threads: Some(2),
        slots: 1,
        spare_slots: 0,
        ..Default::default()
    };
    let unspared = flood_then_other(Arc::new(LlamaEngine::new(config).expect("engine"))).await;
    let other = unspared.iter().position(|t| t == "other0").unwrap();
    assert!(other >= 1, "without a spare slot the other tenant waits for the running one: {unspared:?}");
    assert!(other <= 2, "the other tenant's request finished {}th of 6: {unspared:?}", other + 1);

    let huge =
        GenerateRequest::new("smollm2", "x".repeat(64 << 20), GenerateParams { n_predict: 1, ..Default::default() });
    let err = engine.generate(huge).await.unwrap_err().to_string();
    assert!(err.contains("bytes") && err.contains("Shorten the prompt"), "{err}");
}

/// A flood of embeddings queued while a generation runs waits its turn between decode
/// steps (one per step) instead of running ahead of every step: the generation keeps
/// stepping while the flood is answered. An input of megabytes is refused before
/// tokenizing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedding_flood_does_not_stall_generation() {
    let Some(engine) = engine(1) else { return };
    const FLOOD: u64 = 200;
    engine.preload("smollm2").await.unwrap();
    let stats = engine.stats("smollm2").await.expect("loaded");
    // A long generation (the model keeps counting), running through the whole flood.
    let generation = {
        let engine = engine.clone();
        tokio::spawn(async move {
            let params = GenerateParams { n_predict: 4000, ..Default::default() };
            engine.generate(GenerateRequest::new("smollm2", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,", params)).await
        })
    };
    while stats.steps.load(Ordering::Relaxed) < 4 {
        tokio::task::yield_now().await;
    }
    // One embedding first, so the flood does not wait on the embedding context's set-up.
    engine.embed("smollm2", PROMPTS[0]).await.expect("embed");
    let steps_before = stats.steps.load(Ordering::Relaxed);
    let flood: Vec<_> = (0..FLOOD as usize)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move { engine.embed("smollm2", PROMPTS[i % PROMPTS.len()]).await.expect("embed") })
        })
        .collect();
    // Counted by the worker as it answers, so the count does not wait on this runtime.
    while stats.embeddings.load(Ordering::Relaxed) < FLOOD + 1 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let steps_during = stats.steps.load(Ordering::Relaxed) - steps_before;
    assert_eq!(stats.active.load(Ordering::Relaxed), 1, "the generation still runs");
    eprintln!("decode steps while {FLOOD} embeddings were answered: {steps_during}");
    assert!(
        steps_during >= FLOOD / 2,
        "the generation stepped {steps_during} times while {FLOOD} embeddings were answered: the flood ran ahead of its steps"
    );
    for t in flood {
        assert!(!t.await.unwrap().vector.is_empty());
    }
    generation.abort();

    let err = engine.embed("smollm2", &"x".repeat(64 << 20)).await.unwrap_err().to_string();
    assert!(err.contains("bytes") && err.contains("at most"), "{err}");
}

/// A K-quant model (Gemma 3 270M, Q4_K_M: sliding-window attention too) batched as
/// alone: eight requests at once get their solo tokens, each with a prompt of more than
/// 64 tokens (so its prompt pass takes the path that tiles attention over query rows in
/// llama.cpp's faster kernels, and eight rows take the tiled K-quant matmul). The
/// patched llama.cpp runs the CPU backend's reference kernels, which compute each row
/// the same way whatever shares the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_k_quant_model_batched_with_long_prompts_gets_its_solo_tokens() {
    let model = wasmesh_tests::second_model_path();
    if !model.is_file() {
        assert!(std::env::var_os("CI").is_none(), "missing {}: run deploy/setup.sh", model.display());
        eprintln!("skipping: missing {}", model.display());
        return;
    }
    let config =
        LlamaConfig { models: [("gemma".to_string(), model)].into(), threads: Some(2), slots: 8, ..Default::default() };
    let engine = Arc::new(LlamaEngine::new(config).expect("engine"));
    let preamble = "You are a careful assistant. Read the question, think about what the person asking \
                    most likely wants to know, and answer in plain words, briefly, without lists, without \
                    repeating the question and without any greeting. If the question is unclear, say \
                    what you assumed in a few words before the answer. Use short, common words that a \
                    child could follow, and stop as soon as the question is answered. ";
    let ask = |p: &str| {
        GenerateRequest::new(
            "gemma",
            format!("{preamble}{p}"),
            GenerateParams { n_predict: 16, chat: true, ..Default::default() },
        )
    };
    let mut alone = Vec::new();
    for p in PROMPTS {
        let g = engine.generate(ask(p)).await.expect("alone");
        assert!(g.usage.input_tokens > 64, "a prompt of {} tokens does not test the long path", g.usage.input_tokens);
        alone.push(g.tokens);
    }
    let together = futures::future::join_all(PROMPTS.iter().map(|p| {
        let (engine, r) = (engine.clone(), ask(p));
        async move { engine.generate(r).await.expect("batched").tokens }
    }))
    .await;
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i} ({:?}) differs when batched", PROMPTS[i]);
    }
}
