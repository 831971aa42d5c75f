//! What a request used, for its receipt: a caller (the host's router link) puts a
//! [`ServedReport`] in the request's extensions, and the runtime sends what the guest
//! used once its call ended, whichever way it ended. A request no guest ran for (no
//! route, a body too large up front) drops the report unsent.

use std::sync::{Arc, Mutex};

/// What one request's guest used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    /// The app.
    pub app: String,
    /// The models (`MODEL` or `MODEL:ADAPTER`) it ran, in order of first use.
    pub models: Vec<String>,
    /// Prompt tokens (generation and embeddings).
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Texts embedded.
    pub embeddings: u64,
    /// Whether the guest failed (trap, deadline, memory).
    pub failed: bool,
    /// Why its last generation ended (`stop`, `length`), or `error` when the guest
    /// failed; `None` when it generated nothing.
    pub finish_reason: Option<String>,
    /// What its generations asked for and produced, hashed (`wasmesh_world::commit`);
    /// `None` when it generated nothing.
    pub commitment: Option<String>,
    /// The token ids its generations produced, by the order they started.
    pub tokens: wasmesh_api::wire::GenerationIds,
    /// A scored replay's score of the claims (see [`RouterClaims::score`]).
    pub score: Option<wasmesh_api::wire::ClaimScore>,
}

/// An audit's replay (in the request's extensions): the token ids the audited node
/// claims each generation produced. The replay checks them in one pass each
/// (teacher-forced) and generates only from where the model picks otherwise, so it
/// commits to what generating commits to, at a fraction of the cost. A scored replay
/// (an auditor of another engine build or CPU class) takes every claimed token as is
/// and scores how likely each is ([`Served::score`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterClaims {
    /// The claimed token ids.
    pub ids: wasmesh_api::wire::GenerationIds,
    /// Score the claims rather than check them.
    pub score: bool,
}

/// The router's seed for a request (in its extensions): the request's sampled
/// generations that name no seed are seeded from it, so an auditor replaying the request
/// with the same seed samples the same tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSeed(pub u64);

/// Where the runtime sends a request's [`Served`], once.
#[derive(Clone)]
pub struct ServedReport(Arc<Mutex<Option<tokio::sync::oneshot::Sender<Served>>>>);

impl ServedReport {
    /// A report and the receiver that gets it.
    pub fn new() -> (Self, tokio::sync::oneshot::Receiver<Served>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    pub(crate) fn send(&self, served: Served) {
        if let Some(tx) = self.0.lock().expect("served report lock").take() {
            let _ = tx.send(served);
        }
    }
}
