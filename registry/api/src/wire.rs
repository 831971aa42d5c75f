//! The registry's wire types: what the CLI, the hosts and the registry send each
//! other as JSON. Field names are `snake_case`; times are Unix milliseconds;
//! hashes are lowercase hex blake3.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What an API key may do. A key holds one or more scopes; `admin` implies all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Deploy apps, push models and LoRAs.
    Deploy,
    /// Everything, including creating keys.
    Admin,
    /// Register nodes and send their heartbeats.
    Provider,
    /// Call functions through a router.
    Invoke,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Deploy, Scope::Provider, Scope::Invoke];

    /// The scope's name as keys and flags spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
            Scope::Provider => "provider",
            Scope::Invoke => "invoke",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope '{s}': use one of admin, deploy, provider, invoke"))
    }
}

/// The body of every error the registry returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, in a sentence that says what to do.
    pub error: String,
    /// A stable machine-readable code, e.g. `unauthorized`, `invalid_component`.
    pub code: String,
}

/// `POST /v1/keys`: create an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A label for people, e.g. `ci-deploy`.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// For provider keys: the private network the nodes it registers join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The public part of the key, e.g. `k3f9a...`.
    pub id: String,
    /// Its label.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at_ms: u64,
    /// Whether it was revoked.
    pub revoked: bool,
    /// The private network of the nodes it registers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `GET /v1/whoami`: the key a request was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// The key's id.
    pub id: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The key's id and scopes.
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The whole key, `wsk_ID_SECRET`. Store it now: the registry keeps only its hash.
    pub key: String,
}

/// What an uploaded artifact is for. Models and LoRAs get a chunk manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// A WebAssembly component.
    Component,
    /// A GGUF model.
    Model,
    /// A GGUF LoRA adapter.
    Lora,
}

/// `POST /v1/uploads`: start (or resume) an upload of `size` bytes whose blake3 is `blake3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    /// The whole file's blake3.
    pub blake3: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it is.
    pub kind: ArtifactKind,
}

/// An upload in progress. Parts are `part_size` bytes (the last one shorter) and
/// may arrive in any order; a client that was interrupted asks for the session
/// again and sends only the parts not in `received`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    /// The upload's id, for `PUT /v1/uploads/{id}/parts/{n}`.
    pub id: String,
    /// Size of each part but the last.
    pub part_size: u64,
    /// How many parts make the file.
    pub parts: u64,
    /// Parts already received.
    pub received: Vec<u64>,
    /// Set when the blob already exists: nothing to send.
    pub complete: bool,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobInfo {
    /// The whole file's blake3.
    pub blake3: String,
    /// Size in bytes.
    pub size: u64,
    /// What it was uploaded as.
    pub kind: ArtifactKind,
    /// Per-piece hashes, for models and LoRAs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<PieceManifest>,
}

/// The blake3 of each fixed-size piece of a file, so a fetcher can verify each
/// piece as it arrives, from whichever source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PieceManifest {
    /// Bytes per piece (the last piece is shorter).
    pub piece_length: u64,
    /// blake3 of each piece, in order.
    pub hashes: Vec<String>,
    /// SHA-1 of each piece (BitTorrent's piece hashes), in order; empty for files
    /// pushed before the registry recorded torrents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sha1: Vec<String>,
    /// The torrent's info hash (see [`crate::torrent`]), when `sha1` is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info_hash: Option<String>,
}

/// Piece length for a file of `size` bytes: about 1,000 to 4,000 pieces, between
/// 256 KiB and 16 MiB, a power of two (what BitTorrent clients expect).
pub fn piece_length_for(size: u64) -> u64 {
    let mut len: u64 = 256 << 10;
    while len < (16 << 20) && size / len > 4000 {
        len *= 2;
    }
    len
}

/// `POST /v1/apps/{name}/versions`: deploy a new version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// The `wasmesh.toml` text.
    pub manifest: String,
    /// Each component's uploaded blob, by component name.
    pub components: BTreeMap<String, String>,
}

/// `POST /v1/apps/{name}/rollback`: make an earlier version current again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version to serve.
    pub version: u64,
}

/// One immutable version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// The app.
    pub app: String,
    /// 1, 2, 3... in deploy order.
    pub version: u64,
    /// The `wasmesh.toml` text as deployed.
    pub manifest: String,
    /// Each component's blob (blake3), by component name.
    pub components: BTreeMap<String, String>,
    /// When it was deployed.
    pub created_at_ms: u64,
    /// The key that deployed it.
    pub deployed_by: String,
}

/// An app and its current version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSummary {
    /// The app.
    pub name: String,
    /// The version served now.
    pub current_version: u64,
    /// How many versions exist.
    pub versions: u64,
    /// When the current version was chosen (deploy or rollback).
    pub updated_at_ms: u64,
}

