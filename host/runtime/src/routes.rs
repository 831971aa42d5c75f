//! The route table: which component serves which path, where an app's routes
//! are mounted ([`Mount`]), and loading apps into the table or unloading them.

use crate::app::{AppError, LoadedApp, LoadedComponent};
use crate::host::Host;
use std::path::Path;
use std::sync::Arc;
use wasmesh_api::{AppManifest, AppPath};

#[derive(Clone)]
pub(crate) struct RouteEntry {
    app: Arc<str>,
    route: wasmesh_api::Route,
    component: Arc<LoadedComponent>,
    /// Served at its own path (`/chat`) as well as under `/fn/{app}/chat`.
    root: bool,
    /// Which deployed version of the app this is (0 for a local manifest).
    version: u64,
}

/// Where an app's routes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// At the manifest's own paths (`/chat`) and under `/fn/{app}/`. Two apps
    /// cannot claim the same path. Local manifests (`wasmesh host --app`) use this.
    Root,
    /// Only under `/fn/{app}/`: apps from the registry, which may use any paths
    /// without clashing.
    Scoped,
}

impl Host {
    /// Loads `wasmesh.toml` at `path` (components relative to it) and serves its routes
    /// at their own paths and under `/fn/{app}/`.
    pub async fn load_app_file(&self, path: &Path) -> Result<(), AppError> {
        let manifest = AppManifest::from_file(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        self.load_app(manifest, base).await
    }

    /// Loads an app and swaps it into the route table at its own paths ([`Mount::Root`]);
    /// an app of the same name is replaced (requests in flight finish on the old version).
    pub async fn load_app(&self, manifest: AppManifest, base: &Path) -> Result<(), AppError> {
        self.load_app_version(manifest, base, Mount::Root, 0).await
    }

    /// Loads `version` of an app, mounted as `mount`, and swaps it in atomically:
    /// requests already running finish on the version they started with, new ones
    /// get this one. Nothing changes when loading fails.
    pub async fn load_app_version(
        &self,
        manifest: AppManifest,
        base: &Path,
        mount: Mount,
        version: u64,
    ) -> Result<(), AppError> {
        let app = LoadedApp::load(manifest, base, &self.engines, &self.caps).await?;
        for (name, spec) in &app.manifest.component {
            for model in &spec.models {
                if !self.inference.has_model(model) {
                    tracing::warn!(component = %name, %model, "component is granted a model this node does not have");
                }
            }
        }
        let name: Arc<str> = app.manifest.app.name.as_str().into();
        let root = mount == Mount::Root;
        let mut routes = self.routes.write().expect("route table lock");
        let mut table: Vec<RouteEntry> = routes.iter().filter(|e| e.app != name).cloned().collect();
        for route in &app.manifest.route {
            if root && let Some(other) = table.iter().find(|e| e.root && e.route.path == route.path) {
                return Err(AppError::RouteConflict {
                    path: route.path.clone(),
                    app: name.to_string(),
                    other: other.app.to_string(),
                });
            }
            table.push(RouteEntry {
                app: name.clone(),
                route: route.clone(),
                component: app.components[&route.component].clone(),
                root,
                version,
            });
        }
        *routes = Arc::new(table);
        tracing::info!(app = %name, version, components = app.components.len(), routes = app.manifest.route.len(), "app loaded");
        Ok(())
    }

    /// Stops serving `app` (requests in flight finish). Returns whether it was served.
    pub fn unload_app(&self, app: &str) -> bool {
        let mut routes = self.routes.write().expect("route table lock");
        let before = routes.len();
        let table: Vec<RouteEntry> = routes.iter().filter(|e| &*e.app != app).cloned().collect();
        let removed = table.len() != before;
        *routes = Arc::new(table);
        if removed {
            tracing::info!(%app, "app unloaded");
        }
        removed
    }

    /// The apps served now, with the version of each (0 for local manifests).
    pub fn apps(&self) -> std::collections::BTreeMap<String, u64> {
        self.routes.read().expect("route table lock").iter().map(|e| (e.app.to_string(), e.version)).collect()
    }

    /// The version of `app` served now, if it is loaded.
    pub fn app_version(&self, app: &str) -> Option<u64> {
        self.routes.read().expect("route table lock").iter().find(|e| &*e.app == app).map(|e| e.version)
    }

    /// The paths served now, as `(app, path, component)`; scoped apps' paths are
    /// shown under `/fn/{app}`.
    pub fn routes(&self) -> Vec<(String, String, String)> {
        self.routes
            .read()
            .expect("route table lock")
            .iter()
            .map(|e| {
                let path = if e.root { e.route.path.clone() } else { AppPath::uri(&e.app, &e.route.path) };
                (e.app.to_string(), path, e.route.component.clone())
            })
            .collect()
    }

    /// The component for `path`, and the path the component sees when the request
    /// came in under `/fn/{app}/` (the app-relative rest, so a component behaves the
    /// same whichever way it is reached).
    pub(crate) fn lookup(&self, path: &str) -> Option<(Arc<LoadedComponent>, Option<String>)> {
        let routes = self.routes.read().expect("route table lock").clone();
        if let Some(scoped) = AppPath::parse(path) {
            let (app, inner) = (scoped.app(), scoped.rest());
            let found = routes
                .iter()
                .filter(|e| &*e.app == app)
                .filter_map(|e| e.route.matches(inner).map(|score| (score, e)))
                .max_by_key(|(score, _)| *score)
                .map(|(_, e)| (e.component.clone(), Some(inner.to_string())));
            if found.is_some() {
                return found;
            }
        }
        routes
            .iter()
            .filter(|e| e.root)
            .filter_map(|e| e.route.matches(path).map(|score| (score, e)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, e)| (e.component.clone(), None))
    }
}
