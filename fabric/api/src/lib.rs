//! wasmesh's shared vocabulary.
//!
//! Every crate that needs to agree on a shape (the host, the router, the registry,
//! the CLI) takes it from here, so nothing is copied across crates, and each text is
//! parsed once, at the edge, into its type: a model or adapter reference
//! ([`ModelRef`]), an API key ([`ApiKey`]), an app-scoped path ([`AppPath`]); the app
//! manifest, `wasmesh.toml` ([`manifest`]); the registry's wire types ([`wire`]);
//! content hashes of pieces ([`pieces`]) and the BitTorrent metainfo of weights
//! ([`torrent`]).

pub mod api_key;
pub mod app_path;
pub mod limit;
pub mod manifest;
pub mod model_ref;
pub mod pieces;
pub mod share;
pub mod torrent;
pub mod wire;

pub use api_key::{ApiKey, ApiKeyError};
pub use app_path::AppPath;

/// The header a host sets on its 404 for a path it has no route for: no component
/// ran, so a router may try another host (the app's deploy has not reached this one).
pub const NO_ROUTE_HEADER: &str = "x-wasmesh-no-route";

/// The header of a host's 503 while its provider paused it: no component ran, so a
/// router tries the next node.
pub const PAUSED_HEADER: &str = "x-wasmesh-paused";

/// The response header a metering router names the request's id in (for
/// `GET /v1/generation?id=...`).
pub const REQUEST_ID_HEADER: &str = "x-wasmesh-request";

/// The header a router sets when it checks a caller's key with the registry: the
/// caller's address, so failed attempts lock that key id for that address only (and a
/// caller cannot lock a key's owner out through a router). Trusted only beside
/// [`ROUTER_KEY_HEADER`].
pub const CALLER_ADDR_HEADER: &str = "x-wasmesh-caller-addr";

/// The router's own key, sent beside [`CALLER_ADDR_HEADER`]; it must have the admin scope.
pub const ROUTER_KEY_HEADER: &str = "x-wasmesh-router-key";
pub use manifest::{AppManifest, ComponentLimits, ComponentSpec, LimitCaps, ManifestError, Route, check_name};
pub use model_ref::{MAX_MODEL_REF_LEN, ModelRef, ModelRefError};
