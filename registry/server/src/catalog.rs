//! Apps and their versions, models and LoRAs: the rows behind them, and the rules
//! on what may be deployed or registered as a model or LoRA.

use crate::artifacts::GgufSummary;
use crate::db::{Db, now_ms};
use crate::error::{ApiError, ApiResult};
use std::collections::BTreeMap;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{AppSummary, AppVersion, ArtifactKind, LoraInfo, ModelInfo, PieceManifest};

/// A blob's row.
pub struct BlobRow {
    /// Its length in bytes.
    pub size: u64,
    /// What it was uploaded as.
    pub kind: ArtifactKind,
    /// Piece hashes (models, LoRAs).
    pub pieces: Option<PieceManifest>,
    /// GGUF header summary (models, LoRAs).
    pub gguf: Option<GgufSummary>,
}

pub(crate) fn kind_str(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Component => "component",
        ArtifactKind::Model => "model",
        ArtifactKind::Lora => "lora",
    }
}

fn parse_kind(s: &str) -> ArtifactKind {
    match s {
        "model" => ArtifactKind::Model,
        "lora" => ArtifactKind::Lora,
        _ => ArtifactKind::Component,
    }
}

/// The blob `hash`, if stored.
pub async fn blob(db: &Db, hash: &str) -> ApiResult<Option<BlobRow>> {
    let row: Option<(i64, String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT size, kind, pieces, gguf FROM blobs WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.map(|(size, kind, pieces, gguf)| BlobRow {
        size: size as u64,
        kind: parse_kind(&kind),
        pieces: pieces.and_then(|p| serde_json::from_str(&p).ok()),
        gguf: gguf.and_then(|g| serde_json::from_str(&g).ok()),
    }))
}

/// The blob `hash` that a push names: a 400 when no such file was uploaded.
pub async fn uploaded_blob(db: &Db, hash: &str) -> ApiResult<BlobRow> {
    blob(db, hash)
        .await?
        .ok_or_else(|| ApiError::bad_request("missing_artifact", format!("no artifact {hash}; upload the file first")))
}

/// Records a verified blob (after it is in the store).
pub async fn insert_blob(
    db: &Db,
    hash: &str,
    size: u64,
    kind: ArtifactKind,
    pieces: Option<&PieceManifest>,
    gguf: Option<&GgufSummary>,
) -> ApiResult<()> {
    let info_hash = pieces.and_then(|p| p.info_hash.clone());
    let pieces = pieces.map(|p| serde_json::to_string(p).expect("pieces serialize"));
    let gguf = gguf.map(|g| serde_json::to_string(g).expect("gguf summary serializes"));
    sqlx::query(
        "INSERT INTO blobs (hash, size, kind, pieces, gguf, created_at, info_hash) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hash) DO NOTHING",
    )
    .bind(hash)
    .bind(size as i64)
    .bind(kind_str(kind))
    .bind(pieces)
    .bind(gguf)
    .bind(now_ms())
    .bind(info_hash)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Records that `account` uploaded blob `hash` (it proved it holds the bytes).
pub async fn add_blob_owner(db: &Db, hash: &str, account: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO blob_owners (hash, account) VALUES ($1, $2) ON CONFLICT (hash, account) DO NOTHING")
        .bind(hash)
        .bind(account)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Whether `account` uploaded blob `hash`.
pub async fn blob_owned_by(db: &Db, hash: &str, account: &str) -> ApiResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT hash FROM blob_owners WHERE hash = $1 AND account = $2")
        .bind(hash)
        .bind(account)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.is_some())
}

/// Bytes `account` stores (the blobs it uploaded) and has in flight (unfinished
/// uploads by its keys, less any of file `except`, which a resume would count twice).
pub async fn account_bytes(db: &Db, account: &str, except: &str) -> ApiResult<u64> {
    let (stored,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blob_owners o JOIN blobs b ON b.hash = o.hash WHERE o.account = $1",
    )
    .bind(account)
    .fetch_one(&db.pool)
    .await?;
    let (pending,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(u.size), 0) AS BIGINT) FROM uploads u JOIN keys k ON k.id = u.key_id WHERE k.account = $1 AND u.hash <> $2",
    )
    .bind(account)
    .bind(except)
    .fetch_one(&db.pool)
    .await?;
    Ok(stored as u64 + pending as u64)
}

