//! The host runtime end to end: the real `wasmesh host` process, the real guest
//! components from `guest-components/`, the real llama.cpp with SmolLM2.

use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use wasmesh_tests::*;

/// A manifest serving every test component, with small limits where a test
/// needs to hit them.
fn test_manifest(dir: &std::path::Path) -> PathBuf {
    let c = components_dir();
    let manifest = format!(
        r#"
[app]
name = "test-app"

[component.chat]
source = "{chat}"
models = ["smollm2", "smollm2:one"]
[component.chat.limits]
max_request_bytes = 4096
# CI runs two tests' hosts at once on 2 cores, where llama.cpp's spinning threads slow
# each other down many times over: room for that, never a timing assertion.
timeout_ms = 300000

[component.hello]
source = "{hello}"

[component.loop-forever]
source = "{lp}"
[component.loop-forever.limits]
timeout_ms = 1500

[component.memory-bomb]
source = "{bomb}"
[component.memory-bomb.limits]
memory_mb = 32

[component.tensor-flood]
source = "{flood}"
[component.tensor-flood.limits]
memory_mb = 32

[component.unknown-model]
source = "{unknown}"
models = ["smollm2"]

[component.embeddings]
source = "{embeddings}"
models = ["smollm2"]

[component.spin-llm]
source = "{spin}"
ai_models = ["smollm2", "smollm2:one"]
[component.spin-llm.limits]
max_request_bytes = 4096
timeout_ms = 300000

[component.spin-hurried]
source = "{spin}"
ai_models = ["smollm2"]
[component.spin-hurried.limits]
timeout_ms = 50

[[route]]
path = "/chat"
component = "chat"
[[route]]
path = "/spin/..."
component = "spin-llm"
[[route]]
path = "/spin-hurried/..."
component = "spin-hurried"
[[route]]
path = "/hello"
component = "hello"
[[route]]
path = "/loop"
component = "loop-forever"
[[route]]
path = "/bomb"
component = "memory-bomb"
[[route]]
path = "/tensors"
component = "tensor-flood"
[[route]]
path = "/unknown"
component = "unknown-model"
[[route]]
path = "/embeddings"
component = "embeddings"
"#,
        chat = c.join("chat.wasm").display(),
        hello = c.join("hello.wasm").display(),
        lp = c.join("loop_forever.wasm").display(),
        bomb = c.join("memory_bomb.wasm").display(),
        flood = c.join("tensor_flood.wasm").display(),
        unknown = c.join("unknown_model.wasm").display(),
        embeddings = c.join("embeddings.wasm").display(),
        spin = c.join("spin_llm.wasm").display(),
    );
    let path = dir.join("wasmesh.toml");
    std::fs::write(&path, manifest).expect("write manifest");
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// One compute thread per host: the test runner runs two tests at once on CI's 2 cores,
/// and llama.cpp's threads busy-wait at each graph barrier, so two hosts of 2 threads
/// each (4 spinning threads on 2 cores) slowed a 100-token generation past two minutes.
const THREADS: &str = "1";

fn start_host(name: &str) -> Process {
    let dir = scratch(name);
    let manifest = test_manifest(&dir);
    let addr = free_addr();
    let model = format!("smollm2={}", model_path().display());
    let lora = format!("one=smollm2:{}", lora_path(1).display());
    let listen = addr.to_string();
    let mut host = Process::spawn(
        &[
            "host",
            "--app",
            manifest.to_str().unwrap(),
            "--model",
            &model,
            "--lora",
            &lora,
            "--listen",
            &listen,
            "--threads",
            THREADS,
            "--preload",
        ],
        addr,
        dir.join("host.log"),
    );
    host.wait_ready(Duration::from_secs(120));
    host
}

fn assert_serves_hello(host: &mut Process) {
    assert!(host.is_running(), "host died:\n{}", host.log());
    let r = request(host.addr, "GET", "/hello", &[], None).expect("GET /hello");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from wasmesh\n");
}

#[test]
fn chat_through_the_component_equals_native_llama_cpp_token_for_token() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("chat");
    let prompt = "<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n";
    let r = post_json(
        host.addr,
        "/chat",
        &json!({"prompt": prompt, "max_tokens": 40, "temperature": 0, "return_tokens": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let text = body["text"].as_str().expect("text");
    let served: Vec<i64> =
        body["usage"]["tokens"].as_array().expect("tokens").iter().map(|t| t.as_i64().unwrap()).collect();
    assert!(!text.trim().is_empty(), "empty generation");
    assert_eq!(body["usage"]["output_tokens"].as_u64().unwrap() as usize, served.len());

    let native = wasmesh_llama::native::NativeModel::load(&model_path(), 0).expect("load model natively");
    let reference = native.greedy(prompt, 40, 4096, THREADS.parse().unwrap()).expect("native generation");
    let reference_tokens: Vec<i64> = reference.tokens.iter().map(|&t| t as i64).collect();
    assert_eq!(served, reference_tokens, "tokens differ from native llama.cpp");
    assert_eq!(text, reference.text);
    assert_eq!(body["usage"]["input_tokens"].as_u64().unwrap() as usize, reference.prompt_tokens);

    // Greedy decoding is deterministic across requests too.
    let again = post_json(host.addr, "/chat", &json!({"prompt": prompt, "max_tokens": 40, "temperature": 0}));
    assert_eq!(again.json()["text"], body["text"]);
    assert_serves_hello(&mut host);
}

#[test]
fn runaway_guests_are_stopped_and_the_host_keeps_serving() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("limits");

    let r = request(host.addr, "GET", "/loop", &[], None).expect("GET /loop");
    assert_eq!(r.status, 504, "{}", r.text());
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("deadline of 1500 ms") && err.contains("timeout_ms"), "{err}");
    assert_serves_hello(&mut host);

    let r = request(host.addr, "GET", "/bomb", &[], None).expect("GET /bomb");
    assert_eq!(r.status, 500, "{}", r.text());
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("memory limit of 32 MiB") && err.contains("memory_mb"), "{err}");
    assert_serves_hello(&mut host);

    // Tensors copied into the host count against the same limit: eight floods at once
    // leave the host's memory bounded.
    let before = host.rss_bytes();
    let addr = host.addr;
    let floods: Vec<_> =
        (0..8).map(|_| std::thread::spawn(move || request(addr, "GET", "/tensors", &[], None).unwrap())).collect();
    for flood in floods {
        let r = flood.join().unwrap();
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("wasi:nn tensors") && r.text().contains("memory_mb"), "{}", r.text());
    }
    let after = host.rss_bytes();
    eprintln!("tensor floods: host RSS {} -> {} MiB", before >> 20, after >> 20);
    assert!(after < before + ((8 * 32) << 20) + (64 << 20), "host memory grew by {} MiB", (after - before) >> 20);
    assert_serves_hello(&mut host);

    // The loop again, while other requests are served: the stuck guest yields.
    let addr = host.addr;
    let looping = std::thread::spawn(move || request(addr, "GET", "/loop", &[], None).unwrap().status);
    std::thread::sleep(Duration::from_millis(200));
    assert_serves_hello(&mut host);
    assert_eq!(looping.join().unwrap(), 504);
}

