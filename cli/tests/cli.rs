//! The `wasmesh` binary as a user first meets it: help, version, a wrong command.
//!
//! This test also makes `cargo test --workspace --no-run` build the binary in the
//! same invocation (and so with the same features) as every other test, which is
//! how CI builds the workspace once.

use std::process::Command;

fn wasmesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasmesh")).args(args).output().expect("run the wasmesh binary")
}

#[test]
fn help_lists_the_commands_a_newcomer_needs() {
    let out = wasmesh(&["--help"]);
    assert!(out.status.success(), "--help failed: {out:?}");
    let help = String::from_utf8(out.stdout).expect("utf-8 help");
    for command in ["up", "host", "registry", "router", "deploy", "models"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "`{command}` missing from help:\n{help}");
    }
}

#[test]
fn version_names_the_crate_version() {
    let out = wasmesh(&["--version"]);
    assert!(out.status.success(), "--version failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8 version");
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "version output: {text}");
}

#[test]
fn an_unknown_command_fails_and_says_what_exists() {
    let out = wasmesh(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "unknown command should exit 2: {out:?}");
    let err = String::from_utf8(out.stderr).expect("utf-8 error");
    assert!(err.contains("no-such-command"), "error should name the command: {err}");
    assert!(err.contains("--help"), "error should point at --help: {err}");
}
