//! `wasmesh provider install|uninstall|status`: run the host as a service (a systemd
//! unit on Linux, a user unit when not root; a launchd agent on macOS) from a config
//! file, and `wasmesh host --config FILE`, which reads that file.

use super::client::print_json;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The service's name.
const SERVICE: &str = "wasmesh-host";
/// The launchd label.
const LABEL: &str = "dev.wasmesh.host";

/// What a provider's node runs with: `provider.toml`, written by `provider install`,
/// read by `wasmesh host --config`, changed by `wasmesh host set`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The registry's URL.
    pub registry: String,
    /// A key with the provider scope (this file is readable by its owner only).
    pub key: String,
    /// The host's data directory: identity, certificate, weight cache.
    pub data: PathBuf,
    /// Routers to serve through (QUIC addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routers: Vec<String>,
    /// The node's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The host's local HTTP address (`/health`, `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Memory for models: a share of the machine (`50%`) or an amount (`8GiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Inference threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Requests served at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Disk for model weights (`64GiB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// Upload budget for seeding weights to other hosts, in KiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_kib_s: Option<u32>,
}

impl ProviderConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        let config: Self = toml::from_str(&text).with_context(|| {
            format!("{} is not a valid provider config (see `wasmesh provider install --help`)", path.display())
        })?;
        config.host_flags()?;
        Ok(config)
    }

    /// The `wasmesh host` flags this config stands for.
    pub fn host_flags(&self) -> anyhow::Result<Vec<String>> {
        let mut flags = vec!["--registry".into(), self.registry.clone(), "--key".into(), self.key.clone()];
        flags.extend(["--data".into(), self.data.display().to_string()]);
        for router in &self.routers {
            flags.extend(["--router".into(), router.clone()]);
        }
        if let Some(name) = &self.name {
            flags.extend(["--name".into(), name.clone()]);
        }
        if let Some(listen) = &self.listen {
            flags.extend(["--listen".into(), listen.clone()]);
        }
        if let Some(memory) = &self.memory {
            let total = wasmesh_probe::memory_bytes();
            let bytes = wasmesh_api::share::parse_memory(memory, total).map_err(anyhow::Error::msg)?;
            flags.extend(["--model-memory-mb".into(), (bytes >> 20).max(1).to_string()]);
        }
        if let Some(threads) = self.threads {
            flags.extend(["--threads".into(), threads.to_string()]);
        }
        if let Some(requests) = self.requests {
            flags.extend(["--max-instances".into(), requests.to_string()]);
        }
        if let Some(cache) = &self.cache {
            let bytes = wasmesh_api::share::parse_memory(cache, 0).map_err(anyhow::Error::msg)?;
            flags.extend(["--cache-mb".into(), (bytes >> 20).max(1).to_string()]);
        }
        if let Some(upload) = self.upload_kib_s {
            flags.extend(["--seed-kib-s".into(), upload.to_string()]);
        }
        Ok(flags)
    }
}

/// `wasmesh host --config FILE ...` becomes `wasmesh host FLAGS-FROM-FILE --config FILE ...`,
/// so flags given on the command line win (`args_override_self`) and the key never
/// shows in the process list. Other command lines pass unchanged.
pub fn expand_host_config(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    if args.get(1).is_none_or(|a| a != "host") {
        return Ok(args);
    }
    if args.get(2).is_some_and(|a| ["pause", "resume", "status", "set", "help"].iter().any(|c| a == c)) {
        return Ok(args);
    }
    let mut file = std::env::var_os("WASMESH_HOST_CONFIG").map(PathBuf::from);
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if arg == "--config" {
            file = args.get(i + 1).map(PathBuf::from);
        } else if let Some(path) = arg.strip_prefix("--config=") {
            file = Some(PathBuf::from(path));
        }
    }
    let Some(file) = file else { return Ok(args) };
    let flags = ProviderConfig::load(&file)?.host_flags()?;
    let mut out: Vec<OsString> = args[..2].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(args[2..].iter().cloned());
    Ok(out)
}

/// Service managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// systemd (Linux).
    Systemd,
    /// launchd (macOS).
    Launchd,
}

/// `wasmesh provider ...`.
// Parsed once per process: boxing the larger arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand, Debug)]
pub enum ProviderCommand {
    /// Install the host as a service: writes a config file and a systemd unit (a user
    /// unit when not root) or a launchd agent, enables and starts it.
    Install(InstallArgs),
    /// Stop the service and remove its unit and config file (the data directory stays
    /// unless --purge).
    Uninstall(UninstallArgs),
    /// Whether the service is installed and running, and what the host is doing.
    Status(ScopeArgs),
}

