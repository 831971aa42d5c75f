//! The transport between hosts and routers: QUIC (quinn), dialled by the host so
//! that nodes behind NAT can serve.
//!
//! * **Identity**: both ends present certificates the registry's CA issued
//!   (mutual TLS). A router's certificate names [`ROUTER_NAME`]; a host's carries
//!   its node's Ed25519 key, and the router takes the node id from that key
//!   ([`peer_node_id`]), never from anything the host says.
//! * **Requests**: the router opens one bidirectional stream per request and
//!   writes an [`Open`]: for a caller's request [`Open::Request`] with its
//!   [`RequestHead`], then the body as `Data` frames and `End`; the host answers a
//!   [`ResponseHead`], then `Data` frames as the component produces them (SSE
//!   arrives as it is written), then `End` (or `Error`). Control messages are
//!   other variants of [`Open`] ([`Open::Preload`]), never made-up URIs.
//! * **State**: the host opens one unidirectional stream at connect and writes a
//!   [`HostReport`] whenever its state changes, at least every second, so the
//!   router's view of warm models, load and readiness is seconds fresh.
//!
//! Frames: one byte of kind, a big-endian `u32` length, the payload. Heads are
//! binary (postcard), reports JSON ([`frames`] says why).

//!
//! The frames and messages ([`frames`]) need no QUIC: without the default `quic`
//! feature the crate is that codec alone (its fuzz target builds it so).

pub mod frames;
#[cfg(feature = "quic")]
mod quic;
mod reader;

pub use frames::{
    Frame, GenerationIds, HostReport, Open, RequestHead, ResponseHead, decode_head, encode_frame, encode_head,
    write_frame, write_head, write_json,
};
#[cfg(feature = "quic")]
pub use quic::{
    TlsIdentity, host_config, host_endpoint, peer_network, peer_node_id, router_config, router_endpoint, version_hint,
};
pub use reader::{Chunks, FrameReader};

/// ALPN of the protocol: a host and a router of different versions fail the handshake
/// (and the host's log says so) rather than misread each other's frames. Version 2: binary
/// heads (version 1 sent them as JSON).
pub const ALPN: &[u8] = b"wasmesh/2";
/// The name every router certificate carries.
pub const ROUTER_NAME: &str = "router.wasmesh";

/// Transport errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// A certificate or key could not be used.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The QUIC endpoint could not be created.
    #[error("cannot open a QUIC endpoint on {addr}: {source}")]
    Endpoint {
        /// The address it was to listen on.
        addr: std::net::SocketAddr,
        /// The operating system's error (address in use, no permission).
        source: std::io::Error,
    },
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The stream or connection failed.
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}
