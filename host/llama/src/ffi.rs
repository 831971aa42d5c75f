//! Attaching and freeing a LoRA adapter on a model that already has a context.
//!
//! llama-cpp-2 offers `LlamaModel::lora_adapter_init(&mut self)`, but a worker's
//! context borrows its model for the worker's life, so adapters could only be loaded
//! before the context exists, all at once. llama.cpp itself has no such rule: an
//! adapter reads the model's tensors, and it is attached between decode steps on the
//! worker's own thread, so nothing runs beside it. These two calls go to
//! `llama-cpp-sys-2` directly, with the raw handles read through llama-cpp-2's
//! `#[repr(transparent)]` wrappers (both crates are pinned to exact versions).
//!
//! The workspace denies `unsafe`; this module (and the one call of [`free_lora`]) is
//! the exception, each block with the reason it holds.
#![allow(unsafe_code)]

use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_sys_2::{llama_adapter_lora, llama_model};
use std::ffi::CString;
use std::path::Path;
use std::ptr::NonNull;

// The wrappers are one pointer each; the reads below rely on it.
const _: () = assert!(size_of::<LlamaModel>() == size_of::<NonNull<llama_model>>());
const _: () = assert!(size_of::<LlamaLoraAdapter>() == size_of::<NonNull<llama_adapter_lora>>());

/// Loads the adapter GGUF at `path` for `model`. Call it on the thread that decodes
/// with `model`'s context, between steps.
pub(crate) fn attach_lora(model: &LlamaModel, path: &Path) -> Result<LlamaLoraAdapter, String> {
    let text = path.to_str().ok_or_else(|| format!("adapter path {} is not UTF-8", path.display()))?;
    let c_path = CString::new(text).map_err(|_| format!("adapter path {} holds a NUL byte", path.display()))?;
    // SAFETY: `LlamaModel` is `#[repr(transparent)]` over llama-cpp-2's `Ptr`, itself
    // `#[repr(transparent)]` over `NonNull<llama_model>`; reading that pointer copies it.
    // llama.cpp mutates only its own C++ state behind it (the model's adapter set),
    // never memory Rust borrows, and the caller is the model's only decoding thread.
    let raw: *mut llama_model = unsafe { *std::ptr::from_ref(model).cast::<*mut llama_model>() };
    // SAFETY: `raw` is a live model (we hold a reference to its owner) and `c_path` a C string.
    let adapter = unsafe { llama_cpp_sys_2::llama_adapter_lora_init(raw, c_path.as_ptr()) };
    let adapter = NonNull::new(adapter).ok_or_else(|| {
        "llama.cpp refused it: its tensors do not fit this model (another base or architecture?)".to_string()
    })?;
    // SAFETY: `LlamaLoraAdapter` is `#[repr(transparent)]` over `NonNull<llama_adapter_lora>`
    // (through `Ptr`); it has no `Drop` (llama.cpp frees adapters with their model).
    Ok(unsafe { std::mem::transmute::<NonNull<llama_adapter_lora>, LlamaLoraAdapter>(adapter) })
}

/// Frees an adapter that no context has applied.
///
/// # Safety
/// No context may have `adapter` applied, and it must not be used again.
pub(crate) unsafe fn free_lora(adapter: LlamaLoraAdapter) {
    // SAFETY: the layout argument of `attach_lora`, backwards.
    let raw = unsafe { std::mem::transmute::<LlamaLoraAdapter, NonNull<llama_adapter_lora>>(adapter) };
    // SAFETY: the caller's promise; llama.cpp takes the adapter out of its model's set.
    unsafe { llama_cpp_sys_2::llama_adapter_lora_free(raw.as_ptr()) }
}
