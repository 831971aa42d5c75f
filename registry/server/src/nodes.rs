//! Nodes: identity, certificates, heartbeats.
//!
//! A node's id is derived from its Ed25519 public key
//! ([`wasmesh_api::wire::node_id_for`]), so an id cannot be claimed without the
//! key: registration is signed, and so is every later request of the node
//! (headers in [`wasmesh_api::wire::node_auth`]). The registry keeps a CA (in the
//! database, so replicas share it) and issues each node a certificate for its own
//! key, which the QUIC transport between hosts and routers checks.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::time::Duration;
use wasmesh_api::wire::{
    self, Heartbeat, NodeCertificate, NodeInfo, NodeRole, NodeStatus, RegisterNode, Scope, node_auth,
};

/// The registry's certificate authority.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
}

impl Ca {
    /// Loads the CA from the database, creating it on first start. Replicas that
    /// race on first start agree on whichever was written first.
    pub async fn load_or_create(db: &Db) -> anyhow::Result<Self> {
        if let Some(ca) = Self::load(db).await? {
            return Ok(ca);
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "wasmesh registry CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let cert = params.self_signed(&key)?;
        // Certificate and key in one row, written by one statement: replicas racing
        // on first start keep whichever pair landed first, never a mixed pair.
        let pair = serde_json::json!({ "cert": cert.pem(), "key": key.serialize_pem() }).to_string();
        sqlx::query("INSERT INTO meta (name, value) VALUES ('ca', $1) ON CONFLICT (name) DO NOTHING")
            .bind(pair)
            .execute(&db.pool)
            .await?;
        Self::load(db).await?.ok_or_else(|| anyhow::anyhow!("the CA vanished after it was written"))
    }

    /// A secret for `context`, derived from the CA key: every replica of the
    /// registry derives the same one, and it never leaves the registry.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.key.serialize_der())
    }

    async fn load(db: &Db) -> anyhow::Result<Option<Self>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT value FROM meta WHERE name = 'ca'").fetch_optional(&db.pool).await?;
        let Some((pair,)) = row else { return Ok(None) };
        let pair: serde_json::Value = serde_json::from_str(&pair)?;
        let (Some(cert_pem), Some(key_pem)) = (pair["cert"].as_str(), pair["key"].as_str()) else {
            anyhow::bail!("the CA row in the database is damaged");
        };
        Ok(Some(Self { cert_pem: cert_pem.to_string(), key: KeyPair::from_pem(key_pem)? }))
    }

    /// The secret hosts' receipt keys derive from ([`wire::receipt_key`]).
    pub fn receipt_master(&self) -> [u8; 32] {
        self.derive_secret("wasmesh 2026 receipt keys")
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `node_id`'s Ed25519 `public_key`, valid for `ttl` (hours: a
    /// node renews it by registering again, which a revoked key cannot); a router's
    /// also names `router.wasmesh`, which hosts check when they dial one; a node of a
    /// private network also names `NETWORK.net.wasmesh`, which routers read.
    pub fn issue(
        &self,
        node_id: &str,
        public_key: &[u8; 32],
        role: NodeRole,
        network: Option<&str>,
        ttl: Duration,
    ) -> anyhow::Result<String> {
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?;
        let mut names = vec![format!("{node_id}.node.wasmesh")];
        if role == NodeRole::Router {
            names.push("router.wasmesh".to_string());
        }
        if let Some(network) = network {
            names.push(wire::network_name(network));
        }
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, node_id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth, rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time_now();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + ttl;
        let cert = params.signed_by(&NodeKey(*public_key), &issuer)?;
        Ok(cert.pem())
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// A node's public key, as rcgen needs it to sign a certificate for it.
struct NodeKey([u8; 32]);

impl rcgen::PublicKeyData for NodeKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn parse_public_key(hex: &str) -> ApiResult<(VerifyingKey, [u8; 32])> {
    let bytes: [u8; 32] = wire::from_hex(hex)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_request", "public_key must be 64 hex digits (an Ed25519 key)"))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_request", "public_key is not a valid Ed25519 point"))?;
    Ok((key, bytes))
}

