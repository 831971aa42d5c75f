//! What a host's weights do, for its `/metrics`: bytes fetched by model and source,
//! fetches by outcome, bad peers reported, bytes seeded to other hosts.

use librqbit::Session;
use std::sync::Arc;

/// Bytes fetched per model and source, for `/metrics`.
#[derive(Clone)]
pub struct WeightMetrics {
    /// `wasmesh_host_weight_bytes_total{model, source}` (source: `peers` | `origin`).
    pub bytes: prometheus::IntCounterVec,
    /// `wasmesh_host_weight_fetches_total{model, outcome}` (outcome: `ok` | `failed`).
    pub fetches: prometheus::IntCounterVec,
    /// Peers reported for bad pieces.
    pub bad_peers: prometheus::IntCounter,
    /// `wasmesh_host_seed_bytes_total`: bytes uploaded to other hosts (seeding).
    pub seeded: prometheus::IntCounter,
}

impl WeightMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let bytes = prometheus::IntCounterVec::new(
            prometheus::Opts::new("wasmesh_host_weight_bytes_total", "Weight bytes fetched, by model and source"),
            &["model", "source"],
        )?;
        let fetches = prometheus::IntCounterVec::new(
            prometheus::Opts::new("wasmesh_host_weight_fetches_total", "Weight fetches, by model and outcome"),
            &["model", "outcome"],
        )?;
        let bad_peers = prometheus::IntCounter::new(
            "wasmesh_host_weight_bad_peers_total",
            "Peers reported to the registry for pieces that failed verification",
        )?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(fetches.clone()))?;
        let seeded = prometheus::IntCounter::new(
            "wasmesh_host_seed_bytes_total",
            "Weight bytes uploaded to other hosts (seeding)",
        )?;
        registry.register(Box::new(bad_peers.clone()))?;
        registry.register(Box::new(seeded.clone()))?;
        Ok(Self { bytes, fetches, bad_peers, seeded })
    }
}

/// Copies librqbit's count of bytes uploaded into `seeded` every 2 s while the session
/// lives.
pub(crate) fn count_seeded(session: &Arc<Session>, seeded: prometheus::IntCounter) {
    let session = Arc::downgrade(session);
    tokio::spawn(async move {
        let mut counted = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let Some(session) = session.upgrade() else { return };
            let uploaded = session.stats_snapshot().counters.uploaded_bytes;
            seeded.inc_by(uploaded.saturating_sub(counted));
            counted = counted.max(uploaded);
        }
    });
}
