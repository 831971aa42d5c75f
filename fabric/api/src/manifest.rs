//! The app manifest, `wasmesh.toml`.
//!
//! An app is a set of components and the routes that reach them. Each component
//! lists the models it may load (deny by default) and may override the host's
//! default limits.
//!
//! ```toml
//! [app]
//! name = "demo"
//!
//! [component.chat]
//! source = "chat.wasm"            # path relative to this file
//! models = ["smollm2"]            # models this component may load through wasi:nn
//! ai_models = ["smollm2"]         # ... and through Spin's LLM interface (spin-sdk's `llm`)
//! [component.chat.limits]
//! timeout_ms = 60000
//!
//! [[route]]
//! path = "/chat"                  # exact path; "/chat/..." also matches everything below
//! component = "chat"
//! ```
//!
//! Parsing validates as it goes: unknown keys are refused (a typo never silently
//! changes behaviour), names must be kebab-case, and each route must name a
//! component that exists.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default wall-clock deadline for one request, inference included.
///
/// Generation of a few hundred tokens on a CPU takes seconds; a minute leaves room
/// while still stopping runaway guests.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Default linear-memory cap for one instance: ample for guests that stream
/// prompts and text, small enough that a pooled slot stays cheap.
pub const DEFAULT_MEMORY_MB: u64 = 128;
/// Default cap on a request body (1 MiB): prompts are text.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1 << 20;
/// Default cap on a response body (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// A parsed and validated `wasmesh.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppManifest {
    /// The `[app]` table.
    pub app: AppInfo,
    /// Components by name (`[component.NAME]`).
    #[serde(default)]
    pub component: BTreeMap<String, ComponentSpec>,
    /// Routes (`[[route]]`), matched in order of specificity (exact, then longest prefix).
    #[serde(default)]
    pub route: Vec<Route>,
}

/// The `[app]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppInfo {
    /// The app's name, kebab-case. Example: `name = "demo"`.
    pub name: String,
    /// Free-form version string. Example: `version = "1.2.0"`.
    #[serde(default)]
    pub version: Option<String>,
    /// One line about the app.
    #[serde(default)]
    pub description: Option<String>,
    /// A private network: routers send this app's requests only to nodes in it (nodes
    /// join one through their provider key; see `wasmesh keys create --network`).
    /// Example: `network = "acme"`.
    #[serde(default)]
    pub network: Option<String>,
}

/// One `[component.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Path of the component's `.wasm`, relative to the manifest. Example: `source = "chat.wasm"`.
    pub source: PathBuf,
    /// Models this component may load through `wasi:nn` (`load-by-name`). Deny by default.
    /// Example: `models = ["smollm2"]`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Models this component may use through Spin's LLM interface
    /// (`fermyon:spin/llm`, the `spin-sdk` crate's `llm` module), as in Spin's
    /// `spin.toml`. Deny by default. Example: `ai_models = ["smollm2"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_models: Vec<String>,
    /// Resource limits; each one left out takes the host's default.
    #[serde(default)]
    pub limits: ComponentLimits,
    /// Environment variables the component sees. Example: `env = { GREETING = "hi" }`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Per-component resource limits (`[component.NAME.limits]`). Each field left out
/// uses the default named beside it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentLimits {
    /// Wall-clock deadline for one request in milliseconds, inference included
    /// (default [`DEFAULT_TIMEOUT_MS`]). Example: `timeout_ms = 30000`.
    pub timeout_ms: Option<u64>,
    /// Linear memory one instance may grow to, in MiB (default [`DEFAULT_MEMORY_MB`]).
    pub memory_mb: Option<u64>,
    /// Largest request body accepted, in bytes; larger gets 413 (default [`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: Option<u64>,
    /// Largest response body the component may write, in bytes (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: Option<u64>,
}

impl ComponentLimits {
    /// The deadline, with the default applied.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)
    }
    /// The memory cap in bytes, with the default applied.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) << 20
    }
    /// The request body cap, with the default applied.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES)
    }
    /// The response body cap, with the default applied.
    pub fn max_response_bytes(&self) -> u64 {
        self.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
    }
}

/// The most a node's owner lets any manifest ask for (`wasmesh host --cap-*`): a
/// component's limits above them are lowered to them at load, so no tenant can hold an
/// instance slot for hours or reserve the node's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCaps {
    /// Longest deadline, ms. Default 300,000 (5 minutes).
    pub timeout_ms: u64,
    /// Largest linear memory per instance, MiB. Default 4096.
    pub memory_mb: u64,
    /// Largest request body, bytes. Default 64 MiB.
    pub max_request_bytes: u64,
    /// Largest response body, bytes. Default 256 MiB.
    pub max_response_bytes: u64,
    /// Requests of one app a node runs at once; more get 503 with `Retry-After`, so one
    /// app cannot take every instance slot. Default 256 (the default instance pool).
    pub instances_per_app: u32,
}

