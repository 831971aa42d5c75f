//! Keys and scopes: what an API key may do, and the bodies of the key endpoints
//! (`/v1/keys`, `/v1/whoami`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What an API key may do. A key holds one or more scopes; `admin` implies all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Deploy apps, push models and LoRAs.
    Deploy,
    /// Everything, including creating keys.
    Admin,
    /// Register nodes and send their heartbeats.
    Provider,
    /// Call functions through a router.
    Invoke,
    /// Run a router: register as one, read apps, models and nodes, check callers' keys.
    Router,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 5] = [Scope::Admin, Scope::Deploy, Scope::Provider, Scope::Invoke, Scope::Router];

    /// The scope's name as keys and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
            Scope::Provider => "provider",
            Scope::Invoke => "invoke",
            Scope::Router => "router",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope '{s}': use one of admin, deploy, provider, invoke, router"))
    }
}

/// `POST /v1/keys`: create an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people, e.g. `ci-deploy`.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// For provider keys: the private network the nodes it registers join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The account the key belongs to; only an admin may name one other than its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The public part of the key, e.g. `k3f9a...`.
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at_ms: u64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The private network of the nodes it registers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The account that owns it.
    #[serde(default = "default_account")]
    pub account: String,
}

/// The account that data from before accounts existed moved into.
pub const DEFAULT_ACCOUNT: &str = "default";

pub(super) fn default_account() -> String {
    DEFAULT_ACCOUNT.to_string()
}

/// `POST /v1/accounts`: create an account (admin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Its name, kebab-case.
    pub name: String,
}

/// An account: it owns keys, apps, models, adapters, networks and nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// Its name.
    pub name: String,
    /// When it was made.
    pub created_at_ms: u64,
}

/// `POST /v1/accounts/{name}/members`: add a person who signs in with an email and
/// a password (the web dashboard); the registry keeps only an Argon2id hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// Their email address (their sign-in name).
    pub email: String,
    /// Their password, 12 to 1024 characters.
    pub password: String,
}

/// A member as listed (never the password or its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Their email address.
    pub email: String,
    /// Their account.
    pub account: String,
    /// When they were added.
    pub created_at_ms: u64,
}

/// `POST /v1/sessions`: a member signs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// Their email address.
    pub email: String,
    /// Their password.
    pub password: String,
    /// Also make a session key (the dashboard's): a key of the member's account with the
    /// deploy, invoke and provider scopes that expires after [`SESSION_HOURS`].
    #[serde(default)]
    pub session: bool,
}

/// How long a session key lasts.
pub const SESSION_HOURS: u64 = 12;

/// `POST /v1/sessions`'s answer: the member, and a session key when one was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedIn {
    /// Who signed in.
    #[serde(flatten)]
    pub member: MemberInfo,
    /// The session key (`wsk_...`), shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// `GET /v1/whoami`: the key a request was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The key's id.
    pub id: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The account it belongs to.
    #[serde(default = "default_account")]
    pub account: String,
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key's id and scopes.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The whole key, `wsk_ID_SECRET`. Store it now: the registry keeps only its hash.
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_reject_unknown() {
        assert_eq!("deploy".parse::<Scope>(), Ok(Scope::Deploy));
        assert!("root".parse::<Scope>().unwrap_err().contains("admin, deploy"));
    }
}
