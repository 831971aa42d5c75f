//! The HTTP JSON API (documented in `openapi.json`, served at `/openapi.json`).

use crate::artifacts::{AssembleError, PART_SIZE};
use crate::auth::{Caller, create_key, list_keys, random_id, revoke_key};
use crate::catalog;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, Json};
use crate::{State, nodes};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State as S};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_api::wire::{
    self, ArtifactKind, BlobInfo, CreateKey, Deploy, Heartbeat, PushLora, PushModel, RegisterNode, Rollback, Scope,
    StartUpload, UploadSession,
};
use wasmesh_api::{AppManifest, check_name};

type St = S<Arc<State>>;

/// The API's routes.
pub fn router(state: Arc<State>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami))
        .route("/v1/keys", post(keys_create).get(keys_list))
        .route("/v1/keys/{id}", axum::routing::delete(keys_revoke))
        .route("/v1/uploads", post(upload_start))
        .route("/v1/uploads/{id}", get(upload_status))
        .route("/v1/uploads/{id}/parts/{part}", put(upload_part).layer(DefaultBodyLimit::max(PART_SIZE as usize + 1)))
        .route("/v1/uploads/{id}/complete", post(upload_complete))
        .route("/v1/blobs/{hash}", get(blob_get))
        .route("/v1/apps", get(apps_list))
        .route("/v1/apps/{name}", get(app_get))
        .route("/v1/apps/{name}/versions", get(app_versions).post(deploy))
        .route("/v1/apps/{name}/rollback", post(rollback))
        .route("/v1/deployments", get(deployments))
        .route("/v1/models", post(models_push).get(models_list))
        .route("/v1/models/{name}", get(model_get))
        .route("/v1/loras", post(loras_push).get(loras_list))
        .route("/v1/nodes", get(nodes_list))
        .route("/v1/nodes/register", post(node_register))
        .route("/v1/nodes/{id}/heartbeat", post(node_heartbeat))
        .route("/v1/nodes/{id}/swarm", post(node_swarm))
        .route("/v1/nodes/{id}/reports", post(node_report))
        .route("/v1/tracker/{node}/{token}/announce", get(tracker_announce))
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
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
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
    if let Ok(nodes) = nodes::list(&state.db, state.config.offline_after).await {
        for status in ["online", "not_ready", "offline"] {
            let n = nodes
                .iter()
                .filter(|n| serde_json::to_value(n.status).ok().as_ref().and_then(|v| v.as_str()) == Some(status))
                .count();
            state.metrics.nodes.with_label_values(&[status]).set(n as i64);
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

// ---- keys -------------------------------------------------------------------

async fn whoami(caller: Caller) -> Response {
    axum::Json(wire::WhoAmI { id: caller.key_id, scopes: caller.scopes }).into_response()
}

async fn keys_create(S(state): St, caller: Caller, Json(req): Json<CreateKey>) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    let key = create_key(&state.db, &req.name, &req.scopes, req.network.as_deref()).await?;
    tracing::info!(key = %key.info.id, by = %caller.key_id, scopes = ?key.info.scopes, "key created");
    Ok((StatusCode::CREATED, axum::Json(key)).into_response())
}

async fn keys_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    Ok(axum::Json(list_keys(&state.db).await?).into_response())
}

