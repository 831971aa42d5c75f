//! wasmesh's shared vocabulary.
//!
//! Every crate that needs to agree on a shape (the host, the router, the registry,
//! the CLI) takes it from here, so nothing is copied across crates. For now that is
//! the app manifest, `wasmesh.toml` ([`manifest`]), the registry's wire types
//! ([`wire`]) and the BitTorrent metainfo of weights ([`torrent`]).

pub mod limit;
pub mod manifest;
pub mod pieces;
pub mod torrent;
pub mod wire;

pub use manifest::{AppManifest, ComponentLimits, ComponentSpec, ManifestError, Route, check_name};
