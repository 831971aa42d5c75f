//! Apps: listing them and their versions, deploying a version (its components
//! checked and validated), rolling back, and the deployments nodes long-poll.

use super::St;
use crate::State;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json};
use crate::{access, catalog};
use axum::extract::{Path, Query, State as S};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{Deploy, Rollback, Scope};

/// The caller's account's apps (every app for admin and router keys).
pub(super) async fn apps_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Router])?;
    let mut apps = catalog::apps(&state.db).await?;
    if !caller.reads_everything() {
        apps.retain(|a| a.account == caller.account);
    }
    Ok(axum::Json(apps).into_response())
}

pub(super) async fn app_get(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    access::require_app_owner(&state.db, &caller, &name).await?;
    let app = catalog::app_summary(&state.db, &name).await?.ok_or_else(|| access::no_app(&name))?;
    Ok(axum::Json(app).into_response())
}

/// Every version of an app, manifests (and their `env`) included: its owner's only.
pub(super) async fn app_versions(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    access::require_app_owner(&state.db, &caller, &name).await?;
    let versions = catalog::versions(&state.db, &name).await?;
    if versions.is_empty() {
        return Err(access::no_app(&name));
    }
    Ok(axum::Json(versions).into_response())
}

pub(super) async fn deploy(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Deploy>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let manifest =
        AppManifest::parse(&req.manifest).map_err(|e| ApiError::bad_request("invalid_manifest", e.to_string()))?;
    let account = access::deploy_account(&state.db, &caller, &name).await?;
    if let Some(network) = &manifest.app.network {
        crate::accounts::claim_network(&state.db, network, &account).await?;
    }
    catalog::check_deploy(&name, &manifest, &req.components)?;
    access::check_grants(&state.db, &account, &manifest).await?;
    for (component, hash) in &req.components {
        catalog::check_defined(&manifest, component)?;
        let blob = catalog::blob(&state.db, hash).await?;
        // Another account's upload is not the caller's to deploy: a 400 as if absent.
        let blob = match blob {
            Some(_) if !caller.is_admin() && !catalog::blob_owned_by(&state.db, hash, &caller.account).await? => None,
            blob => blob,
        };
        catalog::check_component_blob(component, hash, blob.as_ref())?;
        validate_component(&state, component, hash).await?;
    }
    let version =
        catalog::create_version(&state.db, &account, &name, &req.manifest, &req.components, &caller.key_id).await?;
    state.metrics.deploys.inc();
    state.changed.notify_waiters();
    tracing::info!(app = %name, version = version.version, by = %caller.key_id, "deployed");
    Ok((StatusCode::CREATED, axum::Json(version)).into_response())
}

/// Validates the component blob `hash` (`component` of its app) unless it passed
/// before: each blob is compiled once, one validation at a time.
async fn validate_component(state: &State, component: &str, hash: &str) -> ApiResult<()> {
    if !catalog::is_validated(&state.db, hash).await? {
        let bytes = state.artifacts.get(hash).await?;
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(super::uploads::damaged(hash));
        }
        let validator = state.validator.clone();
        let name = component.to_string();
        let _slot = state.validate_slots.acquire().await.map_err(|e| ApiError::internal("validator closed", e))?;
        tokio::task::spawn_blocking(move || validator.validate(&name, &bytes))
            .await
            .map_err(|e| ApiError::internal("validation task failed", e))?
            .map_err(|e| ApiError::bad_request("invalid_component", e.to_string()))?;
        catalog::mark_validated(&state.db, hash).await?;
    }
    Ok(())
}

pub(super) async fn rollback(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Rollback>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    access::require_app_owner(&state.db, &caller, &name).await?;
    let app = catalog::rollback(&state.db, &name, req.version).await?;
    state.changed.notify_waiters();
    tracing::info!(app = %name, version = req.version, by = %caller.key_id, "rolled back");
    Ok(axum::Json(app).into_response())
}

/// Long polls one key may hold waiting at once.
const MAX_WAITERS_PER_KEY: u32 = 8;

/// One long poll waiting, counted per key while it lives.
struct Waiter<'a> {
    state: &'a State,
    key: String,
}

impl<'a> Waiter<'a> {
    fn enter(state: &'a State, key: &str) -> Option<Self> {
        let mut waiting = state.long_polls.lock().expect("long poll counts");
        let n = waiting.entry(key.to_string()).or_default();
        if *n >= MAX_WAITERS_PER_KEY {
            return None;
        }
        *n += 1;
        Some(Self { state, key: key.to_string() })
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.state.long_polls.lock().expect("long poll counts");
        if let Some(n) = waiting.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.key);
            }
        }
    }
}

/// `GET /v1/deployments` parameters.
#[derive(serde::Deserialize)]
pub(super) struct DeploymentsQuery {
    since: Option<u64>,
    wait_s: Option<u64>,
}

pub(super) async fn deployments(
    S(state): St,
    caller: Caller,
    Query(q): Query<DeploymentsQuery>,
) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy, Scope::Router])?;
    // Long poll: with `since`, answer when the revision moves past it (or after
    // `wait_s`, at most 60 s). Deploys through this process wake waiters at
    // once; a tick catches those through another replica.
    // At most MAX_WAITERS_PER_KEY long polls wait at once per key; more answer at once
    // (each waiter costs a query a second).
    let waiting = Waiter::enter(&state, &caller.key_id);
    if let Some(since) = q.since
        && waiting.is_some()
    {
        let deadline = Instant::now() + Duration::from_secs(q.wait_s.unwrap_or(0).min(60));
        loop {
            let notified = state.changed.notified();
            if catalog::revision(&state.db).await? != since || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
    Ok(axum::Json(access::deployments(&state.db, &caller).await?).into_response())
}
