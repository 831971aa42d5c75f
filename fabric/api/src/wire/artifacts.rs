//! Uploads and stored artifacts: starting and resuming an upload, the blob it
//! becomes, and the per-piece hashes of model and LoRA files.

use serde::{Deserialize, Serialize};

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

/// A download's `Range` header, `bytes=A-` or `bytes=A-B` (B inclusive, clamped to
/// the size), as `start..end`; `None` for any other form (several ranges, suffix
/// ranges) or a range that starts at or past the end.
pub fn parse_byte_range(range: &str, size: u64) -> Option<(u64, u64)> {
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end = match end {
        "" => size,
        end => end.parse::<u64>().ok()?.checked_add(1)?.min(size),
    };
    (start < end).then_some((start, end))
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
    fn byte_ranges_are_one_range_within_the_size() {
        assert_eq!(parse_byte_range("bytes=0-", 10), Some((0, 10)));
        assert_eq!(parse_byte_range("bytes=2-4", 10), Some((2, 5)));
        assert_eq!(parse_byte_range("bytes=2-400", 10), Some((2, 10)));
        assert_eq!(parse_byte_range(&format!("bytes=0-{}", u64::MAX), 10), None);
        for bad in ["bytes=10-", "bytes=5-3", "bytes=-5", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", ""] {
            assert_eq!(parse_byte_range(bad, 10), None, "{bad}");
        }
    }
}