/// What a host serves: the current version of every app, and a revision that
/// changes whenever any of them does (`GET /v1/deployments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployments {
    /// Increases with every deploy and rollback.
    pub revision: u64,
    /// The current version of each app.
    pub apps: Vec<AppVersion>,
}

/// What the GGUF header says about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `llama`.
    pub architecture: String,
    /// Number of weights, summed over the tensors.
    pub parameters: u64,
    /// Quantization, from `general.file_type` (e.g. `Q4_1`), or the most common tensor type.
    pub quantization: String,
    /// Context length the model was trained for, when the header says.
    #[serde(default)]
    pub context_length: Option<u64>,
}

/// `POST /v1/models`: register an uploaded GGUF under a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushModel {
    /// The model's name, kebab-case, e.g. `smollm2`.
    pub name: String,
    /// The uploaded blob.
    pub blake3: String,
}

/// A model in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Its name.
    pub name: String,
    /// The file's blake3.
    pub blake3: String,
    /// The file's size.
    pub size: u64,
    /// What the header says.
    pub facts: ModelFacts,
    /// Per-piece hashes.
    pub pieces: PieceManifest,
    /// When it was pushed.
    pub created_at_ms: u64,
}

/// `POST /v1/loras`: register an uploaded LoRA adapter for a base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushLora {
    /// The adapter's name, kebab-case.
    pub name: String,
    /// The base model's name in the registry.
    pub base: String,
    /// The uploaded blob.
    pub blake3: String,
}

/// A LoRA adapter in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraInfo {
    /// Its name.
    pub name: String,
    /// The base model.
    pub base: String,
    /// The file's blake3.
    pub blake3: String,
    /// The file's size.
    pub size: u64,
    /// The adapter's rank.
    pub rank: u64,
    /// Per-piece hashes.
    pub pieces: PieceManifest,
    /// When it was pushed.
    pub created_at_ms: u64,
}

/// `POST /v1/nodes/register`, sent with a `provider` key: a node proves it holds
/// the Ed25519 key its id is derived from by signing
/// [`registration_message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterNode {
    /// `node_id_for(public_key)`.
    pub node_id: String,
    /// The node's Ed25519 public key, hex.
    pub public_key: String,
    /// A label for people (defaults to the hostname).
    pub name: String,
    /// Now, in Unix ms; the registry refuses stale registrations.
    pub timestamp_ms: u64,
    /// Ed25519 signature of [`registration_message`], hex.
    pub signature: String,
    /// What the node is (a router's certificate names `router.wasmesh`; registering
    /// one needs an `admin` key).
    #[serde(default)]
    pub role: NodeRole,
}

/// What a registered identity is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A worker host.
    #[default]
    Host,
    /// A router.
    Router,
}

impl NodeRole {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Host => "host",
            NodeRole::Router => "router",
        }
    }
}

/// The registry's answer to a registration: a certificate for the node's key,
/// signed by the registry's CA (the QUIC transport uses it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeCertificate {
    /// The node.
    pub node_id: String,
    /// Its certificate, PEM.
    pub certificate_pem: String,
    /// The registry CA's certificate, PEM.
    pub ca_pem: String,
}

/// A node's hardware.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores.
    pub cpu_cores: u32,
    /// Physical memory.
    pub memory_bytes: u64,
    /// GPUs found (nvidia-smi, rocm-smi, system_profiler).
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
}

/// One GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// `nvidia`, `amd` or `apple`.
    pub vendor: String,
    /// Its marketing name.
    pub name: String,
    /// Its memory (0 when unknown, e.g. unified memory).
    pub memory_bytes: u64,
}

/// What the provider lets the fabric use on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceShare {
    /// Memory for loaded models.
    pub model_memory_bytes: u64,
    /// Requests served at once.
    pub max_concurrency: u32,
}

/// Where a model stands on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Loaded in memory: requests run at once.
    Loaded,
    /// On local disk: a load away.
    OnDisk,
    /// Being downloaded.
    Fetching,
}

/// A model (or LoRA, named `MODEL:ADAPTER`) a node holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedModel {
    /// The model's name, or `MODEL:ADAPTER` for an adapter.
    pub name: String,
    /// Where it stands.
    pub state: ModelState,
}

/// Memory pressure over the last heartbeat interval, from the kernel's counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPressure {
    /// Pages swapped in and out per second.
    pub swap_pages_per_s: f64,
    /// Major page faults per second.
    pub major_faults_per_s: f64,
    /// Whether either rate is above the node's threshold (the node is then not ready).
    pub under_pressure: bool,
}

