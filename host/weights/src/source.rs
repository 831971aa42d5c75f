//! Where pieces come from: the [`WeightSource`] trait and its two implementations,
//! the object store (through the registry) and peers (BitTorrent, librqbit).

use crate::{FetchError, Target};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use librqbit::{AddTorrent, AddTorrentOptions, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmesh_client::Client;

/// What a source brought in one [`WeightSource::fill`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filled {
    /// Bytes written into the target (verified by the source where it can).
    pub bytes: u64,
}

/// A source of a file's pieces. `fill` writes what it can of `want` into the
/// target's file at the pieces' offsets; the fetcher verifies every piece against
/// the registry's manifest afterwards, whatever the source.
pub trait WeightSource: Send + Sync {
    /// For logs and metrics: `origin` or `peers`.
    fn name(&self) -> &'static str;
    /// Brings pieces `want` (indices, ascending) into `target.path`.
    fn fill<'a>(&'a self, target: &'a Target, want: &'a [u32]) -> BoxFuture<'a, Result<Filled, FetchError>>;
}

/// The object store, read through the registry's ranged downloads; each piece is
/// checked against its blake3 before it is written.
pub struct StoreSource {
    client: Client,
    parallel: usize,
}

impl StoreSource {
    /// Reads through `client`, `parallel` pieces at a time.
    pub fn new(client: Client, parallel: usize) -> Self {
        Self { client, parallel: parallel.max(1) }
    }
}

impl WeightSource for StoreSource {
    fn name(&self) -> &'static str {
        "origin"
    }

    fn fill<'a>(&'a self, target: &'a Target, want: &'a [u32]) -> BoxFuture<'a, Result<Filled, FetchError>> {
        Box::pin(async move {
            let file = Arc::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&target.path)
                    .map_err(|e| FetchError::io(&target.path, e))?,
            );
            let bytes = futures::stream::iter(want.iter().copied())
                .map(|piece| {
                    let file = file.clone();
                    async move {
                        let (start, end) = target.piece_range(piece);
                        let data = self.client.blob_range(&target.blob, start, end).await?;
                        if blake3::hash(&data).to_hex().as_str() != target.pieces.hashes[piece as usize] {
                            return Err(FetchError::Corrupt(format!(
                                "piece {piece} of {} from the object store failed verification: the stored file is damaged; nothing of it was kept",
                                target.blob
                            )));
                        }
                        let path = target.path.clone();
                        tokio::task::spawn_blocking(move || {
                            std::os::unix::fs::FileExt::write_all_at(&*file, &data, start)
                                .map_err(|e| FetchError::io(&path, e))
                        })
                        .await
                        .map_err(|e| FetchError::Other(e.to_string()))??;
                        target.progress.advance(end - start);
                        Ok::<u64, FetchError>(end - start)
                    }
                })
                .buffer_unordered(self.parallel)
                .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
                .await?;
            file.sync_data().map_err(|e| FetchError::io(&target.path, e))?;
            Ok(Filled { bytes })
        })
    }
}

/// When a swarm counts as stalled: below `min_rate` bytes/s over `window`.
#[derive(Debug, Clone, Copy)]
pub struct StallPolicy {
    /// The rate a swarm must keep up.
    pub min_rate: u64,
    /// Over how long.
    pub window: Duration,
}

/// Peers, over BitTorrent: the torrent is added to the host's librqbit session
/// (which re-checks the pieces already in the file, so it never asks peers for
/// them) with the registry's private tracker, and runs until the file is whole or
/// the swarm stalls ([`StallPolicy`]). librqbit checks each piece's SHA-1 and drops
/// a peer that sends a bad one.
pub struct PeerSource {
    session: Arc<Session>,
    stall: StallPolicy,
}

impl PeerSource {
    /// Fetches through `session`.
    pub fn new(session: Arc<Session>, stall: StallPolicy) -> Self {
        Self { session, stall }
    }
}

impl WeightSource for PeerSource {
    fn name(&self) -> &'static str {
        "peers"
    }

    fn fill<'a>(&'a self, target: &'a Target, _want: &'a [u32]) -> BoxFuture<'a, Result<Filled, FetchError>> {
        Box::pin(async move {
            let folder = target.path.parent().expect("the partial file has a folder");
            let torrent = wasmesh_api::torrent::metainfo(&target.info, None);
            let options = AddTorrentOptions {
                output_folder: Some(folder.to_string_lossy().into_owned()),
                overwrite: true,
                trackers: Some(vec![target.announce.clone()]),
                ..Default::default()
            };
            let handle = self
                .session
                .add_torrent(AddTorrent::from_bytes(torrent), Some(options))
                .await
                .map_err(|e| FetchError::Other(format!("cannot start the BitTorrent download: {e:#}")))?
                .into_handle()
                .ok_or_else(|| FetchError::Other("librqbit listed the torrent instead of adding it".into()))?;
            let id = handle.id();
            let result = async {
                handle
                    .wait_until_initialized()
                    .await
                    .map_err(|e| FetchError::Other(format!("the BitTorrent download did not start: {e:#}")))?;
                let start = handle.stats().progress_bytes;
                let mut reported = start;
                // (when, bytes) samples over the stall window.
                let mut samples = std::collections::VecDeque::from([(Instant::now(), start)]);
                loop {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let stats = handle.stats();
                    if let Some(error) = &stats.error {
                        return Err(FetchError::Other(format!("the BitTorrent download failed: {error}")));
                    }
                    let now = Instant::now();
                    if stats.progress_bytes > reported {
                        target.progress.advance(stats.progress_bytes - reported);
                        reported = stats.progress_bytes;
                    }
                    if stats.finished {
                        break;
                    }
                    samples.push_back((now, stats.progress_bytes));
                    while samples.len() > 1 && now.duration_since(samples[1].0) >= self.stall.window {
                        samples.pop_front();
                    }
                    let (since, then) = samples[0];
                    let span = now.duration_since(since);
                    if span >= self.stall.window {
                        let rate = (stats.progress_bytes - then) as f64 / span.as_secs_f64();
                        if rate < self.stall.min_rate as f64 {
                            tracing::info!(
                                blob = %target.blob,
                                rate_kib_s = rate as u64 >> 10,
                                window_s = self.stall.window.as_secs(),
                                "the swarm is below the minimum rate; the rest comes from the object store"
                            );
                            break;
                        }
                    }
                }
                let stats = handle.stats();
                let fetched = stats.live.as_ref().map(|l| l.snapshot.downloaded_and_checked_bytes).unwrap_or(0);
                Ok(Filled { bytes: fetched })
            }
            .await;
            // Forget the torrent (keeping the file): what it wrote is verified next.
            if let Err(e) = self.session.delete(id.into(), false).await {
                tracing::warn!("cannot stop the BitTorrent download: {e:#}");
            }
            result
        })
    }
}
