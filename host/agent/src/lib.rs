//! The agent joins a host to the fabric.
//!
//! On start it loads (or creates) the node's Ed25519 identity in the data
//! directory, registers with the registry using a `provider` key and keeps the
//! certificate it gets back. Then two loops run for the life of the host:
//!
//! * **heartbeats** (every 10 s by default): hardware, the provider's share, the
//!   models and adapters in the caches, requests in flight, memory pressure and
//!   readiness (a node under memory pressure reports itself not ready);
//! * **deployments**: a long poll on `/v1/deployments`; each app version that
//!   changed is downloaded (components verified by blake3, cached by hash),
//!   compiled, and swapped in atomically under `/fn/{app}/`, so requests already
//!   running finish on the version they started on. A version that fails to load
//!   leaves the previous one serving.

mod control;
mod error;
mod models;
mod node;
mod ondemand;
mod receipts;
mod snapshot;
mod tunnel;

pub use control::ControlConfig;
pub use error::AgentError;
pub use models::{FetchConfig, FetchedModels, Fetcher, fetch_models};
pub use node::{Node, NodeConfig};
pub use ondemand::OnDemand;

/// A copy of what the provider lends now.
pub(crate) fn share_now(share: &Share) -> ResourceShare {
    share.read().unwrap_or_else(|p| p.into_inner()).clone()
}
use snapshot::HostSnapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{Deployments, ResourceShare};
use wasmesh_client::{Client, ClientError, NoProgress, NodeIdentity};
use wasmesh_runtime::{Host, Mount};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The registry's URL.
    pub registry: String,
    /// A key with the `provider` scope.
    pub key: String,
    /// Holds `node.key`, the certificate and the component cache.
    pub data_dir: PathBuf,
    /// The node's label (defaults to the hostname).
    pub name: String,
    /// Between heartbeats.
    pub heartbeat_interval: Duration,
    /// What the provider shares.
    pub share: ResourceShare,
    /// Memory-pressure thresholds.
    pub pressure: wasmesh_probe::PressureThresholds,
    /// Routers to dial (QUIC), each kept connected.
    pub routers: Vec<std::net::SocketAddr>,
    /// Lanes to each router: connections, each served by a thread of its own (0: one
    /// per four cores, at least one, at most 8).
    pub link_lanes: usize,
}

/// What the provider lends now: the agent's reports and heartbeats read it, and the
/// control socket changes it while the node runs (`wasmesh host set`).
pub type Share = Arc<std::sync::RwLock<ResourceShare>>;

