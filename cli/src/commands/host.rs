//! `wasmesh host`: serve app manifests on this machine.

use super::EngineArgs;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_host::{Host, HostConfig};

/// Arguments of `wasmesh host`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  wasmesh host --app ./wasmesh.toml --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf --listen 127.0.0.1:8080\n  wasmesh host --registry http://127.0.0.1:7070 --key wsk_... --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf\n\nWith --registry the host registers (identity in --data), sends heartbeats and serves every app\nthe registry deploys under /fn/APP/..., switching versions without dropping requests."
)]
pub struct HostArgs {
    /// An app manifest (wasmesh.toml) to serve at its own paths (repeatable).
    #[arg(long = "app", value_name = "PATH", required_unless_present = "registry")]
    pub apps: Vec<PathBuf>,
    /// Join the fabric through this registry.
    #[arg(long, env = "WASMESH_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,
    /// A key with the `provider` scope (with --registry).
    #[arg(long, env = "WASMESH_KEY", value_name = "KEY", hide_env_values = true, requires = "registry")]
    pub key: Option<String>,
    /// Data directory: node identity, certificate, component cache.
    #[arg(long, env = "WASMESH_HOST_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
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
    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Instances that may run at once.
    #[arg(long, default_value_t = 256)]
    pub max_instances: u32,
    /// Load every granted model before reporting ready.
    #[arg(long)]
    pub preload: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs `wasmesh host`.
pub async fn run(args: HostArgs) -> anyhow::Result<()> {
    let engine = args.engine.build(Vec::new())?;
    let host = Host::new(HostConfig { max_instances: args.max_instances, ..Default::default() }, engine)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot create the Wasmtime engine")?;
    for app in &args.apps {
        host.load_app_file(app).await.with_context(|| format!("cannot load app {}", app.display()))?;
    }
    if args.preload {
        for model in host.inference().models() {
            host.inference().preload(&model).await.with_context(|| format!("cannot load model '{model}'"))?;
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let _agent = match &args.registry {
        Some(registry) => {
            let key = args.key.clone().context("--registry needs --key (a key with the provider scope)")?;
            let data = args.data.clone().unwrap_or_else(|| {
                let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                home.join(".local/share/wasmesh/host")
            });
            let config = wasmesh_agent::AgentConfig {
                registry: registry.clone(),
                key,
                data_dir: data,
                name: args.name.clone().unwrap_or_else(wasmesh_agent::hostname),
                heartbeat_interval: std::time::Duration::from_secs(args.heartbeat_secs.max(1)),
                share: wasmesh_api::wire::ResourceShare {
                    model_memory_bytes: args.engine.model_memory_mb << 20,
                    max_concurrency: args.max_instances,
                },
                pressure: Default::default(),
                routers: args.routers.clone(),
            };
            Some(wasmesh_agent::Agent::start(host.clone(), config, std::time::Duration::from_secs(60)).await?)
        }
        None => None,
    };
    host.set_ready(true);
    tracing::info!(%addr, engine = %host.inference().summary(), "host ready");
    for (app, path, component) in host.routes() {
        println!("  http://{addr}{path}  ({app}/{component})");
    }
    host.serve_with_shutdown(listener, super::shutdown_signal()).await?;
    Ok(())
}
