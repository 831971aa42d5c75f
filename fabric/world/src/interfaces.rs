//! The interfaces wasmesh hosts provide to components, by name, grouped by
//! capability, and how an import's version is matched against them.
//!
//! Matching follows Wasmtime's linker: a released version matches any version of
//! the same semver-compatible line (`0.2.x` for `0.2.*`, `1.x` for `1.*`), a
//! pre-release (`0.2.0-rc-2024-10-28`) only itself. The `host` feature's tests check
//! that every name here links on a host's linker.

/// WASI 0.2 and `wasi:http` 0.2, as `wasmtime-wasi` and `wasmtime-wasi-http` link
/// them for the `wasi:http/proxy` world.
pub const WASI_P2: &[&str] = &[
    "wasi:io/error@0.2.12",
    "wasi:io/poll@0.2.12",
    "wasi:io/streams@0.2.12",
    "wasi:clocks/wall-clock@0.2.12",
    "wasi:clocks/monotonic-clock@0.2.12",
    "wasi:filesystem/types@0.2.12",
    "wasi:filesystem/preopens@0.2.12",
    "wasi:random/random@0.2.12",
    "wasi:random/insecure@0.2.12",
    "wasi:random/insecure-seed@0.2.12",
    "wasi:cli/exit@0.2.12",
    "wasi:cli/environment@0.2.12",
    "wasi:cli/stdin@0.2.12",
    "wasi:cli/stdout@0.2.12",
    "wasi:cli/stderr@0.2.12",
    "wasi:cli/terminal-input@0.2.12",
    "wasi:cli/terminal-output@0.2.12",
    "wasi:cli/terminal-stdin@0.2.12",
    "wasi:cli/terminal-stdout@0.2.12",
    "wasi:cli/terminal-stderr@0.2.12",
    "wasi:sockets/network@0.2.12",
    "wasi:sockets/instance-network@0.2.12",
    "wasi:sockets/ip-name-lookup@0.2.12",
    "wasi:sockets/tcp@0.2.12",
    "wasi:sockets/tcp-create-socket@0.2.12",
    "wasi:sockets/udp@0.2.12",
    "wasi:sockets/udp-create-socket@0.2.12",
    "wasi:http/types@0.2.12",
    "wasi:http/outgoing-handler@0.2.12",
];

/// WASI 0.3 and `wasi:http` 0.3, linked for WASIp3 components (and WASIp2 handlers
/// that import some of them).
pub const WASI_P3: &[&str] = &[
    "wasi:cli/types@0.3.0",
    "wasi:cli/exit@0.3.0",
    "wasi:cli/environment@0.3.0",
    "wasi:cli/stdin@0.3.0",
    "wasi:cli/stdout@0.3.0",
    "wasi:cli/stderr@0.3.0",
    "wasi:cli/terminal-input@0.3.0",
    "wasi:cli/terminal-output@0.3.0",
    "wasi:cli/terminal-stdin@0.3.0",
    "wasi:cli/terminal-stdout@0.3.0",
    "wasi:cli/terminal-stderr@0.3.0",
    "wasi:clocks/types@0.3.0",
    "wasi:clocks/monotonic-clock@0.3.0",
    "wasi:clocks/system-clock@0.3.0",
    "wasi:filesystem/types@0.3.0",
    "wasi:filesystem/preopens@0.3.0",
    "wasi:random/random@0.3.0",
    "wasi:random/insecure@0.3.0",
    "wasi:random/insecure-seed@0.3.0",
    "wasi:sockets/types@0.3.0",
    "wasi:sockets/ip-name-lookup@0.3.0",
    "wasi:http/types@0.3.0",
    "wasi:http/client@0.3.0",
];

/// `wasi:nn` (the WIT Wasmtime's `wasmtime-wasi-nn` ships) and wasmesh's streaming
/// extension (`wit/streaming.wit`).
pub const NN: &[&str] = &[
    "wasi:nn/tensor@0.2.0-rc-2024-10-28",
    "wasi:nn/graph@0.2.0-rc-2024-10-28",
    "wasi:nn/inference@0.2.0-rc-2024-10-28",
    "wasi:nn/errors@0.2.0-rc-2024-10-28",
    "wasmesh:guest/streaming@0.1.0",
];

/// Spin's LLM interface.
pub const SPIN_LLM: &[&str] = &["fermyon:spin/llm@2.0.0"];

/// Every capability's interfaces.
pub const ALL: &[&[&str]] = &[WASI_P2, WASI_P3, NN, SPIN_LLM];

/// Whether an import named `name` (`ns:pkg/iface@version`) is one a host provides.
pub fn is_provided(name: &str) -> bool {
    ALL.iter().flat_map(|group| group.iter()).any(|provided| compatible(provided, name))
}

/// `ns:pkg/iface` and the version after `@`, if any.
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    }
}

/// The part of a version that must match for two versions to be compatible: the
/// whole text for a pre-release, else `0.MINOR` below 1.0 and `MAJOR` from 1.0.
fn compatibility_line(version: &str) -> &str {
    if version.contains('-') || version.contains('+') {
        return version;
    }
    let mut dots = version.match_indices('.').map(|(i, _)| i);
    let first = dots.next();
    if version.starts_with("0.") {
        return dots.next().map_or(version, |second| &version[..second]);
    }
    first.map_or(version, |i| &version[..i])
}

fn compatible(provided: &str, import: &str) -> bool {
    let (path, version) = split_version(provided);
    let (import_path, import_version) = split_version(import);
    if path != import_path {
        return false;
    }
    match (version, import_version) {
        (Some(v), Some(w)) => compatibility_line(v) == compatibility_line(w),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_within_their_semver_line() {
        assert!(is_provided("wasi:io/poll@0.2.0"));
        assert!(is_provided("wasi:io/poll@0.2.99"));
        assert!(!is_provided("wasi:io/poll@0.1.0"));
        assert!(is_provided("wasi:clocks/monotonic-clock@0.3.0"));
        assert!(is_provided("wasi:nn/graph@0.2.0-rc-2024-10-28"));
        assert!(!is_provided("wasi:nn/graph@0.2.0-rc-2024-08-19"));
        assert!(is_provided("fermyon:spin/llm@2.1.0"));
        assert!(!is_provided("fermyon:spin/llm@3.0.0"));
        assert!(!is_provided("acme:clocks/monotonic-clock@9.0.0"));
        assert!(!is_provided("wasi:io/poll"));
    }
}
