//! `wasmesh registry`: run the control plane.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use wasmesh_registry::{Registry, RegistryConfig};

/// Arguments of `wasmesh registry`.
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  wasmesh registry --listen 127.0.0.1:7070 --data ./registry-data\n  wasmesh registry --database postgres://user@db/wasmesh --store 's3://artifacts?endpoint=http://127.0.0.1:9000&region=us-east-1'\n  wasmesh registry init --data ./registry-data     # create the first admin key and exit\n\nThe first start prints an admin key once (or writes it to --admin-key-file)."
)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub action: Option<RegistryAction>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `wasmesh registry` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum RegistryAction {
    /// Create the database and the first admin key, print the key, and exit.
    Init(StateArgs),
    /// Read every stored artifact back and check its size and blake3; exits 1 and lists
    /// the damaged ones (their owners repair them by uploading the file again).
    Scrub {
        #[command(flatten)]
        state: StateArgs,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where the registry keeps its state.
#[derive(clap::Args, Debug, Clone)]
pub struct StateArgs {
    /// Data directory: the SQLite file, staged uploads and (by default) artifacts.
    #[arg(long, env = "WASMESH_REGISTRY_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in --data).
    #[arg(long, env = "WASMESH_DATABASE_URL", value_name = "URL")]
    pub database: Option<String>,
    /// Artifact store: file:///PATH or s3://BUCKET?endpoint=URL&region=R&allow_http=true
    /// (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; default: DATA/artifacts).
    #[arg(long, env = "WASMESH_STORE_URL", value_name = "URL")]
    pub store: Option<String>,
    /// On first start, write the admin key to this file (mode 0600) instead of printing it.
    #[arg(long, value_name = "PATH")]
    pub admin_key_file: Option<PathBuf>,
}

/// Serving options.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub state: StateArgs,
    /// Requests per second allowed per API key (bursts of twice that).
    #[arg(long, default_value_t = 200.0)]
    pub rate_per_key: f64,
    /// Requests per second allowed per source address.
    #[arg(long, default_value_t = 400.0)]
    pub rate_per_address: f64,
    /// Seconds without a heartbeat after which a node is offline.
    #[arg(long, default_value_t = 30)]
    pub offline_after_secs: u64,
    /// Seconds after which an unfinished upload is dropped with its staged parts.
    #[arg(long, default_value_t = 24 * 3600)]
    pub upload_ttl_secs: u64,
    /// Seconds a node's certificate is valid; nodes renew it at half its life, so a
    /// revoked key's nodes lose theirs within this time.
    #[arg(long, default_value_t = 6 * 3600)]
    pub cert_ttl_secs: u64,
    /// MiB one account may store (its artifacts and unfinished uploads; admins exempt).
    #[arg(long, default_value_t = 1 << 20, value_name = "MIB")]
    pub account_quota_mb: u64,
    /// The platform's share of every request's cost, in percent (e.g. 10 or 2.5).
    #[arg(long, default_value = "10", value_parser = parse_percent)]
    pub fee_percent: u32,
    /// Seconds providers' earnings wait in escrow before they can spend them.
    #[arg(long, default_value_t = 3600)]
    pub settle_secs: u64,
}

/// A percentage with up to two decimals, as basis points.
fn parse_percent(text: &str) -> Result<u32, String> {
    // Credits parse with six decimals: 10.5 -> 10_500_000; basis points are 1/100 %.
    let micros = wasmesh_api::wire::parse_credits(text)?;
    if micros % 10_000 != 0 || micros > 100 * 1_000_000 {
        return Err(format!("'{text}' is not a percentage from 0 to 100 with at most two decimals"));
    }
    Ok((micros / 10_000) as u32)
}

fn default_data() -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/wasmesh/registry")
}

fn config(state: &StateArgs) -> RegistryConfig {
    let mut config = RegistryConfig::new(state.data.clone().unwrap_or_else(default_data));
    config.database_url = state.database.clone();
    config.store_url = state.store.clone();
    config
}

/// Writes a first admin key where the operator asked for it.
pub fn hand_over_admin_key(key: &str, file: Option<&PathBuf>) -> anyhow::Result<()> {
    match file {
        Some(path) => {
            super::write_secret(path, key)?;
            eprintln!("wasmesh registry: first start; admin key written to {}", path.display());
        }
        None => {
            println!("admin key (shown once, store it now): {key}");
            println!("  wasmesh login --registry URL --key {key}");
        }
    }
    Ok(())
}

/// Runs `wasmesh registry`.
pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    if let Some(RegistryAction::Scrub { state, json }) = &args.action {
        let registry = Registry::open(config(state)).await?;
        let report = registry.scrub().await?;
        if *json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!("checked {} artifacts ({} bytes)", report.checked, report.bytes);
            for hash in &report.damaged {
                println!("damaged: {hash} (upload the file again to repair it)");
            }
        }
        if !report.damaged.is_empty() {
            anyhow::bail!("{} damaged artifact(s)", report.damaged.len());
        }
        return Ok(());
    }
    if let Some(RegistryAction::Init(state)) = args.action {
        let registry = Registry::open(config(&state)).await?;
        match registry.create_admin_key_if_none().await? {
            Some(key) => hand_over_admin_key(&key, state.admin_key_file.as_ref())?,
            None => anyhow::bail!(
                "this registry already has keys; create more with `wasmesh keys create --scope admin` using an admin key"
            ),
        }
        return Ok(());
    }
    let serve = args.serve;
    let mut config = config(&serve.state);
    config.limits.per_key_rps = serve.rate_per_key;
    config.limits.per_address_rps = serve.rate_per_address;
    config.offline_after = std::time::Duration::from_secs(serve.offline_after_secs);
    config.upload_ttl = std::time::Duration::from_secs(serve.upload_ttl_secs.max(1));
    config.cert_ttl = std::time::Duration::from_secs(serve.cert_ttl_secs.max(60));
    config.account_quota_bytes = serve.account_quota_mb.saturating_mul(1 << 20);
    config.fee_bps = serve.fee_percent;
    config.settle_after = std::time::Duration::from_secs(serve.settle_secs);
    let registry = Registry::open(config).await?;
    if let Some(key) = registry.create_admin_key_if_none().await? {
        hand_over_admin_key(&key, serve.state.admin_key_file.as_ref())?;
    }
    let listener = tokio::net::TcpListener::bind(serve.listen).await.with_context(|| {
        format!("cannot listen on {}; is another process using it? pick another with --listen", serve.listen)
    })?;
    tracing::info!(addr = %listener.local_addr()?, "registry ready");
    registry.serve(listener, super::shutdown_signal()).await?;
    Ok(())
}
