//! The node's control socket: `DATA/control.sock`, a Unix socket only the node's own
//! user may open (mode 0600), never the public port. `wasmesh host pause|resume|status|set`
//! send one JSON line ([`ControlRequest`]) and read one back ([`ControlAnswer`]).
//!
//! Pausing flips the runtime's flag: the next report (within 100 ms) tells every router
//! the node is not ready, a request that raced it is refused with a retryable 503, and
//! requests running finish. A heartbeat goes at once, so the registry (and the
//! dashboard) shows the node paused.

use crate::Agent;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wasmesh_api::wire::{ControlAnswer, ControlRequest, HostState, HostStatus};
use wasmesh_runtime::Host;

/// Where the control socket listens, and the config file `set` writes to.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The socket's path (`DATA/control.sock`).
    pub socket: PathBuf,
    /// The config file the node started from (`wasmesh host --config`), if any: a
    /// `set` is written there too, so it outlives a restart.
    pub config_file: Option<PathBuf>,
    /// The registry the node joined, for `status`.
    pub registry: Option<String>,
}

/// What the control socket acts on.
pub(crate) struct Controlled {
    pub(crate) host: Arc<Host>,
    pub(crate) agent: Option<AgentHandle>,
    /// The weights fetcher (its BitTorrent session's upload budget), with a registry.
    pub(crate) fetcher: Option<crate::Fetcher>,
    pub(crate) config: ControlConfig,
}

/// The parts of a running agent the control socket needs.
pub(crate) struct AgentHandle {
    pub(crate) node_id: String,
    pub(crate) share: crate::Share,
    pub(crate) client: wasmesh_client::Client,
    pub(crate) beat_now: Arc<tokio::sync::Notify>,
}

impl AgentHandle {
    pub(crate) fn of(agent: &Agent) -> Self {
        Self {
            node_id: agent.node_id.clone(),
            share: agent.share.clone(),
            client: agent.client.clone(),
            beat_now: agent.beat_now.clone(),
        }
    }
}

/// Binds the socket (replacing a stale one a crashed node left) and serves it until
/// the task is dropped.
pub(crate) fn listen(controlled: Controlled) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = controlled.config.socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // A live node answers on it: two nodes must not share a data directory.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another node is running with this data directory ({} answers); give each node its own --data",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    set_private(&path)?;
    let controlled = Arc::new(controlled);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let controlled = controlled.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(&controlled, stream).await {
                    tracing::debug!("control socket connection failed: {e}");
                }
            });
        }
    }))
}

fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

async fn serve_one(controlled: &Controlled, stream: tokio::net::UnixStream) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One command of at most 4 KiB.
    let n = BufReader::new(tokio::io::AsyncReadExt::take(read, 4096)).read_line(&mut line).await?;
    let answer = match serde_json::from_str::<ControlRequest>(line.trim()) {
        Ok(request) if n > 0 => controlled.run(request).await,
        _ => ControlAnswer {
            ok: false,
            message: "not a control command: send one JSON line such as {\"op\":\"status\"}".into(),
            status: None,
        },
    };
    let mut out = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

impl Controlled {
    async fn run(&self, request: ControlRequest) -> ControlAnswer {
        let (ok, message) = match request {
            ControlRequest::Pause => {
                let was = self.host.set_paused(true);
                self.beat();
                let running = self.host.in_flight();
                tracing::info!(running, "paused by the provider");
                let message = if was {
                    "already paused".to_string()
                } else {
                    format!(
                        "paused: routers stop sending new requests at once; {running} running request(s) finish; `wasmesh host resume` brings it back"
                    )
                };
                (true, message)
            }
            ControlRequest::Resume => {
                let was = self.host.set_paused(false);
                self.beat();
                tracing::info!("resumed by the provider");
                (true, if was { "resumed: taking requests again".into() } else { "was not paused".into() })
            }
            ControlRequest::Status => (true, "ok".into()),
            ControlRequest::Set { key, value } => match self.set(&key, &value) {
                Ok(message) => {
                    self.beat();
                    (true, message)
                }
                Err(message) => (false, message),
            },
        };
        ControlAnswer { ok, message, status: Some(self.status().await) }
    }

    fn beat(&self) {
        if let Some(agent) = &self.agent {
            agent.beat_now.notify_one();
        }
    }

