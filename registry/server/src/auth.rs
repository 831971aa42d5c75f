//! API keys, scopes, rate limits and lockout.
//!
//! A key reads `wsk_ID_SECRET`: the id is public (it names the key in lists and
//! logs), the secret is 192 random bits of which the registry keeps only the
//! blake3 hash. A fast hash is right here: the secret is random, not a password,
//! so there is nothing to brute-force offline. Failed attempts against one key id
//! from one address lock that key for that address a while (so knowing a key's
//! public id is not enough to lock its owner out); requests are rate-limited per
//! key and per source address.

use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wasmesh_api::ApiKey;
use wasmesh_api::limit::RateLimiter;
use wasmesh_api::wire::{CreatedKey, KeyInfo, Scope};

/// A caller whose key checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id.
    pub key_id: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The private network of nodes it registers.
    pub network: Option<String>,
    /// The account that owns the key, and with it everything the key makes.
    pub account: String,
}

impl Caller {
    /// Passes when the key has `scope` (or `admin`); otherwise a 403 that says how to get one.
    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            "missing_scope",
            format!(
                "key {} lacks the '{scope}' scope (it has: {}); ask an admin for one with `wasmesh keys create --scope {scope}`",
                self.key_id,
                self.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ))
    }

    /// Passes when the key has any of `scopes` (or `admin`).
    pub fn require_any(&self, scopes: &[Scope]) -> ApiResult<()> {
        if scopes.iter().any(|s| self.scopes.contains(s)) || self.scopes.contains(&Scope::Admin) {
            return Ok(());
        }
        self.require(scopes[0])
    }

    /// Whether the key may see and continue an upload started by key `owner`: an
    /// upload belongs to the key that started it (and to admins).
    pub fn owns_upload(&self, owner: &str) -> bool {
        owner == self.key_id || self.is_admin()
    }

    /// Whether the key is an admin's (it passes every scope and owner check).
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the key holds `scope` itself (admin does not count).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether the key reads the catalog of every account: admins, and routers (they
    /// route every app, so they read every deployment, model and node).
    pub fn reads_everything(&self) -> bool {
        self.is_admin() || self.has(Scope::Router)
    }

    /// Whether the key acts for `account`: a key of that account, or an admin's.
    pub fn owns(&self, account: &str) -> bool {
        self.is_admin() || self.account == account
    }
}

/// Limits on callers.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Requests per second per key (bursts of twice that).
    pub per_key_rps: f64,
    /// Requests per second per source address (bursts of twice that).
    pub per_address_rps: f64,
    /// Failed attempts on one key id from one address, within `failure_window`, that lock it for that address.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub failure_window: Duration,
    /// How long a locked key stays locked.
    pub lockout: Duration,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            per_key_rps: 200.0,
            per_address_rps: 400.0,
            max_failures: 5,
            failure_window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct Failures {
    recent: Vec<Instant>,
    locked_until: Option<Instant>,
}

/// Checks keys.
pub struct Auth {
    limits: AuthLimits,
    per_key: RateLimiter,
    /// Per source address; applied to every request, keyed or not.
    pub per_address: RateLimiter,
    failures: Mutex<HashMap<String, Failures>>,
    /// Failed authentications, for `/metrics`.
    pub failed: prometheus::IntCounter,
}

fn hash_secret(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source failed");
    wasmesh_api::wire::to_hex(&buf)
}

impl Auth {
    /// With `limits`; `failed` counts failed authentications.
    pub fn new(limits: AuthLimits, failed: prometheus::IntCounter) -> Self {
        Self {
            per_key: RateLimiter::new(limits.per_key_rps),
            per_address: RateLimiter::new(limits.per_address_rps),
            limits,
            failures: Mutex::new(HashMap::new()),
            failed,
        }
    }

