//! Checks against the real SmolLM2 model and the test LoRAs that `deploy/make-test-lora.py` makes, when
//! they are in `~/.cache/wasmesh/models` (skipped when absent, unless `CI` is set).

use std::path::PathBuf;
use std::time::Instant;

use wasmesh_gguf::{check_lora, is_adapter, model_facts, read_header_file};

fn model_file(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?).join(".cache/wasmesh/models").join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none(), "{} is missing (CI is set, so this is an error)", path.display());
    eprintln!("skipped: {} is absent", path.display());
    None
}

#[test]
fn smollm2_model_facts() {
    let Some(path) = model_file("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let started = Instant::now();
    let header = read_header_file(&path).expect("reads the model's header");
    let took = started.elapsed();
    let size = std::fs::metadata(&path).expect("exists").len();
    let facts = model_facts(&header).expect("facts");
    eprintln!("{facts:?}: header {} of {size} bytes, read in {took:?}", header.header_bytes);
    assert!(header.header_bytes < size / 10, "the header is a small part of the file");
    assert!(took.as_millis() < 500, "reading the header took {took:?}");
    assert_eq!(facts.architecture, "llama");
    assert_eq!(facts.quantization, "Q4_1");
    assert!((130_000_000..140_000_000).contains(&facts.parameters), "{} parameters", facts.parameters);
    assert_eq!(facts.context_length, Some(8192));
    assert!(!is_adapter(&header));
}

#[test]
fn smollm2_test_loras_fit() {
    let Some(model) = model_file("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let base = read_header_file(model).expect("reads the model's header");
    for name in ["smollm2-test-lora-1.gguf", "smollm2-test-lora-2.gguf"] {
        let Some(path) = model_file(name) else { continue };
        let lora = read_header_file(&path).expect("reads the adapter's header");
        assert!(is_adapter(&lora), "{name}");
        let facts = check_lora(&base, &lora).expect("the test LoRA fits SmolLM2");
        eprintln!("{name}: {facts:?}");
        assert_eq!(facts.rank, 8, "{name}");
        // make-test-lora.py adapts the 7 attention and feed-forward projections of every layer.
        let layers = base.get_u64("llama.block_count").expect("block count");
        assert_eq!(facts.tensors as u64, 7 * layers, "{name}");
        assert_eq!(facts.alpha, Some(16.0), "{name}");
    }
}
