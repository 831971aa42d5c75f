//! Who may see and change what: the owner rules every handler applies after its
//! scope check. One place, so the isolation matrix (tests/tests/tenants.rs) and the
//! `x-wasmesh-owner` of each path in `openapi.json` describe one set of rules.
//!
//! - An app belongs to the account that first deployed it. Only that account's
//!   keys deploy, roll back, or read its versions; other accounts get a 404 for a
//!   name they do not own (a 403 when they try to deploy over it).
//! - A deployment is visible to its account's deploy keys, and to the provider keys
//!   whose private network (or the public one) the app runs in: the nodes that may
//!   serve it. Admin and router keys see every deployment.
//! - A model or adapter is visible to its account, to everyone once published, and to
//!   a provider whose visible apps of that account grant it (the model's nodes must
//!   fetch it to serve them).
//! - A blob is readable by the accounts that uploaded it, and by a provider when it
//!   is a component of a deployment visible to it, or the file of a model or adapter
//!   visible to it.

use crate::auth::Caller;
use crate::catalog;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{AppVersion, Deployments, LoraInfo, ModelInfo, Scope};

/// The 404 a caller gets for an app it does not own (or that does not exist).
pub fn no_app(name: &str) -> ApiError {
    ApiError::not_found(format!("no app named '{name}' in your account; `wasmesh apps ls` lists yours"))
}

/// A 404 unless `caller` may read app `name` (its account's keys, or an admin).
pub async fn require_app_owner(db: &Db, caller: &Caller, name: &str) -> ApiResult<()> {
    match catalog::app_summary(db, name).await? {
        Some(app) if caller.owns(&app.account) => Ok(()),
        _ => Err(no_app(name)),
    }
}

/// The account a deploy of app `name` by `caller` lands in: the app's owner when it
/// exists (a 403 unless that is the caller's account, or the caller is an admin),
/// else the caller's account, which then owns the name.
pub async fn deploy_account(db: &Db, caller: &Caller, name: &str) -> ApiResult<String> {
    match catalog::app_summary(db, name).await? {
        Some(app) if caller.owns(&app.account) => Ok(app.account),
        Some(_) => Err(catalog::name_taken(name)),
        None => Ok(caller.account.clone()),
    }
}

/// Whether `caller` sees the deployment of an app of `account` running in `network`.
fn sees_deployment(caller: &Caller, account: &str, network: Option<&str>) -> bool {
    caller.reads_everything()
        || (caller.has(Scope::Deploy) && caller.account == account)
        || provider_sees(caller, network)
}

/// Whether a provider's nodes may run an app of private network `network` (`None`:
/// public): nodes run the apps of their own network only, so private code never
/// reaches another network's machines.
fn provider_sees(caller: &Caller, network: Option<&str>) -> bool {
    caller.has(Scope::Provider) && network == caller.network.as_deref()
}

fn network_of(version: &AppVersion) -> Option<String> {
    AppManifest::parse(&version.manifest).ok().and_then(|m| m.app.network)
}

/// The deployments `caller` may see.
pub async fn deployments(db: &Db, caller: &Caller) -> ApiResult<Deployments> {
    let (revision, rows) = catalog::current_versions(db).await?;
    let apps = rows
        .into_iter()
        .filter(|(account, v)| sees_deployment(caller, account, network_of(v).as_deref()))
        .map(|(_, v)| v)
        .collect();
    Ok(Deployments { revision, apps })
}

/// What the apps a provider's nodes may run grant: (app account, granted model names).
/// Empty for a caller without the provider scope.
async fn provider_grants(db: &Db, caller: &Caller) -> ApiResult<Vec<(String, AppManifest)>> {
    if !caller.has(Scope::Provider) {
        return Ok(Vec::new());
    }
    let (_, rows) = catalog::current_versions(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(account, v)| {
            let manifest = AppManifest::parse(&v.manifest).ok()?;
            provider_sees(caller, manifest.app.network.as_deref()).then_some((account, manifest))
        })
        .collect())
}

/// Every model name `manifest` grants (`models` and `ai_models` of its components).
pub fn granted_models(manifest: &AppManifest) -> impl Iterator<Item = &str> {
    manifest
        .component
        .values()
        .flat_map(|c| c.models.iter().chain(&c.ai_models))
        .map(|m| m.split_once(':').map_or(m.as_str(), |(base, _)| base))
}

fn grants(visible: &[(String, AppManifest)], account: &str, model: &str) -> bool {
    visible.iter().any(|(a, m)| a == account && granted_models(m).any(|g| g == model))
}

/// The rules for models and adapters, for one caller.
pub struct Catalog<'a> {
    caller: &'a Caller,
    visible: Vec<(String, AppManifest)>,
}

impl<'a> Catalog<'a> {
    /// Reads what `caller`'s nodes may run (for a provider).
    pub async fn for_caller(db: &Db, caller: &'a Caller) -> ApiResult<Self> {
        Ok(Self { caller, visible: provider_grants(db, caller).await? })
    }

    /// Whether the caller may see and use `model`.
    pub fn model(&self, model: &ModelInfo) -> bool {
        self.caller.reads_everything()
            || model.public
            || self.caller.account == model.account
            || grants(&self.visible, &model.account, &model.name)
    }

    /// Whether the caller may see and use adapter `lora` (as its base model's rule,
    /// with the adapter's own account and publication).
    pub fn lora(&self, lora: &LoraInfo) -> bool {
        self.caller.reads_everything()
            || lora.public
            || self.caller.account == lora.account
            || grants(&self.visible, &lora.account, &lora.base)
    }
}

/// Whether `caller` may download blob `hash` (see the module's rules).
pub async fn may_read_blob(db: &Db, caller: &Caller, hash: &str) -> ApiResult<bool> {
    if caller.is_admin() || catalog::blob_owned_by(db, hash, &caller.account).await? {
        return Ok(true);
    }
    if !caller.has(Scope::Provider) {
        return Ok(false);
    }
    let deployed = deployments(db, caller).await?;
    if deployed.apps.iter().any(|v| v.components.values().any(|h| h == hash)) {
        return Ok(true);
    }
    let rules = Catalog::for_caller(db, caller).await?;
    if catalog::models(db).await?.iter().any(|m| m.blake3 == hash && rules.model(m)) {
        return Ok(true);
    }
    Ok(catalog::loras(db).await?.iter().any(|l| l.blake3 == hash && rules.lora(l)))
}

/// A deploy of an app of `account` may grant only models that are public or the
/// account's own (a model not in the registry is the host's own `--model`).
pub async fn check_grants(db: &Db, account: &str, manifest: &AppManifest) -> ApiResult<()> {
    for name in granted_models(manifest) {
        if let Some(model) = catalog::model(db, name).await?
            && !model.public
            && model.account != account
        {
            return Err(ApiError::forbidden(
                "private_model",
                format!(
                    "model '{name}' is private to another account; ask its owner to `wasmesh models publish {name}`"
                ),
            ));
        }
    }
    Ok(())
}
