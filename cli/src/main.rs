//! The `wasmesh` command line. Each subcommand wires library crates; the work
//! lives in them.

mod commands;

use clap::{Parser, Subcommand};

/// wasmesh: an edge-serverless WASM inference fabric.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  wasmesh up                                   # the demo fabric on http://127.0.0.1:8080\n  wasmesh registry --data ./registry           # the control plane\n  wasmesh login --registry http://127.0.0.1:7070 --key wsk_...\n  wasmesh deploy -f wasmesh.toml\n  wasmesh host --registry http://127.0.0.1:7070 --key wsk_... --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf\n\nExit codes: 0 ok, 1 error, 2 bad usage, 3 key missing, invalid or without the scope,\n4 not found, 5 input refused (bad manifest, component, model) or conflict, 6 registry unreachable or failing."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: boxing the larger arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the demo: the example apps on one host, on the embedded defaults.
    Up(commands::up::UpArgs),
    /// Serve apps on this machine: local manifests, or whatever a registry deploys.
    Host(commands::host::HostArgs),
    /// Run this machine's host as a service: install, uninstall, status.
    #[command(subcommand)]
    Provider(commands::provider::ProviderCommand),
    /// Run the registry (the control plane).
    Registry(commands::registry::RegistryArgs),
    /// Run a router: callers' HTTP in, requests out to hosts over QUIC.
    Router(commands::router::RouterArgs),
    /// Check a registry URL and key, and remember them.
    Login(commands::client::LoginArgs),
    /// Upload an app's components and deploy a new version.
    Deploy(commands::client::DeployArgs),
    /// List apps and their versions.
    #[command(subcommand)]
    Apps(commands::client::AppsCommand),
    /// Serve an earlier version of an app again.
    Rollback(commands::client::RollbackArgs),
    /// Push, list, pin and publish models.
    #[command(subcommand)]
    Models(commands::client::ModelsCommand),
    /// Push, list and publish LoRA adapters.
    #[command(subcommand)]
    Loras(commands::client::LorasCommand),
    /// List the fabric's nodes.
    #[command(subcommand)]
    Nodes(commands::nodes::NodesCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(commands::accounts::KeysCommand),
    /// Create and list accounts (tenants) and their members.
    #[command(subcommand)]
    Accounts(commands::accounts::AccountsCommand),
    /// Balances, history and grants of credits.
    #[command(subcommand)]
    Credits(commands::credits::CreditsCommand),
    /// What models' tokens and calls cost.
    #[command(subcommand)]
    Prices(commands::credits::PricesCommand),
    /// Check the credits ledger's books.
    #[command(subcommand)]
    Ledger(commands::credits::LedgerCommand),
    /// What your nodes earned (in escrow until settled, then yours).
    Earnings(commands::credits::EarningsArgs),
    /// Requests, tokens and credits spent, by app, model or day; or one request.
    Usage(commands::credits::UsageArgs),
}

/// mimalloc rather than glibc's malloc: a router's and a host's requests allocate on
/// one thread and free on another (tokio's workers, quinn's drivers), where glibc's
/// arenas spend about a tenth of the router's CPU (a `perf` profile under `cargo bench
/// --bench routing`); with mimalloc the router's hop serves about 7% more requests.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // `wasmesh host --config FILE`: the file's settings become flags before the others.
    let args = match commands::provider::expand_host_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    commands::init_tracing();
    // A router on one thread runs on a current-thread runtime: every task (callers'
    // connections, the QUIC drivers) wakes the next without a hand-off between threads.
    let threads = match &cli.command {
        Command::Router(args) => Some(commands::router::threads(args.threads)),
        _ => None,
    };
    let runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => commands::up::run(args).await,
            Command::Host(args) => commands::host::run(args).await,
            Command::Provider(cmd) => commands::provider::run(cmd).await,
            Command::Registry(args) => commands::registry::run(args).await,
            Command::Router(args) => commands::router::run(args).await,
            Command::Login(args) => commands::client::login(args).await,
            Command::Deploy(args) => commands::client::deploy(args).await,
            Command::Apps(cmd) => commands::client::apps(cmd).await,
            Command::Rollback(args) => commands::client::rollback(args).await,
            Command::Models(cmd) => commands::client::models(cmd).await,
            Command::Loras(cmd) => commands::client::loras(cmd).await,
            Command::Nodes(cmd) => commands::nodes::nodes(cmd).await,
            Command::Keys(cmd) => commands::accounts::keys(cmd).await,
            Command::Accounts(cmd) => commands::accounts::accounts(cmd).await,
            Command::Credits(cmd) => commands::credits::credits_command(cmd).await,
            Command::Prices(cmd) => commands::credits::prices(cmd).await,
            Command::Ledger(cmd) => commands::credits::ledger(cmd).await,
            Command::Earnings(args) => commands::credits::earnings(args).await,
            Command::Usage(args) => commands::credits::usage(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = e.downcast_ref::<wasmesh_client::ClientError>().map(|c| c.exit_code()).unwrap_or(1);
            std::process::ExitCode::from(code)
        }
    }
}
