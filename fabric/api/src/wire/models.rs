//! Models and LoRA adapters in the registry: registering an uploaded GGUF under a
//! name (`/v1/models`, `/v1/loras`) and what is listed about it.

use super::artifacts::PieceManifest;
use serde::{Deserialize, Serialize};

/// What the GGUF header says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// Number of weights, summed over the tensors.
    pub parameters: u64,
    /// Quantization, from `general.file_type` (e.g. `Q4_1`), or the most common tensor type.
    pub quantization: String,
    /// Context length the model was trained for, when the header says.
    #[serde(default)]
    pub context_length: Option<u64>,
}

/// `POST /v1/models`: register an uploaded GGUF under a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushModel {
    /// The model's name, kebab-case, e.g. `smollm2`.
    pub name: String,
    /// The uploaded blob.
    pub blake3: String,
}

/// A model in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name.
    pub name: String,
    /// The file's blake3.
    pub blake3: String,
    /// The file's size.
    pub size: u64,
    /// What the header says.
    pub facts: ModelFacts,
    /// Per-piece hashes.
    pub pieces: PieceManifest,
    /// When it was pushed.
    pub created_at_ms: u64,
    /// Nodes that must keep it warm (`wasmesh models pin`); 0: not pinned.
    #[serde(default)]
    pub min_warm: u32,
    /// The account that pushed it.
    #[serde(default = "super::keys::default_account")]
    pub account: String,
    /// Whether every account may use it (`wasmesh models publish`); else only its own.
    #[serde(default)]
    pub public: bool,
}

/// `PUT /v1/models/{name}/pin`: keep a model warm on `min_warm` nodes (0 unpins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinModel {
    /// Nodes that must keep it warm.
    pub min_warm: u32,
}

/// `PUT /v1/models/{name}/public` and `PUT /v1/loras/{name}/public`: publish a model
/// or adapter to every account (true) or make it private to its own again (false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Whether every account may use it.
    pub public: bool,
}

/// `POST /v1/loras`: register an uploaded LoRA adapter for a base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushLora {
    /// The adapter's name, kebab-case.
    pub name: String,
    /// The base model's name in the registry.
    pub base: String,
    /// The uploaded blob.
    pub blake3: String,
}

/// A LoRA adapter in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraInfo {
    /// Its name.
    pub name: String,
    /// The base model.
    pub base: String,
    /// The file's blake3.
    pub blake3: String,
    /// The file's size.
    pub size: u64,
    /// The adapter's rank.
    pub rank: u64,
    /// Per-piece hashes.
    pub pieces: PieceManifest,
    /// When it was pushed.
    pub created_at_ms: u64,
    /// The account that pushed it.
    #[serde(default = "super::keys::default_account")]
    pub account: String,
    /// Whether every account may use it (`wasmesh loras publish`); else only its own.
    #[serde(default)]
    pub public: bool,
}
