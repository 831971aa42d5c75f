//! The process-wide llama.cpp backend (initialised once).

use llama_cpp_2::llama_backend::LlamaBackend;
use std::sync::OnceLock;
use wasmesh_engine::EngineError;

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// Initialises llama.cpp once per process and routes its logs to `tracing`
/// (target `llama_cpp_2`).
pub fn init_backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Internal(format!("llama.cpp backend failed to start: {e}")))
}

/// Whether a GPU backend was compiled in and found a device.
pub fn gpu_offload_supported() -> bool {
    init_backend().map(|b| b.supports_gpu_offload()).unwrap_or(false)
}
