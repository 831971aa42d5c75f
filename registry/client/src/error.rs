//! Errors talking to the registry: [`ClientError`], with the exit code the CLI
//! ends with, and the crate's [`Result`].

use std::path::{Path, PathBuf};

/// What went wrong talking to the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The registry answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The registry's code, e.g. `invalid_component`.
        code: String,
        /// Its message.
        message: String,
    },
    /// The registry could not be reached.
    #[error(
        "cannot reach the registry at {url}: {message}; is it running, and is the URL right (--registry, WASMESH_REGISTRY)?"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// What the connection attempt reported (refused, timed out, DNS).
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Something local is wrong (a manifest, a downloaded file that does not hash right).
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The process exit code this error should end the CLI with: 3 bad or
    /// missing key / scope, 4 not found, 5 refused input or conflict, 6
    /// registry unreachable or failing, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api { status: 401 | 403, .. } => 3,
            ClientError::Api { status: 404, .. } => 4,
            ClientError::Api { status: 429, .. } => 6,
            ClientError::Api { status: 400..=499, .. } => 5,
            ClientError::Api { .. } | ClientError::Unreachable { .. } => 6,
            ClientError::Invalid(_) => 5,
            ClientError::Io { .. } => 1,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ClientError::Io { path: path.to_owned(), source }
    }
}

/// Results of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