async fn keys_revoke(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    if !revoke_key(&state.db, &id).await? {
        return Err(ApiError::not_found(format!("no key with id {id}")));
    }
    tracing::info!(key = %id, by = %caller.key_id, "key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- uploads ------------------------------------------------------------------

async fn session(state: &State, id: &str, caller: &Caller) -> ApiResult<(UploadSession, String, u64, ArtifactKind)> {
    let row: Option<(String, i64, String, i64, String)> =
        sqlx::query_as("SELECT hash, size, kind, part_size, key_id FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some((hash, size, kind, part_size, owner)) = row else {
        return Err(ApiError::not_found(format!("no upload {id}; start one with POST /v1/uploads")));
    };
    // An upload belongs to the key that started it.
    if owner != caller.key_id && !caller.scopes.contains(&Scope::Admin) {
        return Err(ApiError::not_found(format!("no upload {id}; start one with POST /v1/uploads")));
    }
    let received: Vec<(i64,)> = sqlx::query_as("SELECT part FROM upload_parts WHERE upload_id = $1 ORDER BY part")
        .bind(id)
        .fetch_all(&state.db.pool)
        .await?;
    let kind: ArtifactKind = serde_json::from_value(serde_json::Value::String(kind)).unwrap_or(ArtifactKind::Component);
    let size = size as u64;
    let part_size = part_size as u64;
    Ok((
        UploadSession {
            id: id.to_string(),
            part_size,
            parts: size.div_ceil(part_size).max(1),
            received: received.into_iter().map(|(p,)| p as u64).collect(),
            complete: false,
        },
        hash,
        size,
        kind,
    ))
}

async fn upload_start(S(state): St, caller: Caller, Json(req): Json<StartUpload>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    if !wire::is_blake3_hex(&req.blake3) {
        return Err(ApiError::bad_request("invalid_request", "blake3 must be 64 lowercase hex digits"));
    }
    let max = state.config.max_artifact_bytes;
    if req.size > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{} bytes is over this registry's artifact limit of {max} bytes (--max-artifact-bytes)", req.size),
        ));
    }
    if req.kind == ArtifactKind::Component && req.size > state.config.max_component_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a component of {} bytes is over the limit of {} bytes",
                req.size, state.config.max_component_bytes
            ),
        ));
    }
    if let Some(blob) = catalog::blob(&state.db, &req.blake3).await?
        && blob.kind == req.kind
        && blob.size == req.size
    {
        let parts = req.size.div_ceil(PART_SIZE).max(1);
        return Ok(axum::Json(UploadSession {
            id: String::new(),
            part_size: PART_SIZE,
            parts,
            received: (0..parts).collect(),
            complete: true,
        })
        .into_response());
    }
    // Resume: the same file, announced again, continues where it stopped.
    let kind = catalog::kind_str(req.kind);
    let existing: Option<(String,)> = sqlx::query_as(
        "SELECT id FROM uploads WHERE hash = $1 AND size = $2 AND kind = $3 AND key_id = $4 ORDER BY created_at DESC LIMIT 1",
    )
    .bind(&req.blake3)
    .bind(req.size as i64)
    .bind(kind)
    .bind(&caller.key_id)
    .fetch_optional(&state.db.pool)
    .await?;
    let id = match existing {
        Some((id,)) => id,
        None => {
            let id = random_id();
            sqlx::query(
                "INSERT INTO uploads (id, hash, size, kind, part_size, key_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(&req.blake3)
            .bind(req.size as i64)
            .bind(kind)
            .bind(PART_SIZE as i64)
            .bind(&caller.key_id)
            .bind(now_ms())
            .execute(&state.db.pool)
            .await?;
            id
        }
    };
    let (session, ..) = session(&state, &id, &caller).await?;
    Ok((StatusCode::CREATED, axum::Json(session)).into_response())
}

async fn upload_status(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    Ok(axum::Json(session(&state, &id, &caller).await?.0).into_response())
}

