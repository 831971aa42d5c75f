//! Model weights for a wasmesh host: fetched from peers and from the object store,
//! every piece verified, then seeded.
//!
//! [`Weights::fetch`] brings a model or LoRA file into the host's [`WeightCache`]:
//!
//! 1. The registry's manifest (the only one trusted) gives the file's blake3, the
//!    blake3 of each piece and the SHA-1 piece hashes the torrent is rebuilt from.
//! 2. Pieces already in a partial file (an interrupted fetch) are verified and kept.
//! 3. The node joins the file's swarm. When no peer holds the whole file, the
//!    registry hands it a share of pieces to take from the object store (the
//!    origin), batch after batch, different from every other node fetching at the
//!    same time ([`StoreSource`]).
//! 4. The rest comes from peers over BitTorrent ([`PeerSource`]), through the
//!    registry's private tracker, until the file is whole or the swarm stalls.
//! 5. Whatever is still missing (peers gone, corrupt peers, a stalled swarm) comes
//!    from the object store.
//! 6. Every piece is checked against its blake3, then the whole file; only then is
//!    it renamed into the cache, and seeded within the provider's upload budget.
//!
//! Peers whose pieces failed librqbit's SHA-1 check are reported to the registry
//! ([`bad_piece_layer`] picks them out of librqbit's events).

mod metrics;
mod source;
mod store;

pub use metrics::WeightMetrics;
pub use source::{Filled, PeerSource, StallPolicy, StoreSource, WeightSource};

use librqbit::limits::LimitsConfig;
use librqbit::{AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, Session, SessionOptions};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmesh_api::wire::PieceManifest;
pub mod cache;

pub use cache::{CacheError, Lease, WeightCache};
pub use store::{fetch_lora_cached, fetch_model_cached, lora_info};
use wasmesh_client::{Client, ClientError, NodeIdentity, Progress};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] ClientError),
    /// The cache could not make room.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Bytes failed verification.
    #[error("{0}")]
    Corrupt(String),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The registry has no LoRA adapter by that name.
    #[error("the registry has no LoRA adapter '{0}'; push it with `wasmesh loras push`")]
    UnknownAdapter(String),
    /// Anything else (BitTorrent session errors).
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// A file being fetched.
pub struct Target {
    /// Its blake3.
    pub blob: String,
    /// Its size.
    pub size: u64,
    /// The registry's piece manifest.
    pub pieces: PieceManifest,
    /// The torrent's bencoded info dictionary.
    pub info: Vec<u8>,
    /// The tracker URL (holds a token: never log it).
    pub announce: String,
    /// The partial file, `size` bytes long.
    pub path: PathBuf,
    /// Transfer progress.
    pub progress: Arc<dyn Progress>,
}

impl Target {
    /// Byte range `start..end` of piece `piece`.
    pub fn piece_range(&self, piece: u32) -> (u64, u64) {
        let start = u64::from(piece) * self.pieces.piece_length;
        (start, (start + self.pieces.piece_length).min(self.size))
    }
}

/// How a host fetches and seeds.
#[derive(Debug, Clone)]
pub struct WeightsConfig {
    /// Where BitTorrent listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The provider's upload budget for seeding, in bytes/s (`None`: unlimited;
    /// at least 16 KiB/s, librqbit's smallest workable limit).
    pub upload_bps: Option<u32>,
    /// When a swarm counts as stalled (then the object store serves the rest).
    pub stall: StallPolicy,
    /// Pieces read from the object store at once.
    pub origin_parallel: usize,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            upload_bps: None,
            stall: StallPolicy { min_rate: 1 << 20, window: Duration::from_secs(15) },
            origin_parallel: 4,
        }
    }
}

/// What one fetch took from where.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FetchReport {
    /// Bytes already on disk (verified).
    pub reused: u64,
    /// Bytes from the origin as the registry's share.
    pub origin_share: u64,
    /// Bytes from peers.
    pub peers: u64,
    /// Bytes from the origin because peers could not give them.
    pub origin_fallback: u64,
}

