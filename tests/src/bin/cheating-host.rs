//! A dishonest provider for the trust tests: a real node (registered, linked to the
//! routers, signing receipts with its own key) that serves through the real llama.cpp
//! engine but does not do what it is asked, some or all of the time.
//!
//! `cheating-host REGISTRY PROVIDER_KEY DATA_DIR ROUTER LISTEN MODEL_FILE MODE RATE [LORA_FILE]`
//!
//! MODE is what it does to a generation it cheats on:
//! - `truncate`: generates at most half the tokens asked (and bills what it generated);
//! - `adapter`: silently applies LORA_FILE (an adapter the caller never asked for);
//! - `reseed`: ignores the router's seed and samples at temperature 0.9 with a seed of
//!   its own (invents text).
//!
//! RATE (0 to 1) is the share of generations it cheats on. It serves model `smollm2`
//! from MODEL_FILE, like the tests' honest hosts, and adapter `one` from the file
//! `CHEATER_LORA_ONE` names, if set.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmesh_engine::{
    BoxFuture, CatalogEntry, Embedding, EngineError, GenerateRequest, Generation, InferenceEngine, ModelCounters,
};

#[derive(Clone, Copy)]
enum Mode {
    Truncate,
    Adapter,
    Reseed,
}

struct Cheat {
    inner: Arc<dyn InferenceEngine>,
    mode: Mode,
    /// Cheats on a generation when the next draw is below this (out of 1,000,000).
    rate_ppm: u64,
    count: AtomicU64,
}

impl Cheat {
    fn cheats_now(&self) -> bool {
        // A fixed sequence (golden-ratio steps), so a run is reproducible.
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % 1_000_000 < self.rate_ppm
    }
}

