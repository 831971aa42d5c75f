//! `wasmesh up`: the demo fabric on the embedded defaults.

use super::{EngineArgs, cache_dir};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{ArtifactKind, Scope};
use wasmesh_runtime::HostConfig;

/// The demo app's manifest, built into the binary.
const DEMO_MANIFEST: &str = include_str!("../../../examples/demo/wasmesh.toml");
/// The test model `deploy/setup.sh` fetches.
const DEMO_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Arguments of `wasmesh up`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh up\n  KEY=$(cat ~/.cache/wasmesh/up/up-invoke.key)\n  curl -s localhost:8080/fn/demo/chat -H \"Authorization: Bearer $KEY\" -d '{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48}'"
)]
pub struct UpArgs {
    /// Address the router serves callers on (HTTP).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address the registry serves its API on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub registry_listen: SocketAddr,
    /// Address hosts dial the router on (QUIC).
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic: SocketAddr,
    /// The hosts' own HTTP addresses, one host each (requests straight to one host).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8081,127.0.0.1:8082")]
    pub hosts: Vec<SocketAddr>,
    /// State of the demo fabric (registry database, artifacts, identities, keys).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Folder holding the built example components (guest-components/build.sh).
    #[arg(long, env = "WASMESH_COMPONENTS")]
    pub components: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The built-in OpenAI API app.
const OPENAI_MANIFEST: &str = "[app]\nname = \"openai\"\ndescription = \"The OpenAI-compatible API (/v1/...) routers send here\"\n\n[component.openai]\nsource = \"openai.wasm\"\nmodels = [\"smollm2\"]\n\n[[route]]\npath = \"/v1/...\"\ncomponent = \"openai\"\n";

/// Runs `wasmesh up`: a registry, a router and two hosts in this process, on
/// loopback; the demo and OpenAI apps deployed through the registry like any
/// other, and answered through the router.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let components = args.components.clone().unwrap_or_else(|| cache_dir().join("components"));
    for c in ["chat.wasm", "openai.wasm"] {
        if !components.join(c).is_file() {
            bail!(
                "the example components are not built in {}: run `bash guest-components/build.sh` (or `bash deploy/demo.sh`, which does everything)",
                components.display()
            );
        }
    }
    let model = cache_dir().join(DEMO_MODEL);
    if args.engine.models.is_empty() && !model.is_file() {
        bail!("the demo model is missing at {}: run `bash deploy/setup.sh`", model.display());
    }
    if args.hosts.is_empty() {
        bail!("--hosts needs at least one address");
    }
    let data = args.data.clone().unwrap_or_else(|| cache_dir().join("up"));

