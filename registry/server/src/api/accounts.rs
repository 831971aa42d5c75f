//! Accounts and their members: an admin creates accounts; an account's deploy keys
//! (or an admin) add the members who sign in to the dashboard; members sign in with
//! their email and password.

use super::St;
use crate::accounts;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use axum::extract::{ConnectInfo, Path, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use wasmesh_api::wire::{AddMember, CreateAccount, Scope, SignIn, SignedIn};

pub(super) async fn accounts_create(
    S(state): St,
    caller: Caller,
    Json(req): Json<CreateAccount>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let account = accounts::create(&state.db, &req.name).await?;
    tracing::info!(account = %req.name, by = %caller.key_id, "account created");
    Ok((StatusCode::CREATED, axum::Json(account)).into_response())
}

/// Every account for an admin; the caller's own otherwise.
pub(super) async fn accounts_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    let only = (!caller.is_admin()).then_some(caller.account.as_str());
    Ok(axum::Json(accounts::list(&state.db, only).await?).into_response())
}

fn require_account(caller: &Caller, account: &str) -> ApiResult<()> {
    caller.require(Scope::Deploy)?;
    if !caller.owns(account) {
        return Err(ApiError::not_found(format!("no account named '{account}' that key {} may manage", caller.key_id)));
    }
    Ok(())
}

pub(super) async fn members_add(
    S(state): St,
    caller: Caller,
    Path(account): Path<String>,
    Json(req): Json<AddMember>,
) -> ApiResult<Response> {
    require_account(&caller, &account)?;
    accounts::require_exists(&state.db, &account).await?;
    let member = accounts::add_member(&state.db, &account, &req.email, &req.password).await?;
    tracing::info!(%account, by = %caller.key_id, "member added");
    Ok((StatusCode::CREATED, axum::Json(member)).into_response())
}

pub(super) async fn members_list(S(state): St, caller: Caller, Path(account): Path<String>) -> ApiResult<Response> {
    require_account(&caller, &account)?;
    Ok(axum::Json(accounts::members(&state.db, &account).await?).into_response())
}

/// A member signs in: 200 with who they are (and a session key when asked for one, as
/// the dashboard does), 401 for a wrong email or password, 429 after repeated failures
/// from one address.
pub(super) async fn sign_in(
    S(state): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<SignIn>,
) -> ApiResult<Response> {
    let member = accounts::sign_in(&state.db, &state.auth, &req.email, &req.password, peer.ip()).await?;
    let (session_key, expires_at_ms) = if req.session {
        let (key, expires) = crate::auth::create_session_key(&state.db, &member.account, &member.email).await?;
        tracing::info!(account = %member.account, "member signed in (session key made)");
        (Some(key), Some(expires))
    } else {
        (None, None)
    };
    Ok(axum::Json(SignedIn { member, session_key, expires_at_ms }).into_response())
}