impl Default for LimitCaps {
    fn default() -> Self {
        Self {
            timeout_ms: 300_000,
            memory_mb: 4096,
            max_request_bytes: 64 << 20,
            max_response_bytes: 256 << 20,
            instances_per_app: 256,
        }
    }
}

impl ComponentLimits {
    /// These limits with the defaults applied and each lowered to `caps`; also the
    /// manifest keys that were lowered (for the load log).
    pub fn capped(&self, caps: &LimitCaps) -> (ComponentLimits, Vec<&'static str>) {
        let mut lowered = Vec::new();
        let mut cap = |key: &'static str, value: u64, max: u64| {
            if value > max {
                lowered.push(key);
            }
            Some(value.min(max))
        };
        let limits = ComponentLimits {
            timeout_ms: cap("timeout_ms", self.timeout_ms(), caps.timeout_ms),
            memory_mb: cap("memory_mb", self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB), caps.memory_mb),
            max_request_bytes: cap("max_request_bytes", self.max_request_bytes(), caps.max_request_bytes),
            max_response_bytes: cap("max_response_bytes", self.max_response_bytes(), caps.max_response_bytes),
        };
        (limits, lowered)
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `/exact/path`, or `/prefix/...` to match the prefix and everything below it
    /// (`/...` matches every path).
    pub path: String,
    /// The component that serves it.
    pub component: String,
}

impl Route {
    /// Whether this route matches `path`, and how specific the match is (higher wins).
    pub fn matches(&self, path: &str) -> Option<usize> {
        match self.path.strip_suffix("/...") {
            Some(prefix) => {
                let rest = path.strip_prefix(prefix)?;
                (rest.is_empty() || rest.starts_with('/')).then_some(prefix.len())
            }
            None => (self.path == path).then_some(usize::MAX),
        }
    }
}

/// Why a manifest was refused. Each message says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key, or wrong type.
    #[error("invalid manifest{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Parse {
        /// The manifest's path, when it came from a file.
        path: Option<PathBuf>,
        /// The parser's message, which points at the line.
        message: String,
    },
    /// A semantic problem (bad name, dangling route, ...).
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

impl AppManifest {
    /// Reads and validates a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ManifestError::Parse { message, .. } => ManifestError::Parse { path: Some(path.to_owned()), message },
            other => other,
        })
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: AppManifest =
            toml::from_str(text).map_err(|e| ManifestError::Parse { path: None, message: e.to_string() })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks names, routes and limits.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name("app name", &self.app.name)?;
        if let Some(network) = &self.app.network {
            check_name("network name", network)?;
        }
        if self.component.is_empty() {
            return Err(ManifestError::Invalid(
                "the app has no components: add a [component.NAME] table with `source = \"NAME.wasm\"`".into(),
            ));
        }
        for (name, spec) in &self.component {
            check_name("component name", name)?;
            if spec.source.as_os_str().is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "component '{name}' has an empty `source`: set it to the path of its .wasm"
                )));
            }
            for (key, models) in [("models", &spec.models), ("ai_models", &spec.ai_models)] {
                if models.iter().any(|m| m.trim().is_empty()) {
                    return Err(ManifestError::Invalid(format!(
                        "component '{name}' lists an empty model name in `{key}`"
                    )));
                }
            }
            let l = &spec.limits;
            for (key, value) in [
                ("timeout_ms", l.timeout_ms),
                ("memory_mb", l.memory_mb),
                ("max_request_bytes", l.max_request_bytes),
                ("max_response_bytes", l.max_response_bytes),
            ] {
                if value == Some(0) {
                    return Err(ManifestError::Invalid(format!(
                        "component '{name}': limits.{key} is 0; leave it out to use the default"
                    )));
                }
            }
            if l.memory_mb.is_some_and(|m| m > 4096) {
                return Err(ManifestError::Invalid(format!(
                    "component '{name}': limits.memory_mb is over 4096, the most a 32-bit wasm memory can hold"
                )));
            }
        }
        if self.route.is_empty() {
            return Err(ManifestError::Invalid(
                "the app has no routes: add a [[route]] with `path` and `component`".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for route in &self.route {
            if !route.path.starts_with('/') {
                return Err(ManifestError::Invalid(format!("route '{}' must start with '/'", route.path)));
            }
            if route.path.contains("...") && !route.path.ends_with("/...") {
                return Err(ManifestError::Invalid(format!(
                    "route '{}': '...' may only end a path, as in '/api/...'",
                    route.path
                )));
            }
            if !self.component.contains_key(&route.component) {
                let known: Vec<_> = self.component.keys().map(String::as_str).collect();
                return Err(ManifestError::Invalid(format!(
                    "route '{}' names component '{}', which is not defined; defined: {}",
                    route.path,
                    route.component,
                    known.join(", ")
                )));
            }
            if !seen.insert(route.path.as_str()) {
                return Err(ManifestError::Invalid(format!("route '{}' is defined twice", route.path)));
            }
        }
        Ok(())
    }

    /// The component serving `path`: exact routes first, then the longest prefix.
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.route
            .iter()
            .filter_map(|r| r.matches(path).map(|score| (score, r)))
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| r)
    }
}

