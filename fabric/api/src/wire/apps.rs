//! Apps: deploying and rolling back versions, and what hosts serve
//! (`/v1/apps`, `/v1/deployments`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/apps/{name}/versions`: deploy a new version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// The `wasmesh.toml` text.
    pub manifest: String,
    /// Each component's uploaded blob, by component name.
    pub components: BTreeMap<String, String>,
}

/// `POST /v1/apps/{name}/rollback`: make an earlier version current again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to serve.
    pub version: u64,
}

/// One immutable version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// The app.
    pub app: String,
    /// 1, 2, 3... in deploy order.
    pub version: u64,
    /// The `wasmesh.toml` text as deployed.
    pub manifest: String,
    /// Each component's blob (blake3), by component name.
    pub components: BTreeMap<String, String>,
    /// When it was deployed.
    pub created_at_ms: u64,
    /// The key that deployed it.
    pub deployed_by: String,
}

/// An app and its current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    /// The app.
    pub name: String,
    /// The version served now.
    pub current_version: u64,
    /// How many versions exist.
    pub versions: u64,
    /// When the current version was chosen (deploy or rollback).
    pub updated_at_ms: u64,
    /// The account that owns it (the one that first deployed it).
    #[serde(default = "super::keys::default_account")]
    pub account: String,
}

/// What a host serves: the current version of every app, and a revision that
/// changes whenever any of them does (`GET /v1/deployments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployments {
    /// Increases with every deploy and rollback.
    pub revision: u64,
    /// The current version of each app.
    pub apps: Vec<AppVersion>,
}