/// Whether a blob with torrent info hash `info_hash` (hex) is stored.
pub async fn has_info_hash(db: &Db, info_hash: &str) -> ApiResult<bool> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT hash FROM blobs WHERE info_hash = $1").bind(info_hash).fetch_optional(&db.pool).await?;
    Ok(row.is_some())
}

/// Whether the component blob `hash` passed validation before.
pub async fn is_validated(db: &Db, hash: &str) -> ApiResult<bool> {
    let row: Option<(String,)> = sqlx::query_as("SELECT hash FROM validated_components WHERE hash = $1")
        .bind(hash)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.is_some())
}

/// Remembers that the component blob `hash` passed validation.
pub async fn mark_validated(db: &Db, hash: &str) -> ApiResult<()> {
    sqlx::query("INSERT INTO validated_components (hash, created_at) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING")
        .bind(hash)
        .bind(now_ms())
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// What a deploy of `app` must satisfy before its components are looked at: the
/// manifest is for `app`, and every component it defines has an uploaded blob in
/// `components` (component name to blake3).
pub fn check_deploy(app: &str, manifest: &AppManifest, components: &BTreeMap<String, String>) -> ApiResult<()> {
    if manifest.app.name != app {
        return Err(ApiError::bad_request(
            "invalid_manifest",
            format!("the manifest is for app '{}', not '{app}'", manifest.app.name),
        ));
    }
    for component in manifest.component.keys() {
        if !components.contains_key(component) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("component '{component}' of the manifest has no uploaded blob in `components`"),
            ));
        }
    }
    Ok(())
}

/// A deploy's `components` may name only components its manifest defines.
pub fn check_defined(manifest: &AppManifest, component: &str) -> ApiResult<()> {
    if !manifest.component.contains_key(component) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`components` names '{component}', which the manifest does not define"),
        ));
    }
    Ok(())
}

/// The blob `hash` deployed as `component` (`blob`: its row, if stored) must be
/// stored, and uploaded as a component.
pub fn check_component_blob(component: &str, hash: &str, blob: Option<&BlobRow>) -> ApiResult<()> {
    match blob {
        None => Err(ApiError::bad_request(
            "missing_artifact",
            format!("component '{component}': no artifact {hash}; upload it first (`wasmesh deploy` does)"),
        )),
        Some(b) if b.kind != ArtifactKind::Component => Err(ApiError::bad_request(
            "invalid_component",
            format!("component '{component}': artifact {hash} was uploaded as a {:?}, not a component", b.kind),
        )),
        Some(_) => Ok(()),
    }
}

/// A blob registered as a model must have been uploaded as one (so its GGUF header
/// was read), and must not be a LoRA adapter.
pub fn check_model_blob(blob: &BlobRow) -> ApiResult<()> {
    let Some(gguf) = &blob.gguf else {
        return Err(ApiError::bad_request(
            "not_gguf",
            "that artifact was not uploaded as a model; upload it with kind \"model\"",
        ));
    };
    if gguf.adapter {
        return Err(ApiError::bad_request(
            "not_a_model",
            "that file is a LoRA adapter, not a model; push it with `wasmesh loras push FILE --base MODEL`",
        ));
    }
    Ok(())
}

/// A blob registered as a LoRA adapter must have been uploaded as one (a GGUF file).
pub fn check_lora_blob(blob: &BlobRow) -> ApiResult<()> {
    if blob.gguf.is_none() {
        return Err(ApiError::bad_request(
            "not_gguf",
            "that artifact was not uploaded as a LoRA; upload it with kind \"lora\"",
        ));
    }
    Ok(())
}