fn parse_signature(hex: &str) -> Option<Signature> {
    let bytes: [u8; 64] = wire::from_hex(hex)?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

fn check_clock(timestamp_ms: u64) -> ApiResult<()> {
    let skew = (now_ms() as u64).abs_diff(timestamp_ms);
    if skew > node_auth::MAX_SKEW_MS {
        return Err(ApiError::unauthorized(format!(
            "signed timestamp is {} s away from the registry's clock; sync the node's clock (NTP)",
            skew / 1000
        )));
    }
    Ok(())
}

/// The most node ids one API key may register (each is a row, a heartbeat and a place
/// in every router's table: a stolen key must not mint them without bound).
pub const MAX_NODES_PER_KEY: i64 = 256;

/// The scope a key needs to register a node of `role`: `provider` for a host (the
/// key's owner provides machines), `router` for a router.
pub fn register_scope(role: NodeRole) -> Scope {
    match role {
        NodeRole::Host => Scope::Provider,
        NodeRole::Router => Scope::Router,
    }
}

/// Registers (or re-registers, which renews its certificate) a node; returns its
/// certificate, valid for `ttl`. The caller checked the key's scope for `req.role`
/// ([`register_scope`]).
pub async fn register(
    db: &Db,
    ca: &Ca,
    provider_key: &str,
    network: Option<&str>,
    req: &RegisterNode,
    ttl: Duration,
) -> ApiResult<NodeCertificate> {
    let (key, bytes) = parse_public_key(&req.public_key)?;
    if wire::node_id_for(&bytes) != req.node_id {
        return Err(ApiError::forbidden(
            "identity_mismatch",
            format!("node id {} does not belong to this public key; a node's id is derived from its key", req.node_id),
        ));
    }
    check_clock(req.timestamp_ms)?;
    let message = wire::registration_message(&req.node_id, &req.public_key, req.timestamp_ms);
    let valid = parse_signature(&req.signature).is_some_and(|sig| key.verify(&message, &sig).is_ok());
    if !valid {
        return Err(ApiError::unauthorized("the registration's signature does not verify with its public key"));
    }
    if req.name.len() > 200 {
        return Err(ApiError::bad_request("invalid_request", "a node's name must be at most 200 characters"));
    }
    let (others,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM nodes WHERE key_id = $1 AND id <> $2")
        .bind(provider_key)
        .bind(&req.node_id)
        .fetch_one(&db.pool)
        .await?;
    if others >= MAX_NODES_PER_KEY {
        return Err(ApiError::forbidden(
            "too_many_nodes",
            format!(
                "key {provider_key} has registered {others} nodes, the most one key may; give more machines keys of their own (`wasmesh keys create --scope provider`)"
            ),
        ));
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO nodes (id, public_key, name, key_id, registered_at, last_seen, heartbeat, role) VALUES ($1, $2, $3, $4, $5, 0, NULL, $6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, key_id = excluded.key_id, role = excluded.role",
    )
    .bind(&req.node_id)
    .bind(&req.public_key)
    .bind(&req.name)
    .bind(provider_key)
    .bind(now)
    .bind(req.role.as_str())
    .execute(&db.pool)
    .await?;
    let certificate_pem = ca
        .issue(&req.node_id, &bytes, req.role, network, ttl)
        .map_err(|e| ApiError::internal("cannot issue a certificate", e))?;
    let expires_at_ms = now as u64 + ttl.as_millis() as u64;
    sqlx::query("UPDATE nodes SET cert_expires_at = $1 WHERE id = $2")
        .bind(expires_at_ms as i64)
        .bind(&req.node_id)
        .execute(&db.pool)
        .await?;
    tracing::info!(node = %req.node_id, name = %req.name, role = req.role.as_str(), "node registered");
    Ok(NodeCertificate {
        node_id: req.node_id.clone(),
        certificate_pem,
        ca_pem: ca.cert_pem().to_string(),
        expires_at_ms,
        receipt_key: match req.role {
            NodeRole::Host => wire::to_hex(&wire::receipt_key(&ca.receipt_master(), &req.node_id)),
            _ => String::new(),
        },
    })
}

/// Checks a node-signed request: the node exists, the signature verifies with its
/// registered key, and the request comes with the API key `api_key` that registered
/// it. A node id used with any other key pair, or any other API key, is refused:
/// revoking the API key silences the node.
pub async fn verify_request(
    db: &Db,
    api_key: &str,
    node_id: &str,
    headers: &http::HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> ApiResult<()> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header(node_auth::NODE) != Some(node_id) {
        return Err(ApiError::unauthorized(format!("send the node's id in the {} header", node_auth::NODE)));
    }
    let timestamp: u64 = header(node_auth::TIMESTAMP)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::unauthorized(format!("missing {} header", node_auth::TIMESTAMP)))?;
    check_clock(timestamp)?;
    let row: Option<(String, String)> = sqlx::query_as("SELECT public_key, key_id FROM nodes WHERE id = $1")
        .bind(node_id)
        .fetch_optional(&db.pool)
        .await?;
    let Some((public_key, registered_with)) = row else {
        return Err(ApiError::not_found(format!("node {node_id} is not registered; register it first")));
    };
    let (key, _) = parse_public_key(&public_key)?;
    let message = wire::request_message(method, path, timestamp, body);
    let valid =
        header(node_auth::SIGNATURE).and_then(parse_signature).is_some_and(|sig| key.verify(&message, &sig).is_ok());
    if !valid {
        tracing::warn!(node = %node_id, "request signed with a key that is not the node's");
        return Err(ApiError::forbidden(
            "identity_mismatch",
            format!("the signature does not match node {node_id}'s registered key"),
        ));
    }
    if registered_with != api_key {
        tracing::warn!(node = %node_id, key = %api_key, "node request sent with a key that did not register it");
        return Err(ApiError::forbidden(
            "wrong_key",
            format!(
                "node {node_id} was registered with another API key; send its requests with that key, or register it again with this one"
            ),
        ));
    }
    Ok(())
}

/// When node `node_id` registered (ms), if it is registered, the key that registered it
/// is not revoked, and its certificate has not expired (live nodes renew it at half its
/// life): what its tracker tokens are bound to, so they expire with the certificate.
pub async fn live_registration(db: &Db, node_id: &str) -> ApiResult<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT n.registered_at FROM nodes n JOIN keys k ON k.id = n.key_id
         WHERE n.id = $1 AND k.revoked = 0 AND n.cert_expires_at > $2",
    )
    .bind(node_id)
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|(at,)| at))
}

