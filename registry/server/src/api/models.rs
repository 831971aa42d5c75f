//! Models and LoRA adapters: registering an uploaded GGUF file under a name, and
//! listing them.

use super::St;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use crate::{access, catalog};
use axum::extract::{Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmesh_api::check_name;
use wasmesh_api::wire::{PinModel, Publish, PushLora, PushModel, Scope};

pub(super) async fn models_push(S(state): St, caller: Caller, Json(req): Json<PushModel>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    check_name("model name", &req.name).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let blob = owned_blob(&state, &caller, &req.blake3).await?;
    catalog::check_model_blob(&blob)?;
    let model = catalog::insert_model(&state.db, &caller.account, &req.name, &req.blake3, &blob).await?;
    tracing::info!(model = %req.name, hash = %req.blake3, "model registered");
    Ok((StatusCode::CREATED, axum::Json(model)).into_response())
}

/// The blob `hash` a push names, uploaded by the caller's account: a 400 otherwise
/// (another account's upload is not the caller's to register).
async fn owned_blob(state: &crate::State, caller: &Caller, hash: &str) -> ApiResult<catalog::BlobRow> {
    if !caller.is_admin() && !catalog::blob_owned_by(&state.db, hash, &caller.account).await? {
        return Err(ApiError::bad_request("missing_artifact", format!("no artifact {hash}; upload the file first")));
    }
    catalog::uploaded_blob(&state.db, hash).await
}

const SCOPES: [Scope; 4] = [Scope::Deploy, Scope::Provider, Scope::Invoke, Scope::Router];

/// The models the caller may use: its account's, the published ones, and (for a
/// provider) those its nodes' apps grant.
pub(super) async fn models_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&SCOPES)?;
    let rules = access::Catalog::for_caller(&state.db, &caller).await?;
    let mut models = catalog::models(&state.db).await?;
    models.retain(|m| rules.model(m));
    Ok(axum::Json(models).into_response())
}

fn no_model(name: &str) -> ApiError {
    ApiError::not_found(format!("no model named '{name}' that you may use; `wasmesh models ls` lists them"))
}

pub(super) async fn model_get(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_any(&SCOPES)?;
    let rules = access::Catalog::for_caller(&state.db, &caller).await?;
    let model = catalog::model(&state.db, &name).await?.filter(|m| rules.model(m)).ok_or_else(|| no_model(&name))?;
    Ok(axum::Json(model).into_response())
}

/// The model `name` of the caller's account (any account's for an admin), else a 404.
async fn own_model(state: &crate::State, caller: &Caller, name: &str) -> ApiResult<()> {
    match catalog::model(&state.db, name).await? {
        Some(m) if caller.owns(&m.account) => Ok(()),
        _ => {
            Err(ApiError::not_found(format!("no model named '{name}' in your account; `wasmesh models ls` lists them")))
        }
    }
}

/// Publishes a model to every account, or makes it private to its own again.
pub(super) async fn model_publish(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Publish>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    own_model(&state, &caller, &name).await?;
    catalog::set_public(&state.db, "models", &name, req.public).await?;
    tracing::info!(model = %name, public = req.public, by = %caller.key_id, "model publication set");
    Ok(axum::Json(catalog::model(&state.db, &name).await?.ok_or_else(|| no_model(&name))?).into_response())
}

/// Publishes an adapter to every account, or makes it private to its own again.
pub(super) async fn lora_publish(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Publish>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let no_lora =
        || ApiError::not_found(format!("no adapter named '{name}' in your account; `wasmesh loras ls` lists them"));
    let mut lora = catalog::loras(&state.db).await?.into_iter().find(|l| l.name == name).ok_or_else(no_lora)?;
    if !caller.owns(&lora.account) {
        return Err(no_lora());
    }
    catalog::set_public(&state.db, "loras", &name, req.public).await?;
    tracing::info!(lora = %name, public = req.public, by = %caller.key_id, "adapter publication set");
    lora.public = req.public;
    Ok(axum::Json(lora).into_response())
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
    own_model(&state, &caller, &name).await?;
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
    let no_base =
        || ApiError::not_found(format!("no base model named '{}'; push it first with `wasmesh models push`", req.base));
    let rules = access::Catalog::for_caller(&state.db, &caller).await?;
    if !catalog::model(&state.db, &req.base).await?.is_some_and(|m| rules.model(&m)) {
        return Err(no_base());
    }
    let (arch, tensors) = catalog::model_tensors(&state.db, &req.base).await?.ok_or_else(no_base)?;
    let blob = owned_blob(&state, &caller, &req.blake3).await?;
    catalog::check_lora_blob(&blob)?;
    // The adapter's header (tensor shapes) is read from the stored file.
    let header = state.artifacts.gguf_header(&req.blake3, blob.size).await?;
    let facts = wasmesh_gguf::check_lora_against(&arch, &tensors, &header).map_err(|e| {
        ApiError::bad_request("lora_mismatch", format!("adapter does not fit base '{}': {e}", req.base))
    })?;
    let lora =
        catalog::insert_lora(&state.db, &caller.account, &req.name, &req.base, &req.blake3, blob.size, facts.rank)
            .await?;
    tracing::info!(lora = %req.name, base = %req.base, rank = facts.rank, "LoRA registered");
    Ok((StatusCode::CREATED, axum::Json(lora)).into_response())
}

/// The adapters the caller may use (the models' rules).
pub(super) async fn loras_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&SCOPES)?;
    let rules = access::Catalog::for_caller(&state.db, &caller).await?;
    let mut loras = catalog::loras(&state.db).await?;
    loras.retain(|l| rules.lora(l));
    Ok(axum::Json(loras).into_response())
}