/// A host's weights: fetcher and seeder. See the crate docs.
pub struct Weights {
    client: Client,
    identity: Arc<NodeIdentity>,
    cache: WeightCache,
    session: Arc<Session>,
    store: StoreSource,
    peers: PeerSource,
    metrics: WeightMetrics,
    /// Leases of the files seeded (kept while seeding).
    seeding: Mutex<Vec<(String, Lease)>>,
}

impl Weights {
    /// Starts the BitTorrent session (DHT, local discovery and UPnP off: peers come
    /// only from the registry's tracker).
    pub async fn start(
        client: Client,
        identity: Arc<NodeIdentity>,
        cache: WeightCache,
        config: WeightsConfig,
        metrics: WeightMetrics,
    ) -> Result<Arc<Self>, FetchError> {
        // librqbit announces the port it listens on, except on loopback, where it
        // needs to be told: pick a free port first.
        let mut listen = config.listen;
        if listen.port() == 0 {
            let probe = std::net::TcpListener::bind(listen)
                .map_err(|e| FetchError::Other(format!("cannot listen for peers on {listen}: {e}")))?;
            listen.set_port(probe.local_addr().map_err(|e| FetchError::Other(e.to_string()))?.port());
        }
        let options = SessionOptions {
            dht: None,
            disable_trackers: false,
            disable_local_service_discovery: true,
            persistence: None,
            fastresume: false,
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: listen,
                enable_upnp_port_forwarding: false,
                announce_port: Some(listen.port()),
                ..Default::default()
            }),
            ratelimits: LimitsConfig {
                upload_bps: config.upload_bps.map(|b| b.max(16 << 10)).and_then(NonZeroU32::new),
                download_bps: None,
            },
            ..Default::default()
        };
        let session = Session::new_with_opts(cache.dir().join("partial"), options).await.map_err(|e| {
            FetchError::Other(format!("cannot start BitTorrent on {listen}: {e:#}; pick another --p2p-listen"))
        })?;
        tracing::info!(listen = %listen, upload_budget = ?config.upload_bps, "BitTorrent session started (peers from the registry only)");
        metrics::count_seeded(&session, metrics.seeded.clone());
        Ok(Arc::new(Self {
            store: StoreSource::new(client.clone(), config.origin_parallel),
            peers: PeerSource::new(session.clone(), config.stall),
            client,
            identity,
            cache,
            session,
            metrics,
            seeding: Mutex::new(Vec::new()),
        }))
    }

    /// Where peers reach this host.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.session.listen_addr()
    }

    /// Fetches model `name` into the cache (see the crate docs) and seeds it; returns
    /// its path and a lease that keeps it from eviction.
    pub async fn fetch_model(
        &self,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<(PathBuf, Lease, FetchReport), FetchError> {
        let model = self.client.model(name).await?;
        let result = if model.pieces.info_hash.is_none() {
            // Pushed before the registry recorded torrents: no swarm, the store alone.
            tracing::warn!(model = %name, "stored before the registry recorded torrents: fetching from the object store alone");
            fetch_model_cached(&self.client, name, &self.cache, progress.as_ref())
                .await
                .map(|(path, lease)| (path, lease, FetchReport { origin_fallback: model.size, ..Default::default() }))
        } else {
            self.fetch_blob(name, &model.blake3, model.size, &model.pieces, progress).await
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.fetches.with_label_values(&[name, outcome]).inc();
        result
    }

    /// Fetches LoRA adapter `name` (peers first, the object store for the rest, as a
    /// model) into the cache and seeds it; returns its record, path and lease.
    pub async fn fetch_lora(
        &self,
        name: &str,
        progress: Arc<dyn Progress>,
    ) -> Result<(wasmesh_api::wire::LoraInfo, PathBuf, Lease), FetchError> {
        let lora = lora_info(&self.client, name).await?;
        if lora.pieces.info_hash.is_some() {
            match self.fetch_blob(name, &lora.blake3, lora.size, &lora.pieces, progress.clone()).await {
                Ok((path, lease, _)) => return Ok((lora, path, lease)),
                Err(e) => {
                    tracing::warn!(lora = %name, "fetching the adapter from peers failed, the object store serves it: {e}")
                }
            }
        }
        fetch_lora_cached(&self.client, name, &self.cache, progress.as_ref()).await
    }

    async fn fetch_blob(
        &self,
        label: &str,
        blob: &str,
        size: u64,
        pieces: &PieceManifest,
        progress: Arc<dyn Progress>,
    ) -> Result<(PathBuf, Lease, FetchReport), FetchError> {
        let info = wasmesh_api::torrent::info_dict(blob, size, pieces).map_err(FetchError::Other)?;
        if pieces.info_hash.as_deref() != Some(wasmesh_api::torrent::info_hash(&info).as_str()) {
            return Err(FetchError::Corrupt(format!(
                "the registry's manifest of {blob} does not match its own info hash; refusing it"
            )));
        }
        let lease = self.cache.lease(blob);
        let dest = self.cache.path_for(blob);
        let mut report = FetchReport::default();
        if tokio::fs::metadata(&dest).await.is_ok_and(|m| m.len() == size) {
            // Content-addressed and only renamed into place once verified.
            report.reused = size;
            self.seed(label, blob, &info, &dest).await;
            return Ok((dest, lease, report));
        }
        self.cache.make_room(blob, &format!("'{label}'"), size)?;
        let path = self.cache.partial_path(blob);
        let folder = path.parent().expect("partial path has a folder").to_owned();
        tokio::fs::create_dir_all(&folder).await.map_err(|e| FetchError::io(&folder, e))?;
        {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| FetchError::io(&path, e))?;
            file.set_len(size).map_err(|e| FetchError::io(&path, e))?;
        }
        let started = Instant::now();
        let mut have = verified_pieces(&path, size, pieces).await?;
        report.reused = have_bytes(&have, size, pieces.piece_length);
        progress.start("fetching", size, report.reused);
        let grant = self.client.join_swarm(&self.identity, blob, true).await?;
        let mut target = Target {
            blob: blob.to_string(),
            size,
            pieces: pieces.clone(),
            info: info.clone(),
            announce: grant.announce.clone(),
            path: path.clone(),
            progress: progress.clone(),
        };
        // The origin's share, batch after batch, until every piece is someone's.
        let mut share = grant.origin_pieces;
        while !share.is_empty() {
            let want: Vec<u32> = share.into_iter().filter(|p| !have[*p as usize]).collect();
            let filled = self.store.fill(&target, &want).await?;
            report.origin_share += filled.bytes;
            self.metrics.bytes.with_label_values(&[label, "origin"]).inc_by(filled.bytes);
            for p in want {
                have[p as usize] = true;
            }
            let grant = self.client.join_swarm(&self.identity, blob, true).await?;
            target.announce = grant.announce;
            share = grant.origin_pieces;
        }
        // Peers, for the rest.
        if have.iter().any(|h| !h) {
            let before = bad_pieces_seen();
            let filled = self.peers.fill(&target, &[]).await;
            self.report_bad_peers(blob, &info, before).await;
            match filled {
                Ok(filled) => {
                    report.peers += filled.bytes;
                    self.metrics.bytes.with_label_values(&[label, "peers"]).inc_by(filled.bytes);
                }
                Err(e) => {
                    tracing::warn!(model = %label, "peers could not serve it: {e}; the object store serves the rest")
                }
            }
            have = verified_pieces(&path, size, pieces).await?;
        }
        // The object store, for whatever peers could not give.
        let missing: Vec<u32> = (0..have.len() as u32).filter(|p| !have[*p as usize]).collect();
        if !missing.is_empty() {
            tracing::info!(model = %label, pieces = missing.len(), "fetching the rest from the object store");
            let filled = self.store.fill(&target, &missing).await?;
            report.origin_fallback += filled.bytes;
            self.metrics.bytes.with_label_values(&[label, "origin"]).inc_by(filled.bytes);
        }
        progress.finish();
        // The whole file, once more, before anything may load it.
        let whole = {
            let file = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                let mut hasher = blake3::Hasher::new();
                hasher.update_reader(std::fs::File::open(&file)?)?;
                Ok(hasher.finalize().to_hex().to_string())
            })
            .await
            .map_err(|e| FetchError::Other(e.to_string()))?
            .map_err(|e| FetchError::io(&path, e))?
        };
        if whole != blob {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(FetchError::Corrupt(format!(
                "{blob} hashes to {whole} although every piece verified; refusing it"
            )));
        }
        tokio::fs::rename(&path, &dest).await.map_err(|e| FetchError::io(&dest, e))?;
        tracing::info!(
            model = %label,
            mib = size >> 20,
            secs = format!("{:.1}", started.elapsed().as_secs_f64()),
            reused_mib = report.reused >> 20,
            origin_share_mib = report.origin_share >> 20,
            peers_mib = report.peers >> 20,
            origin_fallback_mib = report.origin_fallback >> 20,
            "weights verified"
        );
        self.seed(label, blob, &info, &dest).await;
        Ok((dest, lease, report))
    }

    /// Changes the upload budget for seeding while the session runs (`None`: unlimited;
    /// at least 16 KiB/s).
    pub fn set_upload_bps(&self, bps: Option<u32>) {
        self.session.ratelimits.set_upload_bps(bps.map(|b| b.max(16 << 10)).and_then(NonZeroU32::new));
        tracing::info!(upload_budget = ?bps, "seeding upload budget changed");
    }

    /// Seeds the verified file `dest` (librqbit re-checks it once as it starts).
    async fn seed(&self, label: &str, blob: &str, info: &[u8], dest: &Path) {
        if self.seeding.lock().expect("seeding lock").iter().any(|(b, _)| b == blob) {
            return;
        }
        let announce = match self.client.join_swarm(&self.identity, blob, false).await {
            Ok(grant) => grant.announce,
            Err(e) => {
                tracing::warn!(model = %label, "cannot join the swarm to seed: {e}");
                return;
            }
        };
        let options = AddTorrentOptions {
            output_folder: Some(dest.parent().expect("cache folder").to_string_lossy().into_owned()),
            overwrite: true,
            trackers: Some(vec![announce]),
            ..Default::default()
        };
        let torrent = wasmesh_api::torrent::metainfo(info, None);
        match self.session.add_torrent(AddTorrent::from_bytes(torrent), Some(options)).await {
            Ok(_) => {
                self.seeding.lock().expect("seeding lock").push((blob.to_string(), self.cache.lease(blob)));
                tracing::info!(model = %label, "seeding");
            }
            Err(e) => tracing::warn!(model = %label, "cannot seed: {e:#}"),
        }
    }

    /// Reports the peers librqbit dropped for bad pieces of `info`'s torrent since
    /// `before` (an index into the process-wide list).
    async fn report_bad_peers(&self, blob: &str, info: &[u8], before: usize) {
        let info_hash = wasmesh_api::torrent::info_hash(info);
        let mut reported = HashSet::new();
        for (hash, peer) in bad_pieces_since(before) {
            if !hash.contains(&info_hash) || !reported.insert(peer) {
                continue;
            }
            self.metrics.bad_peers.inc();
            match self
                .client
                .report_peer(&self.identity, blob, peer, "sent pieces that failed SHA-1 verification")
                .await
            {
                Ok(outcome) => {
                    tracing::warn!(%peer, node = ?outcome.node_id, reports = outcome.reports, "reported a peer that sent bad pieces")
                }
                Err(e) => tracing::warn!(%peer, "cannot report a peer that sent bad pieces: {e}"),
            }
        }
    }
}

