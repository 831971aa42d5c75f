//! Commands that talk to a registry: login, deploy, apps, rollback, models,
//! loras, nodes (keys and accounts are in `accounts`).
//!
//! The registry URL and key come from `--registry` / `--key`, then
//! `WASMESH_REGISTRY` / `WASMESH_KEY`, then the file `wasmesh login` writes
//! (`$WASMESH_CONFIG`, or `~/.config/wasmesh/config.toml`).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmesh_client::{Client, Progress};

/// Where the registry is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The registry's URL.
    #[arg(long, env = "WASMESH_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,
    /// An API key (wsk_...).
    #[arg(long, env = "WASMESH_KEY", value_name = "KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    registry: Option<String>,
    key: Option<String>,
}

fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WASMESH_CONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config/wasmesh/config.toml")
}

impl Connection {
    /// A client, from flags, environment or the login file.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file: ConfigFile = match std::fs::read_to_string(config_path()) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("invalid {}", config_path().display()))?,
            Err(_) => ConfigFile::default(),
        };
        let registry = self.registry.clone().or(file.registry).context(
            "no registry given: pass --registry URL, set WASMESH_REGISTRY, or run `wasmesh login --registry URL --key KEY`",
        )?;
        let key = self.key.clone().or(file.key);
        Ok(Client::new(&registry, key)?)
    }
}

pub(super) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub(super) fn ago(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub(super) fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", bytes as f64 / 1_073_741_824.0),
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal or with --json).
struct Bar {
    bar: indicatif::ProgressBar,
    label: String,
}

impl Bar {
    fn new(label: &str, hidden: bool) -> Self {
        let bar = if hidden { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(0) };
        Self { bar, label: label.to_string() }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: u64, done: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar.set_prefix(phase.to_string());
        self.bar.set_message(self.label.clone());
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// `wasmesh login`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  wasmesh login --registry http://127.0.0.1:7070 --key wsk_...")]
pub struct LoginArgs {
    #[command(flatten)]
    pub conn: Connection,
}

/// Checks the key against the registry and writes the config file.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let me = client.whoami().await?;
    let path = config_path();
    let text = toml::to_string(&ConfigFile { registry: Some(client.base().to_string()), key: args.conn.key.clone() })?;
    super::write_secret(&path, &text)?;
    if args.conn.json {
        return print_json(&me);
    }
    println!(
        "logged in to {} as key {} ({}); saved to {}",
        client.base(),
        me.id,
        me.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        path.display()
    );
    Ok(())
}

/// `wasmesh deploy`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  wasmesh deploy                      # ./wasmesh.toml\n  wasmesh deploy -f examples/demo/wasmesh.toml --json"
)]
pub struct DeployArgs {
    /// The app manifest.
    #[arg(short = 'f', long = "file", default_value = "wasmesh.toml")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub conn: Connection,
}

/// Uploads the components and creates a new version.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let bar = Bar::new(&args.manifest.display().to_string(), args.conn.json);
    let version = client.deploy(&args.manifest, &bar).await?;
    if args.conn.json {
        return print_json(&version);
    }
    println!("deployed {} version {} ({} components)", version.app, version.version, version.components.len());
    println!("  served under /fn/{}/ on every host", version.app);
    Ok(())
}

