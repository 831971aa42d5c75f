//! Nodes: registration, signed heartbeats, joining the swarm of a weights file and
//! reporting bad peers, the private BitTorrent tracker, and the node list.

use super::St;
use crate::State;
use crate::auth::Caller;
use crate::catalog;
use crate::error::{ApiError, ApiResult, Json};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State as S};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use wasmesh_api::wire::{self, Heartbeat, RegisterNode, Scope};

pub(super) async fn node_register(S(state): St, caller: Caller, Json(req): Json<RegisterNode>) -> ApiResult<Response> {
    caller.require(crate::nodes::register_scope(req.role))?;
    let cert = crate::nodes::register(
        &state.db,
        &state.ca,
        &caller.key_id,
        caller.network.as_deref(),
        &req,
        state.config.cert_ttl,
    )
    .await?;
    Ok(axum::Json(cert).into_response())
}

pub(super) async fn node_heartbeat(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let beat: Heartbeat = signed_body(&state, &caller, &id, "heartbeat", &headers, &body).await?;
    crate::nodes::heartbeat(&state.db, &id, &beat).await?;
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
    crate::nodes::verify_request(
        &state.db,
        &caller.key_id,
        id,
        headers,
        "POST",
        &format!("/v1/nodes/{id}/{what}"),
        body,
    )
    .await?;
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid {what} JSON: {e}")))
}

/// A node joins the swarm of a model or LoRA file: its tracker URL and, when it is
/// fetching, its share of the origin.
pub(super) async fn node_swarm(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let join: wire::SwarmJoin = signed_body(&state, &caller, &id, "swarm", &headers, &body).await?;
    let blob = match catalog::blob(&state.db, &join.blob).await? {
        Some(blob) if crate::access::may_read_blob(&state.db, &caller, &join.blob).await? => blob,
        _ => return Err(ApiError::not_found(format!("no artifact {} that this node may fetch", join.blob))),
    };
    let (info_hash, pieces) = crate::swarm::swarm_of(&join.blob, &blob)?;
    let registered_at = crate::nodes::live_registration(&state.db, &id).await?.ok_or_else(|| {
        ApiError::forbidden(
            "revoked",
            format!("node {id}'s key was revoked or its certificate expired; register the node again with a live key"),
        )
    })?;
    Ok(axum::Json(state.swarms.join(&id, registered_at, &join, &info_hash, pieces)).into_response())
}

/// A node reports a peer whose pieces failed verification.
pub(super) async fn node_report(
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
pub(super) async fn tracker_announce(
    S(state): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((node, token)): Path<(String, String)>,
    uri: axum::http::Uri,
) -> Response {
    let bencoded =
        |status: StatusCode, body: Vec<u8>| (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response();
    let announce = match wasmesh_api::torrent::Announce::parse(uri.query().unwrap_or("")) {
        Ok(a) => a,
        Err(e) => return bencoded(StatusCode::BAD_REQUEST, crate::swarm::announce_failure(&e)),
    };
    // The token is bound to the node's current registration and to the one swarm it
    // joined through the API, and dies with the node's key.
    let registration = match crate::nodes::live_registration(&state.db, &node).await {
        Ok(r) => r,
        Err(_) => {
            return bencoded(
                StatusCode::SERVICE_UNAVAILABLE,
                crate::swarm::announce_failure("the registry's database is unavailable"),
            );
        }
    };
    if !registration.is_some_and(|at| state.swarms.token_matches(&node, at, &announce.info_hash, &token)) {
        return bencoded(
            StatusCode::FORBIDDEN,
            crate::swarm::announce_failure(
                "unknown tracker token for this swarm (or the node's key was revoked, or its certificate expired): join the swarm through the registry API",
            ),
        );
    }
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

/// The caller's account's nodes (every node for admin and router keys).
pub(super) async fn nodes_list(S(state): St, caller: Caller) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy, Scope::Router])?;
    let account = (!caller.reads_everything()).then_some(caller.account.as_str());
    Ok(axum::Json(crate::nodes::list(&state.db, state.config.offline_after, account).await?).into_response())
}

/// Makes a host an auditor (admin): it then serves audits only.
pub(super) async fn node_trust(
    S(state): St,
    caller: Caller,
    Path(id): Path<String>,
    Json(req): Json<wire::TrustNode>,
) -> ApiResult<Response> {
    caller.require(Scope::Admin)?;
    crate::audits::set_trusted(&state.db, &id, req.trusted).await?;
    tracing::info!(node = %id, trusted = req.trusted, by = %caller.key_id, "node trust changed");
    Ok(axum::Json(req).into_response())
}

/// A node's audits and standing: its own account's keys, admins and routers.
pub(super) async fn node_audits(S(state): St, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require_any(&[Scope::Provider, Scope::Deploy])?;
    let account = (!caller.reads_everything()).then_some(caller.account.as_str());
    Ok(axum::Json(crate::audits::node_audits(&state.db, &id, account).await?).into_response())
}

/// A router reports an audit: the node's signed receipt and the auditors' replays.
pub(super) async fn audits_post(
    S(state): St,
    caller: Caller,
    Json(report): Json<wire::AuditReport>,
) -> ApiResult<Response> {
    caller.require(Scope::Router)?;
    Ok(axum::Json(crate::audits::record(&state.db, &state.ledger, &state.receipt_master, &report).await?)
        .into_response())
}
