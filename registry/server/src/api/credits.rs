//! Credits: grants (admin), an account's balance and history (its own keys), prices
//! (set by an admin, read by every key), the ledger check (admin); routers' leases and
//! receipts; an account's usage and one request's record.

use super::St;
use crate::auth::Caller;
use crate::credits;
use crate::error::{ApiError, ApiResult, Json};
use crate::receipts;
use axum::extract::{Path, Query, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wasmesh_api::wire::{Grant, LeaseRequest, Price, ReceiptBatch, ReceiptOutcome, Scope};

/// Scopes whose keys read their own account's credits.
const READERS: [Scope; 3] = [Scope::Deploy, Scope::Invoke, Scope::Provider];

fn require_reader(caller: &Caller, account: &str) -> ApiResult<()> {
    caller.require_any(&READERS)?;
    if !caller.owns(account) {
        return Err(ApiError::not_found(format!(
            "no account named '{account}' whose credits key {} may read",
            caller.key_id
        )));
    }
    Ok(())
}

pub(super) async fn grant(S(state): St, caller: Caller, Json(req): Json<Grant>) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let (balance, created) = credits::grant(&state.db, &state.ledger, &req, &caller.key_id).await?;
    tracing::info!(account = %req.account, amount = req.amount, created, by = %caller.key_id, "credits granted");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(balance)).into_response())
}

pub(super) async fn balance(S(state): St, caller: Caller, Path(account): Path<String>) -> ApiResult<Response> {
    require_reader(&caller, &account)?;
    crate::accounts::require_exists(&state.db, &account).await?;
    Ok(axum::Json(credits::balance(&state.ledger, &account).await?).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct HistoryQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    before_ms: Option<u64>,
}

pub(super) async fn history(
    S(state): St,
    caller: Caller,
    Path(account): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    require_reader(&caller, &account)?;
    crate::accounts::require_exists(&state.db, &account).await?;
    let entries = credits::history(&state.ledger, &account, q.limit.unwrap_or(100), q.before_ms).await?;
    Ok(axum::Json(entries).into_response())
}

pub(super) async fn prices_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    Ok(axum::Json(credits::prices(&state.db, &caller.account, caller.reads_everything()).await?).into_response())
}

pub(super) async fn price_set(
    S(state): St,
    caller: Caller,
    Path(model): Path<String>,
    Json(mut req): Json<Price>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    if !req.model.is_empty() && req.model != model {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("the body names model '{}' but the path '{model}'", req.model),
        ));
    }
    req.model = model;
    credits::set_price(&state.db, &req).await?;
    tracing::info!(model = %req.model, by = %caller.key_id, "price set");
    Ok(axum::Json(req).into_response())
}

pub(super) async fn ledger_check(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    Ok(axum::Json(state.ledger.check().await?).into_response())
}

pub(super) async fn lease(S(state): St, caller: Caller, Json(req): Json<LeaseRequest>) -> ApiResult<Response> {
    caller.require(Scope::Router)?;
    let lease = receipts::lease(&state.ledger, &req).await?;
    state.metrics.credits.with_label_values(&["reserved"]).inc_by(lease.amount);
    Ok((StatusCode::CREATED, axum::Json(lease)).into_response())
}

pub(super) async fn lease_close(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Router)?;
    let closed = receipts::close_lease(&state.ledger, &id).await?;
    Ok(axum::Json(serde_json::json!({ "closed": closed })).into_response())
}

pub(super) async fn receipts_post(S(state): St, caller: Caller, Json(req): Json<ReceiptBatch>) -> ApiResult<Response> {
    caller.require(Scope::Router)?;
    let costs: u64 = req.receipts.iter().map(|r| r.cost).sum();
    let outcomes =
        receipts::post(&state.db, &state.ledger, &state.receipt_master, state.config.fee_bps, req.receipts).await?;
    let posted = outcomes.iter().filter(|o| matches!(o, ReceiptOutcome::Posted)).count();
    state.metrics.receipts.with_label_values(&["posted"]).inc_by(posted as u64);
    state
        .metrics
        .receipts
        .with_label_values(&["duplicate"])
        .inc_by(outcomes.iter().filter(|o| matches!(o, ReceiptOutcome::Duplicate)).count() as u64);
    state
        .metrics
        .receipts
        .with_label_values(&["refused"])
        .inc_by(outcomes.iter().filter(|o| matches!(o, ReceiptOutcome::Refused { .. })).count() as u64);
    if posted > 0 {
        state.metrics.credits.with_label_values(&["posted"]).inc_by(costs);
    }
    Ok(axum::Json(outcomes).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct UsageQuery {
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

pub(super) async fn usage(S(state): St, caller: Caller, Query(q): Query<UsageQuery>) -> ApiResult<Response> {
    let account = q.account.unwrap_or_else(|| caller.account.clone());
    require_reader(&caller, &account)?;
    let rows = receipts::usage(&state.db, &account, q.by.as_deref().unwrap_or("app")).await?;
    Ok(axum::Json(rows).into_response())
}

#[derive(serde::Deserialize)]
pub(super) struct GenerationQuery {
    id: String,
}

pub(super) async fn generation(S(state): St, caller: Caller, Query(q): Query<GenerationQuery>) -> ApiResult<Response> {
    caller.require_any(&READERS)?;
    let only = (!caller.is_admin()).then_some(caller.account.as_str());
    Ok(axum::Json(receipts::generation(&state.db, &q.id, only).await?).into_response())
}
