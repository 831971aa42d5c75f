//! One module per subcommand, plus what they share.

pub mod accounts;
pub mod client;
pub mod control;
pub mod credits;
pub mod host;
pub mod nodes;
pub mod provider;
pub mod registry;
pub mod router;
pub mod up;

use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;
use wasmesh_engine::InferenceEngine;

/// Logs to stderr; `RUST_LOG` overrides the default filter.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn,wasmtime=warn,cranelift=warn")
    });
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only on a terminal, not in log files.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(wasmesh_weights::bad_piece_layer())
        .init();
}

/// wasmesh's cache folder: `$WASMESH_CACHE`, or `~/.cache/wasmesh`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WASMESH_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("wasmesh")
}

/// Options that pick and size the inference engine, shared by `up` and `host`.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// A model this node serves, as NAME=PATH.gguf, or NAME alone to fetch it from the
    /// registry (with --registry) (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH")]
    pub models: Vec<String>,
    /// A LoRA adapter, as NAME=MODEL:PATH.gguf (repeatable). Components use it with
    /// `"lora": NAME` in their options, when granted "MODEL:NAME".
    #[arg(long = "lora", value_name = "NAME=MODEL:PATH")]
    pub loras: Vec<String>,
    /// Requests one model serves at once (continuous batching); more wait their turn.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Slots beyond --slots kept for apps that hold none, so one app's flood never
    /// makes another wait for a generation to end (each costs one more KV stream).
    #[arg(long, default_value_t = 1)]
    pub spare_slots: u32,
    /// Memory for loaded models, in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub model_memory_mb: u64,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Layers to offload to the GPU (default: all when a GPU backend is built in).
    #[arg(long)]
    pub gpu_layers: Option<u32>,
    /// Context size in tokens.
    #[arg(long, default_value_t = 4096)]
    pub ctx_size: u32,
}

impl EngineArgs {
    /// The models as (name, path) pairs, with a clear error for a bad one.
    pub fn parse_models(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        self.models
            .iter()
            .map(|m| {
                let Some((name, path)) = m.split_once('=') else {
                    bail!("--model takes NAME=PATH.gguf (or NAME alone with --registry, to fetch it), got '{m}'");
                };
                if name.is_empty() {
                    bail!("--model '{m}' has an empty name");
                }
                Ok((name.to_string(), PathBuf::from(path)))
            })
            .collect()
    }

    /// Builds the engine this binary was compiled with.
    pub fn build(&self, default_models: Vec<(String, PathBuf)>) -> anyhow::Result<Arc<dyn InferenceEngine>> {
        let mut models = self.parse_models()?;
        if models.is_empty() {
            models = default_models;
        }
        build_engine(self, models)
    }
}

#[cfg(feature = "llama")]
fn build_engine(args: &EngineArgs, models: Vec<(String, PathBuf)>) -> anyhow::Result<Arc<dyn InferenceEngine>> {
    let mut loras = std::collections::BTreeMap::new();
    for l in &args.loras {
        let Some((name, rest)) = l.split_once('=') else {
            bail!("--lora takes NAME=MODEL:PATH.gguf, got '{l}'");
        };
        let Some((base, path)) = rest.split_once(':') else {
            bail!("--lora takes NAME=MODEL:PATH.gguf, got '{l}' (no MODEL: before the path)");
        };
        loras.insert(name.to_string(), wasmesh_llama::LoraSpec { base: base.to_string(), path: PathBuf::from(path) });
    }
    let config = wasmesh_llama::LlamaConfig {
        models: models.into_iter().collect(),
        loras,
        slots: args.slots,
        spare_slots: args.spare_slots,
        memory_budget_bytes: args.model_memory_mb << 20,
        n_gpu_layers: args.gpu_layers,
        threads: args.threads,
        n_ctx: args.ctx_size,
        ..Default::default()
    };
    let engine = wasmesh_llama::LlamaEngine::new(config).context("cannot start the llama.cpp engine")?;
    Ok(Arc::new(engine))
}

#[cfg(not(feature = "llama"))]
fn build_engine(args: &EngineArgs, models: Vec<(String, PathBuf)>) -> anyhow::Result<Arc<dyn InferenceEngine>> {
    if !models.is_empty() || !args.loras.is_empty() {
        bail!("support for llama.cpp was disabled at compile time: rebuild with `--features llama`");
    }
    Ok(Arc::new(wasmesh_engine::fake::FakeEngine::new(Vec::<String>::new())))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

/// Writes `text` to `path` readable by the owner only (keys, config with a key).
pub fn write_secret(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
