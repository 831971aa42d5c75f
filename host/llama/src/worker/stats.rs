//! The live counters a model's worker keeps, readable through
//! [`LlamaEngine::stats`](crate::LlamaEngine::stats).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Live counters of one model's worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Requests in a slot now.
    pub active: AtomicUsize,
    /// Requests waiting for a slot now.
    pub queued: AtomicUsize,
    /// Requests answered.
    pub completed: AtomicU64,
    /// Prompt tokens of the requests answered.
    pub prompt_tokens: AtomicU64,
    /// Tokens generated for the requests answered.
    pub generated_tokens: AtomicU64,
    /// Requests dropped by their caller while running (their slot was freed).
    pub cancelled: AtomicU64,
    /// Embeddings answered.
    pub embeddings: AtomicU64,
    /// Decode steps run.
    pub steps: AtomicU64,
    /// Tokens decoded over all steps (prompt and generated); `/ steps` is the mean batch.
    pub batched_tokens: AtomicU64,
    /// Decode steps whose batch carried sequences of more than one adapter (or of an
    /// adapter and the base): the per-sequence adapters at work.
    pub mixed_lora_steps: AtomicU64,
    /// Times the context's LoRA adapter changed between steps (rotation mode).
    pub lora_switches: AtomicU64,
    /// Nanoseconds spent changing adapters.
    pub lora_switch_ns: AtomicU64,
    /// Adapters attached to the warm model (fetched on demand or configured).
    pub lora_attaches: AtomicU64,
    /// Nanoseconds spent attaching adapters.
    pub lora_attach_ns: AtomicU64,
    /// Adapters freed to make room for others (the least recently used, idle).
    pub lora_evictions: AtomicU64,
    /// The adapters attached now, by name.
    pub attached: Mutex<Vec<String>>,
    /// Sequences moved down into a freed slot (see `Scheduler::compact`).
    pub compactions: AtomicU64,
    /// Checked requests (teacher-forced audits, `GenerateRequest::forced`) admitted.
    pub checked_requests: AtomicU64,
    /// Claimed tokens a check found the model would have picked too (fed in a prompt
    /// pass, not generated).
    pub checked_tokens: AtomicU64,
    /// Checks whose claim differed from what the model picks (or was cut short): the
    /// request was generated on from there.
    pub check_divergences: AtomicU64,
}
