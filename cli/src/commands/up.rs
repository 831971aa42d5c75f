//! `wasmesh up`: the demo fabric on the embedded defaults.

use super::{EngineArgs, cache_dir};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_api::AppManifest;
use wasmesh_host::{Host, HostConfig};

/// The demo app's manifest, built into the binary.
const DEMO_MANIFEST: &str = include_str!("../../../examples/demo/wasmesh.toml");
/// The test model `deploy/setup.sh` fetches.
const DEMO_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `wasmesh up`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh up --listen 127.0.0.1:8080\n  curl -s localhost:8080/chat -d '{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48}'"
)]
pub struct UpArgs {
    /// Address to serve HTTP on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder holding the built example components (guest-components/build.sh).
    #[arg(long, env = "WASMESH_COMPONENTS")]
    pub components: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs `wasmesh up`.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let components = args.components.clone().unwrap_or_else(|| cache_dir().join("components"));
    if !components.join("chat.wasm").is_file() {
        bail!(
            "the example components are not built in {}: run `bash guest-components/build.sh` (or `bash deploy/demo.sh`, which does everything)",
            components.display()
        );
    }
    let model = cache_dir().join(DEMO_MODEL);
    if args.engine.models.is_empty() && !model.is_file() {
        bail!("the demo model is missing at {}: run `bash deploy/setup.sh`", model.display());
    }
    let engine = args.engine.build(vec![("smollm2".to_string(), model)])?;
    let host = Host::new(HostConfig::default(), engine)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot create the Wasmtime engine")?;
    let manifest = AppManifest::parse(DEMO_MANIFEST).context("the built-in demo manifest is invalid")?;
    host.load_app(manifest, &components).await.context("cannot load the demo app")?;

    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let serving = {
        let host = host.clone();
        tokio::spawn(async move { host.serve_with_shutdown(listener, super::shutdown_signal()).await })
    };
    for model in host.inference().models() {
        tracing::info!(%model, "loading model");
        host.inference().preload(&model).await.with_context(|| format!("cannot load model '{model}'"))?;
    }
    host.set_ready(true);
    println!();
    println!("wasmesh is up ({})", host.inference().summary());
    for (app, path, component) in host.routes() {
        println!("  http://{addr}{path}  ({app}/{component})");
    }
    println!("  http://{addr}/health");
    println!();
    println!("Try:");
    println!(
        "  curl -s http://{addr}/chat -d '{{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48, \"temperature\": 0, \"chat\": true}}'"
    );
    println!("  curl -s http://{addr}/hello");
    println!();
    serving.await.context("server task failed")??;
    Ok(())
}
