//! [`ApiKey`]: the text of a wasmesh API key, `wsk_<12 hex>_<secret>`, parsed once
//! wherever a key arrives (the registry's and the router's `Authorization` header,
//! the CLI's `--key`).

use std::fmt;

/// The prefix every key starts with.
pub const KEY_PREFIX: &str = "wsk_";
/// Hex digits of a key's id.
pub const KEY_ID_LEN: usize = 12;

/// A well-formed API key: `wsk_` then a 12-hex-digit id, `_`, and a secret.
///
/// Well-formed is all it says: whether the key exists, is revoked or has a scope is
/// the registry's question. Its `Debug` and `Display` show the id only, so a key in
/// a log line never leaks its secret.
///
/// ```
/// use wasmesh_api::ApiKey;
/// let key = ApiKey::parse("wsk_0123456789ab_s3cret")?;
/// assert_eq!((key.id(), key.secret()), ("0123456789ab", "s3cret"));
/// assert_eq!(key.to_string(), "wsk_0123456789ab_…");
/// # Ok::<(), wasmesh_api::ApiKeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey {
    full: String,
}

/// Why a text is not an API key. The message is the one callers see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key: keys look like wsk_<12 hex>_<secret>")]
pub struct ApiKeyError;

impl ApiKey {
    /// Parses a key's text (no `Bearer ` prefix, no surrounding spaces).
    ///
    /// # Errors
    /// [`ApiKeyError`] unless the text is `wsk_`, 12 hex digits, `_`, and a non-empty secret.
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let rest = text.strip_prefix(KEY_PREFIX).ok_or(ApiKeyError)?;
        let (id, secret) = rest.split_once('_').ok_or(ApiKeyError)?;
        let id_ok = id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit());
        if !id_ok || secret.is_empty() {
            return Err(ApiKeyError);
        }
        Ok(Self { full: text.to_owned() })
    }

    /// A key from its id and secret (the registry, when it makes one).
    ///
    /// # Errors
    /// [`ApiKeyError`] when the id is not 12 hex digits or the secret is empty.
    pub fn from_parts(id: &str, secret: &str) -> Result<Self, ApiKeyError> {
        Self::parse(&format!("{KEY_PREFIX}{id}_{secret}"))
    }

    /// The key's id: public, names the key in listings and logs.
    pub fn id(&self) -> &str {
        &self.full[KEY_PREFIX.len()..KEY_PREFIX.len() + KEY_ID_LEN]
    }

    /// The key's secret: compare it (hashed) and never log it.
    pub fn secret(&self) -> &str {
        &self.full[KEY_PREFIX.len() + KEY_ID_LEN + 1..]
    }

    /// The whole key, secret included, to send in an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

impl std::str::FromStr for ApiKey {
    type Err = ApiKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The id only: `wsk_<id>_…`.
impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}_…", self.id())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_into_id_and_secret_and_never_print_the_secret() {
        let key = ApiKey::parse("wsk_0123456789ab_secret").unwrap();
        assert_eq!((key.id(), key.secret()), ("0123456789ab", "secret"));
        assert_eq!(key.expose(), "wsk_0123456789ab_secret");
        assert!(!format!("{key} {key:?}").contains("secret"));
        assert_eq!(ApiKey::from_parts("0123456789ab", "secret").unwrap(), key);
        // The secret may hold '_'.
        assert_eq!(ApiKey::parse("wsk_0123456789ab_a_b").unwrap().secret(), "a_b");
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "wsk_short_secret",
            "0123456789ab_secret",
            "wsk_0123456789ab_",
            "wsk_0123456789xz_s",
            "wsk_0123456789ab",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(ApiKeyError), "{bad:?}");
        }
        assert!(ApiKeyError.to_string().contains("wsk_<12 hex>_<secret>"));
    }
}