async fn upload_part(
    S(state): St,
    caller: Caller,
    Path((id, part)): Path<(String, u64)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let (session, _, size, _) = session(&state, &id, &caller).await?;
    if part >= session.parts {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("part {part} is out of range: this upload has parts 0 to {}", session.parts - 1),
        ));
    }
    let expected = if part + 1 == session.parts { size - part * session.part_size } else { session.part_size };
    if body.len() as u64 != expected {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("part {part} must be {expected} bytes, got {}", body.len()),
        ));
    }
    state.metrics.uploaded_bytes.inc_by(body.len() as u64);
    state
        .artifacts
        .put_part(&id, part, body)
        .await
        .map_err(|e| ApiError::internal("cannot store an upload part", e))?;
    sqlx::query("INSERT INTO upload_parts (upload_id, part) VALUES ($1, $2) ON CONFLICT (upload_id, part) DO NOTHING")
        .bind(&id)
        .bind(part as i64)
        .execute(&state.db.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_complete(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let _one_at_a_time = state.completing.lock().await;
    let (session, hash, size, kind) = session(&state, &id, &caller).await?;
    if catalog::blob(&state.db, &hash).await?.is_none() {
        match state.artifacts.assemble(&id, &hash, size, kind, session.part_size).await {
            Ok(done) => {
                catalog::insert_blob(&state.db, &hash, size, kind, done.pieces.as_ref(), done.gguf.as_ref()).await?;
            }
            Err(AssembleError::Io(e)) => return Err(ApiError::internal("cannot store the artifact", e)),
            Err(e @ AssembleError::Missing(_)) => {
                return Err(ApiError::bad_request("incomplete_upload", e.to_string()));
            }
            Err(e) => {
                // The bytes are wrong: drop them so a retry starts clean.
                forget_upload(&state, &id).await?;
                return Err(ApiError::bad_request(
                    if matches!(e, AssembleError::NotGguf(_)) { "not_gguf" } else { "hash_mismatch" },
                    e.to_string(),
                ));
            }
        }
    }
    forget_upload(&state, &id).await?;
    let blob = catalog::blob(&state.db, &hash).await?.ok_or_else(|| ApiError::internal("blob vanished", &hash))?;
    tracing::info!(%hash, size, kind = catalog::kind_str(kind), by = %caller.key_id, "artifact stored");
    Ok(axum::Json(BlobInfo { blake3: hash, size: blob.size, kind: blob.kind, pieces: blob.pieces }).into_response())
}

/// Drops upload sessions untouched for `age` with their staged parts (abandoned
/// uploads must not fill the disk); returns how many.
pub async fn expire_uploads(state: &State, age: std::time::Duration) -> ApiResult<usize> {
    let cutoff = now_ms() - age.as_millis() as i64;
    let stale: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM uploads WHERE created_at < $1").bind(cutoff).fetch_all(&state.db.pool).await?;
    for (id,) in &stale {
        forget_upload(state, id).await?;
    }
    Ok(stale.len())
}

async fn forget_upload(state: &State, id: &str) -> ApiResult<()> {
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1").bind(id).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    state.artifacts.discard(id).await;
    Ok(())
}

/// Downloads an artifact; `Range: bytes=A-` or `bytes=A-B` answers that part (206).
async fn blob_get(S(state): St, caller: Caller, Path(hash): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy])?;
    let Some(blob) = catalog::blob(&state.db, &hash).await? else {
        return Err(ApiError::not_found(format!("no artifact {hash}")));
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(range) => match parse_range(range, blob.size) {
            Some(r) => Some(r),
            None => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{}", blob.size))],
                    "only `Range: bytes=A-` or `bytes=A-B` (one range, within the size) is supported",
                )
                    .into_response());
            }
        },
    };
    let (status, stream, length) = match range {
        Some((start, end)) => {
            (StatusCode::PARTIAL_CONTENT, state.artifacts.stream_range(&hash, start, Some(end)).await?, end - start)
        }
        None => (StatusCode::OK, state.artifacts.stream(&hash).await?, blob.size),
    };
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, length.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if let Some((start, end)) = range
        && let Ok(v) = format!("bytes {start}-{}/{}", end - 1, blob.size).parse()
    {
        response.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// `bytes=A-` or `bytes=A-B` (inclusive B, clamped to the size) as `start..end`.
fn parse_range(range: &str, size: u64) -> Option<(u64, u64)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end = match end {
        "" => size,
        end => end.parse::<u64>().ok()?.checked_add(1)?.min(size),
    };
    (start < end).then_some((start, end))
}

// ---- apps ---------------------------------------------------------------------

async fn apps_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider])?;
    Ok(axum::Json(catalog::apps(&state.db).await?).into_response())
}

