//! Uploads of artifacts: resumable, in parts, each retried on transient failures;
//! and the blake3 of a file, with progress.

use crate::Client;
use crate::error::{ClientError, Result};
use crate::progress::Progress;
use bytes::Bytes;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;
use wasmesh_api::wire::{ArtifactKind, BlobInfo, StartUpload, UploadSession};

impl Client {
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
}

fn part_len(part: u64, part_size: u64, size: u64) -> u64 {
    part_size.min(size.saturating_sub(part * part_size))
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