#[test]
fn a_model_not_granted_is_refused_with_the_manifest_key() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("grants");
    let r = request(host.addr, "GET", "/unknown", &[], None).expect("GET /unknown");
    assert_eq!(r.status, 403, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], "security");
    let err = body["error"].as_str().unwrap();
    assert!(
        err.contains("not-granted-model") && err.contains("`models`") && err.contains("[component.unknown-model]"),
        "{err}"
    );
    // The chat component asking for a model outside its grant is refused the same way.
    let r = post_json(host.addr, "/chat", &json!({"prompt": "hi", "model": "not-granted-model"}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_serves_hello(&mut host);
}

#[test]
fn oversized_bodies_get_413_and_bad_requests_a_clear_4xx() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("bodies");
    let big = vec![b'x'; 10_000];
    let r = request(host.addr, "POST", "/chat", &[], Some(Payload::Sized(&big))).expect("POST sized");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("max_request_bytes"));
    // Without a Content-Length the limit is enforced while the guest reads.
    let r = request(host.addr, "POST", "/chat", &[], Some(Payload::Chunked(&big))).expect("POST chunked");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_serves_hello(&mut host);

    let r = request(host.addr, "POST", "/chat", &[], Some(Payload::Sized(b"{not json"))).expect("POST bad json");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(host.addr, "GET", "/nowhere", &[], None).expect("GET unknown route");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("/chat"), "404 lists the routes: {}", r.text());
    let r = post_json(host.addr, "/chat", &json!({"prompt": "hi", "max_tokens": 0}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("n-predict"), "{}", r.text());
    assert_serves_hello(&mut host);
}

