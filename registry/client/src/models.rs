//! Models and LoRA adapters: pushing and listing them, and fetching a model into a
//! folder (a host's weight cache is `wasmesh-weights`').

use crate::Client;
use crate::error::Result;
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use wasmesh_api::wire::{ArtifactKind, LoraInfo, ModelInfo, PinModel, Publish, PushLora, PushModel};

impl Client {
    /// Uploads and registers a GGUF model.
    pub async fn push_model(&self, path: &Path, name: &str, progress: &dyn Progress) -> Result<ModelInfo> {
        let blob = self.upload_file(path, ArtifactKind::Model, progress).await?;
        self.post("/v1/models", &PushModel { name: name.into(), blake3: blob.blake3 }).await
    }

    /// Every model.
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        self.get("/v1/models").await
    }

    /// Keeps model `name` warm on `min_warm` nodes (0 unpins it).
    pub async fn pin_model(&self, name: &str, min_warm: u32) -> Result<ModelInfo> {
        self.put(&format!("/v1/models/{name}/pin"), &PinModel { min_warm }).await
    }

    /// Publishes model `name` to every account (`public`), or makes it private again.
    pub async fn publish_model(&self, name: &str, public: bool) -> Result<ModelInfo> {
        self.put(&format!("/v1/models/{name}/public"), &Publish { public }).await
    }

    /// Publishes adapter `name` to every account (`public`), or makes it private again.
    pub async fn publish_lora(&self, name: &str, public: bool) -> Result<LoraInfo> {
        self.put(&format!("/v1/loras/{name}/public"), &Publish { public }).await
    }

    /// Uploads and registers a LoRA adapter for `base`.
    pub async fn push_lora(&self, path: &Path, name: &str, base: &str, progress: &dyn Progress) -> Result<LoraInfo> {
        let blob = self.upload_file(path, ArtifactKind::Lora, progress).await?;
        self.post("/v1/loras", &PushLora { name: name.into(), base: base.into(), blake3: blob.blake3 }).await
    }

    /// Every LoRA adapter.
    pub async fn loras(&self) -> Result<Vec<LoraInfo>> {
        self.get("/v1/loras").await
    }

    /// Model `name` as the registry records it.
    pub async fn model(&self, name: &str) -> Result<ModelInfo> {
        self.get(&format!("/v1/models/{name}")).await
    }

    /// Fetches model `name` from the registry into `dir` (as `BLAKE3.gguf`),
    /// verified piece by piece; returns its path. A file already there and whole is
    /// used as is; an interrupted download resumes after its last verified piece.
    pub async fn fetch_model(&self, name: &str, dir: &Path, progress: &dyn Progress) -> Result<PathBuf> {
        let model: ModelInfo = self.get(&format!("/v1/models/{name}")).await?;
        let dest = dir.join(format!("{}.gguf", model.blake3));
        self.fetch_verified(&model.blake3, model.size, &model.pieces, &dest, progress).await?;
        Ok(dest)
    }
}
