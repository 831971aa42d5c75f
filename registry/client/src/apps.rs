//! Apps: deploying a manifest (its components uploaded first), listing apps and
//! versions, rolling back, and the deployments hosts and routers poll.

use crate::Client;
use crate::error::{ClientError, Result};
use crate::progress::Progress;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{AppSummary, AppVersion, ArtifactKind, Deploy, Deployments, Rollback};

impl Client {
    /// Deploys the app of the manifest at `manifest_path`: checks it locally,
    /// uploads each component, then asks for a new version.
    pub async fn deploy(&self, manifest_path: &Path, progress: &dyn Progress) -> Result<AppVersion> {
        let text = std::fs::read_to_string(manifest_path).map_err(|e| ClientError::io(manifest_path, e))?;
        let manifest =
            AppManifest::parse(&text).map_err(|e| ClientError::Invalid(format!("{}: {e}", manifest_path.display())))?;
        let base = manifest_path.parent().unwrap_or(Path::new("."));
        let mut components = BTreeMap::new();
        for (name, spec) in &manifest.component {
            let path = base.join(&spec.source);
            if !path.is_file() {
                return Err(ClientError::Invalid(format!(
                    "component '{name}': {} does not exist; build it first (for Rust: cargo build --target wasm32-wasip2 --release)",
                    path.display()
                )));
            }
            let blob = self.upload_file(&path, ArtifactKind::Component, progress).await?;
            components.insert(name.clone(), blob.blake3);
        }
        self.deploy_uploaded(&manifest.app.name, &text, components).await
    }

    /// Deploys a manifest whose components are already uploaded.
    pub async fn deploy_uploaded(
        &self,
        app: &str,
        manifest: &str,
        components: BTreeMap<String, String>,
    ) -> Result<AppVersion> {
        self.post(&format!("/v1/apps/{app}/versions"), &Deploy { manifest: manifest.to_string(), components }).await
    }

    /// Every app.
    pub async fn apps(&self) -> Result<Vec<AppSummary>> {
        self.get("/v1/apps").await
    }

    /// Every version of `app`.
    pub async fn versions(&self, app: &str) -> Result<Vec<AppVersion>> {
        self.get(&format!("/v1/apps/{app}/versions")).await
    }

    /// Makes `version` of `app` current.
    pub async fn rollback(&self, app: &str, version: u64) -> Result<AppSummary> {
        self.post(&format!("/v1/apps/{app}/rollback"), &Rollback { version }).await
    }

    /// The current version of every app; with `since`, waits up to `wait` for a change.
    pub async fn deployments(&self, since: Option<u64>, wait: Duration) -> Result<Deployments> {
        let mut builder = self.request(reqwest::Method::GET, "/v1/deployments");
        if let Some(since) = since {
            builder =
                builder.query(&[("since", since), ("wait_s", wait.as_secs())]).timeout(wait + Duration::from_secs(15));
        }
        self.json(builder).await
    }
}