    /// Applies `key=value` now, and writes it to the config file when there is one.
    fn set(&self, key: &str, value: &str) -> Result<String, String> {
        let message = match key {
            "memory" => {
                let total = wasmesh_probe::memory_bytes();
                let bytes = wasmesh_api::share::parse_memory(value, total)?;
                let evicted = self.host.inference().set_memory_budget(bytes).map_err(|e| e.to_string())?;
                if let Some(agent) = &self.agent {
                    agent.share.write().unwrap_or_else(|p| p.into_inner()).model_memory_bytes = bytes;
                }
                let evicted =
                    if evicted.is_empty() { String::new() } else { format!("; evicted {} (idle)", evicted.join(", ")) };
                format!("model memory is now {} MiB{evicted}", bytes >> 20)
            }
            "requests" => {
                let n = wasmesh_api::share::parse_count("request count", value)?;
                let Some(agent) = &self.agent else {
                    return Err("requests is the share a node lends to routers: it needs --registry".into());
                };
                agent.share.write().unwrap_or_else(|p| p.into_inner()).max_concurrency = n;
                format!("routers now send at most {n} requests at once")
            }
            "upload_kib_s" => {
                let kib: u32 =
                    value.trim().parse().map_err(|_| format!("'{value}' is not a number of KiB/s (0: unlimited)"))?;
                let Some(fetcher) = &self.fetcher else {
                    return Err("this node fetches no weights from a registry: there is no seeding to budget".into());
                };
                fetcher.set_upload_kib_s(kib)?;
                if kib == 0 {
                    "seeding upload is now unlimited".into()
                } else {
                    format!("seeding upload is now at most {kib} KiB/s")
                }
            }
            "cache" => {
                let bytes = wasmesh_api::share::parse_memory(value, 0)?;
                let Some(fetcher) = &self.fetcher else {
                    return Err("this node fetches no weights from a registry: it has no weight cache".into());
                };
                let evicted = fetcher.set_cache_bytes(bytes)?;
                format!("the weight cache may now hold {} MiB; evicted {evicted} file(s) not in use", bytes >> 20)
            }
            "threads" => {
                // llama-cpp-2 does not expose llama_set_n_threads on a live context (and its
                // context is no single pointer the FFI module could hand to llama.cpp).
                wasmesh_api::share::parse_count("thread count", value)?;
                if self.config.config_file.is_none() {
                    return Err("threads takes effect at the next start: run the host from a config file (wasmesh provider install) to keep it".into());
                }
                "threads is written to the config file and takes effect at the next restart".into()
            }
            _ => {
                return Err(format!(
                    "unknown setting '{key}': memory (50% or 8GiB), requests, upload_kib_s, threads or cache (64GiB)"
                ));
            }
        };
        if let Some(file) = &self.config.config_file {
            write_setting(file, key, value)
                .map_err(|e| format!("{message}, but the config file was not updated: {e}"))?;
        }
        tracing::info!(%key, %value, "share changed by the provider");
        Ok(message)
    }

    async fn status(&self) -> HostStatus {
        let engine = self.host.inference();
        let models = crate::snapshot::model_states(engine.as_ref());
        let state = if self.host.is_paused() {
            HostState::Paused
        } else if self.host.is_ready() {
            HostState::Ready
        } else {
            HostState::NotReady
        };
        let share = self.agent.as_ref().map(|a| crate::share_now(&a.share));
        let (earnings, earnings_error) = match &self.agent {
            Some(agent) => match tokio::time::timeout(Duration::from_secs(3), earnings(&agent.client)).await {
                Ok(Ok(balance)) => (Some(balance), None),
                Ok(Err(e)) => (None, Some(e)),
                Err(_) => (None, Some("the registry did not answer in 3 s".into())),
            },
            None => (None, Some("not joined to a registry".into())),
        };
        HostStatus {
            state,
            node_id: self.agent.as_ref().map(|a| a.node_id.clone()),
            registry: self.config.registry.clone(),
            in_flight: self.host.in_flight(),
            served: self.host.served(),
            max_requests: share.as_ref().map_or(0, |s| s.max_concurrency),
            model_memory_bytes: engine.memory_budget().or(share.map(|s| s.model_memory_bytes)).unwrap_or(0),
            model_memory_used_bytes: engine.memory_used(),
            models,
            earnings,
            earnings_error,
            config: self.config.config_file.as_ref().map(|p| p.display().to_string()),
        }
    }
}

async fn earnings(client: &wasmesh_client::Client) -> Result<wasmesh_api::wire::Balance, String> {
    let me = client.whoami().await.map_err(|e| e.to_string())?;
    client.balance(&me.account).await.map_err(|e| e.to_string())
}

/// Sets `key` in the TOML config `file` (counts as integers), keeping the rest, through a
/// temporary file and a rename so a crash never leaves half a file.
fn write_setting(file: &Path, key: &str, value: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let mut table: toml::Table = text.parse().map_err(std::io::Error::other)?;
    let item = match value.parse::<i64>() {
        Ok(n) if key != "memory" && key != "cache" => toml::Value::Integer(n),
        _ => toml::Value::String(value.to_string()),
    };
    table.insert(key.to_string(), item);
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, toml::to_string(&table).map_err(std::io::Error::other)?)?;
    set_private(&tmp)?;
    std::fs::rename(&tmp, file)
}
