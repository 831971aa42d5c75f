//! The `wasmesh` command line. Each subcommand wires library crates; the work
//! lives in them.

mod commands;

use clap::{Parser, Subcommand};

/// wasmesh: an edge-serverless WASM inference fabric.
#[derive(Parser)]
#[command(version, about, long_about = None, after_help = "Examples:\n  wasmesh up                                   # the demo on http://127.0.0.1:8080\n  wasmesh host --app ./wasmesh.toml --model smollm2=./SmolLM2-135M-Instruct.Q4_1.gguf")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo: the example apps on one host, on the embedded defaults.
    Up(commands::up::UpArgs),
    /// Serve one or more app manifests on this machine.
    Host(commands::host::HostArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    commands::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
