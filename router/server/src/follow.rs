//! The router's background loops: the routing table rebuilt from hosts' reports, the
//! registry's deployments and offline nodes followed, and metering's upkeep (receipts
//! sent, leases closed, prices followed).

use crate::{Inner, link};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wasmesh_api::AppManifest;

/// Metering's background work: receipts to the registry (every 250 ms), leases
/// retired and closed (every second), prices followed (every 2 s).
pub(crate) async fn metering_loop(inner: Arc<Inner>) {
    if !inner.meter.enabled() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    for round in 0u64.. {
        tick.tick().await;
        if round % 8 == 0
            && let Ok(prices) = inner.client.prices().await
        {
            inner.meter.set_prices(prices);
        }
        inner.meter.flush().await;
        if round % 4 == 0 {
            inner.meter.close_leases().await;
        }
    }
}

pub(crate) async fn rebuild_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if inner.dirty.swap(false, Ordering::AcqRel) {
            link::rebuild(&inner);
        }
    }
}

/// Every 2 s, which nodes the registry considers offline, and every node's standing
/// (auditors, caught nodes, reputation). When the registry cannot
/// be reached the last answer stands: the data plane keeps working without it.
pub(crate) async fn follow_nodes(inner: Arc<Inner>) {
    loop {
        if let Ok(nodes) = inner.client.nodes().await {
            let standing: HashMap<String, wasmesh_api::wire::NodeTrust> =
                nodes.iter().map(|n| (n.node_id.clone(), n.trust)).collect();
            let offline: std::collections::HashSet<String> = nodes
                .into_iter()
                .filter(|n| n.status == wasmesh_api::wire::NodeStatus::Offline)
                .map(|n| n.node_id)
                .collect();
            if **inner.standing.load() != standing {
                inner.standing.store(Arc::new(standing));
                inner.dirty.store(true, Ordering::Release);
            }
            if **inner.cut_off.load() != offline {
                inner.cut_off.store(Arc::new(offline));
                inner.dirty.store(true, Ordering::Release);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub(crate) async fn follow_deployments(inner: Arc<Inner>) {
    let mut revision = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        match inner.client.deployments(revision, Duration::from_secs(30)).await {
            Ok(d) => {
                backoff = Duration::from_millis(500);
                if Some(d.revision) != revision {
                    let mut apps = HashMap::new();
                    for app in &d.apps {
                        match AppManifest::parse(&app.manifest) {
                            Ok(m) => {
                                apps.insert(app.app.clone(), m);
                            }
                            Err(e) => {
                                tracing::warn!(app = %app.app, "skipping an app whose manifest does not parse: {e}")
                            }
                        }
                    }
                    tracing::info!(apps = apps.len(), revision = d.revision, "deployments updated");
                    inner.apps.store(Arc::new(apps));
                    revision = Some(d.revision);
                }
            }
            Err(e) => {
                tracing::warn!("cannot poll deployments, retrying in {backoff:?}: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(15));
            }
        }
    }
}