/// A running agent.
pub struct Agent {
    /// The node's id.
    pub node_id: String,
    /// What the provider lends now.
    pub share: Share,
    /// The registry's client (the provider key's).
    pub client: Client,
    /// Sends a heartbeat at once (after a pause or a change of share).
    pub beat_now: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Dropped with the agent: its lanes' threads then end.
    _lanes: tokio::sync::watch::Sender<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The machine's hostname, for node labels.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

impl Agent {
    /// Registers the node, applies the current deployments once, then starts the
    /// heartbeat and deployment loops. Retries while the registry is unreachable
    /// (up to `patience`); a refused key fails at once.
    pub async fn start(host: Arc<Host>, config: AgentConfig, patience: Duration) -> Result<Self, AgentError> {
        let identity = Arc::new(
            NodeIdentity::load_or_create(&config.data_dir.join("node.key"))
                .map_err(|source| AgentError::Identity { dir: config.data_dir.clone(), source })?,
        );
        let client = Client::new(&config.registry, Some(config.key.clone()))?;
        let cert = register(&client, &identity, &config.name, patience).await?;
        let save = |file: &str, text: &str| {
            std::fs::write(config.data_dir.join(file), text)
                .map_err(|source| AgentError::SaveCertificate { dir: config.data_dir.clone(), source })
        };
        save("node.pem", &cert.certificate_pem)?;
        save("ca.pem", &cert.ca_pem)?;
        tracing::info!(node = %identity.node_id(), registry = %config.registry, "node registered");
        let under_pressure = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let share: Share = Arc::new(std::sync::RwLock::new(config.share.clone()));
        let mut tasks = Vec::new();
        let mut renewal = Renewal::new(&cert, None);
        let (lanes_run, lanes_end) = tokio::sync::watch::channel(());
        if !config.routers.is_empty() {
            let tls = wasmesh_tunnel::TlsIdentity::new(&cert.certificate_pem, &identity.pkcs8_der(), &cert.ca_pem)?;
            let dial: tunnel::DialConfig = Arc::new(std::sync::RwLock::new(wasmesh_tunnel::host_config(&tls)?));
            renewal.dial = Some(dial.clone());
            let source = tunnel::ReportSource {
                host: host.clone(),
                share: share.clone(),
                under_pressure: under_pressure.clone(),
                receipts: receipts::Receipts {
                    identity: identity.clone(),
                    mac_key: wasmesh_api::wire::from_hex(&cert.receipt_key).and_then(|k| k.try_into().ok()),
                    engine: host.inference().build_id().into(),
                    cpu_class: wasmesh_probe::cpu_class().into(),
                },
            };
            let count = if config.link_lanes == 0 { tunnel::default_lanes() } else { config.link_lanes };
            // Requests each lane took: how routers spread their requests over the lanes.
            let per_lane = prometheus::IntCounterVec::new(
                prometheus::Opts::new("wasmesh_host_link_requests_total", "Requests routers sent, by router and lane"),
                &["router", "lane"],
            )?;
            if let Err(e) = host.metrics_registry().register(Box::new(per_lane.clone())) {
                // A second agent on one host (a bench's): its lanes count, unexported.
                tracing::warn!("cannot export the lanes' request counts: {e}");
            }
            for router in &config.routers {
                for lane in 0..count {
                    let requests = per_lane.with_label_values(&[router.to_string(), lane.to_string()]);
                    tunnel::start_lane(&tls, dial.clone(), *router, source.clone(), lanes_end.clone(), lane, requests)?;
                }
            }
        }

        let sync = Sync { host: host.clone(), client: client.clone(), components: config.data_dir.join("components") };
        let revision = match client.deployments(None, Duration::ZERO).await {
            Ok(d) => sync.apply(&d).await.then_some(d.revision),
            Err(e) => {
                tracing::warn!("cannot fetch deployments yet: {e}");
                None
            }
        };
        let node_id = identity.node_id().to_string();
        tasks.push(tokio::spawn(async move { sync.run(revision).await }));
        tasks.push(tokio::spawn(follow_unpins(host.clone(), client.clone())));
        let beat_now = Arc::new(tokio::sync::Notify::new());
        let beats = Beats {
            host,
            client: client.clone(),
            identity,
            config,
            under_pressure,
            share: share.clone(),
            beat_now: beat_now.clone(),
        };
        tasks.push(tokio::spawn(heartbeat_loop(beats, renewal)));
        Ok(Self { node_id, share, client, beat_now, tasks, _lanes: lanes_run })
    }
}

/// Registers `identity` as node `name`, retrying while the registry is unreachable
/// (up to `patience`); a refused key fails at once.
pub async fn register(
    client: &Client,
    identity: &NodeIdentity,
    name: &str,
    patience: Duration,
) -> Result<wasmesh_api::wire::NodeCertificate, AgentError> {
    let started = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.register_node(identity, name).await {
            Ok(cert) => return Ok(cert),
            Err(e @ ClientError::Unreachable { .. }) if started.elapsed() < patience => {
                tracing::warn!("registration failed, retrying in {backoff:?}: {e}");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(AgentError::Register(e)),
        }
    }
}

/// When and how the node's certificate is renewed: by registering again at half its
/// life (a revoked key cannot, so its nodes lose their certificates within hours),
/// then swapping it into the TLS set-up of the dials that follow.
struct Renewal {
    dial: Option<tunnel::DialConfig>,
    due: std::time::SystemTime,
}

impl Renewal {
    fn new(cert: &wasmesh_api::wire::NodeCertificate, dial: Option<tunnel::DialConfig>) -> Self {
        let now = std::time::SystemTime::now();
        let expires = std::time::UNIX_EPOCH + Duration::from_millis(cert.expires_at_ms);
        // A registry that does not say (older) gets asked again in an hour.
        let half_life = expires.duration_since(now).map(|left| left / 2).unwrap_or(Duration::from_secs(3600));
        Self { dial, due: now + half_life.max(Duration::from_secs(30)) }
    }

    async fn renew_if_due(&mut self, client: &Client, identity: &NodeIdentity, config: &AgentConfig) {
        if std::time::SystemTime::now() < self.due {
            return;
        }
        let cert = match client.register_node(identity, &config.name).await {
            Ok(cert) => cert,
            Err(e) => {
                tracing::warn!("cannot renew the node's certificate (retrying at the next heartbeat): {e}");
                return;
            }
        };
        if let Err(e) = std::fs::write(config.data_dir.join("node.pem"), &cert.certificate_pem) {
            tracing::warn!("cannot save the renewed certificate: {e}");
        }
        if let Some(dial) = &self.dial {
            let config = wasmesh_tunnel::TlsIdentity::new(&cert.certificate_pem, &identity.pkcs8_der(), &cert.ca_pem)
                .and_then(|tls| wasmesh_tunnel::host_config(&tls));
            match config {
                Ok(c) => *dial.write().expect("dial config lock") = c,
                Err(e) => tracing::warn!("cannot use the renewed certificate: {e}"),
            }
        }
        tracing::info!(expires_at_ms = cert.expires_at_ms, "node certificate renewed");
        *self = Self::new(&cert, self.dial.take());
    }
}

/// Whether the file at `path` exists and hashes to `hash` (blake3, hex).
async fn cached_intact(path: &std::path::Path, hash: &str) -> bool {
    let path = path.to_owned();
    let hash = hash.to_string();
    tokio::task::spawn_blocking(move || {
        std::fs::read(&path).is_ok_and(|bytes| blake3::hash(&bytes).to_hex().as_str() == hash)
    })
    .await
    .unwrap_or(false)
}

pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.subsec_nanos()).unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// Every 5 s, unpins the models this host pinned (at a router's request) that the
/// registry no longer pins; they are then evicted like any other when memory is needed.
async fn follow_unpins(host: Arc<Host>, client: Client) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let engine = host.inference();
        let pinned: Vec<String> = engine.catalog().into_iter().filter(|e| e.pinned).map(|e| e.name).collect();
        if pinned.is_empty() {
            continue;
        }
        let Ok(models) = client.models().await else { continue };
        for name in pinned {
            if models.iter().any(|m| m.name == name && m.min_warm == 0) {
                tracing::info!(model = %name, "unpinned: the registry no longer pins it");
                engine.set_pinned(&name, false);
            }
        }
    }
}

