//! Uploads (resumable, in parts) and downloads of artifacts: components, model and
//! LoRA files, addressed by their blake3.

use super::St;
use crate::State;
use crate::artifacts::{self, AssembleError, PART_SIZE};
use crate::auth::{Caller, random_id};
use crate::catalog;
use crate::db::now_ms;
use crate::error::{ApiError, ApiResult, Json};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State as S};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::Arc;
use wasmesh_api::wire::{ArtifactKind, BlobInfo, Scope, StartUpload, UploadSession};

async fn session(state: &State, id: &str, caller: &Caller) -> ApiResult<(UploadSession, String, u64, ArtifactKind)> {
    let row: Option<(String, i64, String, i64, String)> =
        sqlx::query_as("SELECT hash, size, kind, part_size, key_id FROM uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some((hash, size, kind, part_size, owner)) = row else {
        return Err(ApiError::not_found(format!("no upload {id}; start one with POST /v1/uploads")));
    };
    if !caller.owns_upload(&owner) {
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

pub(super) async fn upload_start(S(state): St, caller: Caller, Json(req): Json<StartUpload>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    artifacts::check_upload(&req, state.config.max_artifact_bytes, state.config.max_component_bytes)?;
    // Already stored and the account's own: nothing to send. Another account's copy
    // does not count: the caller proves it holds the bytes by uploading them.
    if let Some(blob) = catalog::blob(&state.db, &req.blake3).await?
        && blob.kind == req.kind
        && blob.size == req.size
        && catalog::blob_owned_by(&state.db, &req.blake3, &caller.account).await?
        // A stored copy found damaged is uploaded again, which repairs it.
        && state.artifacts.intact(&req.blake3, blob.size).await.unwrap_or(false)
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
    // The account's quota: what it stores and is uploading, plus this file.
    if !caller.is_admin() {
        let used = catalog::account_bytes(&state.db, &caller.account, &req.blake3).await?;
        let quota = state.config.account_quota_bytes;
        if used.saturating_add(req.size) > quota {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota_exceeded",
                format!(
                    "account '{}' stores or is uploading {used} bytes; {} more would pass its quota of {quota} bytes. Ask the registry's operator to raise it (--account-quota-mb)",
                    caller.account, req.size
                ),
            ));
        }
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

pub(super) async fn upload_status(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    Ok(axum::Json(session(&state, &id, &caller).await?.0).into_response())
}

pub(super) async fn upload_part(
    S(state): St,
    caller: Caller,
    Path((id, part)): Path<(String, u64)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let (session, _, size, _) = session(&state, &id, &caller).await?;
    artifacts::check_part(&session, size, part, body.len())?;
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
    // The janitor drops sessions by their last touch: a slow upload that keeps sending
    // parts lives on.
    sqlx::query("UPDATE uploads SET touched_at = $1 WHERE id = $2")
        .bind(now_ms())
        .bind(&id)
        .execute(&state.db.pool)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn upload_complete(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require(Scope::Deploy)?;
    let (session, hash, size, kind) = session(&state, &id, &caller).await?;
    let lock = {
        let mut locks = state.completing.lock().expect("completion locks");
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(hash.clone()).or_default().clone()
    };
    let _one_per_file = lock.lock().await;
    let stored = catalog::blob(&state.db, &hash).await?.is_some();
    let intact = stored && state.artifacts.intact(&hash, size).await.unwrap_or(false);
    if !intact || !catalog::blob_owned_by(&state.db, &hash, &caller.account).await? {
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
    catalog::add_blob_owner(&state.db, &hash, &caller.account).await?;
    forget_upload(&state, &id).await?;
    let blob = catalog::blob(&state.db, &hash).await?.ok_or_else(|| ApiError::internal("blob vanished", &hash))?;
    tracing::info!(%hash, size, kind = catalog::kind_str(kind), by = %caller.key_id, "artifact stored");
    Ok(axum::Json(BlobInfo { blake3: hash, size: blob.size, kind: blob.kind, pieces: blob.pieces }).into_response())
}

/// Drops upload sessions untouched for `age` (since their start or their last part)
/// with their staged parts (abandoned uploads must not fill the disk); returns how many.
pub async fn expire_uploads(state: &State, age: std::time::Duration) -> ApiResult<usize> {
    let cutoff = now_ms() - age.as_millis() as i64;
    let stale: Vec<(String,)> = sqlx::query_as("SELECT id FROM uploads WHERE created_at < $1 AND touched_at < $2")
        .bind(cutoff)
        .bind(cutoff)
        .fetch_all(&state.db.pool)
        .await?;
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
pub(super) async fn blob_get(
    S(state): St,
    caller: Caller,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy])?;
    let blob = match catalog::blob(&state.db, &hash).await? {
        Some(blob) if crate::access::may_read_blob(&state.db, &caller, &hash).await? => blob,
        // Not the caller's to read, or absent: the same answer, so hashes reveal nothing.
        _ => return Err(ApiError::not_found(format!("no artifact {hash} that you may read"))),
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(range) => match wasmesh_api::wire::parse_byte_range(range, blob.size) {
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
    if !state.artifacts.intact(&hash, blob.size).await.map_err(|e| ApiError::internal("cannot read the store", e))? {
        return Err(damaged(&hash));
    }
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

/// The answer for a stored blob whose copy is damaged (truncated, or failing its hash).
pub(crate) fn damaged(hash: &str) -> ApiError {
    tracing::error!(%hash, "stored artifact is damaged");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "damaged_artifact",
        format!(
            "the registry's copy of artifact {hash} is damaged; upload the file again to repair it (the operator can list damaged artifacts with `wasmesh registry scrub`)"
        ),
    )
}