/// Stores a heartbeat.
pub async fn heartbeat(db: &Db, node_id: &str, beat: &Heartbeat) -> ApiResult<()> {
    let json = serde_json::to_string(beat).map_err(|e| ApiError::internal("cannot encode a heartbeat", e))?;
    sqlx::query("UPDATE nodes SET last_seen = $1, heartbeat = $2, ready = $3 WHERE id = $4")
        .bind(now_ms())
        .bind(json)
        .bind(i64::from(beat.ready))
        .bind(node_id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// How many nodes are online, not ready and offline (the rules of [`list`]), counted
/// in SQL: no stored heartbeat is read.
pub async fn status_counts(db: &Db, offline_after: Duration) -> ApiResult<[(NodeStatus, i64); 3]> {
    let fresh_since = now_ms() - offline_after.as_millis() as i64;
    let (online, not_ready, offline): (i64, i64, i64) = sqlx::query_as(
        "SELECT
            CAST(COALESCE(SUM(CASE WHEN live = 1 AND n.ready = 1 THEN 1 ELSE 0 END), 0) AS BIGINT),
            CAST(COALESCE(SUM(CASE WHEN live = 1 AND n.ready = 0 THEN 1 ELSE 0 END), 0) AS BIGINT),
            CAST(COALESCE(SUM(CASE WHEN live = 0 THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM (SELECT n.ready AS ready, CASE WHEN COALESCE(k.revoked, 1) = 0 AND n.last_seen > 0 AND n.last_seen >= $1 THEN 1 ELSE 0 END AS live
               FROM nodes n LEFT JOIN keys k ON k.id = n.key_id) n",
    )
    .bind(fresh_since)
    .fetch_one(&db.pool)
    .await?;
    Ok([(NodeStatus::Online, online), (NodeStatus::NotReady, not_ready), (NodeStatus::Offline, offline)])
}

type NodeRow = (String, String, i64, i64, Option<String>, String, i64, String);

/// The nodes of `account` (every node for `None`), with their status: offline when
/// the last heartbeat is older than `offline_after`, or at once when the key that
/// registered the node is revoked.
pub async fn list(db: &Db, offline_after: Duration, account: Option<&str>) -> ApiResult<Vec<NodeInfo>> {
    let sql = "SELECT n.id, n.name, n.registered_at, n.last_seen, n.heartbeat, n.role, COALESCE(k.revoked, 1), COALESCE(k.account, '')
         FROM nodes n LEFT JOIN keys k ON k.id = n.key_id";
    let rows: Vec<NodeRow> = match account {
        Some(a) => {
            sqlx::query_as(&format!("{sql} WHERE k.account = $1 ORDER BY n.registered_at, n.id"))
                .bind(a)
                .fetch_all(&db.pool)
                .await?
        }
        None => sqlx::query_as(&format!("{sql} ORDER BY n.registered_at, n.id")).fetch_all(&db.pool).await?,
    };
    let now = now_ms();
    let reports = crate::swarm::report_counts(db).await?;
    let mut standings = crate::audits::standings(db).await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, name, registered, last_seen, heartbeat, role, revoked, _account)| {
            let heartbeat: Option<Heartbeat> = heartbeat.and_then(|h| serde_json::from_str(&h).ok());
            let fresh = revoked == 0 && last_seen > 0 && now - last_seen <= offline_after.as_millis() as i64;
            let status = match (&heartbeat, fresh) {
                (Some(h), true) if h.paused => NodeStatus::Paused,
                (Some(h), true) if h.ready => NodeStatus::Online,
                (_, true) => NodeStatus::NotReady,
                (_, false) => NodeStatus::Offline,
            };
            NodeInfo {
                name,
                status,
                role: if role == "router" { NodeRole::Router } else { NodeRole::Host },
                registered_at_ms: registered as u64,
                last_seen_ms: last_seen as u64,
                peer_reports: reports.get(&node_id).copied().unwrap_or(0),
                trust: standings.remove(&node_id).unwrap_or_else(crate::audits::new_node_trust),
                heartbeat,
                node_id,
            }
        })
        .collect())
}
