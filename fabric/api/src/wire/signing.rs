//! Node-signed requests: the headers a node signs a request with, and the message
//! it signs.

/// Headers of a request signed by a node.
pub mod node_auth {
    /// The node's id.
    pub const NODE: &str = "x-wasmesh-node";
    /// Unix ms when the request was signed.
    pub const TIMESTAMP: &str = "x-wasmesh-timestamp";
    /// Ed25519 signature of [`super::request_message`], hex.
    pub const SIGNATURE: &str = "x-wasmesh-signature";
    /// How far a signed request's timestamp may be from the registry's clock.
    pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
}

/// What a node signs for each request it makes: method, path, timestamp and the
/// body's blake3, so a captured signature cannot be replayed on another request
/// or body.
pub fn request_message(method: &str, path: &str, timestamp_ms: u64, body: &[u8]) -> Vec<u8> {
    format!("wasmesh-request-v1\n{method}\n{path}\n{timestamp_ms}\n{}", blake3::hash(body).to_hex()).into_bytes()
}