/// A node's heartbeat (`POST /v1/nodes/{id}/heartbeat`, signed by the node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The hardware.
    pub hardware: Hardware,
    /// The provider's share.
    pub share: ResourceShare,
    /// Models and LoRAs in its caches.
    #[serde(default)]
    pub models: Vec<CachedModel>,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Memory pressure.
    pub pressure: MemoryPressure,
    /// Whether the node takes requests (false under memory pressure or while starting).
    pub ready: bool,
    /// The host's version.
    pub version: String,
    /// The deployments revision the node serves.
    #[serde(default)]
    pub deployments_revision: u64,
}

/// A node's status as the registry sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeats arrive and it is ready.
    Online,
    /// Heartbeats arrive but it is not ready (starting, or under memory pressure).
    NotReady,
    /// It missed its heartbeats.
    Offline,
}

/// A node as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its id.
    pub node_id: String,
    /// Its label.
    pub name: String,
    /// Its status.
    pub status: NodeStatus,
    /// Host or router.
    #[serde(default)]
    pub role: NodeRole,
    /// When it registered first.
    pub registered_at_ms: u64,
    /// When its last heartbeat arrived (0: never).
    pub last_seen_ms: u64,
    /// The last heartbeat.
    #[serde(default)]
    pub heartbeat: Option<Heartbeat>,
    /// Times peers reported it for serving pieces that failed verification; a
    /// reported node is no longer given to anyone as a peer.
    #[serde(default)]
    pub peer_reports: u64,
}

/// `POST /v1/nodes/{id}/swarm` (signed by the node): a node joins the swarm of a
/// model or LoRA file, to fetch it or to seed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmJoin {
    /// The file's blake3.
    pub blob: String,
    /// Whether the node is fetching (and wants pieces to take from the origin).
    pub fetching: bool,
}

/// The registry's answer to [`SwarmJoin`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmGrant {
    /// The private tracker's announce URL for this node (it holds a token: never log it).
    pub announce: String,
    /// Pieces this node should take from the object store (the origin): the registry
    /// hands each fetching node a different share, so the origin serves each piece
    /// about once and the nodes trade the rest. Empty: peers hold every piece (or
    /// every piece is already someone's share); take them from peers.
    pub origin_pieces: Vec<u32>,
    /// Peers that announced the whole file (seeders) in their last announce.
    pub seeders: u32,
    /// Peers fetching it now.
    pub leechers: u32,
}

/// `POST /v1/nodes/{id}/reports` (signed by the node): a peer served pieces that
/// failed verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReport {
    /// The file's blake3.
    pub blob: String,
    /// The peer's address as the reporting node saw it.
    pub peer: String,
    /// What happened.
    pub reason: String,
}

/// The registry's answer to [`PeerReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// The node that address belongs to, when the tracker knows it.
    pub node_id: Option<String>,
    /// Reports against that node so far.
    pub reports: u64,
}

/// A node's id: `n` followed by the first 20 bytes of the blake3 of its Ed25519
/// public key, hex. A node cannot choose its id; it proves it by signing.
pub fn node_id_for(public_key: &[u8; 32]) -> String {
    let hash = blake3::hash(public_key);
    let mut id = String::with_capacity(41);
    id.push('n');
    for b in &hash.as_bytes()[..20] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// The certificate name that puts a node in private network `network`.
pub fn network_name(network: &str) -> String {
    format!("{network}.net.wasmesh")
}

/// What a node signs to register.
pub fn registration_message(node_id: &str, public_key_hex: &str, timestamp_ms: u64) -> Vec<u8> {
    format!("wasmesh-register-v1\n{node_id}\n{public_key_hex}\n{timestamp_ms}").into_bytes()
}

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

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Bytes of lowercase or uppercase hex; `None` when it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Whether `s` looks like a blake3 hash (64 lowercase hex digits).
pub fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_length_stays_a_power_of_two_in_bounds() {
        assert_eq!(piece_length_for(0), 256 << 10);
        assert_eq!(piece_length_for(100 << 20), 256 << 10);
        assert_eq!(piece_length_for(4 << 30), 2 << 20);
        assert_eq!(piece_length_for(200 << 30), 16 << 20);
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(from_hex(&to_hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn scopes_parse_and_reject_unknown() {
        assert_eq!("deploy".parse::<Scope>(), Ok(Scope::Deploy));
        assert!("root".parse::<Scope>().unwrap_err().contains("admin, deploy"));
    }

    #[test]
    fn node_ids_depend_on_the_key() {
        let a = node_id_for(&[1; 32]);
        let b = node_id_for(&[2; 32]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 41);
        assert!(a.starts_with('n'));
    }
}