    /// Checks the `Authorization: Bearer` header of a request from `source`.
    ///
    /// Failed attempts are counted per key id *and* source address: someone who
    /// knows a key's (public) id cannot lock its owner out from elsewhere.
    pub async fn authenticate(&self, db: &Db, header: Option<&str>, source: std::net::IpAddr) -> ApiResult<Caller> {
        let Some(header) = header else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer wsk_...` (the CLI takes --key, WASMESH_KEY or `wasmesh login`)",
            ));
        };
        let key = header.strip_prefix("Bearer ").unwrap_or(header).trim();
        let key = match ApiKey::parse(key) {
            Ok(key) => key,
            Err(malformed) => {
                self.failed.inc();
                return Err(ApiError::unauthorized(malformed.to_string()));
            }
        };
        let (id, secret) = (key.id(), key.secret());
        let attempt = format!("{id}@{source}");
        if let Some(wait) = self.locked(&attempt) {
            return Err(ApiError::too_many(
                format!("key {id} is locked after repeated failed attempts; retry in {wait} s"),
                wait,
            ));
        }
        let row: Option<(String, String, i64, Option<String>, String, i64)> =
            sqlx::query_as("SELECT hash, scopes, revoked, network, account, expires_at FROM keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&db.pool)
                .await?;
        let valid = match &row {
            // blake3::Hash compares in constant time.
            Some((hash, _, 0, _, _, expires)) if *expires == 0 || *expires > now_ms() => {
                blake3::Hash::from_hex(hash).is_ok_and(|h| h == hash_secret(secret))
            }
            _ => false,
        };
        if !valid {
            self.failed.inc();
            self.record_failure(&attempt);
            tracing::info!(key = %id, "authentication failed");
            return Err(ApiError::unauthorized("invalid, revoked or expired API key"));
        }
        let (_, scopes, _, network, account, _) = row.expect("checked above");
        if let Err(wait) = self.per_key.take(id) {
            return Err(ApiError::too_many(format!("key {id} is over its rate limit; retry in {wait} s"), wait));
        }
        Ok(Caller { key_id: id.to_string(), scopes: parse_scopes(&scopes), network, account })
    }

    /// Seconds left on the lockout of `attempt` (a key id or a member's email, with the
    /// source address), if it is locked.
    pub(crate) fn locked(&self, id: &str) -> Option<u64> {
        let failures = self.failures.lock().expect("failures lock");
        let until = failures.get(id)?.locked_until?;
        let now = Instant::now();
        (until > now).then(|| (until - now).as_secs().max(1))
    }

    /// Counts a failed attempt at `id`; enough of them within the window lock it.
    pub(crate) fn record_failure(&self, id: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() > 100_000 {
            failures.retain(|_, f| f.locked_until.is_some_and(|t| t > now));
        }
        let entry = failures.entry(id.to_string()).or_default();
        entry.recent.retain(|t| now.duration_since(*t) < self.limits.failure_window);
        entry.recent.push(now);
        if entry.recent.len() as u32 >= self.limits.max_failures {
            entry.locked_until = Some(now + self.limits.lockout);
            entry.recent.clear();
            tracing::warn!(key = %id, secs = self.limits.lockout.as_secs(), "key locked after repeated failed attempts");
        }
    }
}

fn parse_scopes(s: &str) -> Vec<Scope> {
    s.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// Creates a key of `account` and stores its hash. A private `network` it names must
/// be the account's own (the first key to name one claims it for its account).
pub async fn create_key(
    db: &Db,
    account: &str,
    name: &str,
    scopes: &[Scope],
    network: Option<&str>,
) -> ApiResult<CreatedKey> {
    if let Some(network) = network {
        wasmesh_api::check_name("network name", network)
            .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
        crate::accounts::claim_network(db, network, account).await?;
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "a key needs at least one scope: admin, deploy, provider, invoke or router",
        ));
    }
    if name.trim().is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("invalid_request", "a key's name must be 1 to 100 characters"));
    }
    let id = random_hex(6);
    let secret = random_hex(24);
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let joined = scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
    let now = now_ms();
    sqlx::query(
        "INSERT INTO keys (id, name, hash, scopes, created_at, revoked, network, account) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
    )
    .bind(&id)
    .bind(name)
    .bind(hash_secret(&secret).to_hex().to_string())
    .bind(&joined)
    .bind(now)
    .bind(network)
    .bind(account)
    .execute(&db.pool)
    .await?;
    Ok(CreatedKey {
        key: ApiKey::from_parts(&id, &secret).expect("a made key is well formed").expose().to_string(),
        info: KeyInfo {
            id,
            name: name.to_string(),
            scopes,
            created_at_ms: now as u64,
            revoked: false,
            network: network.map(str::to_string),
            account: account.to_string(),
        },
    })
}

/// A session key for a member of `account` who signed in (the dashboard's): deploy,
/// invoke and provider scopes, expiring after `wire::SESSION_HOURS`.
pub async fn create_session_key(db: &Db, account: &str, email: &str) -> ApiResult<(String, u64)> {
    use wasmesh_api::wire::Scope;
    let created =
        create_key(db, account, &format!("session of {email}"), &[Scope::Deploy, Scope::Invoke, Scope::Provider], None)
            .await?;
    let expires = now_ms() + (wasmesh_api::wire::SESSION_HOURS * 3_600_000) as i64;
    sqlx::query("UPDATE keys SET expires_at = $1 WHERE id = $2")
        .bind(expires)
        .bind(&created.info.id)
        .execute(&db.pool)
        .await?;
    Ok((created.key, expires as u64))
}

type KeyRow = (String, String, String, i64, i64, Option<String>, String);

/// The keys of `account`, or every key for `None` (without secrets).
pub async fn list_keys(db: &Db, account: Option<&str>) -> ApiResult<Vec<KeyInfo>> {
    // Expired session keys (members' dashboard sign-ins) are no longer keys: not listed.
    let sql = "SELECT id, name, scopes, created_at, revoked, network, account FROM keys \
               WHERE (expires_at = 0 OR expires_at > $1)";
    let rows: Vec<KeyRow> = match account {
        Some(a) => {
            sqlx::query_as(&format!("{sql} AND account = $2 ORDER BY created_at, id"))
                .bind(now_ms())
                .bind(a)
                .fetch_all(&db.pool)
                .await?
        }
        None => sqlx::query_as(&format!("{sql} ORDER BY created_at, id")).bind(now_ms()).fetch_all(&db.pool).await?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, name, scopes, created, revoked, network, account)| KeyInfo {
            id,
            name,
            scopes: parse_scopes(&scopes),
            created_at_ms: created as u64,
            revoked: revoked != 0,
            network,
            account,
        })
        .collect())
}

/// Revokes key `id` of `account` (any account's for `None`); false when there is none.
/// The nodes it registered are offline from this moment (see `nodes::list`).
pub async fn revoke_key(db: &Db, id: &str, account: Option<&str>) -> ApiResult<bool> {
    let done = match account {
        Some(a) => {
            sqlx::query("UPDATE keys SET revoked = 1 WHERE id = $1 AND account = $2")
                .bind(id)
                .bind(a)
                .execute(&db.pool)
                .await?
        }
        None => sqlx::query("UPDATE keys SET revoked = 1 WHERE id = $1").bind(id).execute(&db.pool).await?,
    };
    Ok(done.rows_affected() > 0)
}

/// Whether any key exists (the first start creates an admin key when none does).
pub async fn any_key(db: &Db) -> ApiResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM keys LIMIT 1").fetch_optional(&db.pool).await?;
    Ok(row.is_some())
}

/// Random id for uploads.
pub fn random_id() -> String {
    random_hex(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_key_works_until_it_expires_then_is_refused_and_unlisted() {
        let dir = std::env::temp_dir().join(format!("wasmesh-auth-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open(&Db::sqlite_url(&dir)).await.unwrap();
        let auth = Auth::new(AuthLimits::default(), prometheus::IntCounter::new("f", "f").unwrap());
        let (key, expires) = create_session_key(&db, "acme", "ana@acme.example").await.unwrap();
        let hours = (expires as i64 - now_ms()) / 3_600_000;
        assert!((11..=12).contains(&hours), "a session lasts 12 h: {hours}");
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let caller = auth.authenticate(&db, Some(&format!("Bearer {key}")), local).await.unwrap();
        assert_eq!(caller.account, "acme");
        assert!(caller.has(Scope::Deploy) && caller.has(Scope::Invoke) && !caller.is_admin());
        assert_eq!(list_keys(&db, Some("acme")).await.unwrap().len(), 1);
        sqlx::query("UPDATE keys SET expires_at = 1").execute(&db.pool).await.unwrap();
        let err = auth.authenticate(&db, Some(&format!("Bearer {key}")), local).await.unwrap_err();
        assert!(err.message.contains("expired"), "{}", err.message);
        assert!(list_keys(&db, Some("acme")).await.unwrap().is_empty(), "an expired session is not listed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn admin_passes_every_scope_check_and_others_name_the_missing_scope() {
        let admin = Caller { key_id: "k".into(), scopes: vec![Scope::Admin], network: None, account: "a".into() };
        assert!(admin.require(Scope::Deploy).is_ok());
        let invoker = Caller { key_id: "k".into(), scopes: vec![Scope::Invoke], network: None, account: "a".into() };
        let err = invoker.require(Scope::Deploy).unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::FORBIDDEN);
        assert!(err.message.contains("--scope deploy"), "{}", err.message);
        assert!(invoker.require_any(&[Scope::Deploy, Scope::Invoke]).is_ok());
    }
}
