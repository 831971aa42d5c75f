//! Bringing the models a host is started with (`wasmesh host --model NAME`) from the
//! fabric onto its disk before it serves: peers first and the object store for the
//! rest (or the object store alone), every piece verified, into the host's weight
//! cache, where the models stay leased (never evicted) while the host runs.

use crate::AgentError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_client::{Client, NodeIdentity, Progress};
use wasmesh_weights::{Lease, StallPolicy, WeightCache, WeightMetrics, Weights, WeightsConfig};

/// How a host fetches its models.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The registry's URL.
    pub registry: String,
    /// A key with the `provider` scope.
    pub key: String,
    /// The node's data directory: its identity, and the weight cache under `models/`.
    pub data_dir: PathBuf,
    /// The node's label (peer fetches sign as the node, so it registers first).
    pub name: String,
    /// Disk space for weights, in bytes.
    pub cache_bytes: u64,
    /// Fetch from the object store alone, without peers, and seed nothing.
    pub no_p2p: bool,
    /// Where BitTorrent listens for peers.
    pub p2p_listen: SocketAddr,
    /// Upload budget for seeding, in bytes per second (`None`: unlimited).
    pub upload_bps: Option<u32>,
    /// When a swarm counts as stalled (the object store then serves the rest).
    pub stall: StallPolicy,
}

/// The fetched models' files, and what must live as long as the host serves them: the
/// leases that keep them in the cache, and the BitTorrent session that seeds them.
pub struct FetchedModels {
    /// Model name → its verified file.
    pub files: Vec<(String, PathBuf)>,
    _leases: Vec<Lease>,
    _seeding: Option<Arc<Weights>>,
}

/// Fetches `names` for a host; `progress` makes a progress reporter per model.
///
/// # Errors
/// [`AgentError`] naming the model and what to do (a registry that refused, a cache
/// too small, an identity that cannot be written).
pub async fn fetch_models(
    config: &FetchConfig,
    names: &[String],
    metrics: &prometheus::Registry,
    progress: impl Fn(&str) -> Arc<dyn Progress>,
) -> Result<FetchedModels, AgentError> {
    let mut fetched = FetchedModels { files: Vec::new(), _leases: Vec::new(), _seeding: None };
    if names.is_empty() {
        return Ok(fetched);
    }
    let client = Client::new(&config.registry, Some(config.key.clone()))?;
    let cache = WeightCache::open(config.data_dir.join("models"), config.cache_bytes)?;
    if config.no_p2p {
        for name in names {
            tracing::info!(model = %name, "fetching weights from the object store (--no-p2p)");
            let (path, lease) = wasmesh_weights::fetch_model_cached(&client, name, &cache, progress(name).as_ref())
                .await
                .map_err(|e| AgentError::Fetch { model: name.clone(), source: e })?;
            fetched._leases.push(lease);
            fetched.files.push((name.clone(), path));
        }
        return Ok(fetched);
    }
    // Fetching from peers signs requests as this node: register it first.
    let identity = Arc::new(
        NodeIdentity::load_or_create(&config.data_dir.join("node.key"))
            .map_err(|source| AgentError::Identity { dir: config.data_dir.clone(), source })?,
    );
    crate::register(&client, &identity, &config.name, Duration::from_secs(60)).await?;
    let weights_config = WeightsConfig {
        listen: config.p2p_listen,
        upload_bps: config.upload_bps,
        stall: config.stall,
        ..Default::default()
    };
    let weight_metrics = WeightMetrics::new(metrics)?;
    let weights =
        Weights::start(client, identity, cache, weights_config, weight_metrics).await.map_err(AgentError::Weights)?;
    for name in names {
        tracing::info!(model = %name, "fetching weights (peers first, the object store for the rest)");
        let (path, lease, _) = weights
            .fetch_model(name, progress(name))
            .await
            .map_err(|e| AgentError::Fetch { model: name.clone(), source: e })?;
        fetched._leases.push(lease);
        fetched.files.push((name.clone(), path));
    }
    fetched._seeding = Some(weights);
    Ok(fetched)
}
