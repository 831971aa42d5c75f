//! The HTTP JSON API (documented in `openapi.json`, served at `/openapi.json`).
//!
//! This file builds the router and holds what every route shares (the rate limit
//! and metrics middleware, the [`Caller`] extractor) and the service routes
//! (health, metrics, the OpenAPI document); the handlers live by resource in
//! `keys`, `uploads`, `apps`, `models` and `nodes`. Handlers check scopes, call
//! the domain modules ([`crate::catalog`], [`crate::auth`], [`crate::nodes`],
//! [`crate::artifacts`], [`crate::swarm`]) and shape the HTTP answer.

mod accounts;
mod apps;
mod credits;
mod keys;
mod models;
mod nodes;
mod uploads;

pub use uploads::expire_uploads;

use crate::State;
use crate::artifacts::PART_SIZE;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, State as S};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

type St = S<Arc<State>>;

/// The API's routes.
pub fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/dashboard", get(crate::dashboard::index))
        .route("/dashboard/{asset}", get(crate::dashboard::asset))
        .route("/v1/whoami", get(keys::whoami))
        .route("/v1/accounts", post(accounts::accounts_create).get(accounts::accounts_list))
        .route("/v1/accounts/{name}/members", post(accounts::members_add).get(accounts::members_list))
        .route("/v1/sessions", post(accounts::sign_in))
        .route("/v1/keys", post(keys::keys_create).get(keys::keys_list))
        .route("/v1/keys/{id}", axum::routing::delete(keys::keys_revoke))
        .route("/v1/uploads", post(uploads::upload_start))
        .route("/v1/uploads/{id}", get(uploads::upload_status))
        .route(
            "/v1/uploads/{id}/parts/{part}",
            put(uploads::upload_part).layer(DefaultBodyLimit::max(PART_SIZE as usize + 1)),
        )
        .route("/v1/uploads/{id}/complete", post(uploads::upload_complete))
        .route("/v1/blobs/{hash}", get(uploads::blob_get))
        .route("/v1/apps", get(apps::apps_list))
        .route("/v1/apps/{name}", get(apps::app_get))
        .route("/v1/apps/{name}/versions", get(apps::app_versions).post(apps::deploy))
        .route("/v1/apps/{name}/rollback", post(apps::rollback))
        .route("/v1/deployments", get(apps::deployments))
        .route("/v1/models", post(models::models_push).get(models::models_list))
        .route("/v1/models/{name}", get(models::model_get))
        .route("/v1/models/{name}/pin", put(models::model_pin))
        .route("/v1/models/{name}/public", put(models::model_publish))
        .route("/v1/loras", post(models::loras_push).get(models::loras_list))
        .route("/v1/loras/{name}/public", put(models::lora_publish))
        .route("/v1/nodes", get(nodes::nodes_list))
        .route("/v1/nodes/register", post(nodes::node_register))
        // A node's own messages are small: a heartbeat lists its models and hardware.
        .route("/v1/nodes/{id}/heartbeat", post(nodes::node_heartbeat).layer(DefaultBodyLimit::max(256 << 10)))
        .route("/v1/nodes/{id}/swarm", post(nodes::node_swarm).layer(DefaultBodyLimit::max(16 << 10)))
        .route("/v1/nodes/{id}/reports", post(nodes::node_report).layer(DefaultBodyLimit::max(16 << 10)))
        .route("/v1/tracker/{node}/{token}/announce", get(nodes::tracker_announce))
        .route("/v1/nodes/{id}/trust", put(nodes::node_trust))
        .route("/v1/nodes/{id}/audits", get(nodes::node_audits))
        .route("/v1/audits", post(nodes::audits_post).layer(DefaultBodyLimit::max(64 << 10)))
        .route("/v1/credits/grants", post(credits::grant))
        .route("/v1/credits/{account}", get(credits::balance))
        .route("/v1/credits/{account}/history", get(credits::history))
        .route("/v1/prices", get(credits::prices_list))
        .route("/v1/prices/{model}", put(credits::price_set))
        .route("/v1/ledger/check", get(credits::ledger_check))
        .route("/v1/leases", post(credits::lease))
        .route("/v1/leases/{id}/close", post(credits::lease_close))
        // A batch of up to 1000 receipts of about 600 bytes each.
        .route("/v1/receipts", post(credits::receipts_post).layer(DefaultBodyLimit::max(2 << 20)))
        .route("/v1/usage", get(credits::usage))
        .route("/v1/generation", get(credits::generation))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(4 << 20))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Per-address rate limit, then request metrics and an access log line.
async fn observe(
    S(state): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    if let Err(wait) = state.auth.per_address.take(&peer.ip().to_string()) {
        return ApiError::too_many(format!("too many requests from {}; retry in {wait} s", peer.ip()), wait)
            .into_response();
    }
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    state.metrics.requests.with_label_values(&[&route, method.as_str(), status.as_str()]).inc();
    state.metrics.latency.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    tracing::debug!(%method, %route, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    response
}

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut http::request::Parts, state: &Arc<State>) -> Result<Self, ApiError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let source = match parts.headers.get(wasmesh_api::CALLER_ADDR_HEADER) {
            None => peer,
            Some(forwarded) => {
                // A router checking its caller's key: the lockout counts the caller's
                // address, which only a router (its own key, router scope) may name.
                let router = parts.headers.get(wasmesh_api::ROUTER_KEY_HEADER).and_then(|v| v.to_str().ok());
                let router = state.auth.authenticate(&state.db, router, peer).await?;
                router.require(wasmesh_api::wire::Scope::Router)?;
                forwarded.to_str().ok().and_then(|v| v.parse().ok()).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_request",
                        format!("{} must be an IP address", wasmesh_api::CALLER_ADDR_HEADER),
                    )
                })?
            }
        };
        state.auth.authenticate(&state.db, header, source).await
    }
}

async fn not_found(uri: http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint {}; see /openapi.json", uri.path()))
}

async fn health(S(state): St) -> Response {
    let db = sqlx::query("SELECT 1").execute(&state.db.pool).await;
    let store = state.artifacts.ping().await;
    let ok = db.is_ok() && store.is_ok();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "database": db.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
        "store": store.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string()),
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, axum::Json(body)).into_response()
}

async fn metrics(S(state): St) -> Response {
    if let Ok(counts) = crate::nodes::status_counts(&state.db, state.config.offline_after).await {
        for (status, n) in counts {
            let label =
                serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            state.metrics.nodes.with_label_values(&[&label]).set(n);
        }
    }
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = prometheus::Encoder::encode(&encoder, &state.metrics.registry.gather(), &mut out) {
        return ApiError::internal("cannot encode metrics", e).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("../openapi.json")).into_response()
}