/// What the heartbeat loop reads and sends with.
struct Beats {
    host: Arc<Host>,
    client: Client,
    identity: Arc<NodeIdentity>,
    config: AgentConfig,
    under_pressure: Arc<std::sync::atomic::AtomicBool>,
    share: Share,
    beat_now: Arc<tokio::sync::Notify>,
}

async fn heartbeat_loop(beats: Beats, mut renewal: Renewal) {
    let Beats { host, client, identity, config, under_pressure: under_pressure_flag, share, beat_now } = beats;
    let hardware = tokio::task::spawn_blocking(wasmesh_probe::hardware).await.unwrap_or_default();
    let mut pressure = wasmesh_probe::PressureMonitor::new(config.pressure);
    let mut was_under_pressure = false;
    let mut failing = false;
    loop {
        let sample = pressure.sample();
        if sample.under_pressure != was_under_pressure {
            was_under_pressure = sample.under_pressure;
            tracing::warn!(
                under_pressure = sample.under_pressure,
                swap = sample.swap_pages_per_s,
                faults = sample.major_faults_per_s,
                "memory pressure changed"
            );
        }
        under_pressure_flag.store(sample.under_pressure, std::sync::atomic::Ordering::Relaxed);
        let beat =
            HostSnapshot::read(&host, sample.under_pressure).heartbeat(hardware.clone(), share_now(&share), sample);
        match client.heartbeat(&identity, &beat).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeats reach the registry again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("heartbeat failed: {e}");
            }
            Err(_) => {}
        }
        renewal.renew_if_due(&client, &identity, &config).await;
        tokio::select! {
            () = tokio::time::sleep(config.heartbeat_interval) => {}
            () = beat_now.notified() => {}
        }
    }
}

struct Sync {
    host: Arc<Host>,
    client: Client,
    components: PathBuf,
}

impl Sync {
    async fn run(self, mut revision: Option<u64>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match self.client.deployments(revision, Duration::from_secs(30)).await {
                Ok(d) if Some(d.revision) == revision => backoff = Duration::from_millis(500),
                Ok(d) => {
                    backoff = Duration::from_millis(500);
                    if self.apply(&d).await {
                        revision = Some(d.revision);
                    } else {
                        // Try the failed app again later, not in a tight loop.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot poll deployments, retrying in {backoff:?}: {e}");
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    /// Brings the host to `deployments`; true when every app loaded.
    async fn apply(&self, deployments: &Deployments) -> bool {
        let serving = self.host.apps();
        let mut ok = true;
        for app in &deployments.apps {
            if serving.get(&app.app) == Some(&app.version) {
                continue;
            }
            match self.load(app).await {
                Ok(()) => tracing::info!(app = %app.app, version = app.version, "now serving"),
                Err(e) => {
                    ok = false;
                    tracing::error!(app = %app.app, version = app.version, "cannot load this version, the previous one keeps serving: {e:#}");
                }
            }
        }
        let wanted: BTreeSet<&str> = deployments.apps.iter().map(|a| a.app.as_str()).collect();
        for (app, version) in serving {
            // Version 0: a local manifest (`--app`), not the registry's to remove.
            if version > 0 && !wanted.contains(app.as_str()) {
                self.host.unload_app(&app);
            }
        }
        ok
    }

    async fn load(&self, app: &wasmesh_api::wire::AppVersion) -> Result<(), AgentError> {
        let mut manifest = AppManifest::parse(&app.manifest)?;
        let mut files = BTreeMap::new();
        for (component, hash) in &app.components {
            if !wasmesh_api::wire::is_blake3_hex(hash) {
                return Err(AgentError::BadVersion(format!("component '{component}' has a malformed hash")));
            }
            let file = format!("{hash}.wasm");
            let path = self.components.join(&file);
            // A cached copy is checked against its hash before use (a component is a few
            // MB: milliseconds); a damaged one is fetched again.
            if !cached_intact(&path, hash).await {
                if path.is_file() {
                    tracing::warn!(%component, %hash, "cached component is damaged; fetching it again");
                    let _ = std::fs::remove_file(&path);
                }
                self.client.download(hash, &path, &NoProgress).await?;
            }
            files.insert(component.clone(), file);
        }
        for (name, spec) in manifest.component.iter_mut() {
            spec.source = files
                .get(name)
                .ok_or_else(|| AgentError::BadVersion(format!("component '{name}' has no artifact in this version")))?
                .into();
        }
        self.host.load_app_version(manifest, &self.components, Mount::Scoped, app.version).await?;
        Ok(())
    }
}
