//! The test fixtures: where the built binary, the test model, its LoRAs and the
//! guest components are, whether they are all present (a missing one skips the
//! test locally and fails it under `CI`), scratch folders, and fixed test inputs.

use std::path::{Path, PathBuf};

/// Eight short prompts of different lengths, for concurrency tests.
pub const CONCURRENT_PROMPTS: [&str; 8] = [
    "Name a fruit.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Count from one to five.",
    "What colour is the sky?",
    "Give me a synonym for happy.",
    "Explain gravity in one sentence.",
    "What is two plus two?",
];

/// wasmesh's cache folder: `$WASMESH_CACHE`, or `~/.cache/wasmesh`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("WASMESH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/wasmesh"))
}

/// The test model (SmolLM2-135M-Instruct Q4_1), fetched by `deploy/setup.sh`.
pub fn model_path() -> PathBuf {
    cache_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The second test model, of another architecture (Gemma 3 270M, `gemma3`, Q4_K_M, no
/// chat template in its GGUF), fetched by `deploy/setup.sh`.
pub fn second_model_path() -> PathBuf {
    cache_dir().join("models/gemma-3-270m-q4_k_m.gguf")
}

/// A test LoRA adapter for the test model (`seed` 1 or 2), written by
/// `deploy/make-test-lora.py` through `deploy/setup.sh`.
pub fn lora_path(seed: u32) -> PathBuf {
    cache_dir().join(format!("models/smollm2-test-lora-{seed}.gguf"))
}

/// Where `guest-components/build.sh` put the components.
pub fn components_dir() -> PathBuf {
    std::env::var_os("WASMESH_COMPONENTS").map(PathBuf::from).unwrap_or_else(|| cache_dir().join("components"))
}

/// The `wasmesh` binary: `$WASMESH_BIN`, or the one next to this test executable
/// (`target/<profile>/wasmesh`).
pub fn wasmesh_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WASMESH_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    profile_dir.join("wasmesh")
}

/// Whether everything the end-to-end tests need is present. Under `CI` a missing
/// piece is a failure; locally the test is skipped with a note.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !wasmesh_bin().is_file() {
        missing.push(format!("{} (run `cargo build -p wasmesh`)", wasmesh_bin().display()));
    }
    for p in [model_path(), lora_path(1), lora_path(2)] {
        if !p.is_file() {
            missing.push(format!("{} (run `bash deploy/setup.sh`)", p.display()));
        }
    }
    for c in [
        "chat",
        "hello",
        "loop_forever",
        "memory_bomb",
        "tensor_flood",
        "unknown_model",
        "embeddings",
        "unknown_import",
        "openai",
    ] {
        let p = components_dir().join(format!("{c}.wasm"));
        if !p.is_file() {
            missing.push(format!("{} (run `bash guest-components/build.sh`)", p.display()));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("missing test prerequisites:\n  {}", missing.join("\n  "));
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// A fresh, empty scratch folder for one test (`$TMP/wasmesh-test-NAME-PID`).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmesh-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// Under `CI` a missing prerequisite fails the test; locally it is skipped with a
/// note. Returns false (skip).
pub fn skip_or_fail(msg: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    false
}
