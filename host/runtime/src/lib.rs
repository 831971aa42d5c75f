//! The wasmesh worker runtime.
//!
//! A [`Host`] owns its Wasmtime engines (one for WASIp2 components, one for WASIp3
//! ones, each with a pooling allocator; epoch interruption with a single ticker
//! thread) and serves the routes of one or more apps over HTTP.
//! Each request gets a fresh instance from the component's pre-instantiated
//! template ([`wasmtime_wasi_http::p2::bindings::ProxyPre`]), with the component's
//! deadline, memory cap and body caps; `wasi:nn` reaches the node's
//! [`wasmesh_engine::InferenceEngine`].
//!
//! ```no_run
//! # async fn demo(engine: std::sync::Arc<dyn wasmesh_engine::InferenceEngine>) -> wasmtime::Result<()> {
//! use wasmesh_runtime::{Host, HostConfig};
//! let host = Host::new(HostConfig::default(), engine)?;
//! host.load_app_file(std::path::Path::new("wasmesh.toml")).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! host.serve(listener).await?;
//! # Ok(()) }
//! ```
//!
//! Failures of one request (a trap, a deadline, a memory cap, a bad body) become an
//! HTTP error for that request only, with a message saying which limit was hit and
//! which manifest key sets it; the host keeps serving.

mod app;
mod body;
mod cpu;
mod engines;
mod failure;
mod host;
mod invoke;
mod limits;
mod metrics;
mod outcome;
mod routes;
mod serve;
mod served;
mod state;

pub use app::{AppError, LoadedApp};
pub use cpu::default_app_cores;
pub use host::{Host, HostConfig};
pub use routes::Mount;
pub use served::{RouterClaims, RouterSeed, Served, ServedReport};
/// The deploy-time check, as the registry runs it (from the world crate).
pub use wasmesh_world::ComponentValidator;
/// The guest interfaces this host links (from the world crate).
pub use wasmesh_world::{nn, spin};
