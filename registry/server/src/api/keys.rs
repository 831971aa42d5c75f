//! API keys: who am I, and creating, listing and revoking keys. An admin manages
//! every account's keys; a deploy key manages its own account's (and makes only
//! deploy, provider and invoke keys: admin and router keys come from an admin).

use super::St;
use crate::auth::{Caller, create_key, list_keys, revoke_key};
use crate::error::{ApiError, ApiResult, Json};
use axum::extract::{Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmesh_api::wire::{self, CreateKey, Scope};

pub(super) async fn whoami(caller: Caller) -> Response {
    axum::Json(wire::WhoAmI { id: caller.key_id, scopes: caller.scopes, account: caller.account }).into_response()
}

pub(super) async fn keys_create(S(state): St, caller: Caller, Json(req): Json<CreateKey>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let account = match req.account.as_deref() {
        Some(other) if other != caller.account => {
            caller.require(Scope::Admin).map_err(|_| {
                ApiError::forbidden(
                    "not_owner",
                    format!("key {} may make keys of its own account '{}' only", caller.key_id, caller.account),
                )
            })?;
            crate::accounts::require_exists(&state.db, other).await?;
            other.to_string()
        }
        _ => caller.account.clone(),
    };
    if !caller.is_admin()
        && let Some(scope) = req.scopes.iter().find(|s| matches!(s, Scope::Admin | Scope::Router))
    {
        return Err(ApiError::forbidden(
            "missing_scope",
            format!("only an admin key makes '{scope}' keys; ask your registry's operator"),
        ));
    }
    let key = create_key(&state.db, &account, &req.name, &req.scopes, req.network.as_deref()).await?;
    tracing::info!(key = %key.info.id, %account, by = %caller.key_id, scopes = ?key.info.scopes, "key created");
    Ok((StatusCode::CREATED, axum::Json(key)).into_response())
}

/// The caller's account's keys (every key for an admin).
pub(super) async fn keys_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let account = (!caller.is_admin()).then_some(caller.account.as_str());
    Ok(axum::Json(list_keys(&state.db, account).await?).into_response())
}

/// Revokes a key of the caller's account (any key for an admin). The nodes it
/// registered go offline at once and routers drop them at their next poll.
pub(super) async fn keys_revoke(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let account = (!caller.is_admin()).then_some(caller.account.as_str());
    if !revoke_key(&state.db, &id, account).await? {
        return Err(ApiError::not_found(format!("no key with id {id} in your account; `wasmesh keys ls` lists them")));
    }
    tracing::info!(key = %id, by = %caller.key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