/// Checks that `name` is kebab-case (what apps, components, models and adapters
/// are named); `what` says which name it is in the message.
pub fn check_name(what: &str, name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        return Ok(());
    }
    let hint = if name.contains('_') {
        format!(" (words are separated with '-', not '_': try '{}')", name.replace('_', "-"))
    } else if name.chars().any(|c| c.is_ascii_uppercase()) {
        format!(" (use lower case: try '{}')", name.to_ascii_lowercase())
    } else {
        String::new()
    };
    Err(ManifestError::Invalid(format!(
        "{what} '{name}' is not valid: use lower-case letters, digits and single '-' (kebab-case), starting with a letter{hint}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app]
name = "demo"

[component.chat]
source = "chat.wasm"
models = ["smollm2"]
[component.chat.limits]
timeout_ms = 1000

[component.hello]
source = "hello.wasm"

[[route]]
path = "/chat"
component = "chat"

[[route]]
path = "/hello/..."
component = "hello"
"#;

    #[test]
    fn parses_and_applies_defaults() {
        let m = AppManifest::parse(GOOD).unwrap();
        assert_eq!(m.app.name, "demo");
        let chat = &m.component["chat"];
        assert_eq!(chat.models, vec!["smollm2"]);
        assert_eq!(chat.limits.timeout_ms(), 1000);
        assert_eq!(chat.limits.memory_bytes(), DEFAULT_MEMORY_MB << 20);
        let asks = ComponentLimits { timeout_ms: Some(u64::MAX), memory_mb: Some(8), ..Default::default() };
        let caps = LimitCaps { timeout_ms: 1000, ..Default::default() };
        let (capped, lowered) = asks.capped(&caps);
        assert_eq!((capped.timeout_ms(), capped.memory_bytes() >> 20), (1000, 8));
        assert_eq!(capped.max_request_bytes(), DEFAULT_MAX_REQUEST_BYTES, "defaults apply under the caps");
        assert_eq!(lowered, ["timeout_ms"]);
        assert!(m.component["hello"].models.is_empty(), "models are denied by default");
    }

    #[test]
    fn routes_prefer_exact_then_longest_prefix() {
        let m = AppManifest::parse(GOOD).unwrap();
        assert_eq!(m.route_for("/chat").unwrap().component, "chat");
        assert!(m.route_for("/chat/x").is_none());
        assert_eq!(m.route_for("/hello").unwrap().component, "hello");
        assert_eq!(m.route_for("/hello/a/b").unwrap().component, "hello");
        assert!(m.route_for("/helloworld").is_none());
        assert!(m.route_for("/").is_none());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let bad = GOOD.replace("models = [", "modles = [");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("modles"), "{err}");
        let bad = GOOD.replace("timeout_ms = 1000", "timeout = 1000");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("timeout"), "{err}");
    }

    #[test]
    fn names_get_fix_it_hints() {
        let bad = GOOD.replace("name = \"demo\"", "name = \"my_app\"");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("try 'my-app'"), "{err}");
    }

    #[test]
    fn dangling_and_duplicate_routes_are_refused() {
        let bad = GOOD.replace("component = \"hello\"", "component = \"helo\"");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("'helo'") && err.contains("chat, hello"), "{err}");
        let bad = GOOD.replace("/hello/...", "/chat");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("defined twice"), "{err}");
    }

    #[test]
    fn zero_limits_are_refused() {
        let bad = GOOD.replace("timeout_ms = 1000", "timeout_ms = 0");
        let err = AppManifest::parse(&bad).unwrap_err().to_string();
        assert!(err.contains("limits.timeout_ms is 0"), "{err}");
    }
}
