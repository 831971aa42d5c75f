//! Callers' keys: the registry's verdict on each (its scopes and account), cached,
//! and the per-key rate limit.

use crate::{Body, Inner, error};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use wasmesh_api::ApiKey;
use wasmesh_api::wire::Scope;
use wasmesh_client::ClientError;

/// What the registry said of a caller's key: its scopes and account, or the refusal
/// (shared: a cache hit clones a pointer, not the scopes and the account).
pub(crate) type Verdict = std::sync::Arc<Result<(Vec<Scope>, String), (StatusCode, String)>>;

/// How long the router trusts the registry's verdict on a key.
pub(crate) struct VerdictExpiry;

impl moka::Expiry<String, Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _key: &String, verdict: &Verdict, _created_at: Instant) -> Option<Duration> {
        Some(if verdict.as_ref().is_ok() { Duration::from_secs(30) } else { Duration::from_secs(5) })
    }
}

/// Checks the caller's key (cached for 30 s; failures for 5 s); the caller's account
/// and key id (`None` when the router takes callers without keys).
pub(crate) async fn authorize(
    inner: &Inner,
    req: &Request<Incoming>,
    source: std::net::IpAddr,
) -> Result<Option<crate::meter::Caller>, Response<Body>> {
    if !inner.config.require_key {
        return Ok(None);
    }
    let Some(key) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
    else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing API key: send `Authorization: Bearer wsk_...` with a key that has the invoke scope",
        ));
    };
    // A malformed key never reaches the registry.
    let key = match ApiKey::parse(&key) {
        Ok(key) => key,
        Err(malformed) => return Err(error(StatusCode::UNAUTHORIZED, malformed.to_string())),
    };
    let verdict = match inner.callers.get(key.expose()) {
        Some(verdict) => verdict,
        None => {
            // Unknown keys cost the registry a call: each source address gets few.
            if let Err(wait) = inner.unknown_keys.take(&source.to_string()) {
                return Err(error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many new keys from {source}; retry in {wait} s"),
                ));
            }
            let verdict: Verdict = std::sync::Arc::new(match inner.client.whoami_for(key.expose(), source).await {
                Ok(me) => Ok((me.scopes, me.account)),
                Err(ClientError::Api { status: 401, message, .. }) => Err((StatusCode::UNAUTHORIZED, message)),
                // Not cached: a rate limit is about now, not about the key.
                Err(ClientError::Api { status: 429, message, .. }) => {
                    return Err(error(StatusCode::TOO_MANY_REQUESTS, message));
                }
                Err(e) => {
                    return Err(error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot check the API key: {e}")));
                }
            });
            inner.callers.insert(key.expose().to_string(), verdict.clone());
            verdict
        }
    };
    match verdict.as_ref() {
        Ok((scopes, account)) if scopes.contains(&Scope::Invoke) || scopes.contains(&Scope::Admin) => {
            // Limit by the key's public id.
            let id = key.id();
            let caller = || crate::meter::Caller { account: account.clone(), key_id: id.to_string() };
            inner.limiter.take(id).map(|()| Some(caller())).map_err(|wait| {
                let mut response =
                    error(StatusCode::TOO_MANY_REQUESTS, format!("key {id} is over its rate limit; retry in {wait} s"));
                if let Ok(v) = wait.to_string().parse() {
                    response.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                response
            })
        }
        Ok(_) => Err(error(
            StatusCode::FORBIDDEN,
            "this key lacks the 'invoke' scope; create one with `wasmesh keys create --scope invoke`",
        )),
        Err((status, message)) => Err(error(*status, message.clone())),
    }
}
