//! `wasmesh host pause|resume|status|set`: talk to a running host through its control
//! socket (`DATA/control.sock`, see `wasmesh_agent::ControlConfig`).

use super::client::print_json;
use anyhow::{Context, bail};
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wasmesh_api::wire::{CONTROL_SOCKET, ControlAnswer, ControlRequest, HostStatus, format_micros};

/// Commands to a running host.
#[derive(clap::Subcommand, Debug)]
pub enum HostControl {
    /// Stop taking new requests (routers stop routing here at once; running requests
    /// finish); the node keeps its registration and caches.
    Pause(ControlArgs),
    /// Take requests again after `pause`.
    Resume(ControlArgs),
    /// State, models, requests served and earnings of the running host.
    Status(ControlArgs),
    /// Change what the node lends while it runs: `memory=40%` or `memory=8GiB` (a
    /// smaller share evicts idle models at once), `requests=8`, `upload_kib_s=512`,
    /// `cache=64GiB` (evicts unused weights); `threads` is written to the config file for
    /// the next start.
    Set {
        /// The setting, as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE")]
        setting: String,
        #[command(flatten)]
        args: ControlArgs,
    },
}

/// Which host to talk to.
#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// The host's data directory (its control socket lives there). Default: the one in
    /// the provider config (`wasmesh provider install`), else `~/.local/share/wasmesh/host`.
    #[arg(long, env = "WASMESH_HOST_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one control command.
pub async fn run(command: HostControl) -> anyhow::Result<()> {
    let (request, args) = match command {
        HostControl::Pause(args) => (ControlRequest::Pause, args),
        HostControl::Resume(args) => (ControlRequest::Resume, args),
        HostControl::Status(args) => (ControlRequest::Status, args),
        HostControl::Set { setting, args } => {
            let Some((key, value)) = setting.split_once('=') else {
                bail!("write the setting as KEY=VALUE, e.g. `wasmesh host set memory=40%`");
            };
            (ControlRequest::Set { key: key.trim().to_string(), value: value.trim().to_string() }, args)
        }
    };
    let data = match args.data {
        Some(dir) => dir,
        None => super::provider::installed_data_dir().unwrap_or_else(super::host::default_data_dir),
    };
    let answer = send(&data, &request).await?;
    if args.json {
        print_json(&answer)?;
    } else {
        println!("{}", answer.message);
        if let Some(status) = &answer.status {
            print_status(status);
        }
    }
    if !answer.ok {
        bail!("{}", answer.message);
    }
    Ok(())
}

/// Sends `request` to the host whose data directory is `data`.
pub async fn send(data: &std::path::Path, request: &ControlRequest) -> anyhow::Result<ControlAnswer> {
    let socket = data.join(CONTROL_SOCKET);
    let stream = tokio::net::UnixStream::connect(&socket).await.with_context(|| {
        format!(
            "no host is running with data directory {} (no control socket at {}): start it (`wasmesh host ...`, or \
             `systemctl --user start wasmesh-host` after `wasmesh provider install`), or point --data at its data directory",
            data.display(),
            socket.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await.context("the host closed its control socket")?;
    serde_json::from_str(&answer)
        .with_context(|| format!("the host's control socket answered something else: {answer}"))
}

/// The human form of a host's status.
pub fn print_status(s: &HostStatus) {
    let state = serde_json::to_value(s.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    println!("  state     {state}");
    if let Some(node) = &s.node_id {
        println!("  node      {node} ({})", s.registry.as_deref().unwrap_or("-"));
    }
    println!("  requests  {} running, {} served, at most {} at once", s.in_flight, s.served, s.max_requests);
    println!("  memory    {} MiB of {} MiB for models", s.model_memory_used_bytes >> 20, s.model_memory_bytes >> 20);
    let models: Vec<String> = s
        .models
        .iter()
        .map(|m| {
            let state =
                serde_json::to_value(m.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            format!("{} ({state}{})", m.name, if m.pinned { ", pinned" } else { "" })
        })
        .collect();
    println!("  models    {}", if models.is_empty() { "none yet".to_string() } else { models.join(", ") });
    match (&s.earnings, &s.earnings_error) {
        (Some(b), _) => println!(
            "  earnings  {} credits in escrow, {} available (account {})",
            format_micros(b.pending_earnings),
            format_micros(b.available),
            b.account
        ),
        (None, Some(why)) => println!("  earnings  unknown: {why}"),
        (None, None) => {}
    }
    if let Some(config) = &s.config {
        println!("  config    {config}");
    }
}