/// `wasmesh apps`.
#[derive(clap::Subcommand, Debug)]
pub enum AppsCommand {
    /// List apps and their current versions.
    Ls(Connection),
    /// List every version of an app.
    Versions {
        /// The app.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh apps ...`.
pub async fn apps(cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::Ls(conn) => {
            let apps = conn.client()?.apps().await?;
            if conn.json {
                return print_json(&apps);
            }
            println!("{:<24} {:>8} {:>9}  UPDATED", "APP", "CURRENT", "VERSIONS");
            for a in apps {
                println!("{:<24} {:>8} {:>9}  {}", a.name, a.current_version, a.versions, ago(a.updated_at_ms));
            }
        }
        AppsCommand::Versions { name, conn } => {
            let versions = conn.client()?.versions(&name).await?;
            if conn.json {
                return print_json(&versions);
            }
            println!("{:>7}  {:<14} {:<14} COMPONENTS", "VERSION", "DEPLOYED", "BY KEY");
            for v in versions {
                let components: Vec<String> =
                    v.components.iter().map(|(n, h)| format!("{n}={}", &h[..12.min(h.len())])).collect();
                println!(
                    "{:>7}  {:<14} {:<14} {}",
                    v.version,
                    ago(v.created_at_ms),
                    v.deployed_by,
                    components.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// `wasmesh rollback`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  wasmesh rollback demo 3")]
pub struct RollbackArgs {
    /// The app.
    pub name: String,
    /// The version to serve again.
    pub version: u64,
    #[command(flatten)]
    pub conn: Connection,
}

/// Makes an earlier version current.
pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let app = args.conn.client()?.rollback(&args.name, args.version).await?;
    if args.conn.json {
        return print_json(&app);
    }
    println!("{} now serves version {} (of {})", app.name, app.current_version, app.versions);
    Ok(())
}

/// `wasmesh models`.
#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// Upload a GGUF model (resumable) and register it under a name.
    #[command(after_help = "Example:\n  wasmesh models push ./SmolLM2-135M-Instruct.Q4_1.gguf --name smollm2")]
    Push {
        /// The .gguf file.
        file: PathBuf,
        /// The name components use in `models = [...]`.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List models.
    Ls(Connection),
    /// Keep a model warm on N nodes: routers place it and restore the count when a warm
    /// node leaves; hosts never evict it while pinned.
    #[command(after_help = "Example:\n  wasmesh models pin smollm2 --min-warm 2")]
    Pin {
        /// The model.
        name: String,
        /// Nodes that must keep it warm.
        #[arg(long, default_value_t = 1)]
        min_warm: u32,
        #[command(flatten)]
        conn: Connection,
    },
    /// Stop keeping a model warm (it is evicted like any other when memory is needed).
    Unpin {
        /// The model.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Let every account's apps use a model of yours (models are private by default).
    Publish {
        /// The model.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Make a published model private to your account again.
    Unpublish {
        /// The model.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh models ...`.
pub async fn models(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::Push { file, name, conn } => {
            check_file(&file)?;
            let bar = Bar::new(&name, conn.json);
            let model = conn.client()?.push_model(&file, &name, &bar).await?;
            if conn.json {
                return print_json(&model);
            }
            println!(
                "model {}: {} {} {:.0}M parameters, {}, {} pieces of {}",
                model.name,
                model.facts.architecture,
                model.facts.quantization,
                model.facts.parameters as f64 / 1e6,
                size(model.size),
                model.pieces.hashes.len(),
                size(model.pieces.piece_length)
            );
        }
        ModelsCommand::Ls(conn) => {
            let models = conn.client()?.models().await?;
            if conn.json {
                return print_json(&models);
            }
            println!(
                "{:<24} {:<10} {:<8} {:>10} {:>10} {:>6}  BLAKE3",
                "MODEL", "ARCH", "QUANT", "PARAMS", "SIZE", "PINNED"
            );
            for m in models {
                println!(
                    "{:<24} {:<10} {:<8} {:>9.0}M {:>10} {:>6}  {}",
                    m.name,
                    m.facts.architecture,
                    m.facts.quantization,
                    m.facts.parameters as f64 / 1e6,
                    size(m.size),
                    if m.min_warm > 0 { m.min_warm.to_string() } else { "-".to_string() },
                    &m.blake3[..16]
                );
            }
        }
        ModelsCommand::Pin { name, min_warm, conn } => {
            let model = conn.client()?.pin_model(&name, min_warm).await?;
            if conn.json {
                return print_json(&model);
            }
            if min_warm == 0 {
                println!("model {name}: unpinned");
            } else {
                println!("model {name}: pinned warm on {min_warm} node(s); `wasmesh nodes ls` shows where");
            }
        }
        ModelsCommand::Unpin { name, conn } => {
            let model = conn.client()?.pin_model(&name, 0).await?;
            if conn.json {
                return print_json(&model);
            }
            println!("model {name}: unpinned");
        }
        ModelsCommand::Publish { name, conn } => publish_model(&name, true, &conn).await?,
        ModelsCommand::Unpublish { name, conn } => publish_model(&name, false, &conn).await?,
    }
    Ok(())
}

async fn publish_model(name: &str, public: bool, conn: &Connection) -> anyhow::Result<()> {
    let model = conn.client()?.publish_model(name, public).await?;
    if conn.json {
        return print_json(&model);
    }
    println!("model {name}: {}", if public { "public (every account may use it)" } else { "private to your account" });
    Ok(())
}

/// `wasmesh loras`.
#[derive(clap::Subcommand, Debug)]
pub enum LorasCommand {
    /// Upload a LoRA adapter GGUF, check it fits its base model, and register it.
    #[command(after_help = "Example:\n  wasmesh loras push ./pirate.gguf --base smollm2 --name pirate")]
    Push {
        /// The adapter's .gguf file.
        file: PathBuf,
        /// The base model's name in the registry.
        #[arg(long)]
        base: String,
        /// The adapter's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// List adapters.
    Ls(Connection),
    /// Let every account use an adapter of yours (adapters are private by default).
    Publish {
        /// The adapter.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Make a published adapter private to your account again.
    Unpublish {
        /// The adapter.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Runs `wasmesh loras ...`.
pub async fn loras(cmd: LorasCommand) -> anyhow::Result<()> {
    match cmd {
        LorasCommand::Push { file, base, name, conn } => {
            check_file(&file)?;
            let bar = Bar::new(&name, conn.json);
            let lora = conn.client()?.push_lora(&file, &name, &base, &bar).await?;
            if conn.json {
                return print_json(&lora);
            }
            println!("adapter {} for {}: rank {}, {}", lora.name, lora.base, lora.rank, size(lora.size));
            println!("  grant it to a component with models = [\"{}:{}\"]", lora.base, lora.name);
        }
        LorasCommand::Ls(conn) => {
            let loras = conn.client()?.loras().await?;
            if conn.json {
                return print_json(&loras);
            }
            println!("{:<24} {:<24} {:>5} {:>10} {:<16} PUBLIC", "ADAPTER", "BASE", "RANK", "SIZE", "ACCOUNT");
            for l in loras {
                let public = if l.public { "yes" } else { "no" };
                println!("{:<24} {:<24} {:>5} {:>10} {:<16} {public}", l.name, l.base, l.rank, size(l.size), l.account);
            }
        }
        LorasCommand::Publish { name, conn } => publish_lora(&name, true, &conn).await?,
        LorasCommand::Unpublish { name, conn } => publish_lora(&name, false, &conn).await?,
    }
    Ok(())
}

async fn publish_lora(name: &str, public: bool, conn: &Connection) -> anyhow::Result<()> {
    let lora = conn.client()?.publish_lora(name, public).await?;
    if conn.json {
        return print_json(&lora);
    }
    println!(
        "adapter {name}: {}",
        if public { "public (every account may use it)" } else { "private to your account" }
    );
    Ok(())
}

fn check_file(path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        anyhow::bail!("{} does not exist or is not a file", path.display());
    }
    Ok(())
}