    // The registry.
    let registry = wasmesh_registry::Registry::open(wasmesh_registry::RegistryConfig::new(data.join("registry")))
        .await
        .context("cannot open the demo registry")?;
    let admin = registry.create_admin_key_if_none().await?;
    let deploy_key = demo_key(&registry, &data, "up-deploy", Scope::Deploy).await?;
    let provider_key = demo_key(&registry, &data, "up-host", Scope::Provider).await?;
    let router_key = demo_key(&registry, &data, "up-router", Scope::Router).await?;
    let invoke_key = demo_key(&registry, &data, "up-invoke", Scope::Invoke).await?;
    let registry_listener = tokio::net::TcpListener::bind(args.registry_listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another with --registry-listen", args.registry_listen))?;
    let registry_url = format!("http://{}", registry_listener.local_addr()?);
    let registry_task = tokio::spawn(async move { registry.serve(registry_listener, std::future::pending()).await });

    // Deploy the demo and OpenAI apps through it.
    let client = wasmesh_client::Client::new(&registry_url, Some(deploy_key))?;
    let mut deployed = Vec::new();
    for text in [DEMO_MANIFEST, OPENAI_MANIFEST] {
        let manifest = AppManifest::parse(text).context("a built-in manifest is invalid")?;
        let mut blobs = std::collections::BTreeMap::new();
        for (name, spec) in &manifest.component {
            let blob = client
                .upload_file(&components.join(&spec.source), ArtifactKind::Component, &wasmesh_client::NoProgress)
                .await
                .with_context(|| format!("cannot upload component '{name}'"))?;
            blobs.insert(name.clone(), blob.blake3);
        }
        deployed.push(client.deploy_uploaded(&manifest.app.name, text, blobs).await?);
    }

    // The router.
    let mut router_config =
        wasmesh_router::RouterConfig::new(registry_url.clone(), router_key, data.join("router"), args.quic);
    router_config.name = "up-router".into();
    let router = std::sync::Arc::new(wasmesh_router::Router::start(router_config).await?);
    let router_listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", args.listen)
    })?;
    let addr = router_listener.local_addr()?;

    // Two hosts (one llama.cpp engine between them: the model loads once), each
    // joined to the registry and dialling the router.
    let engine = args.engine.build(vec![("smollm2".to_string(), model)])?;
    let mut nodes = Vec::new();
    for (i, listen) in args.hosts.iter().enumerate() {
        let config = wasmesh_agent::NodeConfig {
            fetch: None,
            agent: Some(wasmesh_agent::AgentConfig {
                registry: registry_url.clone(),
                key: provider_key.clone(),
                data_dir: data.join(format!("host{i}")),
                name: format!("up-host-{i}"),
                heartbeat_interval: std::time::Duration::from_secs(10),
                share: wasmesh_api::wire::ResourceShare {
                    model_memory_bytes: args.engine.model_memory_mb << 20,
                    max_concurrency: HostConfig::default().max_instances,
                },
                pressure: Default::default(),
                routers: vec![args.quic],
                link_lanes: 0,
            }),
            models: Vec::new(),
            fetch_wait: std::time::Duration::from_secs(120),
            host: HostConfig::default(),
            apps: Vec::new(),
            // The engine is shared: the first node loads the model, the second finds it loaded.
            preload: true,
            listen: *listen,
            control: None,
        };
        let node = wasmesh_agent::Node::start(
            config,
            |_| Ok(engine.clone()),
            |_| std::sync::Arc::new(wasmesh_client::NoProgress) as std::sync::Arc<dyn wasmesh_client::Progress>,
        )
        .await
        .with_context(|| format!("cannot start host {i} on {listen}; pick others with --hosts A,B"))?;
        nodes.push(node);
    }
    let hosts: Vec<(String, std::net::SocketAddr)> =
        nodes.iter().map(|n| (n.node_id().unwrap_or("-").to_string(), n.addr)).collect();
    let serving: Vec<_> =
        nodes.into_iter().map(|n| tokio::spawn(n.serve(std::future::pending(), std::time::Duration::ZERO))).collect();
    // Ready when the router sees both hosts.
    let started = std::time::Instant::now();
    while router.ready_hosts() < hosts.len() && started.elapsed() < std::time::Duration::from_secs(20) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    println!();
    println!("wasmesh is up ({})", engine.summary());
    println!("  router    http://{addr}  (QUIC {} for hosts)", args.quic);
    println!("  registry  {registry_url}  (state in {})", data.display());
    if let Some(key) = admin {
        println!("  admin key (shown once): {key}");
    }
    for (node_id, host_addr) in &hosts {
        println!("  host      http://{host_addr}  node {node_id}");
    }
    for v in &deployed {
        println!("  app       {} version {}", v.app, v.version);
    }
    let key_file = data.join("up-invoke.key");
    println!("  caller key ({}): {invoke_key}", key_file.display());
    println!();
    println!("Try:");
    println!("  KEY=$(cat {})", key_file.display());
    println!(
        "  curl -s http://{addr}/fn/demo/chat -H \"Authorization: Bearer $KEY\" -d '{{\"prompt\": \"What is WebAssembly?\", \"max_tokens\": 48, \"temperature\": 0, \"chat\": true}}'"
    );
    println!("  curl -s http://{addr}/fn/demo/hello -H \"Authorization: Bearer $KEY\"");
    println!(
        "  curl -s http://{addr}/v1/chat/completions -H \"Authorization: Bearer $KEY\" -d '{{\"model\": \"smollm2\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hi!\"}}]}}'"
    );
    println!();
    let result = router.serve(router_listener, super::shutdown_signal()).await;
    registry_task.abort();
    for s in serving {
        s.abort();
    }
    result.context("router failed")
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
