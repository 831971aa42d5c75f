//! The wasmesh registry: the fabric's control plane.
//!
//! It keeps apps and their immutable versions, models and LoRA adapters, nodes
//! and API keys in SQL ([`db`]: SQLite by default, PostgreSQL through the same
//! code), and artifacts content-addressed by blake3 in an object store
//! ([`artifacts`]: the local filesystem by default, S3-compatible when
//! configured). The HTTP JSON API is in [`api`] and documented at `/openapi.json`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use wasmesh_registry::{Registry, RegistryConfig};
//! let registry = Registry::open(RegistryConfig::new("/var/lib/wasmesh/registry".into())).await?;
//! if let Some(key) = registry.create_admin_key_if_none().await? {
//!     println!("admin key (shown once): {key}");
//! }
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! registry.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod accounts;
pub mod api;
pub mod artifacts;
pub mod audits;
pub mod auth;
pub mod catalog;
pub mod credits;
mod dashboard;
pub mod db;
pub mod error;
pub mod ledger;
pub mod nodes;
pub mod receipts;
pub mod swarm;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_api::wire::Scope;

/// How a registry runs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Holds the SQLite file, staged uploads and (by default) the artifacts.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; `None`: SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// `file:///...` or `s3://BUCKET?endpoint=...`; `None`: `data_dir/artifacts`.
    pub store_url: Option<String>,
    /// Rate limits and lockout.
    pub limits: auth::AuthLimits,
    /// A node whose last heartbeat is older than this is offline (3 heartbeats).
    pub offline_after: Duration,
    /// Largest artifact accepted.
    pub max_artifact_bytes: u64,
    /// Largest component accepted.
    pub max_component_bytes: u64,
    /// Upload sessions untouched this long are dropped with their staged parts.
    pub upload_ttl: Duration,
    /// How long a node's certificate is valid; nodes renew it at half its life.
    pub cert_ttl: Duration,
    /// Bytes one account may store (its blobs and its unfinished uploads); admins are exempt.
    pub account_quota_bytes: u64,
    /// The platform's share of every request's cost, in basis points (1000: 10%).
    pub fee_bps: u32,
    /// How long providers' earnings wait in escrow before they are theirs to spend.
    pub settle_after: Duration,
}

impl RegistryConfig {
    /// Defaults, with state under `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database_url: None,
            store_url: None,
            limits: auth::AuthLimits::default(),
            offline_after: Duration::from_secs(30),
            max_artifact_bytes: 64 << 30,
            max_component_bytes: 64 << 20,
            upload_ttl: Duration::from_secs(24 * 3600),
            cert_ttl: Duration::from_secs(6 * 3600),
            account_quota_bytes: 1 << 40,
            fee_bps: 1000,
            settle_after: Duration::from_secs(3600),
        }
    }
}

/// The registry's metrics.
pub struct Metrics {
    /// The prometheus registry they live in.
    pub registry: prometheus::Registry,
    /// Requests by route, method and status.
    pub requests: prometheus::IntCounterVec,
    /// Latency by route.
    pub latency: prometheus::HistogramVec,
    /// Deploys accepted.
    pub deploys: prometheus::IntCounter,
    /// Upload bytes received.
    pub uploaded_bytes: prometheus::IntCounter,
    /// Nodes by status (refreshed at each scrape).
    pub nodes: prometheus::IntGaugeVec,
    /// Failed authentications.
    pub auth_failures: prometheus::IntCounter,
    /// Credits (micros) reserved by leases and posted by receipts.
    pub credits: prometheus::IntCounterVec,
    /// Receipts by outcome (posted, duplicate, refused).
    pub receipts: prometheus::IntCounterVec,
}

impl Metrics {
    fn new() -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new("wasmesh_registry_requests_total", "Requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let latency = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("wasmesh_registry_request_seconds", "Request latency by route")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            &["route"],
        )?;
        let deploys = prometheus::IntCounter::new("wasmesh_registry_deploys_total", "App versions deployed")?;
        let uploaded_bytes =
            prometheus::IntCounter::new("wasmesh_registry_upload_bytes_total", "Artifact bytes received")?;
        let nodes = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("wasmesh_registry_nodes", "Nodes by status"),
            &["status"],
        )?;
        let auth_failures =
            prometheus::IntCounter::new("wasmesh_registry_auth_failures_total", "Requests with a bad or missing key")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(deploys.clone()))?;
        registry.register(Box::new(uploaded_bytes.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        let credits = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_registry_credits_micros_total",
                "Credits (micros) reserved by leases and posted by receipts",
            ),
            &["what"],
        )?;
        let receipts = prometheus::IntCounterVec::new(
            prometheus::Opts::new("wasmesh_registry_receipts_total", "Receipts by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        registry.register(Box::new(credits.clone()))?;
        registry.register(Box::new(receipts.clone()))?;
        Ok(Self { registry, requests, latency, deploys, uploaded_bytes, nodes, auth_failures, credits, receipts })
    }
}

/// What [`Registry::scrub`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ScrubReport {
    /// Blobs read.
    pub checked: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs whose stored copy is missing, short, or fails its hash.
    pub damaged: Vec<String>,
}