/// Which pieces of `path` match the manifest (blake3), off the async runtime.
async fn verified_pieces(path: &Path, size: u64, pieces: &PieceManifest) -> Result<Vec<bool>, FetchError> {
    let (path, hashes, piece_length) = (path.to_owned(), pieces.hashes.clone(), pieces.piece_length);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| FetchError::io(&path, e))?;
        let mut buf = vec![0u8; piece_length as usize];
        let mut have = Vec::with_capacity(hashes.len());
        for (i, expected) in hashes.iter().enumerate() {
            let start = i as u64 * piece_length;
            let len = piece_length.min(size - start) as usize;
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf[..len], start)
                .map_err(|e| FetchError::io(&path, e))?;
            have.push(blake3::hash(&buf[..len]).to_hex().as_str() == expected);
        }
        Ok(have)
    })
    .await
    .map_err(|e| FetchError::Other(e.to_string()))?
}

fn have_bytes(have: &[bool], size: u64, piece_length: u64) -> u64 {
    have.iter().enumerate().filter(|(_, h)| **h).map(|(i, _)| piece_length.min(size - i as u64 * piece_length)).sum()
}

// ---- bad peers, from librqbit's events ------------------------------------------

/// Every (info hash as logged, peer) librqbit dropped for a bad piece, in order.
static BAD_PIECES: Mutex<Vec<(String, SocketAddr)>> = Mutex::new(Vec::new());