#[test]
fn malformed_components_are_refused_at_load_with_a_clear_message() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("malformed");
    // Not wasm at all; a core module; a valid component that exports nothing.
    let cases: [(&str, &[u8], &str); 3] = [
        ("text.wasm", b"this is not wasm", "is not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0", "core WebAssembly module, not a component"),
        (
            "empty.wasm",
            b"\0asm\x0d\0\x01\0",
            "exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3.0",
        ),
    ];
    for (file, bytes, expected) in cases {
        std::fs::write(dir.join(file), bytes).unwrap();
        let manifest = dir.join(format!("{file}.toml"));
        std::fs::write(
            &manifest,
            format!("[app]\nname = \"bad\"\n[component.bad]\nsource = \"{file}\"\n[[route]]\npath = \"/\"\ncomponent = \"bad\"\n"),
        )
        .unwrap();
        let out = std::process::Command::new(wasmesh_bin())
            .args(["host", "--app", manifest.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .output()
            .expect("run wasmesh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(stderr.contains(expected) && stderr.contains("component 'bad'"), "{file}: {stderr}");
    }
    // A manifest typo is named.
    let manifest = dir.join("typo.toml");
    std::fs::write(&manifest, "[app]\nname = \"bad\"\n[component.bad]\nsource = \"x.wasm\"\nmodles = []\n").unwrap();
    let out =
        std::process::Command::new(wasmesh_bin()).args(["host", "--app", manifest.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("modles"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn eight_concurrent_chats_each_get_exactly_their_solo_answer() {
    if !prerequisites() {
        return;
    }
    let host = start_host("concurrent");
    let prompts = CONCURRENT_PROMPTS;
    let ask = |addr, p: &str| {
        let r = post_json(addr, "/chat", &json!({"prompt": p, "max_tokens": 24, "temperature": 0, "chat": true}));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["text"].as_str().unwrap().to_string()
    };
    let alone: Vec<String> = prompts.iter().map(|p| ask(host.addr, p)).collect();
    let addr = host.addr;
    let together: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = prompts.iter().map(|p| s.spawn(move || ask(addr, p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn chat_streams_server_sent_events_that_add_up_to_the_plain_answer() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("stream");
    let ask = json!({"prompt": "Write a haiku about the sea.", "max_tokens": 32, "temperature": 0, "chat": true});
    let plain = post_json(host.addr, "/chat", &ask);
    assert_eq!(plain.status, 200, "{}", plain.text());
    let mut streamed_ask = ask.clone();
    streamed_ask["stream"] = json!(true);
    let r = post_json(host.addr, "/chat", &streamed_ask);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.iter().any(|(k, v)| k == "content-type" && v == "text/event-stream"), "{:?}", r.headers);
    let body = r.text();
    let mut pieces = Vec::new();
    let mut done = None;
    for event in body.split("\n\n").filter(|e| !e.is_empty()) {
        let data: serde_json::Value =
            serde_json::from_str(event.lines().last().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        if event.starts_with("event: done") {
            done = Some(data);
        } else {
            assert!(!event.starts_with("event: error"), "{event}");
            pieces.push(data["text"].as_str().unwrap().to_string());
        }
    }
    assert!(pieces.len() > 1, "not streamed: {body}");
    assert_eq!(pieces.concat(), plain.json()["text"].as_str().unwrap());
    let done = done.expect("a done event");
    assert_eq!(done["usage"]["output_tokens"], plain.json()["usage"]["output_tokens"]);
    // Errors in the inputs still get a status, not an empty stream.
    let mut bad = streamed_ask.clone();
    bad["model"] = json!("not-granted-model");
    assert_eq!(post_json(host.addr, "/chat", &bad).status, 403);
    assert_serves_hello(&mut host);
}

#[test]
fn a_granted_lora_changes_the_answer_and_an_ungranted_one_is_refused() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("lora");
    let ask = |lora: Option<&str>| {
        let mut body =
            json!({"prompt": "Describe the ocean in one sentence.", "max_tokens": 24, "temperature": 0, "chat": true});
        if let Some(l) = lora {
            body["lora"] = json!(l);
        }
        post_json(host.addr, "/chat", &body)
    };
    let base = ask(None);
    assert_eq!(base.status, 200, "{}", base.text());
    let adapted = ask(Some("one"));
    assert_eq!(adapted.status, 200, "{}", adapted.text());
    assert_ne!(adapted.json()["text"], base.json()["text"], "the adapter changed nothing");
    assert_eq!(ask(None).json()["text"], base.json()["text"], "the base answer changed after the adapter ran");
    let refused = ask(Some("two"));
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(refused.json()["error"].as_str().unwrap().contains("\"smollm2:two\""), "{}", refused.text());
    assert_serves_hello(&mut host);
}

#[test]
fn embeddings_are_stable_and_related_texts_are_closer() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("embeddings");
    let texts =
        ["The cat sat on the mat.", "A kitten was sitting on the rug.", "Quarterly revenue grew by eight percent."];
    let r = post_json(host.addr, "/embeddings", &json!({"input": texts}));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let vectors: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors[0].len() >= 64, "dimension {}", vectors[0].len());
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!((dot(&vectors[0], &vectors[0]) - 1.0).abs() < 1e-3, "not normalised");
    let related = dot(&vectors[0], &vectors[1]);
    let unrelated = dot(&vectors[0], &vectors[2]);
    assert!(related > unrelated, "cos(cat, kitten) = {related} <= cos(cat, revenue) = {unrelated}");
    // The same text gives the same vector, call after call.
    let again = post_json(host.addr, "/embeddings", &json!({"input": texts[0]}));
    assert_eq!(again.json()["data"][0]["embedding"], body["data"][0]["embedding"]);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_serves_hello(&mut host);
}

#[test]
fn a_spin_sdk_component_runs_unmodified_and_answers_as_the_wasi_nn_path_does() {
    if !prerequisites() {
        return;
    }
    let mut host = start_host("spin");
    let addr = host.addr;
    let prompt = "<|im_start|>user\nName three colours of the rainbow.<|im_end|>\n<|im_start|>assistant\n";

    // The same prompt and parameters through Spin's `fermyon:spin/llm` (a WASIp3
    // component built with spin-sdk 7) and through wasi:nn (the WASIp2 `chat`).
    for (repeat_penalty, lora) in [(1.1, None), (1.0, Some("one"))] {
        let model = match lora {
            Some(l) => format!("smollm2:{l}"),
            None => "smollm2".to_string(),
        };
        let spin = post_json(
            addr,
            "/spin/infer",
            &json!({"prompt": prompt, "model": model, "max_tokens": 24, "temperature": 0.0,
                    "repeat_penalty": repeat_penalty, "repeat_penalty_last_n_token_count": 64}),
        );
        assert_eq!(spin.status, 200, "{}", spin.text());
        let nn = post_json(
            addr,
            "/chat",
            &json!({"prompt": prompt, "max_tokens": 24, "temperature": 0.0, "lora": lora,
                    "repeat_penalty": repeat_penalty, "repeat_last_n": 64}),
        );
        assert_eq!(nn.status, 200, "{}", nn.text());
        let (spin, nn) = (spin.json(), nn.json());
        let text = spin["text"].as_str().expect("text");
        assert!(!text.trim().is_empty(), "empty generation");
        assert_eq!(spin["text"], nn["text"], "repeat penalty {repeat_penalty}, model {model}");
        assert_eq!(spin["usage"]["prompt_token_count"], nn["usage"]["input_tokens"]);
        assert_eq!(spin["usage"]["generated_token_count"], nn["usage"]["output_tokens"]);
    }

    // No parameters: Spin's defaults (100 tokens at most, sampled).
    let r = post_json(addr, "/spin/infer", &json!({"prompt": "Once upon a time"}));
    // (Spin's defaults generate up to 100 tokens: the one long request of this test.)
    assert_eq!(r.status, 200, "{}", r.text());
    let generated = r.json()["usage"]["generated_token_count"].as_u64().unwrap();
    assert!((1..=100).contains(&generated), "{generated} tokens");

    // A model outside `ai_models` is refused with the key to add, as Spin does.
    let r = post_json(addr, "/spin/infer", &json!({"prompt": "hi", "model": "smollm2:two"}));
    assert_eq!(r.status, 400, "{}", r.text());
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("`ai_models`") && err.contains("[component.spin-llm]"), "{err}");
    // Out-of-range parameters name Spin's field.
    let r = post_json(addr, "/spin/infer", &json!({"prompt": "hi", "max_tokens": 0}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max-tokens"), "{}", r.text());

    // Embeddings: the same vectors as through wasi:nn, stable, related texts closer.
    let texts =
        ["The cat sat on the mat.", "A kitten was sitting on the rug.", "Quarterly revenue grew by eight percent."];
    let r = post_json(addr, "/spin/embed", &json!({"input": texts}));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let vectors: Vec<Vec<f64>> = body["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(vectors.len(), 3);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!(dot(&vectors[0], &vectors[1]) > dot(&vectors[0], &vectors[2]), "related texts are not closer");
    assert!(body["usage"]["prompt_token_count"].as_u64().unwrap() > 0);
    let nn = post_json(addr, "/embeddings", &json!({"input": texts[0]})).json();
    assert_eq!(nn["data"][0]["embedding"], body["embeddings"][0], "Spin and wasi:nn embeddings differ");
    let again = post_json(addr, "/spin/embed", &json!({"input": [texts[0]]})).json();
    assert_eq!(again["embeddings"][0], body["embeddings"][0]);

    // Bad input reaches the guest's own error handling; the host stays up.
    let r = request(addr, "POST", "/spin/infer", &[], Some(Payload::Sized(b"{not json"))).expect("POST bad JSON");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(addr, "GET", "/spin/infer", &[], None).expect("GET");
    assert_eq!(r.status, 405, "{}", r.text());

    // The host's limits hold for WASIp3 components as for WASIp2 ones.
    let big = vec![b' '; 10_000];
    let r = request(addr, "POST", "/spin/infer", &[], Some(Payload::Chunked(&big))).expect("POST chunked");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("max_request_bytes"), "{}", r.text());
    // Spin's defaults sample (temperature 0.8, a random seed): a prompt that ends mid-sentence,
    // so the model is never done at its first tokens, well inside the 50 ms deadline.
    let prompt = "Once upon a time, in a kingdom far beyond the mountains, there lived a";
    let r = post_json(addr, "/spin-hurried/infer", &json!({"prompt": prompt, "max_tokens": 2000}));
    assert_eq!(r.status, 504, "{}", r.text());
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(err.contains("deadline of 50 ms") && err.contains("timeout_ms"), "{err}");
    assert_serves_hello(&mut host);
}

#[test]
fn a_nodes_caps_bound_what_a_manifest_asks_for() {
    if !prerequisites() {
        return;
    }
    let dir = scratch("caps");
    let c = components_dir();
    // A tenant asks for a deadline of years, 4 GiB per instance and terabyte bodies.
    let manifest = format!(
        "[app]\nname = \"greedy\"\n\n[component.loop-forever]\nsource = \"{lp}\"\n[component.loop-forever.limits]\ntimeout_ms = 100000000000\n\n[component.memory-bomb]\nsource = \"{bomb}\"\n[component.memory-bomb.limits]\nmemory_mb = 4096\n\n[component.hello]\nsource = \"{hello}\"\n[component.hello.limits]\nmax_request_bytes = 1000000000000\n\n[[route]]\npath = \"/loop\"\ncomponent = \"loop-forever\"\n[[route]]\npath = \"/bomb\"\ncomponent = \"memory-bomb\"\n[[route]]\npath = \"/hello\"\ncomponent = \"hello\"\n",
        lp = c.join("loop_forever.wasm").display(),
        bomb = c.join("memory_bomb.wasm").display(),
        hello = c.join("hello.wasm").display(),
    );
    let path = dir.join("wasmesh.toml");
    std::fs::write(&path, manifest).unwrap();
    let addr = free_addr();
    let mut host = Process::spawn(
        &[
            "host",
            "--app",
            path.to_str().unwrap(),
            "--listen",
            &addr.to_string(),
            "--cap-timeout-ms",
            "700",
            "--cap-memory-mb",
            "24",
            "--cap-request-bytes",
            "1000",
            "--cap-instances-per-app",
            "1",
        ],
        addr,
        dir.join("host.log"),
    );
    host.wait_ready(Duration::from_secs(60));
    // The node owner's caps hold. One request of the app at a time: a second one while
    // the loop runs is turned away with a Retry-After, not queued behind it.
    let addr = host.addr;
    let looping = std::thread::spawn(move || request(addr, "GET", "/loop", &[], None).unwrap());
    wait_for("the loop to start", Duration::from_secs(10), || {
        request(addr, "GET", "/health", &[], None).is_ok_and(|r| r.json()["in_flight"] == 1)
    });
    let turned = request(host.addr, "GET", "/hello", &[], None).unwrap();
    assert_eq!(turned.status, 503, "{}", turned.text());
    assert!(turned.text().contains("--cap-instances-per-app"), "{}", turned.text());
    assert!(turned.headers.iter().any(|(k, _)| k == "retry-after"), "{:?}", turned.headers);
    let r = looping.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("deadline of 700 ms"), "{}", r.text());
    let r = request(host.addr, "GET", "/bomb", &[], None).unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("memory limit of 24 MiB"), "{}", r.text());
    let big = vec![b'x'; 2000];
    let r = request(host.addr, "POST", "/hello", &[], Some(wasmesh_tests::Payload::Sized(&big))).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let log = host.log();
    assert!(log.contains("lowered") && log.contains("timeout_ms") && log.contains("memory_mb"), "{log}");
    assert_serves_hello(&mut host);
    let _ = std::fs::remove_dir_all(&dir);
}