/// Creates version N+1 of `app` and makes it current, in one transaction: a
/// version is either wholly there (and current) or not at all.
pub async fn create_version(
    db: &Db,
    account: &str,
    app: &str,
    manifest: &str,
    components: &BTreeMap<String, String>,
    deployed_by: &str,
) -> ApiResult<AppVersion> {
    let now = now_ms();
    let components_json = serde_json::to_string(components).expect("component map serializes");
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "INSERT INTO apps (name, current_version, latest_version, updated_at, account) VALUES ($1, 0, 0, $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(app)
    .bind(now)
    .bind(account)
    .execute(&mut *tx)
    .await?;
    // Only the owner's row moves: a name another account took in between stays theirs.
    let version: Option<(i64,)> = sqlx::query_as(
        "UPDATE apps SET latest_version = latest_version + 1, current_version = latest_version + 1, updated_at = $1
         WHERE name = $2 AND account = $3 RETURNING latest_version",
    )
    .bind(now)
    .bind(app)
    .bind(account)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((version,)) = version else {
        tx.rollback().await?;
        return Err(name_taken(app));
    };
    sqlx::query(
        "INSERT INTO app_versions (app, version, manifest, components, created_at, deployed_by) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(app)
    .bind(version)
    .bind(manifest)
    .bind(&components_json)
    .bind(now)
    .bind(deployed_by)
    .execute(&mut *tx)
    .await?;
    bump_revision(&mut tx).await?;
    tx.commit().await?;
    Ok(AppVersion {
        app: app.to_string(),
        version: version as u64,
        manifest: manifest.to_string(),
        components: components.clone(),
        created_at_ms: now as u64,
        deployed_by: deployed_by.to_string(),
    })
}

async fn bump_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> ApiResult<()> {
    sqlx::query("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE name = 'deployments_revision'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The 403 for an app name that another account owns.
pub fn name_taken(app: &str) -> ApiError {
    ApiError::forbidden("not_owner", format!("app name '{app}' belongs to another account; deploy under another name"))
}

/// Makes `version` of `app` current again (the caller checked it owns the app).
pub async fn rollback(db: &Db, app: &str, version: u64) -> ApiResult<AppSummary> {
    let mut tx = db.pool.begin().await?;
    // Write first: on SQLite a transaction that reads and then writes can fail
    // against a concurrent writer; one that starts with the write just waits.
    let moved = sqlx::query(
        "UPDATE apps SET current_version = $1, updated_at = $2
         WHERE name = $3 AND EXISTS (SELECT 1 FROM app_versions WHERE app = $4 AND version = $5)",
    )
    .bind(version as i64)
    .bind(now_ms())
    .bind(app)
    .bind(app)
    .bind(version as i64)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        tx.rollback().await?;
        let latest: Option<(i64,)> = sqlx::query_as("SELECT latest_version FROM apps WHERE name = $1")
            .bind(app)
            .fetch_optional(&db.pool)
            .await?;
        return Err(match latest {
            None => ApiError::not_found(format!("no app named '{app}'; `wasmesh apps ls` lists them")),
            Some((latest,)) => ApiError::not_found(format!(
                "app '{app}' has no version {version}; its versions are 1 to {latest} (`wasmesh apps versions {app}`)"
            )),
        });
    }
    bump_revision(&mut tx).await?;
    tx.commit().await?;
    app_summary(db, app).await?.ok_or_else(|| ApiError::not_found(format!("no app named '{app}'")))
}

type AppRow = (String, i64, i64, i64, String);

fn summary_from_row((name, current, latest, updated, account): AppRow) -> AppSummary {
    AppSummary {
        name,
        current_version: current as u64,
        versions: latest as u64,
        updated_at_ms: updated as u64,
        account,
    }
}

/// Every app.
pub async fn apps(db: &Db) -> ApiResult<Vec<AppSummary>> {
    let rows: Vec<AppRow> =
        sqlx::query_as("SELECT name, current_version, latest_version, updated_at, account FROM apps ORDER BY name")
            .fetch_all(&db.pool)
            .await?;
    Ok(rows.into_iter().map(summary_from_row).collect())
}

/// One app.
pub async fn app_summary(db: &Db, app: &str) -> ApiResult<Option<AppSummary>> {
    let row: Option<AppRow> =
        sqlx::query_as("SELECT name, current_version, latest_version, updated_at, account FROM apps WHERE name = $1")
            .bind(app)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.map(summary_from_row))
}

type VersionRow = (String, i64, String, String, i64, String);

fn version_from_row((app, version, manifest, components, created, by): VersionRow) -> AppVersion {
    AppVersion {
        app,
        version: version as u64,
        manifest,
        components: serde_json::from_str(&components).unwrap_or_default(),
        created_at_ms: created as u64,
        deployed_by: by,
    }
}

/// Every version of `app`, oldest first.
pub async fn versions(db: &Db, app: &str) -> ApiResult<Vec<AppVersion>> {
    let rows: Vec<VersionRow> = sqlx::query_as(
        "SELECT app, version, manifest, components, created_at, deployed_by FROM app_versions WHERE app = $1 ORDER BY version",
    )
    .bind(app)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(version_from_row).collect())
}