fn bad_pieces_seen() -> usize {
    BAD_PIECES.lock().expect("bad pieces lock").len()
}

fn bad_pieces_since(index: usize) -> Vec<(String, SocketAddr)> {
    BAD_PIECES.lock().expect("bad pieces lock").get(index..).map(<[_]>::to_vec).unwrap_or_default()
}

/// A `tracing` layer that notes each peer librqbit disconnects because a piece it
/// sent failed SHA-1 verification (librqbit has no callback for it; its warning
/// carries the info hash and the peer's address). Add it to the subscriber of any
/// process that fetches weights.
pub fn bad_piece_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    // Only librqbit's warnings reach it, so it enables nothing else.
    BadPieceLayer.with_filter(tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() == tracing::Level::WARN && meta.target().starts_with("librqbit")
    }))
}

struct BadPieceLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for BadPieceLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() != tracing::Level::WARN || !meta.target().starts_with("librqbit") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if !fields.message.contains("did not validate") {
            return;
        }
        if let Ok(addr) = fields.addr.trim_matches('"').parse::<SocketAddr>() {
            BAD_PIECES.lock().expect("bad pieces lock").push((fields.info_hash, addr));
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    addr: String,
    info_hash: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            "addr" => self.addr = text,
            "info_hash" => self.info_hash = text.to_lowercase(),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.record_debug(field, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn the_layer_picks_bad_peers_out_of_librqbits_warning() {
        let subscriber = tracing_subscriber::registry().with(bad_piece_layer());
        let before = bad_pieces_seen();
        tracing::subscriber::with_default(subscriber, || {
            let addr: SocketAddr = "127.0.0.1:6881".parse().unwrap();
            let info_hash = "AABBCC";
            tracing::warn!(target: "librqbit::torrent_state::live", id = 0, info_hash = ?info_hash, ?addr, "checksum for piece={} did not validate. disconnecting peer.", 3);
            tracing::warn!(target: "librqbit::torrent_state::live", ?addr, "something else");
            tracing::warn!(target: "other", ?addr, "checksum for piece=1 did not validate.");
        });
        let seen = bad_pieces_since(before);
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].1, "127.0.0.1:6881".parse::<SocketAddr>().unwrap());
        assert!(seen[0].0.contains("aabbcc"));
    }

    #[test]
    fn bytes_held_count_the_short_last_piece() {
        assert_eq!(have_bytes(&[true, false, true], 250, 100), 150);
        assert_eq!(have_bytes(&[true, true, true], 250, 100), 250);
    }
}
