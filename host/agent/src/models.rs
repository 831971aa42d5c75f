//! Bringing weights from the fabric onto a host's disk: peers first and the object
//! store for the rest (or the object store alone), every piece verified, into the
//! host's weight cache, where they stay leased (never evicted) while the host runs.
//! [`Fetcher`] does one model or adapter; [`fetch_models`] the models a host is
//! started with (`wasmesh host --model NAME`); [`crate::OnDemand`] the rest, when
//! first asked for.

use crate::AgentError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmesh_api::wire::LoraInfo;
use wasmesh_client::{Client, NodeIdentity, Progress};
use wasmesh_weights::{FetchError, Lease, StallPolicy, WeightCache, WeightMetrics, Weights, WeightsConfig};

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

/// Where a host's weights come from: the object store alone (`--no-p2p`), or peers
/// first with the object store for the rest. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    client: Client,
    cache: WeightCache,
    /// The BitTorrent session, which also seeds what was fetched (`None`: `--no-p2p`).
    peers: Option<Arc<Weights>>,
}

impl Fetcher {
    /// Changes the disk bound of the weight cache now; a smaller one evicts unleased
    /// files at once. Returns how many were evicted.
    ///
    /// # Errors
    /// When files in use alone pass the new bound (it applies anyway).
    pub fn set_cache_bytes(&self, bytes: u64) -> Result<usize, String> {
        self.cache.set_bound(bytes).map(|evicted| evicted.len()).map_err(|e| e.to_string())
    }

    /// Changes the upload budget for seeding now (`0`: unlimited).
    ///
    /// # Errors
    /// When this node fetches without peers (`--no-p2p`) and so seeds nothing.
    pub fn set_upload_kib_s(&self, kib: u32) -> Result<(), String> {
        match &self.peers {
            Some(weights) => {
                weights.set_upload_bps((kib > 0).then(|| kib.saturating_mul(1024)));
                Ok(())
            }
            None => Err("this node seeds nothing (--no-p2p): there is no upload budget to change".into()),
        }
    }

    /// Opens the weight cache and, unless `no_p2p`, registers the node (peer fetches
    /// sign as the node) and starts BitTorrent.
    ///
    /// # Errors
    /// A registry that refused, a cache folder that cannot be made, an identity that
    /// cannot be written, a peer port in use.
    pub async fn open(config: &FetchConfig, metrics: &prometheus::Registry) -> Result<Self, AgentError> {
        let client = Client::new(&config.registry, Some(config.key.clone()))?;
        let cache = WeightCache::open(config.data_dir.join("models"), config.cache_bytes)?;
        if config.no_p2p {
            return Ok(Self { client, cache, peers: None });
        }
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
        let peers = Weights::start(client.clone(), identity, cache.clone(), weights_config, weight_metrics)
            .await
            .map_err(AgentError::Weights)?;
        Ok(Self { client, cache, peers: Some(peers) })
    }

    /// Fetches model `name` into the cache, verified; returns its file and the lease
    /// that keeps it there.
    pub async fn model(&self, name: &str, progress: Arc<dyn Progress>) -> Result<(PathBuf, Lease), FetchError> {
        match &self.peers {
            Some(weights) => weights.fetch_model(name, progress).await.map(|(path, lease, _)| (path, lease)),
            None => wasmesh_weights::fetch_model_cached(&self.client, name, &self.cache, progress.as_ref()).await,
        }
    }

    /// Fetches LoRA adapter `name` the same way; returns its record (its base) too.
    pub async fn lora(
        &self,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<(LoraInfo, PathBuf, Lease), FetchError> {
        match &self.peers {
            Some(weights) => weights.fetch_lora(name, progress).await,
            None => wasmesh_weights::fetch_lora_cached(&self.client, name, &self.cache, progress.as_ref()).await,
        }
    }
}

/// The fetched models' files, and what must live as long as the host serves them: the
/// leases that keep them in the cache, and the fetcher (whose BitTorrent session seeds them).
pub struct FetchedModels {
    /// Model name → its verified file.
    pub files: Vec<(String, PathBuf)>,
    /// Brings more models and adapters on demand ([`crate::OnDemand`]).
    pub fetcher: Fetcher,
    _leases: Vec<Lease>,
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
    let fetcher = Fetcher::open(config, metrics).await?;
    let mut fetched = FetchedModels { files: Vec::new(), fetcher, _leases: Vec::new() };
    for name in names {
        tracing::info!(model = %name, no_p2p = config.no_p2p, "fetching weights");
        let (path, lease) = fetched
            .fetcher
            .model(name, progress(name))
            .await
            .map_err(|e| AgentError::Fetch { model: name.clone(), source: e })?;
        fetched._leases.push(lease);
        fetched.files.push((name.clone(), path));
    }
    Ok(fetched)
}
