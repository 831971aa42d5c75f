//! GGUF headers as a model or adapter upload (or a peer's piece) starts: parsing is
//! bounded in every count and in total, and a header that parses goes through what
//! the registry does with it (model facts, the LoRA check against a base).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = wasmesh_gguf::read_header(data) else { return };
    assert!(header.header_bytes as usize <= data.len());
    let _ = wasmesh_gguf::model_facts(&header);
    let _ = wasmesh_gguf::is_adapter(&header);
    let _ = wasmesh_gguf::check_lora(&header, &header);
});
