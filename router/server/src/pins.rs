//! Pinned models (`wasmesh models pin NAME --min-warm N`): the router keeps each on N
//! warm nodes with no request needed. Every second it counts, per pinned model, the
//! nodes that hold it warm or are bringing it in (fetching, loading); when fewer than N,
//! it asks the best node without it (the policy's own order for the model) to pre-load
//! and pin it. A warm node that has not pinned it yet is asked to pin it, so its cache
//! keeps it. When a warm node leaves, the next pass restores the count.
//!
//! Several routers do the same from the same reports, and pick the same node (the
//! policy's ring is the same everywhere); a node asked twice loads once.

use crate::Inner;
use crate::link::preload;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wasmesh_api::wire::ModelState;
use wasmesh_policy::{ModelRef, Request};

/// How long a node asked to bring in a model is given before being asked again.
const ASK_AGAIN: Duration = Duration::from_secs(15);

/// Every 2 s: the registry's models, their sizes (for placement) and pins. When the
/// registry cannot be reached the last answer stands.
pub(crate) async fn follow_models(inner: Arc<Inner>) {
    loop {
        if let Ok(models) = inner.client.models().await {
            let sizes: HashMap<String, u64> = models.iter().map(|m| (m.name.clone(), m.size)).collect();
            let owners: HashMap<String, (String, bool)> =
                models.iter().map(|m| (m.name.clone(), (m.account.clone(), m.public))).collect();
            if **inner.model_owners.load() != owners {
                inner.model_owners.store(Arc::new(owners));
            }
            let pins: HashMap<String, u32> =
                models.iter().filter(|m| m.min_warm > 0).map(|m| (m.name.clone(), m.min_warm)).collect();
            if **inner.model_sizes.load() != sizes {
                inner.model_sizes.store(Arc::new(sizes));
            }
            if **inner.pins.load() != pins {
                tracing::info!(?pins, "pinned models updated");
                inner.pins.store(Arc::new(pins));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Every second: restores each pinned model's warm count (see the module docs).
pub(crate) async fn keep_pins(inner: Arc<Inner>) {
    let mut asked: HashMap<(String, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let pins = inner.pins.load_full();
        if pins.is_empty() {
            continue;
        }
        asked.retain(|_, at| at.elapsed() < ASK_AGAIN);
        let reports = inner.links.reports();
        let routed = inner.routed.load_full();
        for (model, &min_warm) in pins.iter() {
            let Ok(key) = ModelRef::parse(model) else { continue };
            // Who holds it warm (and whether pinned there), and who is bringing it in.
            let mut warm_unpinned = Vec::new();
            let mut holders = std::collections::HashSet::new();
            for (node, report) in &reports {
                let Some(m) = report.models.iter().find(|m| m.name == *model) else { continue };
                match m.state {
                    ModelState::Loaded => {
                        holders.insert(node.as_str());
                        if !m.pinned {
                            warm_unpinned.push(node.clone());
                        }
                    }
                    ModelState::Loading | ModelState::Fetching => {
                        holders.insert(node.as_str());
                    }
                    ModelState::OnDisk => {}
                }
            }
            let holding = holders.len() as u32;
            // Nodes asked lately whose reports do not show the model coming yet.
            let asked_now =
                asked.keys().filter(|(m, node)| m == model && !holders.contains(node.as_str())).count() as u32;
            // Warm copies pin themselves, up to the count.
            let pinned_warm = holding.saturating_sub(warm_unpinned.len() as u32);
            for node in warm_unpinned.into_iter().take(min_warm.saturating_sub(pinned_warm) as usize) {
                ask(&inner, &routed, &mut asked, model, &key, &node);
            }
            let mut missing = min_warm.saturating_sub(holding + asked_now);
            if missing == 0 {
                continue;
            }
            let size = inner.model_sizes.load().get(model).copied().unwrap_or(0);
            let decision = routed.snapshot.route(&Request::for_model(&key, size));
            for candidate in decision.candidates() {
                if missing == 0 {
                    break;
                }
                let Some(node) = routed.snapshot.node_id(candidate.node) else { continue };
                let holds = reports.iter().any(|(id, r)| {
                    id == node && r.models.iter().any(|m| m.name == *model && m.state != ModelState::OnDisk)
                });
                if holds || asked.contains_key(&(model.clone(), node.to_string())) {
                    continue;
                }
                let node = node.to_string();
                ask(&inner, &routed, &mut asked, model, &key, &node);
                missing -= 1;
            }
        }
    }
}

/// Asks `node` to load and pin `model`, at most once per [`ASK_AGAIN`].
fn ask(
    inner: &Inner,
    routed: &crate::Routed,
    asked: &mut HashMap<(String, String), Instant>,
    model: &str,
    key: &ModelRef,
    node: &str,
) {
    let id = (model.to_string(), node.to_string());
    if asked.contains_key(&id) {
        return;
    }
    let Some(index) = routed.snapshot.index_of(node) else { return };
    tracing::info!(%model, %node, "placing a pinned model");
    inner.metrics.preloads.inc();
    preload(routed.links[index.get()].pick().clone(), key, true);
    asked.insert(id, Instant::now());
    inner.dirty.store(true, Ordering::Release);
}
