//! The registry's state in SQL: SQLite by default (one file, WAL), PostgreSQL when
//! a `postgres://` URL is configured. One code path serves both (sqlx's `Any`
//! driver): the SQL here sticks to what both accept (`$N` parameters, `BIGINT`,
//! `TEXT`, `ON CONFLICT`, `RETURNING`), and every write that must be all-or-nothing
//! runs in one transaction.

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Schema migrations, applied in order, each in its own transaction; the versions
/// applied are kept in `schema_migrations`. Never edit one that has shipped: add
/// the next.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE blobs (
    hash TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    pieces TEXT,
    gguf TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE validated_components (
    hash TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    size BIGINT NOT NULL,
    kind TEXT NOT NULL,
    part_size BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE upload_parts (
    upload_id TEXT NOT NULL,
    part BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part)
);
CREATE TABLE apps (
    name TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,
    latest_version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE app_versions (
    app TEXT NOT NULL,
    version BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    components TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deployed_by TEXT NOT NULL,
    PRIMARY KEY (app, version)
);
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    size BIGINT NOT NULL,
    facts TEXT NOT NULL,
    tensors TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE loras (
    name TEXT PRIMARY KEY,
    base TEXT NOT NULL,
    hash TEXT NOT NULL,
    size BIGINT NOT NULL,
    lora_rank BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    heartbeat TEXT
);
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('deployments_revision', '0');
"#,
    ),
    (
        2,
        r#"
ALTER TABLE nodes ADD COLUMN role TEXT NOT NULL DEFAULT 'host';
"#,
    ),
    (
        3,
        r#"
ALTER TABLE keys ADD COLUMN network TEXT;
"#,
    ),
    (
        4,
        r#"
ALTER TABLE blobs ADD COLUMN info_hash TEXT;
CREATE INDEX blobs_info_hash ON blobs (info_hash);
CREATE TABLE peer_reports (
    subject TEXT NOT NULL,
    reporter TEXT NOT NULL,
    blob TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX peer_reports_subject ON peer_reports (subject);
"#,
    ),
    (
        5,
        r#"
ALTER TABLE models ADD COLUMN min_warm BIGINT NOT NULL DEFAULT 0;
"#,
    ),
    (
        // Accounts own keys (and through them nodes), apps, models, adapters, blobs and
        // private networks. Everything from before moves into the account `default`.
        6,
        r#"
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO accounts (name, created_at) VALUES ('default', 0);
CREATE TABLE members (
    email TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX members_account ON members (account);
ALTER TABLE keys ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE apps ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE models ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE models ADD COLUMN public BIGINT NOT NULL DEFAULT 0;
ALTER TABLE loras ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
ALTER TABLE loras ADD COLUMN public BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN cert_expires_at BIGINT NOT NULL DEFAULT 0;
CREATE TABLE blob_owners (
    hash TEXT NOT NULL,
    account TEXT NOT NULL,
    PRIMARY KEY (hash, account)
);
INSERT INTO blob_owners (hash, account) SELECT hash, 'default' FROM blobs;
CREATE TABLE networks (
    name TEXT PRIMARY KEY,
    account TEXT NOT NULL
);
INSERT INTO networks (name, account) SELECT DISTINCT network, 'default' FROM keys WHERE network IS NOT NULL
"#,
    ),
    (
        // Upload sessions expire by their last touch, not their start.
        7,
        r#"
ALTER TABLE uploads ADD COLUMN touched_at BIGINT NOT NULL DEFAULT 0
"#,
    ),
    (
        // Whether a node's last heartbeat said it was ready, as a column: `/metrics`
        // counts nodes without parsing every stored heartbeat.
        8,
        r#"
ALTER TABLE nodes ADD COLUMN ready BIGINT NOT NULL DEFAULT 0
"#,
    ),
    // The credits ledger (`ledger::SCHEMA`: accounts, transfers, pending transfers).
    (9, crate::ledger::SCHEMA),
    (
        // Prices per model in micros per million tokens; `-` is the per-call price of
        // requests that use no model.
        10,
        r#"
CREATE TABLE prices (
    model TEXT PRIMARY KEY,
    input_per_mtok BIGINT NOT NULL,
    output_per_mtok BIGINT NOT NULL,
    per_call BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
)
"#,
    ),
    // Hosts' receipts of metered requests (`receipts::SCHEMA`).
    (11, crate::receipts::SCHEMA),
    (
        // Session keys (a member's dashboard sign-in) expire; other keys have 0: never.
        12,
        r#"
ALTER TABLE keys ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0
"#,
    ),
    (
        // Why a request's generation ended (`GET /v1/generation`): stop, length, error.
        13,
        r#"
ALTER TABLE receipts ADD COLUMN finish_reason TEXT NOT NULL DEFAULT ''
"#,
    ),
    (
        // What a receipt commits to (its generations' asks and tokens, hashed) and on what
        // engine build and CPU class: what an audit replays and compares.
        14,
        r#"
ALTER TABLE receipts ADD COLUMN commitment TEXT NOT NULL DEFAULT '';
ALTER TABLE receipts ADD COLUMN engine TEXT NOT NULL DEFAULT '';
ALTER TABLE receipts ADD COLUMN cpu_class TEXT NOT NULL DEFAULT ''
"#,
    ),
    // Trust: auditors, caught nodes, audits, and each receipt's share of the escrowed
    // earnings (`crate::audits`).
    (15, crate::audits::SCHEMA),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 15;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The connection pool and its backend.
#[derive(Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// Which database.
    pub backend: Backend,
}

impl Db {
    /// The SQLite file `registry.db` under `data_dir`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}?mode=rwc", data_dir.join("registry.db").display())
    }

    /// Connects to `url` (`sqlite://...` or `postgres://...`) and applies pending migrations.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        Self::open_at(url, SCHEMA_VERSION).await
    }

    /// Connects to `url` and applies migrations up to `version` only: upgrade tests
    /// write a database as an older build left it.
    pub async fn open_at(url: &str, version: i64) -> anyhow::Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            anyhow::bail!("unsupported database URL '{}': use sqlite://PATH or postgres://HOST/DB", redact(url));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the writer. FULL: a commit is on disk
                        // before it is acknowledged, so an acknowledged deploy survives
                        // even a power cut, not only a killed process.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", redact(url)))?;
        let db = Self { pool, backend };
        db.migrate(version).await?;
        Ok(db)
    }

    async fn migrate(&self, upto: i64) -> anyhow::Result<()> {
        // Replicas starting together on one PostgreSQL take turns (a session lock on
        // one connection, held for the whole run). SQLite has one writer anyway.
        let mut lock = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock(7265636973747279)").execute(&mut *lock).await?;
        }
        let result = self.apply_migrations(upto).await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(7265636973747279)").execute(&mut *lock).await?;
        }
        result
    }

    async fn apply_migrations(&self, upto: i64) -> anyhow::Result<()> {
        self.pool.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)").await?;
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= upto) {
            let mut tx = self.pool.begin().await?;
            let done: Option<(i64,)> = sqlx::query_as("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
            if done.is_some() {
                continue;
            }
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| anyhow::anyhow!("migration {version} failed at `{statement}`: {e}"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)").bind(version).execute(&mut *tx).await?;
            tx.commit().await?;
            tracing::info!(version, "database migrated");
        }
        Ok(())
    }
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
