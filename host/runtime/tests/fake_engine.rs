//! The host's own logic (routing, wasi:nn conventions, grants, error mapping) with
//! the real Wasmtime and real components but the fake engine behind the trait:
//! fast, and independent of llama.cpp.

use std::sync::Arc;
use wasmesh_engine::fake::FakeEngine;
use wasmesh_runtime::{Host, HostConfig};
use wasmesh_tests::{components_dir, post_json};

const MANIFEST: &str = r#"
[app]
name = "fake"

[component.chat]
source = "chat.wasm"
models = ["tiny"]

[component.stranger]
source = "chat.wasm"

[component.lost]
source = "chat.wasm"
models = ["huge"]

[[route]]
path = "/lost"
component = "lost"

[[route]]
path = "/chat"
component = "chat"

[[route]]
path = "/stranger"
component = "stranger"
"#;

async fn serve() -> Option<std::net::SocketAddr> {
    if !components_dir().join("chat.wasm").is_file() {
        assert!(std::env::var_os("CI").is_none(), "missing components: run guest-components/build.sh");
        eprintln!("skipping: missing components (run guest-components/build.sh)");
        return None;
    }
    let host = Host::new(HostConfig::default(), Arc::new(FakeEngine::new(["tiny"]))).expect("host");
    host.load_app(wasmesh_api::AppManifest::parse(MANIFEST).unwrap(), &components_dir()).await.expect("load app");
    host.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { host.serve(listener).await });
    Some(addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reaches_the_engine_through_wasi_nn_and_grants_hold() {
    let Some(addr) = serve().await else { return };
    let (ok, denied, unknown, lost) = tokio::task::spawn_blocking(move || {
        (
            post_json(addr, "/chat", &serde_json::json!({"prompt": "one two three", "model": "tiny", "max_tokens": 2})),
            post_json(addr, "/stranger", &serde_json::json!({"prompt": "hi", "model": "tiny"})),
            post_json(addr, "/chat", &serde_json::json!({"prompt": "hi", "model": "huge"})),
            post_json(addr, "/lost", &serde_json::json!({"prompt": "hi", "model": "huge"})),
        )
    })
    .await
    .unwrap();
    // The fake answers with the prompt's words reversed, one per token.
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["text"], "three two");
    assert_eq!(ok.json()["usage"]["output_tokens"], 2);
    // Deny by default: a component with no grant is refused, naming the key.
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("[component.stranger]"), "{}", denied.text());
    // Not granted (and not on the node): refused before the engine is asked.
    assert_eq!(unknown.status, 403, "{}", unknown.text());
    // Granted but not on this node: not-found, listing what the node has.
    assert_eq!(lost.status, 404, "{}", lost.text());
    assert_eq!(lost.json()["code"], "not-found");
    assert!(lost.text().contains("available: tiny"), "{}", lost.text());
}

const SPIN_MANIFEST: &str = r#"
[app]
name = "spin"

[component.spin]
source = "spin_llm.wasm"
ai_models = ["tiny", "huge"]

[component.nn-only]
source = "spin_llm.wasm"
models = ["tiny"]

[[route]]
path = "/spin/..."
component = "spin"

[[route]]
path = "/nn-only/..."
component = "nn-only"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_sdk_component_reaches_the_engine_through_spin_llm_and_ai_models_grants_hold() {
    if !components_dir().join("spin_llm.wasm").is_file() {
        assert!(std::env::var_os("CI").is_none(), "missing components: run guest-components/build.sh");
        return;
    }
    // The registry's validator accepts a WASIp3 component as a host would.
    let bytes = std::fs::read(components_dir().join("spin_llm.wasm")).unwrap();
    wasmesh_runtime::ComponentValidator::new().unwrap().validate("spin", &bytes).expect("spin-sdk component is valid");

    let host = Host::new(HostConfig::default(), Arc::new(FakeEngine::new(["tiny"]))).expect("host");
    host.load_app(wasmesh_api::AppManifest::parse(SPIN_MANIFEST).unwrap(), &components_dir()).await.expect("load app");
    host.set_ready(true);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { host.serve(listener).await });

    let (ok, lost, nn_only) = tokio::task::spawn_blocking(move || {
        (
            post_json(
                addr,
                "/spin/infer",
                &serde_json::json!({"prompt": "one two three", "model": "tiny", "max_tokens": 2}),
            ),
            post_json(addr, "/spin/infer", &serde_json::json!({"prompt": "hi", "model": "huge"})),
            post_json(addr, "/nn-only/infer", &serde_json::json!({"prompt": "hi", "model": "tiny"})),
        )
    })
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["text"], "three two");
    assert_eq!(ok.json()["usage"]["prompt_token_count"], 3);
    assert_eq!(ok.json()["usage"]["generated_token_count"], 2);
    // Granted but not on this node: invalid-input naming what the node has.
    assert_eq!(lost.status, 400, "{}", lost.text());
    assert!(lost.text().contains("available: tiny"), "{}", lost.text());
    // `models` grants wasi:nn only; Spin's interface needs `ai_models`.
    assert_eq!(nn_only.status, 400, "{}", nn_only.text());
    assert!(
        nn_only.text().contains("`ai_models`") && nn_only.text().contains("[component.nn-only]"),
        "{}",
        nn_only.text()
    );
}

/// A WASIp2 handler (`wasi:http/incoming-handler@0.2`) that also imports a WASIp3
/// interface: only the WASIp3 engine's linker has those, so it must load there. With
/// an import no linker has, the error names it.
#[test]
fn a_wasip2_handler_that_imports_wasip3_interfaces_loads_and_unknown_imports_are_named() {
    let component = |clock_import: &str| {
        wat::parse_str(format!(
            r#"(component
                (import "{clock_import}" (instance (export "now" (func (result u64)))))
                (import "wasi:http/types@0.2.12" (instance $types
                    (export "incoming-request" (type (sub resource)))
                    (export "response-outparam" (type (sub resource)))))
                (alias export $types "incoming-request" (type $request))
                (alias export $types "response-outparam" (type $out))
                (core module $m (func (export "handle") (param i32 i32)))
                (core instance $i (instantiate $m))
                (func $handle (param "request" (own $request)) (param "response-out" (own $out))
                    (canon lift (core func $i "handle")))
                (instance $handler (export "handle" (func $handle)))
                (export "wasi:http/incoming-handler@0.2.12" (instance $handler)))"#
        ))
        .expect("valid component text")
    };
    let validator = wasmesh_runtime::ComponentValidator::new().unwrap();
    validator
        .validate("mixed", &component("wasi:clocks/monotonic-clock@0.3.0"))
        .expect("a WASIp2 handler importing wasi:clocks@0.3.0 loads");
    let err = validator.validate("odd", &component("acme:clocks/monotonic-clock@9.0.0")).unwrap_err().to_string();
    assert!(err.contains("acme:clocks/monotonic-clock@9.0.0"), "{err}");
}
