//! `wasmesh host`: serve app manifests on this machine.

use super::EngineArgs;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_host::{Host, HostConfig};

/// Arguments of `wasmesh host`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh host --app ./wasmesh.toml --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf --listen 127.0.0.1:8080"
)]
pub struct HostArgs {
    /// An app manifest (wasmesh.toml) to serve (repeatable).
    #[arg(long = "app", value_name = "PATH", required = true)]
    pub apps: Vec<PathBuf>,
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
    host.set_ready(true);
    tracing::info!(%addr, engine = %host.inference().summary(), "host ready");
    for (app, path, component) in host.routes() {
        println!("  http://{addr}{path}  ({app}/{component})");
    }
    host.serve_with_shutdown(listener, super::shutdown_signal()).await?;
    Ok(())
}
