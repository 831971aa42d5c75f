//! API keys: who am I, and (admin) creating, listing and revoking keys.

use super::St;
use crate::auth::{Caller, create_key, list_keys, revoke_key};
use crate::error::{ApiError, ApiResult, Json};
use axum::extract::{Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmesh_api::wire::{self, CreateKey, Scope};

pub(super) async fn whoami(caller: Caller) -> Response {
    axum::Json(wire::WhoAmI { id: caller.key_id, scopes: caller.scopes }).into_response()
}

pub(super) async fn keys_create(S(state): St, caller: Caller, Json(req): Json<CreateKey>) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let key = create_key(&state.db, &req.name, &req.scopes, req.network.as_deref()).await?;
    tracing::info!(key = %key.info.id, by = %caller.key_id, scopes = ?key.info.scopes, "key created");
    Ok((StatusCode::CREATED, axum::Json(key)).into_response())
}

pub(super) async fn keys_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    Ok(axum::Json(list_keys(&state.db).await?).into_response())
}

pub(super) async fn keys_revoke(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    if !revoke_key(&state.db, &id).await? {
        return Err(ApiError::not_found(format!("no key with id {id}")));
    }
    tracing::info!(key = %id, by = %caller.key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
