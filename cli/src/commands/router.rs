//! `wasmesh router`: callers' entry to the fabric.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `wasmesh router`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh router --listen 127.0.0.1:8000 --quic 127.0.0.1:4433 --registry http://127.0.0.1:7070 --key wsk_<router>\n  wasmesh host --registry http://127.0.0.1:7070 --key wsk_<provider> --router 127.0.0.1:4433 --model smollm2=./SmolLM2.gguf\n  curl -H 'Authorization: Bearer wsk_<invoke>' localhost:8000/fn/demo/hello"
)]
pub struct RouterArgs {
    /// Address callers reach (HTTP).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Address hosts dial (QUIC, UDP).
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic: SocketAddr,
    /// The registry.
    #[arg(long, env = "WASMESH_REGISTRY", value_name = "URL")]
    pub registry: String,
    /// A key with the router scope (`wasmesh keys create --scope router`, by an admin).
    #[arg(long, env = "WASMESH_KEY", value_name = "KEY", hide_env_values = true)]
    pub key: String,
    /// Data directory: the router's identity.
    #[arg(long, env = "WASMESH_ROUTER_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// This router's label.
    #[arg(long, default_value = "router")]
    pub name: String,
    /// Serve callers without an API key (for trusted networks and demos only).
    #[arg(long)]
    pub open: bool,
    /// Requests per second allowed per caller key (bursts of twice that).
    #[arg(long, default_value_t = 1000.0)]
    pub rate_per_key: f64,
    /// Do not meter: no credits held or charged, no receipts (a private fabric).
    #[arg(long)]
    pub no_metering: bool,
    /// Credits one lease holds at most for a calling account (e.g. 1 or 0.5).
    #[arg(long, default_value = "1", value_parser = wasmesh_api::wire::parse_credits)]
    pub lease_credits: u64,
    /// Seconds after which the registry releases a lease this router never closed
    /// (it died): how long a crashed router's holds stay held.
    #[arg(long, default_value_t = 600)]
    pub lease_secs: u64,
    /// Share of metered requests replayed on an auditor (`wasmesh nodes trust`) to check
    /// the serving node's answer (0 to 1).
    #[arg(long, default_value_t = 0.02, value_parser = share)]
    pub audit_share: f64,
    /// Share replayed while a node is new (on probation) or flagged (another node of its
    /// provider was caught).
    #[arg(long, default_value_t = 0.2, value_parser = share)]
    pub audit_probation_share: f64,
    /// A model's own audit share, as MODEL=SHARE (repeatable).
    #[arg(long = "audit-share-model", value_name = "MODEL=SHARE", value_parser = model_share)]
    pub audit_share_model: Vec<(String, f64)>,
    /// Threads that serve callers and hosts. 0 (the default): half the cores, at least
    /// one, leaving the rest to the kernel's network stack. 1 runs every task on one
    /// thread: no hand-offs between threads, the least CPU per request (on 2 cores it
    /// serves more requests than 2 threads; `benches/RESULTS.md`).
    #[arg(long, default_value_t = 0, env = "WASMESH_ROUTER_THREADS")]
    pub threads: usize,
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("'{text}' is not a share between 0 and 1 (e.g. 0.02 for 2%)")),
    }
}

fn model_share(text: &str) -> Result<(String, f64), String> {
    let (model, value) =
        text.split_once('=').ok_or_else(|| format!("'{text}' is not MODEL=SHARE (e.g. llama-3-8b=0.05)"))?;
    Ok((model.to_string(), share(value)?))
}

/// The router's threads for `--threads` (0: half the cores, at least one).
pub fn threads(asked: usize) -> usize {
    match asked {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get() / 2).max(1),
        n => n,
    }
}

/// Runs `wasmesh router`.
pub async fn run(args: RouterArgs) -> anyhow::Result<()> {
    let data = args.data.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/share/wasmesh/router")
    });
    let mut config = wasmesh_router::RouterConfig::new(args.registry.clone(), args.key.clone(), data, args.quic);
    config.name = args.name.clone();
    config.require_key = !args.open;
    config.per_key_rps = args.rate_per_key;
    config.metering = wasmesh_router::MeterConfig {
        enabled: !args.no_metering,
        lease_micros: args.lease_credits.max(1),
        lease_ttl: std::time::Duration::from_secs(args.lease_secs.max(1)),
    };
    config.trust.base_share = args.audit_share;
    config.trust.probation_share = args.audit_probation_share;
    config.audit_share_by_model = args.audit_share_model.iter().cloned().collect();
    let router = wasmesh_router::Router::start(config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", args.listen)
    })?;
    tracing::info!(http = %listener.local_addr()?, "router ready");
    router.serve(listener, super::shutdown_signal()).await?;
    Ok(())
}
