//! `wasmesh host`: serve app manifests on this machine.

use super::EngineArgs;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use wasmesh_runtime::HostConfig;

/// Arguments of `wasmesh host`.
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    args_override_self = true,
    after_help = "Examples:\n  wasmesh host --app ./wasmesh.toml --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf --listen 127.0.0.1:8080\n  wasmesh host --registry http://127.0.0.1:7070 --key wsk_... --model smollm2   # fetched from the registry, verified\n\nWith --registry the host registers (identity in --data), sends heartbeats and serves every app\nthe registry deploys under /fn/APP/..., switching versions without dropping requests."
)]
pub struct HostArgs {
    /// Control a running host (through its control socket in --data).
    #[command(subcommand)]
    pub control: Option<super::control::HostControl>,
    /// A config file (`wasmesh provider install` writes one): its settings apply as if
    /// given as flags before the others, and `wasmesh host set` writes changes back.
    #[arg(long, env = "WASMESH_HOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An app manifest (wasmesh.toml) to serve at its own paths (repeatable).
    #[arg(long = "app", value_name = "PATH", required_unless_present = "registry")]
    pub apps: Vec<PathBuf>,
    /// Join the fabric through this registry.
    #[arg(long, env = "WASMESH_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,
    /// A key with the `provider` scope (with --registry).
    #[arg(long, env = "WASMESH_KEY", value_name = "KEY", hide_env_values = true, requires = "registry")]
    pub key: Option<String>,
    /// Data directory: node identity, certificate, weight cache (`models/`).
    #[arg(long, env = "WASMESH_HOST_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Disk space for model weights fetched from the fabric, in MiB: when a new model
    /// needs room, the least recently used models this host does not serve are
    /// deleted first.
    #[arg(long, env = "WASMESH_CACHE_MB", default_value_t = 65_536, value_name = "MIB")]
    pub cache_mb: u64,
    /// Where BitTorrent listens for peers fetching weights this host holds (port 0:
    /// any free port).
    #[arg(long, env = "WASMESH_P2P_LISTEN", default_value = "0.0.0.0:0", value_name = "ADDR")]
    pub p2p_listen: SocketAddr,
    /// Fetch weights from the object store only (through the registry), without
    /// peers, and seed nothing.
    #[arg(long)]
    pub no_p2p: bool,
    /// Upload budget for seeding weights to other hosts, in KiB/s (0: unlimited;
    /// at least 16).
    #[arg(long, env = "WASMESH_SEED_KIB_S", default_value_t = 0, value_name = "KIB_S")]
    pub seed_kib_s: u32,
    /// A swarm slower than --p2p-min-kib-s for this many seconds counts as stalled:
    /// the object store serves the rest.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub p2p_stall_secs: u64,
    /// The rate below which a swarm counts as stalled, in KiB/s.
    #[arg(long, default_value_t = 1024, value_name = "KIB_S")]
    pub p2p_min_kib_s: u64,
    /// This node's label in `wasmesh nodes ls` (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// A router to serve through, as its QUIC address (repeatable; needs --registry,
    /// which issues the certificate the link uses).
    #[arg(long = "router", value_name = "ADDR", requires = "registry")]
    pub routers: Vec<SocketAddr>,
    /// Connections to each router, each served by a thread of its own (0: one per four
    /// cores, at least one, at most 8). A request's packets, its stream and its guest stay
    /// on its lane's thread: more lanes give CPU-heavy components more cores, fewer cost
    /// less per request.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub link_lanes: usize,
    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Instances that may run at once.
    #[arg(long, default_value_t = 256)]
    pub max_instances: u32,
    /// The longest deadline any component may ask for (`limits.timeout_ms`); larger asks
    /// are lowered to it.
    #[arg(long, default_value_t = 300_000, value_name = "MS")]
    pub cap_timeout_ms: u64,
    /// The most linear memory any component instance may ask for (`limits.memory_mb`).
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub cap_memory_mb: u64,
    /// The largest request body any component may accept (`limits.max_request_bytes`).
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub cap_request_bytes: u64,
    /// The largest response body any component may write (`limits.max_response_bytes`).
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub cap_response_bytes: u64,
    /// Requests of one app this node runs at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub cap_instances_per_app: u32,
    /// Memory all component instances together may hold (linear memories and wasi:nn
    /// tensors); a request that would pass it gets 503 with Retry-After. Default: half
    /// of this machine's memory.
    #[arg(long, value_name = "MIB")]
    pub instance_memory_mb: Option<u64>,
    /// What one app's instances together may hold of --instance-memory-mb, so one
    /// tenant cannot take it all. Default: a quarter of it.
    #[arg(long, value_name = "MIB")]
    pub cap_app_memory_mb: Option<u64>,
    /// Cores one app's guests may keep busy together (fractions allowed); a guest past
    /// its app's share sleeps until the share refills, so one tenant's busy loops leave
    /// cores to the others and to inference. Default: all cores but one, at least one.
    #[arg(long, value_name = "CORES")]
    pub cap_app_cores: Option<f64>,
    /// How long a request waits for a model or adapter this host must fetch first (with
    /// --registry); past it the caller gets 503 with Retry-After while the fetch goes on.
    #[arg(long, env = "WASMESH_FETCH_WAIT_SECS", default_value_t = 120, value_name = "SECS")]
    pub fetch_wait_secs: u64,
    /// Load every granted model before reporting ready.
    #[arg(long)]
    pub preload: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs `wasmesh host`: maps the flags onto [`wasmesh_agent::NodeConfig`].
pub async fn run(args: HostArgs) -> anyhow::Result<()> {
    if let Some(control) = args.control {
        return super::control::run(control).await;
    }
    let data = args.data.clone().unwrap_or_else(default_data_dir);
    let name = args.name.clone().unwrap_or_else(wasmesh_agent::hostname);
    let (fetch, agent) = match &args.registry {
        Some(registry) => {
            let key = args.key.clone().context("--registry needs --key (a key with the provider scope)")?;
            let fetch = wasmesh_agent::FetchConfig {
                registry: registry.clone(),
                key: key.clone(),
                data_dir: data.clone(),
                name: name.clone(),
                cache_bytes: args.cache_mb << 20,
                no_p2p: args.no_p2p,
                p2p_listen: args.p2p_listen,
                upload_bps: (args.seed_kib_s > 0).then(|| args.seed_kib_s.saturating_mul(1024)),
                stall: wasmesh_weights::StallPolicy {
                    min_rate: args.p2p_min_kib_s << 10,
                    window: std::time::Duration::from_secs(args.p2p_stall_secs.max(1)),
                },
            };
            let agent = wasmesh_agent::AgentConfig {
                registry: registry.clone(),
                key,
                data_dir: data.clone(),
                name,
                heartbeat_interval: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
                share: wasmesh_api::wire::ResourceShare {
                    model_memory_bytes: args.engine.model_memory_mb << 20,
                    max_concurrency: args.max_instances,
                },
                pressure: Default::default(),
                routers: args.routers.clone(),
                link_lanes: args.link_lanes,
            };
            (Some(fetch), Some(agent))
        }
        None => (None, None),
    };
    // `--model NAME` (no path) comes from the registry before the host is ready; the
    // models served stay leased (never evicted) while it runs.
    let models: Vec<String> = if fetch.is_some() {
        args.engine.models.iter().filter(|m| !m.contains('=')).cloned().collect()
    } else {
        Vec::new()
    };
    let instance_memory_bytes = match args.instance_memory_mb {
        Some(mb) => mb.max(1) << 20,
        None => match wasmesh_probe::hardware().memory_bytes / 2 {
            0 => HostConfig::default().instance_memory_bytes,
            half => half,
        },
    };
    let config = wasmesh_agent::NodeConfig {
        fetch,
        agent,
        models,
        fetch_wait: std::time::Duration::from_secs(args.fetch_wait_secs.max(1)),
        host: HostConfig {
            max_instances: args.max_instances,
            caps: wasmesh_api::LimitCaps {
                timeout_ms: args.cap_timeout_ms,
                memory_mb: args.cap_memory_mb,
                max_request_bytes: args.cap_request_bytes,
                max_response_bytes: args.cap_response_bytes,
                instances_per_app: args.cap_instances_per_app.max(1),
            },
            instance_memory_bytes,
            app_memory_bytes: args.cap_app_memory_mb.map_or(instance_memory_bytes / 4, |mb| mb.max(1) << 20),
            app_cpu_cores: args
                .cap_app_cores
                .filter(|c| c.is_finite() && *c > 0.0)
                .unwrap_or_else(wasmesh_runtime::default_app_cores),
            ..Default::default()
        },
        apps: args.apps.clone(),
        preload: args.preload,
        listen: args.listen,
        control: Some(wasmesh_agent::ControlConfig {
            socket: data.join(wasmesh_api::wire::CONTROL_SOCKET),
            config_file: args.config.clone(),
            registry: args.registry.clone(),
        }),
    };
    let engine_args = &args.engine;
    let node = wasmesh_agent::Node::start(
        config,
        |fetched| {
            let mut engine_args = engine_args.clone();
            for (name, path) in &fetched {
                for model in engine_args.models.iter_mut().filter(|m| *m == name) {
                    *model = format!("{name}={}", path.display());
                }
            }
            engine_args.build(Vec::new()).map_err(|e| format!("{e:#}"))
        },
        |name| Arc::new(LogProgress::new(name)) as Arc<dyn wasmesh_client::Progress>,
    )
    .await?;
    for (app, path, component) in node.host.routes() {
        println!("  http://{}{path}  ({app}/{component})", node.addr);
    }
    // A stop (SIGTERM from the service manager, Ctrl-C) lets running requests finish,
    // for at most the longest deadline a component may have.
    node.serve(super::shutdown_signal(), std::time::Duration::from_millis(args.cap_timeout_ms)).await?;
    Ok(())
}

/// Where a host keeps its identity, certificate and caches unless told otherwise
/// (`--data`, `WASMESH_HOST_DATA`): `~/.local/share/wasmesh/host`.
pub fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/wasmesh/host")
}

/// Transfer progress in the log: a line every 10%.
struct LogProgress {
    label: String,
    state: std::sync::Mutex<(u64, u64, u64)>,
}

impl LogProgress {
    fn new(label: &str) -> Self {
        Self { label: label.to_string(), state: std::sync::Mutex::new((0, 0, 0)) }
    }
}

impl wasmesh_client::Progress for LogProgress {
    fn start(&self, phase: &str, total: u64, done: u64) {
        *self.state.lock().expect("progress lock") = (total, done, done * 10 / total.max(1));
        tracing::info!(model = %self.label, phase, total_mib = total >> 20, done_mib = done >> 20, "transfer");
    }
    fn advance(&self, bytes: u64) {
        let mut s = self.state.lock().expect("progress lock");
        s.1 += bytes;
        let tenth = s.1 * 10 / s.0.max(1);
        if tenth > s.2 {
            s.2 = tenth;
            tracing::info!(model = %self.label, percent = tenth * 10, "transfer");
        }
    }
    fn finish(&self) {}
}