/// Shared by every handler.
pub struct State {
    /// The database.
    pub db: db::Db,
    /// The artifact store.
    pub artifacts: artifacts::Artifacts,
    /// Key checks and limits.
    pub auth: auth::Auth,
    /// The node CA.
    pub ca: nodes::Ca,
    /// What hosts' receipt keys derive from (`Ca::receipt_master`, derived once).
    pub receipt_master: [u8; 32],
    /// Checks components at deploy.
    pub validator: Arc<wasmesh_world::ComponentValidator>,
    /// Validations at once (each compiles a component).
    pub validate_slots: tokio::sync::Semaphore,
    /// One completion per file at a time (each hashes the whole file); different files
    /// complete in parallel.
    pub completing: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Woken on every deploy and rollback (long polls).
    pub changed: tokio::sync::Notify,
    /// Long polls waiting now, per key.
    pub long_polls: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// Swarms of weights: tracker, origin shares.
    pub swarms: swarm::Swarms,
    /// The Prometheus metrics `GET /metrics` serves.
    pub metrics: Metrics,
    /// The credits ledger.
    pub ledger: ledger::SqlLedger,
    /// The configuration.
    pub config: RegistryConfig,
}

/// A registry, ready to serve.
pub struct Registry {
    state: Arc<State>,
}

impl Registry {
    /// Opens (and migrates) the database and the artifact store.
    pub async fn open(config: RegistryConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", config.data_dir.display()))?;
        let url = config.database_url.clone().unwrap_or_else(|| db::Db::sqlite_url(&config.data_dir));
        let db = db::Db::open(&url).await?;
        let artifacts = artifacts::Artifacts::open(config.store_url.as_deref(), &config.data_dir)?;
        let ca = nodes::Ca::load_or_create(&db).await?;
        let metrics = Metrics::new()?;
        let auth = auth::Auth::new(config.limits.clone(), metrics.auth_failures.clone());
        let validator = Arc::new(
            wasmesh_world::ComponentValidator::new()
                .map_err(|e| anyhow::anyhow!("cannot create the validator: {e:#}"))?,
        );
        tracing::info!(database = %db::redact(&url), store = %artifacts.describe, "registry opened");
        let ledger = ledger::SqlLedger::new(db.clone());
        Ok(Self {
            state: Arc::new(State {
                db,
                artifacts,
                auth,
                validator,
                validate_slots: tokio::sync::Semaphore::new(1),
                completing: std::sync::Mutex::new(std::collections::HashMap::new()),
                long_polls: std::sync::Mutex::new(std::collections::HashMap::new()),
                changed: tokio::sync::Notify::new(),
                swarms: swarm::Swarms::new(ca.derive_secret("wasmesh 2026 tracker tokens")),
                ledger,
                receipt_master: ca.receipt_master(),
                ca,
                metrics,
                config,
            }),
        })
    }

    /// Creates an admin key when the registry has no key at all (first start);
    /// returns it, to be shown once.
    pub async fn create_admin_key_if_none(&self) -> anyhow::Result<Option<String>> {
        if auth::any_key(&self.state.db).await.map_err(|e| anyhow::anyhow!(e.message))? {
            return Ok(None);
        }
        let key = auth::create_key(&self.state.db, wasmesh_api::wire::DEFAULT_ACCOUNT, "admin", &[Scope::Admin], None)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
        Ok(Some(key.key))
    }

    /// Creates a key of the default account (for `wasmesh up` and set-up scripts).
    pub async fn create_key(&self, name: &str, scopes: &[Scope]) -> anyhow::Result<String> {
        Ok(auth::create_key(&self.state.db, wasmesh_api::wire::DEFAULT_ACCOUNT, name, scopes, None)
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?
            .key)
    }

    /// Reads every stored blob back and checks its size and blake3: what a power cut, a
    /// bad disk or a hand in the data folder damaged. A damaged blob is repaired by
    /// uploading the file again (the upload no longer counts it as present).
    pub async fn scrub(&self) -> anyhow::Result<ScrubReport> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT hash, size FROM blobs ORDER BY hash").fetch_all(&self.state.db.pool).await?;
        let mut report = ScrubReport::default();
        for (hash, size) in rows {
            report.checked += 1;
            report.bytes += size as u64;
            match self.state.artifacts.verify(&hash, size as u64).await {
                Ok(true) => {}
                Ok(false) => report.damaged.push(hash),
                Err(e) => anyhow::bail!("cannot read artifact {hash} from the store: {e}"),
            }
        }
        Ok(report)
    }

    /// The HTTP service.
    pub fn router(&self) -> axum::Router {
        api::router(self.state.clone())
    }

    /// Serves the API on `listener` until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // Drop abandoned upload sessions (checked four times per TTL, at most hourly).
        let janitor = {
            let state = self.state.clone();
            let ttl = state.config.upload_ttl;
            let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
            tokio::spawn(async move {
                loop {
                    match api::expire_uploads(&state, ttl).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(uploads = n, "expired abandoned uploads"),
                        Err(e) => tracing::warn!("cannot expire uploads: {}", e.message),
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        // Release reservations whose router never came back (their timeout passed), and
        // settle providers' earnings whose window has passed.
        let expiry = {
            let state = self.state.clone();
            tokio::spawn(async move {
                loop {
                    match state.ledger.expire(db::now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(transfers = n, "released expired reservations"),
                        Err(e) => tracing::warn!("cannot release expired reservations: {e}"),
                    }
                    // A caught node's earnings go back to its callers before anything settles.
                    match audits::forfeit_evicted(&state.db, &state.ledger).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(refunded = n, "refunded what caught nodes still held in escrow"),
                        Err(e) => tracing::warn!("cannot forfeit caught nodes' earnings: {}", e.message),
                    }
                    let window = state.config.settle_after.as_millis() as i64;
                    match receipts::settle(&state.db, &state.ledger, window).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(earnings = n, "provider earnings settled"),
                        Err(e) => tracing::warn!("cannot settle earnings: {}", e.message),
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
        };
        let served = axum::serve(listener, self.router().into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
        janitor.abort();
        expiry.abort();
        served
    }
}
