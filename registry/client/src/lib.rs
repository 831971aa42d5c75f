//! A client of the wasmesh registry: what the CLI and the hosts use.
//!
//! Uploads are resumable: a file is hashed first, the registry answers which
//! parts it already has (from an earlier, interrupted attempt), and only the
//! missing ones are sent, each retried on transient failures. Node requests are
//! signed with the node's Ed25519 key ([`NodeIdentity`]).

pub mod cache;
mod identity;

pub use cache::{CacheError, Lease, WeightCache};
pub use identity::NodeIdentity;

use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmesh_api::AppManifest;
use wasmesh_api::wire::{
    AppSummary, AppVersion, ArtifactKind, BlobInfo, CreateKey, CreatedKey, Deploy, Deployments, ErrorBody, Heartbeat,
    KeyInfo, LoraInfo, ModelInfo, NodeCertificate, NodeInfo, PushLora, PushModel, RegisterNode, Rollback, Scope,
    StartUpload, SwarmGrant, UploadSession, node_auth,
};

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
        /// Why.
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
    /// The weight cache cannot take the file.
    #[error(transparent)]
    Cache(#[from] CacheError),
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
            ClientError::Io { .. } | ClientError::Cache(_) => 1,
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        ClientError::Io { path: path.to_owned(), source }
    }
}

