//! `wasmesh up`: the demo fabric on the embedded defaults.

use super::{EngineArgs, cache_dir};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{ArtifactKind, Scope};
use wasmesh_host::{Host, HostConfig};

/// The demo app's manifest, built into the binary.
const DEMO_MANIFEST: &str = include_str!("../../../examples/demo/wasmesh.toml");
/// The test model `deploy/setup.sh` fetches.
const DEMO_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `wasmesh up`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh up --listen 127.0.0.1:8080\n  curl -s localhost:8080/fn/demo/chat -d '{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48}'"
)]
pub struct UpArgs {
    /// Address the host serves HTTP on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address the registry serves its API on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub registry_listen: SocketAddr,
    /// State of the demo fabric (registry database, artifacts, node identity).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Folder holding the built example components (guest-components/build.sh).
    #[arg(long, env = "WASMESH_COMPONENTS")]
    pub components: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs `wasmesh up`: a registry and a host in this process, the demo app
/// deployed through the registry like any other app.
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
    let data = args.data.clone().unwrap_or_else(|| cache_dir().join("up"));

    // The registry.
    let registry = wasmesh_registry::Registry::open(wasmesh_registry::RegistryConfig::new(data.join("registry")))
        .await
        .context("cannot open the demo registry")?;
    let admin = registry.create_admin_key_if_none().await?;
    let deploy_key = demo_key(&registry, &data, "up-deploy", Scope::Deploy).await?;
    let provider_key = demo_key(&registry, &data, "up-host", Scope::Provider).await?;
    let registry_listener = tokio::net::TcpListener::bind(args.registry_listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --registry-listen", args.registry_listen))?;
    let registry_url = format!("http://{}", registry_listener.local_addr()?);
    let registry_task = tokio::spawn(async move { registry.serve(registry_listener, super::shutdown_signal()).await });

    // Deploy the demo app through it.
    let client = wasmesh_client::Client::new(&registry_url, Some(deploy_key))?;
    let manifest = AppManifest::parse(DEMO_MANIFEST).context("the built-in demo manifest is invalid")?;
    let mut blobs = std::collections::BTreeMap::new();
    for (name, spec) in &manifest.component {
        let blob = client
            .upload_file(&components.join(&spec.source), ArtifactKind::Component, &wasmesh_client::NoProgress)
            .await
            .with_context(|| format!("cannot upload component '{name}'"))?;
        blobs.insert(name.clone(), blob.blake3);
    }
    let version = client.deploy_uploaded(&manifest.app.name, DEMO_MANIFEST, blobs).await?;

    // The host, joined to the registry.
    let engine = args.engine.build(vec![("smollm2".to_string(), model)])?;
    let host = Host::new(HostConfig::default(), engine)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("cannot create the Wasmtime engine")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", args.listen)
    })?;
    let addr = listener.local_addr()?;
    let agent = wasmesh_agent::Agent::start(
        host.clone(),
        wasmesh_agent::AgentConfig {
            registry: registry_url.clone(),
            key: provider_key,
            data_dir: data.join("host"),
            name: "up".into(),
            heartbeat_interval: std::time::Duration::from_secs(10),
            share: wasmesh_api::wire::ResourceShare {
                model_memory_bytes: args.engine.model_memory_mb << 20,
                max_concurrency: HostConfig::default().max_instances,
            },
            pressure: Default::default(),
            routers: Vec::new(),
        },
        std::time::Duration::from_secs(10),
    )
    .await?;
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
    println!("  registry  {registry_url}  (state in {})", data.display());
    if let Some(key) = admin {
        println!("  admin key (shown once): {key}");
    }
    println!("  node      {}  serving {} version {}", agent.node_id, version.app, version.version);
    for (app, path, component) in host.routes() {
        println!("  http://{addr}{path}  ({app}/{component})");
    }
    println!("  http://{addr}/health");
    println!();
    println!("Try:");
    println!(
        "  curl -s http://{addr}/fn/demo/chat -d '{{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48, \"temperature\": 0, \"chat\": true}}'"
    );
    println!("  curl -s http://{addr}/fn/demo/hello");
    println!();
    serving.await.context("server task failed")??;
    registry_task.abort();
    drop(agent);
    Ok(())
}

/// The demo's own key for `scope`, kept in the data folder so restarts reuse it.
async fn demo_key(
    registry: &wasmesh_registry::Registry,
    data: &std::path::Path,
    name: &str,
    scope: Scope,
) -> anyhow::Result<String> {
    let path = data.join(format!("{name}.key"));
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(key.trim().to_string());
    }
    let key = registry.create_key(name, &[scope]).await?;
    super::write_secret(&path, &key)?;
    Ok(key)
}