async fn app_get(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider])?;
    let app = catalog::app_summary(&state.db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no app named '{name}'; `wasmesh apps ls` lists them")))?;
    Ok(axum::Json(app).into_response())
}

async fn app_versions(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider])?;
    let versions = catalog::versions(&state.db, &name).await?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no app named '{name}'; `wasmesh apps ls` lists them")));
    }
    Ok(axum::Json(versions).into_response())
}

async fn deploy(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Deploy>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let manifest =
        AppManifest::parse(&req.manifest).map_err(|e| ApiError::bad_request("invalid_manifest", e.to_string()))?;
    if let Some(network) = &manifest.app.network
        && !caller.scopes.contains(&Scope::Admin)
        && caller.network.as_deref() != Some(network.as_str())
    {
        return Err(ApiError::forbidden(
            "wrong_network",
            format!(
                "app '{name}' runs in private network '{network}'; deploy it with a key of that network (`wasmesh keys create --scope deploy --network {network}`)"
            ),
        ));
    }
    if manifest.app.name != name {
        return Err(ApiError::bad_request(
            "invalid_manifest",
            format!("the manifest is for app '{}', not '{name}'", manifest.app.name),
        ));
    }
    for component in manifest.component.keys() {
        if !req.components.contains_key(component) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("component '{component}' of the manifest has no uploaded blob in `components`"),
            ));
        }
    }
    for (component, hash) in &req.components {
        if !manifest.component.contains_key(component) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`components` names '{component}', which the manifest does not define"),
            ));
        }
        let blob = catalog::blob(&state.db, hash).await?;
        match blob {
            None => {
                return Err(ApiError::bad_request(
                    "missing_artifact",
                    format!("component '{component}': no artifact {hash}; upload it first (`wasmesh deploy` does)"),
                ));
            }
            Some(b) if b.kind != ArtifactKind::Component => {
                return Err(ApiError::bad_request(
                    "invalid_component",
                    format!("component '{component}': artifact {hash} was uploaded as a {:?}, not a component", b.kind),
                ));
            }
            Some(_) => {}
        }
        if !catalog::is_validated(&state.db, hash).await? {
            let bytes = state.artifacts.get(hash).await?;
            let validator = state.validator.clone();
            let name = component.clone();
            let _slot = state.validate_slots.acquire().await.map_err(|e| ApiError::internal("validator closed", e))?;
            tokio::task::spawn_blocking(move || validator.validate(&name, &bytes))
                .await
                .map_err(|e| ApiError::internal("validation task failed", e))?
                .map_err(|e| ApiError::bad_request("invalid_component", e.to_string()))?;
            catalog::mark_validated(&state.db, hash).await?;
        }
    }
    let version = catalog::create_version(&state.db, &name, &req.manifest, &req.components, &caller.key_id).await?;
    state.metrics.deploys.inc();
    state.changed.notify_waiters();
    tracing::info!(app = %name, version = version.version, by = %caller.key_id, "deployed");
    Ok((StatusCode::CREATED, axum::Json(version)).into_response())
}

async fn rollback(
    S(state): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(req): Json<Rollback>,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let app = catalog::rollback(&state.db, &name, req.version).await?;
    state.changed.notify_waiters();
    tracing::info!(app = %name, version = req.version, by = %caller.key_id, "rolled back");
    Ok(axum::Json(app).into_response())
}

#[derive(serde::Deserialize)]
struct DeploymentsQuery {
    since: Option<u64>,
    wait_s: Option<u64>,
}