/// Where the service lives.
#[derive(clap::Args, Debug, Clone)]
pub struct ScopeArgs {
    /// The service manager (default: this system's).
    #[arg(long, value_enum)]
    pub manager: Option<Manager>,
    /// A system-wide service (default when run as root).
    #[arg(long, conflicts_with = "user")]
    pub system: bool,
    /// A service of this user (default when not root).
    #[arg(long)]
    pub user: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `provider install`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  wasmesh provider install --registry https://registry.example --key wsk_... --router 203.0.113.7:7443 --memory 50%"
)]
pub struct InstallArgs {
    /// The registry's URL.
    #[arg(long, env = "WASMESH_REGISTRY")]
    pub registry: String,
    /// A key with the provider scope.
    #[arg(long, env = "WASMESH_KEY", hide_env_values = true)]
    pub key: String,
    /// A router to serve through, as its QUIC address (repeatable).
    #[arg(long = "router", value_name = "ADDR")]
    pub routers: Vec<std::net::SocketAddr>,
    /// Memory for models: a share of this machine (50%) or an amount (8GiB).
    #[arg(long, default_value = "50%")]
    pub memory: String,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Requests served at once.
    #[arg(long)]
    pub requests: Option<u32>,
    /// Disk for model weights (e.g. 64GiB).
    #[arg(long)]
    pub cache: Option<String>,
    /// Upload budget for seeding weights to other hosts, in KiB/s (default: unlimited).
    #[arg(long)]
    pub upload_kib_s: Option<u32>,
    /// The node's label (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// The host's local HTTP address (`/health`, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Write the files but neither enable nor start the service.
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// Arguments of `provider uninstall`.
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// Remove the data directory too (node identity and cached weights).
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where the files of one kind of install go.
#[derive(Debug, Serialize)]
pub struct Layout {
    /// The service manager.
    pub manager: Manager,
    /// System-wide, or this user's.
    pub system: bool,
    /// The config file.
    pub config: PathBuf,
    /// The host's data directory.
    pub data: PathBuf,
    /// The unit file or property list.
    pub unit: PathBuf,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

impl Layout {
    /// The layout `scope` asks for on this machine.
    pub fn of(scope: &ScopeArgs) -> Self {
        let manager =
            scope.manager.unwrap_or(if cfg!(target_os = "macos") { Manager::Launchd } else { Manager::Systemd });
        let system = scope.system || (!scope.user && is_root());
        let config_home =
            std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).unwrap_or_else(|| home().join(".config"));
        let (config, data, unit) = match (manager, system) {
            (Manager::Systemd, true) => (
                PathBuf::from("/etc/wasmesh/provider.toml"),
                PathBuf::from("/var/lib/wasmesh/host"),
                PathBuf::from(format!("/etc/systemd/system/{SERVICE}.service")),
            ),
            (Manager::Systemd, false) => (
                config_home.join("wasmesh/provider.toml"),
                home().join(".local/share/wasmesh/host"),
                config_home.join(format!("systemd/user/{SERVICE}.service")),
            ),
            (Manager::Launchd, true) => (
                PathBuf::from("/Library/Application Support/wasmesh/provider.toml"),
                PathBuf::from("/Library/Application Support/wasmesh/host"),
                PathBuf::from(format!("/Library/LaunchDaemons/{LABEL}.plist")),
            ),
            (Manager::Launchd, false) => (
                home().join("Library/Application Support/wasmesh/provider.toml"),
                home().join("Library/Application Support/wasmesh/host"),
                home().join(format!("Library/LaunchAgents/{LABEL}.plist")),
            ),
        };
        Self { manager, system, config, data, unit }
    }
}

/// The data directory of an installed provider config of this user (or the system's),
/// for `wasmesh host status` without --data.
pub fn installed_data_dir() -> Option<PathBuf> {
    let scopes = [false, true].map(|system| ScopeArgs { manager: None, system, user: !system, json: false });
    scopes.iter().map(Layout::of).find_map(|layout| ProviderConfig::load(&layout.config).ok().map(|c| c.data))
}

/// Runs a `provider` command.
pub async fn run(command: ProviderCommand) -> anyhow::Result<()> {
    match command {
        ProviderCommand::Install(args) => install(args),
        ProviderCommand::Uninstall(args) => uninstall(args),
        ProviderCommand::Status(scope) => status(scope).await,
    }
}

fn install(args: InstallArgs) -> anyhow::Result<()> {
    let layout = Layout::of(&args.scope);
    wasmesh_api::share::parse_memory(&args.memory, 1 << 30).map_err(anyhow::Error::msg)?;
    if let Some(cache) = &args.cache {
        wasmesh_api::share::parse_memory(cache, 0).map_err(anyhow::Error::msg)?;
    }
    wasmesh_api::ApiKey::parse(&args.key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
    let config = ProviderConfig {
        registry: args.registry.clone(),
        key: args.key.clone(),
        data: layout.data.clone(),
        routers: args.routers.iter().map(ToString::to_string).collect(),
        name: args.name.clone(),
        listen: Some(args.listen.to_string()),
        memory: Some(args.memory.clone()),
        threads: args.threads,
        requests: args.requests,
        cache: args.cache.clone(),
        upload_kib_s: args.upload_kib_s,
    };
    let exe = std::env::current_exe().context("cannot find this program's path for the service to run")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    super::write_secret(&layout.config, &toml::to_string(&config)?)?;
    std::fs::create_dir_all(&layout.data).with_context(|| format!("cannot create {}", layout.data.display()))?;
    let unit = match layout.manager {
        Manager::Systemd => systemd_unit(&exe, &layout),
        Manager::Launchd => launchd_plist(&exe, &layout),
    };
    if let Some(dir) = layout.unit.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&layout.unit, unit).with_context(|| format!("cannot write {}", layout.unit.display()))?;
    let started = if args.no_start { Started::NotAsked } else { start(&layout)? };
    if args.scope.json {
        return print_json(&serde_json::json!({
            "layout": layout, "started": started.word(), "undo": "wasmesh provider uninstall",
        }));
    }
    println!("wrote {} (readable by you only: it holds the key)", layout.config.display());
    println!("wrote {}", layout.unit.display());
    println!("data in {}", layout.data.display());
    match started {
        Started::Yes(how) => {
            println!("enabled and started {SERVICE}; see it with `wasmesh provider status` or `{how}`")
        }
        Started::NotAsked => println!("not started (--no-start); start it with `{}`", start_hint(&layout)),
        Started::NoManager(why) => {
            println!("{why}; start the host by hand with `{} host --config {}`", exe.display(), layout.config.display())
        }
    }
    println!("undo: wasmesh provider uninstall{}", if layout.system { " --system" } else { "" });
    Ok(())
}

enum Started {
    Yes(String),
    NotAsked,
    NoManager(String),
}

impl Started {
    fn word(&self) -> &'static str {
        match self {
            Self::Yes(_) => "started",
            Self::NotAsked => "not_asked",
            Self::NoManager(_) => "no_service_manager",
        }
    }
}