impl InferenceEngine for Cheat {
    fn models(&self) -> Vec<String> {
        self.inner.models()
    }
    fn has_model(&self, model: &str) -> bool {
        self.inner.has_model(model)
    }
    fn generate(&self, mut request: GenerateRequest) -> BoxFuture<'_, Result<Generation, EngineError>> {
        if self.cheats_now() {
            let p = &mut request.params;
            match self.mode {
                Mode::Truncate => p.n_predict = (p.n_predict / 2).max(1),
                Mode::Adapter if p.lora.is_none() => {
                    p.lora = Some("sneaky".into());
                    p.lora_scale = 1.0;
                }
                Mode::Adapter => {}
                Mode::Reseed => {
                    p.temp = 0.9;
                    p.seed = (self.count.load(Ordering::Relaxed) as u32).wrapping_mul(2_654_435_761) | 1;
                }
            }
        }
        self.inner.generate(request)
    }
    fn embed<'a>(&'a self, model: &'a str, input: &'a str) -> BoxFuture<'a, Result<Embedding, EngineError>> {
        self.inner.embed(model, input)
    }
    fn loaded_models(&self) -> Vec<String> {
        self.inner.loaded_models()
    }
    fn memory_used(&self) -> u64 {
        self.inner.memory_used()
    }
    // The adapter it applies on the sly is not one it admits to.
    fn adapters(&self) -> Vec<String> {
        self.inner.adapters().into_iter().filter(|a| !a.ends_with(":sneaky")).collect()
    }
    fn preload<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.preload(model)
    }
    fn preload_adapter<'a>(&'a self, model: &'a str, adapter: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        self.inner.preload_adapter(model, adapter)
    }
    fn add_model(&self, name: &str, path: PathBuf) -> Result<(), EngineError> {
        self.inner.add_model(name, path)
    }
    fn add_adapter(&self, base: &str, name: &str, path: PathBuf) -> Result<(), EngineError> {
        self.inner.add_adapter(base, name, path)
    }
    fn set_pinned(&self, model: &str, pinned: bool) {
        self.inner.set_pinned(model, pinned)
    }
    fn catalog(&self) -> Vec<CatalogEntry> {
        self.inner.catalog().into_iter().filter(|e| !e.name.ends_with(":sneaky")).collect()
    }
    fn loads(&self) -> u64 {
        self.inner.loads()
    }
    fn memory_idle(&self) -> u64 {
        self.inner.memory_idle()
    }
    fn counters(&self) -> Vec<ModelCounters> {
        self.inner.counters()
    }
    fn memory_budget(&self) -> Option<u64> {
        self.inner.memory_budget()
    }
    fn set_memory_budget(&self, bytes: u64) -> Result<Vec<String>, EngineError> {
        self.inner.set_memory_budget(bytes)
    }
    // It claims the same build as an honest node: its receipts look like theirs.
    fn build_id(&self) -> String {
        self.inner.build_id()
    }
    fn summary(&self) -> String {
        self.inner.summary()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("info").init();
    let args: Vec<String> = std::env::args().collect();
    let (registry, key, data, router, listen, model, mode, rate, lora) = match args.as_slice() {
        [_, r, k, d, ro, l, m, mo, ra] => (r, k, d, ro, l, m, mo, ra, None),
        [_, r, k, d, ro, l, m, mo, ra, lo] => (r, k, d, ro, l, m, mo, ra, Some(lo)),
        _ => anyhow::bail!(
            "usage: cheating-host REGISTRY PROVIDER_KEY DATA_DIR ROUTER LISTEN MODEL_FILE truncate|adapter|reseed RATE [LORA_FILE]"
        ),
    };
    let mode = match mode.as_str() {
        "truncate" => Mode::Truncate,
        "adapter" => Mode::Adapter,
        "reseed" => Mode::Reseed,
        other => anyhow::bail!("unknown cheat '{other}'"),
    };
    if matches!(mode, Mode::Adapter) && lora.is_none() {
        anyhow::bail!("the adapter cheat needs LORA_FILE");
    }
    let rate_ppm = (rate.parse::<f64>()?.clamp(0.0, 1.0) * 1_000_000.0) as u64;
    let data = PathBuf::from(data);
    std::fs::create_dir_all(&data)?;
    let mut loras = std::collections::BTreeMap::new();
    // The adapters callers may ask for, as honest hosts have them.
    if let Some(one) = std::env::var_os("CHEATER_LORA_ONE") {
        loras.insert("one".to_string(), wasmesh_llama::LoraSpec { base: "smollm2".into(), path: one.into() });
    }
    if let Some(lora) = lora {
        loras.insert("sneaky".to_string(), wasmesh_llama::LoraSpec { base: "smollm2".into(), path: lora.into() });
    }
    let config = wasmesh_llama::LlamaConfig {
        models: [("smollm2".to_string(), PathBuf::from(model))].into_iter().collect(),
        loras,
        threads: Some(1),
        ..Default::default()
    };
    let engine: Arc<dyn InferenceEngine> = Arc::new(wasmesh_llama::LlamaEngine::new(config)?);
    let engine: Arc<dyn InferenceEngine> = Arc::new(Cheat { inner: engine, mode, rate_ppm, count: AtomicU64::new(0) });
    let node_config = wasmesh_agent::NodeConfig {
        fetch: None,
        agent: Some(wasmesh_agent::AgentConfig {
            registry: registry.clone(),
            key: key.clone(),
            data_dir: data.clone(),
            name: "cheater".into(),
            heartbeat_interval: std::time::Duration::from_secs(1),
            share: wasmesh_api::wire::ResourceShare { model_memory_bytes: 4 << 30, max_concurrency: 4 },
            pressure: Default::default(),
            routers: vec![router.parse()?],
            link_lanes: 0,
        }),
        models: Vec::new(),
        fetch_wait: std::time::Duration::from_secs(60),
        host: wasmesh_runtime::HostConfig { max_instances: 16, ..Default::default() },
        apps: Vec::new(),
        preload: false,
        listen: listen.parse()?,
        control: None,
    };
    let node = wasmesh_agent::Node::start(
        node_config,
        move |_| Ok(engine),
        |_| Arc::new(wasmesh_client::NoProgress) as Arc<dyn wasmesh_client::Progress>,
    )
    .await?;
    eprintln!("cheating host {} serving on {}", node.node_id().unwrap_or("?"), node.addr);
    node.serve(std::future::pending(), std::time::Duration::from_secs(1)).await?;
    Ok(())
}