async fn deployments(S(state): St, caller: Caller, Query(q): Query<DeploymentsQuery>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy])?;
    // Long poll: with `since`, answer when the revision moves past it (or after
    // `wait_s`, at most 60 s). Deploys through this process wake waiters at
    // once; a tick catches those through another replica.
    if let Some(since) = q.since {
        let deadline = Instant::now() + Duration::from_secs(q.wait_s.unwrap_or(0).min(60));
        loop {
            let notified = state.changed.notified();
            if catalog::revision(&state.db).await? != since || Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
    let mut deployments = catalog::deployments(&state.db).await?;
    // A provider's nodes see only the apps of their own network (public nodes, the
    // public apps): private code never reaches another network's machines.
    let sees_all = caller.scopes.contains(&Scope::Admin) || caller.scopes.contains(&Scope::Deploy);
    if !sees_all {
        deployments.apps.retain(|v| {
            let network = AppManifest::parse(&v.manifest).ok().and_then(|m| m.app.network);
            network == caller.network
        });
    }
    Ok(axum::Json(deployments).into_response())
}

// ---- models and LoRAs ---------------------------------------------------------------

async fn models_push(S(state): St, caller: Caller, Json(req): Json<PushModel>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    check_name("model name", &req.name).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let blob = catalog::blob(&state.db, &req.blake3).await?.ok_or_else(|| {
        ApiError::bad_request("missing_artifact", format!("no artifact {}; upload the file first", req.blake3))
    })?;
    let Some(gguf) = &blob.gguf else {
        return Err(ApiError::bad_request(
            "not_gguf",
            "that artifact was not uploaded as a model; upload it with kind \"model\"",
        ));
    };
    if gguf.adapter {
        return Err(ApiError::bad_request(
            "not_a_model",
            "that file is a LoRA adapter, not a model; push it with `wasmesh loras push FILE --base MODEL`",
        ));
    }
    let model = catalog::insert_model(&state.db, &req.name, &req.blake3, &blob).await?;
    tracing::info!(model = %req.name, hash = %req.blake3, "model registered");
    Ok((StatusCode::CREATED, axum::Json(model)).into_response())
}

async fn models_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    Ok(axum::Json(catalog::models(&state.db).await?).into_response())
}

async fn model_get(S(state): St, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    let model = catalog::model(&state.db, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no model named '{name}'; `wasmesh models ls` lists them")))?;
    Ok(axum::Json(model).into_response())
}

async fn loras_push(S(state): St, caller: Caller, Json(req): Json<PushLora>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    check_name("adapter name", &req.name).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let (arch, tensors) = catalog::model_tensors(&state.db, &req.base).await?.ok_or_else(|| {
        ApiError::not_found(format!("no base model named '{}'; push it first with `wasmesh models push`", req.base))
    })?;
    let blob = catalog::blob(&state.db, &req.blake3).await?.ok_or_else(|| {
        ApiError::bad_request("missing_artifact", format!("no artifact {}; upload the file first", req.blake3))
    })?;
    if blob.gguf.is_none() {
        return Err(ApiError::bad_request(
            "not_gguf",
            "that artifact was not uploaded as a LoRA; upload it with kind \"lora\"",
        ));
    }
    // The adapter's header (tensor shapes) is read from the stored file: adapters
    // carry no vocabulary, so the header is small.
    let mut window = 4u64 << 20;
    let header = loop {
        let bytes = state.artifacts.get_range(&req.blake3, 0..window.min(blob.size)).await?;
        match wasmesh_gguf::read_header(&bytes[..]) {
            Ok(h) => break h,
            Err(_) if window < blob.size && window < (256 << 20) => window *= 4,
            Err(e) => return Err(ApiError::bad_request("not_gguf", format!("not a GGUF file: {e}"))),
        }
    };
    let facts = wasmesh_gguf::check_lora_against(&arch, &tensors, &header).map_err(|e| {
        ApiError::bad_request("lora_mismatch", format!("adapter does not fit base '{}': {e}", req.base))
    })?;
    let lora = catalog::insert_lora(&state.db, &req.name, &req.base, &req.blake3, blob.size, facts.rank).await?;
    tracing::info!(lora = %req.name, base = %req.base, rank = facts.rank, "LoRA registered");
    Ok((StatusCode::CREATED, axum::Json(lora)).into_response())
}

async fn loras_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Deploy, Scope::Provider, Scope::Invoke])?;
    Ok(axum::Json(catalog::loras(&state.db).await?).into_response())
}

// ---- nodes ----------------------------------------------------------------------