/// The deployments revision.
pub async fn revision(db: &Db) -> ApiResult<u64> {
    let (value,): (String,) =
        sqlx::query_as("SELECT value FROM meta WHERE name = 'deployments_revision'").fetch_one(&db.pool).await?;
    Ok(value.parse().unwrap_or(0))
}

/// The current version of every app, with the account that owns it.
pub async fn current_versions(db: &Db) -> ApiResult<(u64, Vec<(String, AppVersion)>)> {
    let revision = revision(db).await?;
    let rows: Vec<(String, String, i64, String, String, i64, String)> = sqlx::query_as(
        "SELECT a.account, v.app, v.version, v.manifest, v.components, v.created_at, v.deployed_by
         FROM apps a JOIN app_versions v ON v.app = a.name AND v.version = a.current_version ORDER BY a.name",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok((
        revision,
        rows.into_iter()
            .map(|(account, app, version, manifest, components, created, by)| {
                (account, version_from_row((app, version, manifest, components, created, by)))
            })
            .collect(),
    ))
}

/// Registers a model of `account`; pushing the same file under the same name again is a no-op.
pub async fn insert_model(db: &Db, account: &str, name: &str, hash: &str, blob: &BlobRow) -> ApiResult<ModelInfo> {
    let gguf = blob.gguf.as_ref().expect("caller checked");
    let facts = serde_json::to_string(&gguf.facts).expect("facts serialize");
    let tensors = serde_json::to_string(&gguf.tensors).expect("tensors serialize");
    let done = sqlx::query(
        "INSERT INTO models (name, hash, size, facts, tensors, created_at, account) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(hash)
    .bind(blob.size as i64)
    .bind(facts)
    .bind(tensors)
    .bind(now_ms())
    .bind(account)
    .execute(&db.pool)
    .await?;
    let existing = model(db, name).await?.ok_or_else(|| ApiError::internal("model vanished", name))?;
    if done.rows_affected() == 0 && existing.account != account {
        return Err(ApiError::conflict(format!(
            "model name '{name}' belongs to another account; push this one under another name"
        )));
    }
    if done.rows_affected() == 0 && existing.blake3 != hash {
        return Err(ApiError::conflict(format!(
            "a different file is already registered as model '{name}' ({}); push this one under another name",
            existing.blake3
        )));
    }
    Ok(existing)
}

type ModelRow = (String, String, i64, String, i64, Option<String>, i64, String, i64);

async fn model_rows(db: &Db, name: Option<&str>) -> ApiResult<Vec<ModelInfo>> {
    let sql = "SELECT m.name, m.hash, m.size, m.facts, m.created_at, b.pieces, m.min_warm, m.account, m.public FROM models m LEFT JOIN blobs b ON b.hash = m.hash";
    let rows: Vec<ModelRow> = match name {
        Some(n) => sqlx::query_as(&format!("{sql} WHERE m.name = $1")).bind(n).fetch_all(&db.pool).await?,
        None => sqlx::query_as(&format!("{sql} ORDER BY m.name")).fetch_all(&db.pool).await?,
    };
    Ok(rows
        .into_iter()
        .filter_map(|(name, hash, size, facts, created, pieces, min_warm, account, public)| {
            Some(ModelInfo {
                name,
                blake3: hash,
                size: size as u64,
                facts: serde_json::from_str(&facts).ok()?,
                pieces: pieces.and_then(|p| serde_json::from_str(&p).ok())?,
                created_at_ms: created as u64,
                min_warm: u32::try_from(min_warm).unwrap_or(0),
                account,
                public: public != 0,
            })
        })
        .collect())
}

/// Sets how many nodes must keep model `name` warm (0 unpins it). Returns the model,
/// or `None` when there is no model by that name.
pub async fn set_min_warm(db: &Db, name: &str, min_warm: u32) -> ApiResult<Option<ModelInfo>> {
    let done = sqlx::query("UPDATE models SET min_warm = $1 WHERE name = $2")
        .bind(i64::from(min_warm))
        .bind(name)
        .execute(&db.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    model(db, name).await
}

/// Publishes model (`table` "models") or adapter (`table` "loras") `name` to every
/// account, or makes it private again. False when there is none by that name.
pub async fn set_public(db: &Db, table: &str, name: &str, public: bool) -> ApiResult<bool> {
    let sql = match table {
        "models" => "UPDATE models SET public = $1 WHERE name = $2",
        _ => "UPDATE loras SET public = $1 WHERE name = $2",
    };
    let done = sqlx::query(sql).bind(i64::from(public)).bind(name).execute(&db.pool).await?;
    Ok(done.rows_affected() > 0)
}

/// Every model.
pub async fn models(db: &Db) -> ApiResult<Vec<ModelInfo>> {
    model_rows(db, None).await
}

/// One model.
pub async fn model(db: &Db, name: &str) -> ApiResult<Option<ModelInfo>> {
    Ok(model_rows(db, Some(name)).await?.pop())
}

/// A model's tensor shapes and architecture (LoRA checks).
pub async fn model_tensors(db: &Db, name: &str) -> ApiResult<Option<(String, Vec<wasmesh_gguf::TensorInfo>)>> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT facts, tensors FROM models WHERE name = $1").bind(name).fetch_optional(&db.pool).await?;
    Ok(row.and_then(|(facts, tensors)| {
        let facts: wasmesh_api::wire::ModelFacts = serde_json::from_str(&facts).ok()?;
        Some((facts.architecture, serde_json::from_str(&tensors).ok()?))
    }))
}

/// Registers a LoRA adapter of `account`.
pub async fn insert_lora(
    db: &Db,
    account: &str,
    name: &str,
    base: &str,
    hash: &str,
    size: u64,
    rank: u64,
) -> ApiResult<LoraInfo> {
    let done = sqlx::query(
        "INSERT INTO loras (name, base, hash, size, lora_rank, created_at, account) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(base)
    .bind(hash)
    .bind(size as i64)
    .bind(rank as i64)
    .bind(now_ms())
    .bind(account)
    .execute(&db.pool)
    .await?;
    let existing = loras(db)
        .await?
        .into_iter()
        .find(|l| l.name == name)
        .ok_or_else(|| ApiError::internal("LoRA vanished", name))?;
    if done.rows_affected() == 0 && existing.account != account {
        return Err(ApiError::conflict(format!(
            "adapter name '{name}' belongs to another account; push this one under another name"
        )));
    }
    if done.rows_affected() == 0 && (existing.blake3 != hash || existing.base != base) {
        return Err(ApiError::conflict(format!(
            "a different adapter is already registered as '{name}' (for base '{}'); push this one under another name",
            existing.base
        )));
    }
    Ok(existing)
}

type LoraRow = (String, String, String, i64, i64, i64, Option<String>, String, i64);

/// Every LoRA adapter.
pub async fn loras(db: &Db) -> ApiResult<Vec<LoraInfo>> {
    let rows: Vec<LoraRow> = sqlx::query_as(
        "SELECT l.name, l.base, l.hash, l.size, l.lora_rank, l.created_at, b.pieces, l.account, l.public FROM loras l LEFT JOIN blobs b ON b.hash = l.hash ORDER BY l.name",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, base, hash, size, rank, created, pieces, account, public)| {
            Some(LoraInfo {
                name,
                base,
                blake3: hash,
                size: size as u64,
                rank: rank as u64,
                pieces: pieces.and_then(|p| serde_json::from_str(&p).ok())?,
                created_at_ms: created as u64,
                account,
                public: public != 0,
            })
        })
        .collect())
}
