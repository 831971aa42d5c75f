//! The host's Prometheus metrics, served at `GET /metrics` beside those other parts of the
//! node register (weights: fetched bytes by source, fetches, bad peers): requests by app
//! and status, instantiation time, and, read from the engine at each scrape, model
//! memory, models by state, fetch progress, requests generating and queued, tokens and
//! batch sizes. `deploy/grafana-host.json` graphs them.

use crate::host::Host;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::collections::HashMap;
use std::sync::Mutex;
use wasmesh_engine::Residency;

/// The metrics a host keeps itself.
pub(crate) struct HostMetrics {
    pub(crate) requests: IntCounterVec,
    pub(crate) instantiate: Histogram,
    in_flight: IntGauge,
    paused: IntGauge,
    model_memory: IntGaugeVec,
    models: IntGaugeVec,
    fetch: IntGaugeVec,
    active: IntGaugeVec,
    queued: IntGaugeVec,
    tokens: IntCounterVec,
    steps: IntCounterVec,
    batched: IntCounterVec,
    /// The engine's counters at the last scrape, per (model, counter): counters restart
    /// when a model reloads, and the exported ones must never go down.
    last: Mutex<HashMap<(String, &'static str), u64>>,
}

impl HostMetrics {
    /// Registers every metric on `registry`.
    pub(crate) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let instantiate = Histogram::with_opts(
            HistogramOpts::new("wasmesh_host_instantiate_seconds", "Time to instantiate a component for a request")
                .buckets(vec![0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25]),
        )?;
        registry.register(Box::new(instantiate.clone()))?;
        let in_flight = IntGauge::new("wasmesh_host_in_flight", "Requests running now")?;
        registry.register(Box::new(in_flight.clone()))?;
        let paused = IntGauge::new("wasmesh_host_paused", "1 while the provider paused the node")?;
        registry.register(Box::new(paused.clone()))?;
        Ok(Self {
            requests: counter(
                "wasmesh_host_requests_total",
                "Requests served, by app and HTTP status",
                &["app", "status"],
            )?,
            instantiate,
            in_flight,
            paused,
            model_memory: gauge(
                "wasmesh_host_model_memory_bytes",
                "Model memory: the budget, what loaded models hold, and what idle ones hold",
                &["kind"],
            )?,
            models: gauge("wasmesh_host_models", "Models and adapters by state", &["state"])?,
            fetch: gauge(
                "wasmesh_host_fetch_bytes",
                "Weights being fetched: bytes done and total",
                &["model", "kind"],
            )?,
            active: gauge("wasmesh_host_engine_active", "Requests generating now, by model", &["model"])?,
            queued: gauge("wasmesh_host_engine_queued", "Requests waiting for a slot, by model", &["model"])?,
            tokens: counter(
                "wasmesh_host_tokens_total",
                "Tokens of answered requests, by model and kind",
                &["model", "kind"],
            )?,
            steps: counter("wasmesh_host_decode_steps_total", "Decode steps, by model", &["model"])?,
            batched: counter(
                "wasmesh_host_batched_tokens_total",
                "Tokens decoded over all steps, by model (rate over steps' rate: the mean batch)",
                &["model"],
            )?,
            last: Mutex::new(HashMap::new()),
        })
    }

    /// Reads the engine and the host's gauges, just before a scrape.
    pub(crate) fn refresh(&self, host: &Host) {
        let engine = host.inference();
        self.in_flight.set(i64::from(host.in_flight()));
        self.paused.set(i64::from(host.is_paused()));
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.model_memory.with_label_values(&["used"]).set(clamp(engine.memory_used()));
        self.model_memory.with_label_values(&["idle"]).set(clamp(engine.memory_idle()));
        if let Some(budget) = engine.memory_budget() {
            self.model_memory.with_label_values(&["budget"]).set(clamp(budget));
        }
        let mut by_state: HashMap<&'static str, i64> =
            ["warm", "loading", "on_disk", "fetching"].into_iter().map(|s| (s, 0)).collect();
        self.fetch.reset();
        for entry in engine.catalog() {
            let state = match entry.residency {
                Residency::Warm => "warm",
                Residency::Loading => "loading",
                Residency::OnDisk => "on_disk",
                Residency::Fetching { done, total } => {
                    self.fetch.with_label_values(&[&entry.name, "done"]).set(clamp(done));
                    self.fetch.with_label_values(&[&entry.name, "total"]).set(clamp(total));
                    "fetching"
                }
            };
            *by_state.entry(state).or_default() += 1;
        }
        for (state, n) in by_state {
            self.models.with_label_values(&[state]).set(n);
        }
        self.active.reset();
        self.queued.reset();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for c in engine.counters() {
            self.active.with_label_values(&[&c.model]).set(clamp(c.active));
            self.queued.with_label_values(&[&c.model]).set(clamp(c.queued));
            let mut advance = |counter: &IntCounterVec, labels: &[&str], key: &'static str, now: u64| {
                let before = last.insert((c.model.clone(), key), now).unwrap_or(0);
                // A reloaded model's counters start again from zero.
                let delta = if now >= before { now - before } else { now };
                counter.with_label_values(labels).inc_by(delta);
            };
            advance(&self.tokens, &[&c.model, "prompt"], "prompt", c.prompt_tokens);
            advance(&self.tokens, &[&c.model, "generated"], "generated", c.generated_tokens);
            advance(&self.steps, &[&c.model], "steps", c.steps);
            advance(&self.batched, &[&c.model], "batched", c.batched_tokens);
        }
    }
}
