//! The router's Prometheus metrics ([`Metrics`]) and the `GET /metrics` answer ([`respond`]).

use http::Response;

use crate::{Body, Inner, full};
use wasmesh_policy::Tier;

/// The router's Prometheus counters, gauges and histogram, in their own registry.
pub(crate) struct Metrics {
    pub(crate) registry: prometheus::Registry,
    pub(crate) latency: prometheus::Histogram,
    pub(crate) retries: prometheus::IntCounter,
    pub(crate) errors: prometheus::IntCounterVec,
    pub(crate) preloads: prometheus::IntCounter,
    pub(crate) node_in_flight: prometheus::IntGaugeVec,
    pub(crate) nodes: prometheus::IntGauge,
    /// `requests` by status class (1xx..5xx), looked up once: every request counts.
    by_class: [prometheus::IntCounter; 5],
    /// Request streams to hosts: `[opened, reused]`.
    pub(crate) streams: [prometheus::IntCounter; 2],
    /// `routed` by tier, looked up once (see [`TIERS`]).
    routed_by_tier: [prometheus::IntCounter; TIERS.len()],
}

/// The names of the tiers `routed` counts requests by, at [`tier_index`].
const TIERS: [&str; 7] = ["warm", "base_warm", "loading", "disk", "fits", "evict", "any"];

/// Where a tier's name and counter are, in [`TIERS`] and `routed_by_tier`.
fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Warm => 0,
        Tier::BaseWarm => 1,
        Tier::Loading => 2,
        Tier::Disk => 3,
        Tier::Fits => 4,
        Tier::Evict => 5,
        _ => 6,
    }
}

/// A tier's name: the `tier` label of `wasmesh_router_routed_total` and of the `routed` log line.
pub(crate) fn tier_name(tier: Tier) -> &'static str {
    TIERS[tier_index(tier)]
}

impl Metrics {
    /// Counts one answered request by its status.
    pub(crate) fn answered(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize;
        self.by_class[class - 1].inc();
    }

    /// Counts one routed request by how warm its node was.
    pub(crate) fn routed(&self, tier: Tier) {
        self.routed_by_tier[tier_index(tier)].inc();
    }
}

impl Metrics {
    /// The metrics, registered.
    pub(crate) fn new() -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new("wasmesh_router_requests_total", "Requests by outcome (status class)"),
            &["status"],
        )?;
        let latency = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("wasmesh_router_request_seconds", "Time to the response head")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
        )?;
        let retries = prometheus::IntCounter::new(
            "wasmesh_router_retries_total",
            "Requests moved to the next candidate after a node failed before its first byte",
        )?;
        let errors = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_errors_total",
                "Forwarding errors by origin (upstream: a host; internal: the router; downstream: the caller)",
            ),
            &["origin"],
        )?;
        let routed = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_routed_total",
                "Requests by how warm their node was (warm: model in RAM; else a cold load)",
            ),
            &["tier"],
        )?;
        let preloads =
            prometheus::IntCounter::new("wasmesh_router_preloads_total", "Pre-load hints sent to cold nodes")?;
        let node_in_flight = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("wasmesh_router_node_in_flight", "Requests in flight per node (as last reported)"),
            &["node"],
        )?;
        let nodes = prometheus::IntGauge::new("wasmesh_router_nodes", "Hosts connected")?;
        let streams = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "wasmesh_router_host_streams_total",
                "Requests answered on a new stream to their host (opened) or on one kept from an earlier request (reused)",
            ),
            &["how"],
        )?;
        registry.register(Box::new(streams.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(routed.clone()))?;
        registry.register(Box::new(preloads.clone()))?;
        registry.register(Box::new(node_in_flight.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| requests.with_label_values(&[c]));
        let streams = ["opened", "reused"].map(|how| streams.with_label_values(&[how]));
        let routed_by_tier = TIERS.map(|tier| routed.with_label_values(&[tier]));
        Ok(Self {
            registry,
            latency,
            retries,
            errors,
            preloads,
            node_in_flight,
            nodes,
            by_class,
            streams,
            routed_by_tier,
        })
    }
}

/// `GET /metrics`: the metrics in Prometheus' text format, with the per-node gauges updated first.
pub(crate) fn respond(inner: &Inner) -> Response<Body> {
    inner.metrics.nodes.set(inner.links.len() as i64);
    for (node, report) in inner.links.reports() {
        inner.metrics.node_in_flight.with_label_values(&[&node]).set(i64::from(report.in_flight));
    }
    let mut out = Vec::new();
    let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &inner.metrics.registry.gather(), &mut out);
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(full(out))
        .expect("valid response")
}
