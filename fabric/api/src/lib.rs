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
pub mod torrent;
pub mod wire;

pub use api_key::{ApiKey, ApiKeyError};
pub use app_path::AppPath;
pub use manifest::{AppManifest, ComponentLimits, ComponentSpec, ManifestError, Route, check_name};
pub use model_ref::{MAX_MODEL_REF_LEN, ModelRef, ModelRefError};
