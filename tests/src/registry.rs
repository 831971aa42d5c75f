//! Starting a `wasmesh registry` of the test's own, and routers and hosts joined to it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::process::{Process, free_addr};

/// The arguments of `wasmesh registry` listening on `addr` with its state in
/// `dir/registry` and its first admin key written to `dir/admin.key`, plus `extra`.
pub fn registry_args(addr: SocketAddr, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "registry".into(),
        "--listen".into(),
        addr.to_string(),
        "--data".into(),
        dir.join("registry").display().to_string(),
        "--admin-key-file".into(),
        dir.join("admin.key").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Starts `wasmesh registry` (see [`registry_args`]), waits until it answers, and
/// returns it with its admin key.
pub fn start_registry(dir: &Path, extra: &[&str]) -> (Process, String) {
    let addr = free_addr();
    let args = registry_args(addr, dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut registry = Process::spawn(&args, addr, dir.join("registry.log"));
    registry.wait_ready(Duration::from_secs(60));
    let admin = std::fs::read_to_string(dir.join("admin.key")).expect("the registry wrote its admin key");
    (registry, admin.trim().to_string())
}

/// Spawns `wasmesh router` NAME registered with the registry at `registry` (`key`: a
/// router or admin key), HTTP on a free port, QUIC on a free UDP port, state in `dir/NAME`, log in
/// `dir/NAME.log`; returns it (not yet ready: `wait_ready` it) and its QUIC address.
/// Its per-key rate limit is raised: tests load it harder than one caller normally would.
pub fn spawn_router(dir: &Path, name: &str, registry: &str, key: &str) -> (Process, SocketAddr) {
    let quic = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free UDP port");
    (spawn_router_at(dir, name, registry, key, free_addr(), quic, &[]), quic)
}

/// [`spawn_router`] on the given HTTP and QUIC addresses (a restart keeps them: hosts
/// dial the same address again), with `extra` arguments.
pub fn spawn_router_at(
    dir: &Path,
    name: &str,
    registry: &str,
    key: &str,
    http: SocketAddr,
    quic: SocketAddr,
    extra: &[&str],
) -> Process {
    let args = router_args(dir, name, registry, key, http, quic, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::spawn(&args, http, dir.join(format!("{name}.log")))
}

/// The arguments of `wasmesh router` that [`spawn_router_at`] runs.
pub fn router_args(
    dir: &Path,
    name: &str,
    registry: &str,
    key: &str,
    http: SocketAddr,
    quic: SocketAddr,
    extra: &[&str],
) -> Vec<String> {
    let data = dir.join(name);
    let mut args: Vec<String> = vec![
        "router".into(),
        "--listen".into(),
        http.to_string(),
        "--quic".into(),
        quic.to_string(),
        "--registry".into(),
        registry.into(),
        "--key".into(),
        key.into(),
        "--data".into(),
        data.display().to_string(),
        "--name".into(),
        name.into(),
        "--rate-per-key".into(),
        "100000".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Spawns `wasmesh host` NAME joined to the registry at `registry` with a provider
/// key, linked to `routers` (QUIC), one inference thread, its data in `dir/NAME` and its
/// log in `dir/NAME.log`, plus `extra` arguments; returns it, not yet ready.
pub fn spawn_host(
    dir: &Path,
    name: &str,
    registry: &str,
    provider: &str,
    routers: &[SocketAddr],
    extra: &[&str],
) -> Process {
    spawn_host_with_env(dir, name, registry, provider, routers, extra, &[])
}

/// [`spawn_host`] with extra environment variables (`envs`).
pub fn spawn_host_with_env(
    dir: &Path,
    name: &str,
    registry: &str,
    provider: &str,
    routers: &[SocketAddr],
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Process {
    let addr = free_addr();
    let data = dir.join(name);
    let mut args: Vec<String> = [
        "host",
        "--listen",
        &addr.to_string(),
        "--registry",
        registry,
        "--key",
        provider,
        "--data",
        data.to_str().expect("a UTF-8 path"),
        "--name",
        name,
        "--threads",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for router in routers {
        args.extend(["--router".to_string(), router.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::spawn_program(&crate::wasmesh_bin(), &args, envs, addr, dir.join(format!("{name}.log")))
}

/// Runs `wasmesh ARGS --registry URL --key KEY --json`: its stdout as JSON (null when it
/// printed none), or its exit code and stderr.
pub fn cli_json(url: &str, key: &str, args: &[&str]) -> Result<serde_json::Value, (i32, String)> {
    let out = std::process::Command::new(crate::wasmesh_bin())
        .args(args)
        .args(["--registry", url, "--key", key, "--json"])
        .env("WASMESH_CONFIG", "/nonexistent/wasmesh-config.toml")
        .output()
        .expect("the wasmesh binary runs");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    } else {
        Err((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned()))
    }
}

/// A new key of `account` with `scopes` (its nodes in private `network`, if any), made
/// with the admin key `admin`.
pub fn account_key(
    url: &str,
    admin: &str,
    account: &str,
    scopes: &[wasmesh_api::wire::Scope],
    network: Option<&str>,
) -> String {
    let req = wasmesh_api::wire::CreateKey {
        name: format!("{account}-{}", scopes[0]),
        scopes: scopes.to_vec(),
        network: network.map(str::to_string),
        account: Some(account.to_string()),
    };
    let admin = wasmesh_client::Client::new(url, Some(admin.to_string())).expect("a client");
    crate::runtime().block_on(admin.create_key_with(&req)).expect("the admin makes the key").key
}
