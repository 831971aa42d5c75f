//! A client of the wasmesh registry: what the CLI and the hosts use.
//!
//! Uploads are resumable: a file is hashed first, the registry answers which
//! parts it already has (from an earlier, interrupted attempt), and only the
//! missing ones are sent, each retried on transient failures. Node requests are
//! signed with the node's Ed25519 key ([`NodeIdentity`]).

mod identity;

mod accounts;
mod apps;
mod client;
mod credits;
mod downloads;
mod error;
mod keys;
mod models;
mod nodes;
mod progress;
mod uploads;

pub use client::Client;
pub use error::{ClientError, Result};
pub use identity::NodeIdentity;
pub use progress::{NoProgress, Progress};
pub use uploads::hash_file;