fn systemctl(layout: &Layout, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut command = std::process::Command::new("systemctl");
    if !layout.system {
        command.arg("--user");
    }
    command.args(args).output().context("cannot run systemctl")
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").exists()
}

fn start_hint(layout: &Layout) -> String {
    match (layout.manager, layout.system) {
        (Manager::Systemd, true) => format!("systemctl enable --now {SERVICE}"),
        (Manager::Systemd, false) => format!("systemctl --user enable --now {SERVICE}"),
        (Manager::Launchd, _) => format!("launchctl load -w {}", layout.unit.display()),
    }
}

fn start(layout: &Layout) -> anyhow::Result<Started> {
    match layout.manager {
        Manager::Systemd => {
            if !systemd_running() {
                return Ok(Started::NoManager("systemd is not running on this machine".into()));
            }
            for args in [&["daemon-reload"][..], &["enable", "--now", SERVICE]] {
                let out = systemctl(layout, args)?;
                if !out.status.success() {
                    bail!(
                        "`systemctl {}` failed: {}; the files are written, fix the cause and run `{}`",
                        args.join(" "),
                        String::from_utf8_lossy(&out.stderr).trim(),
                        start_hint(layout)
                    );
                }
            }
            let status = if layout.system { "" } else { "--user " };
            Ok(Started::Yes(format!("systemctl {status}status {SERVICE}")))
        }
        Manager::Launchd => {
            let Ok(out) = std::process::Command::new("launchctl").args(["load", "-w"]).arg(&layout.unit).output()
            else {
                return Ok(Started::NoManager("launchd is not available on this machine".into()));
            };
            if !out.status.success() {
                bail!("`launchctl load` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(Started::Yes(format!("launchctl list {LABEL}")))
        }
    }
}

fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let layout = Layout::of(&args.scope);
    let mut stopped = false;
    if layout.unit.exists() {
        match layout.manager {
            Manager::Systemd if systemd_running() => {
                stopped = systemctl(&layout, &["disable", "--now", SERVICE])?.status.success();
                let _ = systemctl(&layout, &["daemon-reload"]);
            }
            Manager::Launchd => {
                stopped = std::process::Command::new("launchctl")
                    .args(["unload", "-w"])
                    .arg(&layout.unit)
                    .output()
                    .is_ok_and(|o| o.status.success());
            }
            Manager::Systemd => {}
        }
    }
    let mut removed = Vec::new();
    for file in [&layout.unit, &layout.config] {
        if file.exists() {
            std::fs::remove_file(file).with_context(|| format!("cannot remove {}", file.display()))?;
            removed.push(file.display().to_string());
        }
    }
    if args.purge && layout.data.exists() {
        std::fs::remove_dir_all(&layout.data).with_context(|| format!("cannot remove {}", layout.data.display()))?;
        removed.push(layout.data.display().to_string());
    }
    if args.scope.json {
        return print_json(&serde_json::json!({ "stopped": stopped, "removed": removed, "layout": layout }));
    }
    if removed.is_empty() {
        println!("nothing to remove: no {SERVICE} service installed at {}", layout.unit.display());
        return Ok(());
    }
    if stopped {
        println!("stopped and disabled {SERVICE}");
    }
    for file in &removed {
        println!("removed {file}");
    }
    if !args.purge && layout.data.exists() {
        println!("kept {} (node identity, cached weights); --purge removes it", layout.data.display());
    }
    Ok(())
}

async fn status(scope: ScopeArgs) -> anyhow::Result<()> {
    let layout = Layout::of(&scope);
    let installed = layout.unit.exists();
    let active = match layout.manager {
        Manager::Systemd if installed && systemd_running() => systemctl(&layout, &["is-active", SERVICE])
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => None,
    };
    let data = ProviderConfig::load(&layout.config).map(|c| c.data).unwrap_or_else(|_| layout.data.clone());
    let host = super::control::send(&data, &wasmesh_api::wire::ControlRequest::Status).await;
    if scope.json {
        return print_json(&serde_json::json!({
            "installed": installed,
            "service": active,
            "layout": layout,
            "host": host.as_ref().ok().and_then(|a| a.status.clone()),
            "host_error": host.as_ref().err().map(|e| format!("{e:#}")),
        }));
    }
    if installed {
        println!(
            "{SERVICE}: installed ({}), service {}",
            layout.unit.display(),
            active.as_deref().unwrap_or("state unknown")
        );
    } else {
        println!("{SERVICE}: not installed here ({}); `wasmesh provider install` sets it up", layout.unit.display());
    }
    match host {
        Ok(answer) => {
            if let Some(status) = &answer.status {
                super::control::print_status(status);
            }
        }
        Err(e) => println!("host: not running ({e:#})"),
    }
    Ok(())
}

/// A systemd unit running `exe host --config CONFIG`: restarted on failure, stopped with
/// SIGTERM (the host pauses and lets running requests finish, up to 5 minutes).
pub fn systemd_unit(exe: &Path, layout: &Layout) -> String {
    let quote = |p: &Path| format!("\"{}\"", p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""));
    let wanted_by = if layout.system { "multi-user.target" } else { "default.target" };
    format!(
        "# Written by `wasmesh provider install`; `wasmesh provider uninstall` removes it.\n\
         [Unit]\n\
         Description=wasmesh host (a provider node of the wasmesh fabric)\n\
         Documentation=https://example.invalid/wasmesh#for-providers\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exe} host --config {config}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # On stop the host pauses and lets running requests finish (at most --cap-timeout-ms).\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=330\n\
         Environment=RUST_LOG=info\n\
         NoNewPrivileges=yes\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        exe = quote(exe),
        config = quote(&layout.config),
    )
}

/// A launchd property list running `exe host --config CONFIG`, kept alive after a crash.
pub fn launchd_plist(exe: &Path, layout: &Layout) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let log = layout.data.join("host.log");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `wasmesh provider install`; `wasmesh provider uninstall` removes it. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{exe}</string>
    <string>host</string>
    <string>--config</string>
    <string>{config}</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ExitTimeOut</key>
  <integer>330</integer>
  <key>StandardOutPath</key>
  <string>{log}</string>
  <key>StandardErrorPath</key>
  <string>{log}</string>
</dict>
</plist>
"#,
        exe = esc(&exe.display().to_string()),
        config = esc(&layout.config.display().to_string()),
        log = esc(&log.display().to_string()),
    )
}