async fn node_register(S(state): St, caller: Caller, Json(req): Json<RegisterNode>) -> ApiResult<Response> {
    match req.role {
        wire::NodeRole::Host => caller.require(Scope::Provider)?,
        wire::NodeRole::Router => caller.require(Scope::Admin)?,
    }
    let cert = nodes::register(&state.db, &state.ca, &caller.key_id, caller.network.as_deref(), &req).await?;
    Ok(axum::Json(cert).into_response())
}

async fn node_heartbeat(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let beat: Heartbeat = signed_body(&state, &caller, &id, "heartbeat", &headers, &body).await?;
    nodes::heartbeat(&state.db, &id, &beat).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A node's signed JSON body, checked against its registered key.
async fn signed_body<T: serde::de::DeserializeOwned>(
    state: &State,
    caller: &Caller,
    id: &str,
    what: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<T> {
    caller.require(Scope::Provider)?;
    nodes::verify_request(&state.db, id, headers, "POST", &format!("/v1/nodes/{id}/{what}"), body).await?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid {what} JSON: {e}")))
}

/// A node joins the swarm of a model or LoRA file: its tracker URL and, when it is
/// fetching, its share of the origin.
async fn node_swarm(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let join: wire::SwarmJoin = signed_body(&state, &caller, &id, "swarm", &headers, &body).await?;
    let blob = catalog::blob(&state.db, &join.blob)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no artifact {}", join.blob)))?;
    let pieces = blob.pieces.ok_or_else(|| {
        ApiError::bad_request("invalid_request", format!("{} is a component, not weights: it has no swarm", join.blob))
    })?;
    let Some(info_hash) = pieces.info_hash.clone() else {
        return Err(ApiError::conflict(format!(
            "{} was stored before the registry recorded torrents: it has no swarm, hosts fetch it from the object store alone",
            join.blob
        )));
    };
    Ok(axum::Json(state.swarms.join(&id, &join, &info_hash, pieces.hashes.len())).into_response())
}

/// A node reports a peer whose pieces failed verification.
async fn node_report(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let report: wire::PeerReport = signed_body(&state, &caller, &id, "reports", &headers, &body).await?;
    Ok(axum::Json(crate::swarm::report(&state.db, &state.swarms, &id, &report).await?).into_response())
}

/// The private tracker (BitTorrent HTTP announce; the token in the path stands for
/// the API key a BitTorrent client cannot send). Answers are bencoded, failures too.
async fn tracker_announce(
    S(state): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((node, token)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    let bencoded =
        |status: StatusCode, body: Vec<u8>| (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response();
    if token != state.swarms.token(&node) {
        return bencoded(
            StatusCode::FORBIDDEN,
            crate::swarm::announce_failure("unknown tracker token: join the swarm through the registry API"),
        );
    }
    let announce = match crate::swarm::Announce::parse(uri.query().unwrap_or("")) {
        Ok(a) => a,
        Err(e) => return bencoded(StatusCode::BAD_REQUEST, crate::swarm::announce_failure(&e)),
    };
    let known = catalog::has_info_hash(&state.db, &announce.info_hash).await;
    let excluded = crate::swarm::excluded_for(&state.db, &node).await;
    let (Ok(known), Ok(excluded)) = (known, excluded) else {
        return bencoded(
            StatusCode::SERVICE_UNAVAILABLE,
            crate::swarm::announce_failure("the registry's database is unavailable"),
        );
    };
    if !known {
        return bencoded(
            StatusCode::NOT_FOUND,
            crate::swarm::announce_failure("this tracker only serves files pushed to its registry"),
        );
    }
    let addr = SocketAddr::new(peer.ip(), announce.port);
    let (peers, complete, incomplete) =
        state.swarms.announce(&node, &announce.info_hash, addr, announce.left, announce.stopped, &excluded);
    bencoded(StatusCode::OK, crate::swarm::announce_response(&peers, complete, incomplete))
}

async fn nodes_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy])?;
    Ok(axum::Json(nodes::list(&state.db, state.config.offline_after).await?).into_response())
}