/// Results of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// Progress of a long transfer, in bytes.
pub trait Progress: Send + Sync {
    /// A phase begins ("hashing", "uploading", "downloading") over `total` bytes, `done` already done.
    fn start(&self, phase: &str, total: u64, done: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
    /// The phase ended.
    fn finish(&self);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: &str, _: u64, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A registry client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    /// A client of the registry at `base` (e.g. `http://127.0.0.1:7070`), authenticating with `key`.
    pub fn new(base: &str, key: Option<String>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Every call ends: a stalled registry cannot hang a heartbeat loop or a
            // caller. Long polls and downloads set their own.
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("wasmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Invalid(format!("cannot create an HTTP client: {e}")))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), key })
    }

    /// The same client (sharing its connections) with another key.
    pub fn with_key(&self, key: &str) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), key: Some(key.to_string()) }
    }

    /// The registry's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api { status, code: body.code, message: body.error },
            Err(_) => ClientError::Api {
                status,
                code: "http".into(),
                message: if text.is_empty() { format!("HTTP {status}") } else { text },
            },
        })
    }

    async fn json<T: DeserializeOwned>(&self, builder: reqwest::RequestBuilder) -> Result<T> {
        let response = self.send(builder).await?;
        response.json().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: format!("unexpected answer: {}", error_chain(&e)),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<serde_json::Value> {
        self.get("/health").await
    }

    /// The key this client uses, as the registry sees it.
    pub async fn whoami(&self) -> Result<wasmesh_api::wire::WhoAmI> {
        self.get("/v1/whoami").await
    }

    /// Creates an API key (admin).
    pub async fn create_key(&self, name: &str, scopes: &[Scope]) -> Result<CreatedKey> {
        self.post("/v1/keys", &CreateKey { name: name.into(), scopes: scopes.to_vec(), network: None }).await
    }

    /// Creates a provider key whose nodes join private network `network` (admin).
    pub async fn create_network_key(&self, name: &str, scopes: &[Scope], network: &str) -> Result<CreatedKey> {
        let req = CreateKey { name: name.into(), scopes: scopes.to_vec(), network: Some(network.into()) };
        self.post("/v1/keys", &req).await
    }

    /// Lists keys (admin).
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.get("/v1/keys").await
    }

    /// Revokes a key (admin).
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/v1/keys/{id}"))).await.map(drop)
    }

    /// Uploads `path` as `kind` (resuming an interrupted upload of the same file).
    pub async fn upload_file(&self, path: &Path, kind: ArtifactKind, progress: &dyn Progress) -> Result<BlobInfo> {
        let size = std::fs::metadata(path).map_err(|e| ClientError::io(path, e))?.len();
        let hash = hash_file(path, size, progress).await?;
        self.upload_with_hash(path, &hash, size, kind, progress).await
    }

    async fn upload_with_hash(
        &self,
        path: &Path,
        hash: &str,
        size: u64,
        kind: ArtifactKind,
        progress: &dyn Progress,
    ) -> Result<BlobInfo> {
        let session: UploadSession =
            self.post("/v1/uploads", &StartUpload { blake3: hash.to_string(), size, kind }).await?;
        if session.complete {
            tracing::debug!(%hash, "artifact already in the registry");
            return Ok(BlobInfo { blake3: hash.to_string(), size, kind, pieces: None });
        }
        let done: u64 = session.received.iter().map(|p| part_len(*p, session.part_size, size)).sum();
        progress.start("uploading", size, done);
        for part in 0..session.parts {
            if session.received.contains(&part) {
                continue;
            }
            let offset = part * session.part_size;
            let len = part_len(part, session.part_size, size);
            let bytes = read_range(path, offset, len).await?;
            let mut attempt = 0;
            loop {
                let sent = self
                    .send(
                        self.request(reqwest::Method::PUT, &format!("/v1/uploads/{}/parts/{part}", session.id))
                            .body(bytes.clone()),
                    )
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e @ (ClientError::Unreachable { .. } | ClientError::Api { status: 500..=599 | 429, .. }))
                        if attempt < 4 =>
                    {
                        attempt += 1;
                        tracing::warn!(part, attempt, "upload part failed, retrying: {e}");
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    }
                    Err(e) => {
                        progress.finish();
                        return Err(e);
                    }
                }
            }
            progress.advance(len);
        }
        progress.finish();
        self.post(&format!("/v1/uploads/{}/complete", session.id), &serde_json::json!({})).await
    }

    /// Uploads in-memory bytes as `kind`.
    pub async fn upload_bytes(&self, bytes: Bytes, kind: ArtifactKind) -> Result<BlobInfo> {
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let session: UploadSession =
            self.post("/v1/uploads", &StartUpload { blake3: hash.clone(), size, kind }).await?;
        if session.complete {
            return Ok(BlobInfo { blake3: hash, size, kind, pieces: None });
        }
        for part in 0..session.parts {
            if session.received.contains(&part) {
                continue;
            }
            let start = (part * session.part_size) as usize;
            let end = start + part_len(part, session.part_size, size) as usize;
            self.send(
                self.request(reqwest::Method::PUT, &format!("/v1/uploads/{}/parts/{part}", session.id))
                    .body(bytes.slice(start..end)),
            )
            .await?;
        }
        self.post(&format!("/v1/uploads/{}/complete", session.id), &serde_json::json!({})).await
    }

    /// Deploys the app of the manifest at `manifest_path`: checks it locally,
    /// uploads each component, then asks for a new version.
    pub async fn deploy(&self, manifest_path: &Path, progress: &dyn Progress) -> Result<AppVersion> {
        let text = std::fs::read_to_string(manifest_path).map_err(|e| ClientError::io(manifest_path, e))?;
        let manifest =
            AppManifest::parse(&text).map_err(|e| ClientError::Invalid(format!("{}: {e}", manifest_path.display())))?;
        let base = manifest_path.parent().unwrap_or(Path::new("."));
        let mut components = BTreeMap::new();
        for (name, spec) in &manifest.component {
            let path = base.join(&spec.source);
            if !path.is_file() {
                return Err(ClientError::Invalid(format!(
                    "component '{name}': {} does not exist; build it first (for Rust: cargo build --target wasm32-wasip2 --release)",
                    path.display()
                )));
            }
            let blob = self.upload_file(&path, ArtifactKind::Component, progress).await?;
            components.insert(name.clone(), blob.blake3);
        }
        self.deploy_uploaded(&manifest.app.name, &text, components).await
    }

    /// Deploys a manifest whose components are already uploaded.
    pub async fn deploy_uploaded(
        &self,
        app: &str,
        manifest: &str,
        components: BTreeMap<String, String>,
    ) -> Result<AppVersion> {
        self.post(&format!("/v1/apps/{app}/versions"), &Deploy { manifest: manifest.to_string(), components }).await
    }

    /// Every app.
    pub async fn apps(&self) -> Result<Vec<AppSummary>> {
        self.get("/v1/apps").await
    }

    /// Every version of `app`.
    pub async fn versions(&self, app: &str) -> Result<Vec<AppVersion>> {
        self.get(&format!("/v1/apps/{app}/versions")).await
    }

    /// Makes `version` of `app` current.
    pub async fn rollback(&self, app: &str, version: u64) -> Result<AppSummary> {
        self.post(&format!("/v1/apps/{app}/rollback"), &Rollback { version }).await
    }

    /// The current version of every app; with `since`, waits up to `wait` for a change.
    pub async fn deployments(&self, since: Option<u64>, wait: Duration) -> Result<Deployments> {
        let mut builder = self.request(reqwest::Method::GET, "/v1/deployments");
        if let Some(since) = since {
            builder =
                builder.query(&[("since", since), ("wait_s", wait.as_secs())]).timeout(wait + Duration::from_secs(15));
        }
        self.json(builder).await
    }

    /// Uploads and registers a GGUF model.
    pub async fn push_model(&self, path: &Path, name: &str, progress: &dyn Progress) -> Result<ModelInfo> {
        let blob = self.upload_file(path, ArtifactKind::Model, progress).await?;
        self.post("/v1/models", &PushModel { name: name.into(), blake3: blob.blake3 }).await
    }

    /// Every model.
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        self.get("/v1/models").await
    }

    /// Uploads and registers a LoRA adapter for `base`.
    pub async fn push_lora(&self, path: &Path, name: &str, base: &str, progress: &dyn Progress) -> Result<LoraInfo> {
        let blob = self.upload_file(path, ArtifactKind::Lora, progress).await?;
        self.post("/v1/loras", &PushLora { name: name.into(), base: base.into(), blake3: blob.blake3 }).await
    }

    /// Every LoRA adapter.
    pub async fn loras(&self) -> Result<Vec<LoraInfo>> {
        self.get("/v1/loras").await
    }

    /// Downloads artifact `hash` to `dest` (via a temporary file), verifying its blake3.
    pub async fn download(&self, hash: &str, dest: &Path, progress: &dyn Progress) -> Result<()> {
        let response = self
            .send(
                self.request(reqwest::Method::GET, &format!("/v1/blobs/{hash}")).timeout(Duration::from_secs(6 * 3600)),
            )
            .await?;
        let total = response.content_length().unwrap_or(0);
        let tmp = dest.with_extension("partial");
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| ClientError::io(dir, e))?;
        }
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| ClientError::io(&tmp, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut stream = response.bytes_stream();
        progress.start("downloading", total, 0);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await.map_err(|e| ClientError::io(&tmp, e))?;
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| ClientError::io(&tmp, e))?;
        drop(file);
        let actual = hasher.finalize().to_hex().to_string();
        if actual != hash {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ClientError::Invalid(format!(
                "downloaded artifact hashes to {actual}, not {hash}; refusing it"
            )));
        }
        tokio::fs::rename(&tmp, dest).await.map_err(|e| ClientError::io(dest, e))
    }

    /// Model `name` as the registry records it.
    pub async fn model(&self, name: &str) -> Result<ModelInfo> {
        self.get(&format!("/v1/models/{name}")).await
    }

    /// Fetches model `name` from the registry into `dir` (as `BLAKE3.gguf`),
    /// verified piece by piece; returns its path. A file already there and whole is
    /// used as is; an interrupted download resumes after its last verified piece.
    pub async fn fetch_model(&self, name: &str, dir: &Path, progress: &dyn Progress) -> Result<PathBuf> {
        let model: ModelInfo = self.get(&format!("/v1/models/{name}")).await?;
        let dest = dir.join(format!("{}.gguf", model.blake3));
        self.fetch_verified(&model.blake3, model.size, &model.pieces, &dest, progress).await?;
        Ok(dest)
    }

    /// Fetches model `name` into `cache`, verified piece by piece, and leases it (it
    /// is not evicted while the lease lives). A model already in the cache is only
    /// re-verified; otherwise least recently used, unleased models are evicted to
    /// make room first.
    pub async fn fetch_model_cached(
        &self,
        name: &str,
        cache: &WeightCache,
        progress: &dyn Progress,
    ) -> Result<(PathBuf, Lease)> {
        let model: ModelInfo = self.get(&format!("/v1/models/{name}")).await?;
        // Leased from the start, so the partial download is never evicted either.
        let lease = cache.lease(&model.blake3);
        let dest = cache.path_for(&model.blake3);
        let cached = tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() == model.size);
        if !cached {
            cache.make_room(&model.blake3, &format!("model '{name}'"), model.size)?;
        }
        self.fetch_verified(&model.blake3, model.size, &model.pieces, &dest, progress).await?;
        Ok((dest, lease))
    }

    /// Downloads artifact `hash` of `size` bytes to `dest`, checking each piece
    /// against `pieces` as it arrives and the whole file at the end. Only verified
    /// pieces are ever written, so the partial file is always a verified prefix, and
    /// a download that stops (or meets a corrupt piece) resumes from it.
    pub async fn fetch_verified(
        &self,
        hash: &str,
        size: u64,
        pieces: &wasmesh_api::wire::PieceManifest,
        dest: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let piece_length = pieces.piece_length;
        if piece_length == 0 || pieces.hashes.len() as u64 != size.div_ceil(piece_length) {
            return Err(ClientError::Invalid(format!("the piece manifest of {hash} does not fit its size")));
        }
        if std::fs::metadata(dest).is_ok_and(|m| m.len() == size) && hash_file(dest, size, &NoProgress).await? == hash {
            return Ok(());
        }
        if let Some(dir) = dest.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(|e| ClientError::io(dir, e))?;
        }
        let partial = dest.with_extension("partial");
        // The verified prefix of an earlier attempt.
        let (good, whole) = {
            let (partial, hashes) = (partial.clone(), pieces.hashes.clone());
            tokio::task::spawn_blocking(move || verified_prefix(&partial, piece_length, &hashes))
                .await
                .map_err(|e| ClientError::Invalid(e.to_string()))?
        };
        let mut whole = whole;
        let mut good = good;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial)
            .await
            .map_err(|e| ClientError::io(&partial, e))?;
        file.set_len(good).await.map_err(|e| ClientError::io(&partial, e))?;
        tokio::io::AsyncSeekExt::seek(&mut file, SeekFrom::Start(good))
            .await
            .map_err(|e| ClientError::io(&partial, e))?;
        progress.start("downloading", size, good);
        if good < size {
            let mut request =
                self.request(reqwest::Method::GET, &format!("/v1/blobs/{hash}")).timeout(Duration::from_secs(6 * 3600));
            if good > 0 {
                request = request.header(reqwest::header::RANGE, format!("bytes={good}-"));
            }
            let response = self.send(request).await?;
            let mut stream = response.bytes_stream();
            let mut piece = Vec::with_capacity(piece_length as usize);
            while good < size {
                let index = (good / piece_length) as usize;
                let want = piece_length.min(size - good) as usize;
                while piece.len() < want {
                    match stream.next().await {
                        Some(Ok(chunk)) => piece.extend_from_slice(&chunk),
                        Some(Err(e)) => {
                            progress.finish();
                            return Err(ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) });
                        }
                        None => {
                            progress.finish();
                            return Err(ClientError::Invalid(format!(
                                "the download of {hash} ended at byte {} of {size}; run again to resume",
                                good + piece.len() as u64
                            )));
                        }
                    }
                }
                let rest = piece.split_off(want);
                if blake3::hash(&piece).to_hex().as_str() != pieces.hashes[index] {
                    progress.finish();
                    return Err(ClientError::Invalid(format!(
                        "piece {index} of {hash} failed verification: the source is damaged or was tampered with; nothing unverified was kept"
                    )));
                }
                whole.update(&piece);
                tokio::io::AsyncWriteExt::write_all(&mut file, &piece)
                    .await
                    .map_err(|e| ClientError::io(&partial, e))?;
                good += piece.len() as u64;
                progress.advance(piece.len() as u64);
                piece = rest;
            }
        }
        progress.finish();
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| ClientError::io(&partial, e))?;
        file.sync_all().await.map_err(|e| ClientError::io(&partial, e))?;
        drop(file);
        let actual = whole.finalize().to_hex().to_string();
        if actual != hash {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ClientError::Invalid(format!(
                "{hash} hashes to {actual} although every piece verified; refusing it"
            )));
        }
        tokio::fs::rename(&partial, dest).await.map_err(|e| ClientError::io(dest, e))
    }

    /// Every node.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.get("/v1/nodes").await
    }

    /// Registers this node; the answer holds its certificate.
    pub async fn register_node(&self, identity: &NodeIdentity, name: &str) -> Result<NodeCertificate> {
        self.register(identity, name, wasmesh_api::wire::NodeRole::Host).await
    }

    /// Registers an identity as a host or a router (a router needs an admin key).
    pub async fn register(
        &self,
        identity: &NodeIdentity,
        name: &str,
        role: wasmesh_api::wire::NodeRole,
    ) -> Result<NodeCertificate> {
        let public_key = identity.public_key_hex();
        let timestamp_ms = now_ms();
        let message = wasmesh_api::wire::registration_message(identity.node_id(), &public_key, timestamp_ms);
        let request = RegisterNode {
            node_id: identity.node_id().to_string(),
            public_key,
            name: name.to_string(),
            timestamp_ms,
            signature: identity.sign_hex(&message),
            role,
        };
        self.post("/v1/nodes/register", &request).await
    }

    /// Sends a heartbeat, signed by the node.
    pub async fn heartbeat(&self, identity: &NodeIdentity, beat: &Heartbeat) -> Result<()> {
        self.signed_post(identity, "heartbeat", beat).await.map(drop)
    }

    /// Joins the swarm of blob `blob` (a model or LoRA): the tracker URL (it holds a
    /// token: never log it) and, when `fetching`, this node's share of the origin.
    pub async fn join_swarm(&self, identity: &NodeIdentity, blob: &str, fetching: bool) -> Result<SwarmGrant> {
        let join = wasmesh_api::wire::SwarmJoin { blob: blob.to_string(), fetching };
        let mut grant: SwarmGrant = self.signed_post(identity, "swarm", &join).await?.json().await.map_err(|e| {
            ClientError::Invalid(format!("the registry answered with unexpected JSON: {}", error_chain(&e)))
        })?;
        grant.announce = self.url(&grant.announce);
        Ok(grant)
    }

    /// Reports a peer that served pieces of `blob` that failed verification.
    pub async fn report_peer(
        &self,
        identity: &NodeIdentity,
        blob: &str,
        peer: std::net::SocketAddr,
        reason: &str,
    ) -> Result<wasmesh_api::wire::ReportOutcome> {
        let report = wasmesh_api::wire::PeerReport {
            blob: blob.to_string(),
            peer: peer.to_string(),
            reason: reason.to_string(),
        };
        self.signed_post(identity, "reports", &report).await?.json().await.map_err(|e| {
            ClientError::Invalid(format!("the registry answered with unexpected JSON: {}", error_chain(&e)))
        })
    }

    /// Bytes `start..end` of artifact `hash`, from the registry's object store.
    pub async fn blob_range(&self, hash: &str, start: u64, end: u64) -> Result<Bytes> {
        let response = self
            .send(
                self.request(reqwest::Method::GET, &format!("/v1/blobs/{hash}"))
                    .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
                    .timeout(Duration::from_secs(600)),
            )
            .await?;
        if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Err(ClientError::Invalid(format!(
                "the registry answered a ranged read of {hash} with {}, not 206",
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) })?;
        if bytes.len() as u64 != end - start {
            return Err(ClientError::Invalid(format!(
                "a ranged read of {hash} gave {} bytes, not {}",
                bytes.len(),
                end - start
            )));
        }
        Ok(bytes)
    }

    /// POSTs `body` as JSON to `/v1/nodes/{id}/{what}`, signed by the node.
    async fn signed_post<B: serde::Serialize>(
        &self,
        identity: &NodeIdentity,
        what: &str,
        body: &B,
    ) -> Result<reqwest::Response> {
        let path = format!("/v1/nodes/{}/{what}", identity.node_id());
        let body = serde_json::to_vec(body).expect("node requests serialize");
        let timestamp = now_ms();
        let signature = identity.sign_hex(&wasmesh_api::wire::request_message("POST", &path, timestamp, &body));
        self.send(
            self.request(reqwest::Method::POST, &path)
                .header(node_auth::NODE, identity.node_id())
                .header(node_auth::TIMESTAMP, timestamp.to_string())
                .header(node_auth::SIGNATURE, signature)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }
}

