//! Downloads of artifacts: whole and hash-checked, piece by piece with resume
//! after the last verified piece, and byte ranges from the object store.

use crate::Client;
use crate::error::{ClientError, Result, error_chain};
use crate::progress::{NoProgress, Progress};
use crate::uploads::hash_file;
use bytes::Bytes;
use futures::StreamExt;
use std::io::{Read, SeekFrom};
use std::path::Path;
use std::time::Duration;

impl Client {
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
        // The verified prefix reaches the disk whatever ends the download (a damaged
        // piece, a broken stream): the file is flushed before any error is returned.
        let downloaded: Result<()> = async {
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
                                    return Err(ClientError::Unreachable { url: self.base.clone(), message: error_chain(&e) });
                            }
                            None => {
                                    return Err(ClientError::Invalid(format!(
                                    "the download of {hash} ended at byte {} of {size}; run again to resume",
                                    good + piece.len() as u64
                                )));
                            }
                        }
                    }
                    let rest = piece.split_off(want);
                    if blake3::hash(&piece).to_hex().as_str() != pieces.hashes[index] {
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
            Ok(())
        }
        .await;
        progress.finish();
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(|e| ClientError::io(&partial, e))?;
        file.sync_all().await.map_err(|e| ClientError::io(&partial, e))?;
        downloaded?;
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
