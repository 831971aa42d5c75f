//! Fetches from the object store alone (through the registry), into the weight cache:
//! `wasmesh host --no-p2p`, blobs stored before torrents were recorded, and the
//! fallback for adapters whose swarm fails.

use crate::{FetchError, Lease, WeightCache};
use std::path::PathBuf;
use wasmesh_client::{Client, Progress};

/// Fetches LoRA adapter `name` from the object store alone (through the registry) into
/// `cache`, verified piece by piece, and leases it. Returns the adapter's record too (its
/// base model).
pub async fn fetch_lora_cached(
    client: &Client,
    name: &str,
    cache: &WeightCache,
    progress: &dyn Progress,
) -> Result<(wasmesh_api::wire::LoraInfo, PathBuf, Lease), FetchError> {
    let lora = lora_info(client, name).await?;
    let lease = cache.lease(&lora.blake3);
    let dest = cache.path_for(&lora.blake3);
    let cached = tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() == lora.size);
    if !cached {
        cache.make_room(&lora.blake3, &format!("adapter '{name}'"), lora.size)?;
    }
    client.fetch_verified(&lora.blake3, lora.size, &lora.pieces, &dest, progress).await?;
    Ok((lora, dest, lease))
}

/// The registry's record of adapter `name`.
pub async fn lora_info(client: &Client, name: &str) -> Result<wasmesh_api::wire::LoraInfo, FetchError> {
    let loras = client.loras().await?;
    loras.into_iter().find(|l| l.name == name).ok_or_else(|| FetchError::UnknownAdapter(name.to_string()))
}

/// Fetches model `name` from the object store alone (through the registry) into
/// `cache`, verified piece by piece, and leases it (it is not evicted while the lease
/// lives). A model already in the cache is only re-verified; otherwise least recently
/// used, unleased models are evicted to make room first. `wasmesh host --no-p2p` and
/// models stored before torrents were recorded come this way.
pub async fn fetch_model_cached(
    client: &Client,
    name: &str,
    cache: &WeightCache,
    progress: &dyn Progress,
) -> Result<(PathBuf, Lease), FetchError> {
    let model = client.model(name).await?;
    // Leased from the start, so the partial download is never evicted either.
    let lease = cache.lease(&model.blake3);
    let dest = cache.path_for(&model.blake3);
    let cached = tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() == model.size);
    if !cached {
        cache.make_room(&model.blake3, &format!("model '{name}'"), model.size)?;
    }
    client.fetch_verified(&model.blake3, model.size, &model.pieces, &dest, progress).await?;
    Ok((dest, lease))
}
