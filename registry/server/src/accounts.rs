//! Accounts: who owns what. An account owns its keys (and through them the nodes
//! those keys register), its apps, models, adapters, uploaded blobs and private
//! networks. Members are the people of an account who sign in with an email and a
//! password (the web dashboard); the registry keeps an Argon2id hash of the password
//! and locks an email out of an address after repeated failures, as it does keys.

use crate::auth::Auth;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use wasmesh_api::wire::{AccountInfo, MemberInfo};

/// Creates account `name`; a 409 when it exists.
pub async fn create(db: &Db, name: &str) -> ApiResult<AccountInfo> {
    wasmesh_api::check_name("account name", name)
        .map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))?;
    let now = now_ms();
    let done = sqlx::query("INSERT INTO accounts (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(now)
        .execute(&db.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::conflict(format!("account '{name}' exists; `wasmesh accounts ls` lists them")));
    }
    Ok(AccountInfo { name: name.to_string(), created_at_ms: now as u64 })
}

/// Account `name`, or every account for `None`.
pub async fn list(db: &Db, name: Option<&str>) -> ApiResult<Vec<AccountInfo>> {
    let rows: Vec<(String, i64)> = match name {
        Some(n) => {
            sqlx::query_as("SELECT name, created_at FROM accounts WHERE name = $1").bind(n).fetch_all(&db.pool).await?
        }
        None => sqlx::query_as("SELECT name, created_at FROM accounts ORDER BY name").fetch_all(&db.pool).await?,
    };
    Ok(rows.into_iter().map(|(name, at)| AccountInfo { name, created_at_ms: at as u64 }).collect())
}

/// A 404 unless account `name` exists.
pub async fn require_exists(db: &Db, name: &str) -> ApiResult<()> {
    if list(db, Some(name)).await?.is_empty() {
        return Err(ApiError::not_found(format!(
            "no account named '{name}'; an admin creates it with `wasmesh accounts create {name}`"
        )));
    }
    Ok(())
}

/// Private network `network` belongs to `account`: the first key or deploy to name a
/// network claims it for its account; naming another account's network is a 403.
pub async fn claim_network(db: &Db, network: &str, account: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO networks (name, account) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
        .bind(network)
        .bind(account)
        .execute(&db.pool)
        .await?;
    let (owner,): (String,) =
        sqlx::query_as("SELECT account FROM networks WHERE name = $1").bind(network).fetch_one(&db.pool).await?;
    if owner != account {
        return Err(ApiError::forbidden(
            "not_owner",
            format!("private network '{network}' belongs to another account; choose another network name"),
        ));
    }
    Ok(())
}

const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 1024;

/// Adds member `email` to `account` with `password` (hashed with Argon2id, default
/// parameters: 19 MiB, 2 passes). A 409 when the email is taken.
pub async fn add_member(db: &Db, account: &str, email: &str, password: &str) -> ApiResult<MemberInfo> {
    let email = email.trim().to_ascii_lowercase();
    if email.len() > 254
        || !email.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
    {
        return Err(ApiError::bad_request("invalid_request", "email must look like name@example.com"));
    }
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
        return Err(ApiError::bad_request(
            "weak_password",
            format!("a password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal("the password hashing task failed", e))??;
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO members (email, account, hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING",
    )
    .bind(&email)
    .bind(account)
    .bind(hash)
    .bind(now)
    .execute(&db.pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::conflict(format!("{email} is already a member of an account")));
    }
    Ok(MemberInfo { email, account: account.to_string(), created_at_ms: now as u64 })
}

/// The members of `account`.
pub async fn members(db: &Db, account: &str) -> ApiResult<Vec<MemberInfo>> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT email, account, created_at FROM members WHERE account = $1 ORDER BY email")
            .bind(account)
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.into_iter().map(|(email, account, at)| MemberInfo { email, account, created_at_ms: at as u64 }).collect())
}

/// Checks a member's password, from `source`. Failures count per email and address
/// (as keys do: knowing someone's email does not let you lock them out elsewhere); an
/// unknown email costs the same hashing time as a known one.
pub async fn sign_in(
    db: &Db,
    auth: &Auth,
    email: &str,
    password: &str,
    source: std::net::IpAddr,
) -> ApiResult<MemberInfo> {
    let email = email.trim().to_ascii_lowercase();
    let attempt = format!("member:{email}@{source}");
    if let Some(wait) = auth.locked(&attempt) {
        return Err(ApiError::too_many(
            format!("{email} is locked after repeated failed sign-ins; retry in {wait} s"),
            wait,
        ));
    }
    if password.chars().count() > MAX_PASSWORD {
        return Err(ApiError::bad_request("invalid_request", "password too long"));
    }
    let row: Option<(String, String, i64)> =
        sqlx::query_as("SELECT account, hash, created_at FROM members WHERE email = $1")
            .bind(&email)
            .fetch_optional(&db.pool)
            .await?;
    let stored = row.as_ref().map(|(_, hash, _)| hash.clone());
    let password = password.to_string();
    let valid = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => verify_password(&hash, &password),
        None => {
            // Same work as a real check, so timing does not tell which emails exist.
            let _ = hash_password(&password);
            false
        }
    })
    .await
    .map_err(|e| ApiError::internal("the password check failed", e))?;
    match row {
        Some((account, _, at)) if valid => Ok(MemberInfo { email, account, created_at_ms: at as u64 }),
        _ => {
            auth.failed.inc();
            auth.record_failure(&attempt);
            Err(ApiError::unauthorized("wrong email or password"))
        }
    }
}

fn hash_password(password: &str) -> ApiResult<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| ApiError::internal("the OS random source failed", e))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::internal("cannot encode a salt", e))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal("cannot hash a password", e))
}

fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify_only_themselves() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "each hash has its own salt");
    }
}
