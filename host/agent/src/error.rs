//! What can stop an agent, each with the next step in its message.

use std::path::PathBuf;
use wasmesh_client::ClientError;

/// Why the agent could not join the fabric, or could not load an app version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The node's key could not be read or written.
    #[error(
        "cannot load the node identity in {}: {source}; check that the data directory is writable (--data), or point it at a new folder to join as a new node",
        dir.display()
    )]
    Identity {
        /// The data directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry refused or failed the registration, or stayed unreachable.
    #[error("cannot register this node with the registry: {0}")]
    Register(#[source] ClientError),
    /// Another registry call failed (a download, the client set-up).
    #[error(transparent)]
    Registry(#[from] ClientError),
    /// The certificate the registry issued could not be saved.
    #[error("cannot save the node certificate in {}: {source}; check that the data directory is writable", dir.display())]
    SaveCertificate {
        /// The data directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The weight cache could not be opened (its folder cannot be created).
    #[error(transparent)]
    Cache(#[from] wasmesh_weights::CacheError),
    /// The BitTorrent session for weights could not start.
    #[error("cannot start fetching weights: {0}")]
    Weights(#[source] wasmesh_weights::FetchError),
    /// A model could not be fetched.
    #[error("cannot fetch model '{model}': {source}")]
    Fetch {
        /// The model's name in the registry.
        model: String,
        /// What failed: the registry, the cache, a piece that does not verify.
        source: wasmesh_weights::FetchError,
    },
    /// The node's metrics could not be registered (a name registered twice).
    #[error("cannot register the weights metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The QUIC endpoint to dial routers could not be made.
    #[error("cannot set up the link to routers: {0}")]
    Tunnel(#[from] wasmesh_tunnel::TunnelError),
    /// A deployed version names something the agent cannot use.
    #[error("app version refused: {0}; redeploy it with `wasmesh deploy`")]
    BadVersion(String),
    /// The version's manifest does not parse.
    #[error(transparent)]
    Manifest(#[from] wasmesh_api::ManifestError),
    /// The host refused the version (a component that does not compile or link).
    #[error(transparent)]
    Load(#[from] wasmesh_runtime::AppError),
    /// The inference engine (or the Wasmtime engine) could not be built.
    #[error("{0}")]
    Engine(String),
    /// A local app manifest (`--app`) could not be loaded.
    #[error("cannot load app {}: {reason}", path.display())]
    App {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using it? pick another with --listen")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}