/// How many leading bytes of `path` are whole pieces matching `hashes`, and the
/// whole-file hasher fed with them.
fn verified_prefix(path: &Path, piece_length: u64, hashes: &[String]) -> (u64, blake3::Hasher) {
    let mut whole = blake3::Hasher::new();
    let mut good = 0;
    let Ok(mut file) = std::fs::File::open(path) else { return (0, whole) };
    let mut buf = vec![0u8; piece_length as usize];
    for expected in hashes {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        // A short read is the file's end: only a whole last piece can verify.
        if filled == 0 || blake3::hash(&buf[..filled]).to_hex().as_str() != expected {
            break;
        }
        whole.update(&buf[..filled]);
        good += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    (good, whole)
}

fn part_len(part: u64, part_size: u64, size: u64) -> u64 {
    part_size.min(size.saturating_sub(part * part_size))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

async fn read_range(path: &Path, offset: u64, len: u64) -> Result<Bytes> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
        let mut file = std::fs::File::open(&owned)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| ClientError::Invalid(e.to_string()))?
    .map_err(|e| ClientError::io(path, e))
}

/// The blake3 of a file, with progress.
pub async fn hash_file(path: &Path, size: u64, progress: &dyn Progress) -> Result<String> {
    progress.start("hashing", size, 0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let owned = path.to_owned();
    let task = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            let _ = tx.send(n as u64);
        }
        Ok(hasher.finalize().to_hex().to_string())
    });
    while let Some(n) = rx.recv().await {
        progress.advance(n);
    }
    progress.finish();
    task.await.map_err(|e| ClientError::Invalid(e.to_string()))?.map_err(|e| ClientError::io(path, e))
}
