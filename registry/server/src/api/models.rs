//! Models and LoRA adapters: registering an uploaded GGUF file under a name, and
//! listing them.

use super::St;
use crate::auth::Caller;
use crate::catalog;
use crate::error::{ApiError, ApiResult, Json};
use axum::extract::{Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmesh_api::check_name;
use wasmesh_api::wire::{PinModel, PushLora, PushModel, Scope};

pub(super) async fn models_push(S(state): St, caller: Caller, Json(req): Json<PushModel>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    check_name("model name", &req.name).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let blob = catalog::uploaded_blob(&state.db, &req.blake3).await?;
    catalog::check_model_blob(&blob)?;
    let model = catalog::insert_model(&state.db, &req.name, &req.blake3, &blob).await?;
    tracing::info!(model = %req.name, hash = %req.blake3, "model registered");
    Ok((StatusCode::CREATED, axum::Json(model)).into_response())
}

pub(super) async fn models_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    Ok(axum::Json(catalog::models(&state.db).await?).into_response())
}

pub(super) async fn model_get(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    let model = catalog::model(&state.db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no model named '{name}'; `wasmesh models ls` lists them")))?;
    Ok(axum::Json(model).into_response())
}

/// Pins a model warm on `min_warm` nodes (0 unpins): routers place it (pre-load hints)
/// and restore the count when a warm node leaves; hosts never evict it while pinned.
pub(super) async fn model_pin(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<PinModel>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    if req.min_warm > MAX_MIN_WARM {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("min_warm must be 0..={MAX_MIN_WARM}, got {}", req.min_warm),
        ));
    }
    let model = catalog::set_min_warm(&state.db, &name, req.min_warm)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no model named '{name}'; `wasmesh models ls` lists them")))?;
    tracing::info!(model = %name, min_warm = req.min_warm, "model pin set");
    Ok(axum::Json(model).into_response())
}

/// The most warm copies one pin may ask for.
const MAX_MIN_WARM: u32 = 1024;

pub(super) async fn loras_push(S(state): St, caller: Caller, Json(req): Json<PushLora>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    check_name("adapter name", &req.name).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let (arch, tensors) = catalog::model_tensors(&state.db, &req.base).await?.ok_or_else(|| {
        ApiError::not_found(format!("no base model named '{}'; push it first with `wasmesh models push`", req.base))
    })?;
    let blob = catalog::uploaded_blob(&state.db, &req.blake3).await?;
    catalog::check_lora_blob(&blob)?;
    // The adapter's header (tensor shapes) is read from the stored file.
    let header = state.artifacts.gguf_header(&req.blake3, blob.size).await?;
    let facts = wasmesh_gguf::check_lora_against(&arch, &tensors, &header).map_err(|e| {
        ApiError::bad_request("lora_mismatch", format!("adapter does not fit base '{}': {e}", req.base))
    })?;
    let lora = catalog::insert_lora(&state.db, &req.name, &req.base, &req.blake3, blob.size, facts.rank).await?;
    tracing::info!(lora = %req.name, base = %req.base, rank = facts.rank, "LoRA registered");
    Ok((StatusCode::CREATED, axum::Json(lora)).into_response())
}

pub(super) async fn loras_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    Ok(axum::Json(catalog::loras(&state.db).await?).into_response())
}
