//! Per-piece hashes of a byte stream fed in order: blake3 for the piece manifest
//! every chunk is verified against, SHA-1 for the BitTorrent info dictionary.

use sha1::Digest;

/// A hash function the pieces of a stream can be hashed with.
pub trait PieceDigest: Default {
    /// Feeds bytes of the current piece.
    fn feed(&mut self, data: &[u8]);
    /// The piece's hash as lowercase hex.
    fn finish_hex(self) -> String;
}

impl PieceDigest for blake3::Hasher {
    fn feed(&mut self, data: &[u8]) {
        self.update(data);
    }

    fn finish_hex(self) -> String {
        self.finalize().to_hex().to_string()
    }
}

impl PieceDigest for sha1::Sha1 {
    fn feed(&mut self, data: &[u8]) {
        self.update(data);
    }

    fn finish_hex(self) -> String {
        crate::torrent::hex(&self.finalize())
    }
}

/// The hash of each `piece_length` piece of a byte stream, fed in order.
#[derive(Debug, Clone)]
pub struct PieceHashes<H> {
    piece_length: u64,
    in_piece: u64,
    current: H,
    hashes: Vec<String>,
}

/// blake3 of each piece (the registry's piece manifest).
pub type Blake3Pieces = PieceHashes<blake3::Hasher>;
/// SHA-1 of each piece (the torrent's `pieces`).
pub type Sha1Pieces = PieceHashes<sha1::Sha1>;

impl<H: PieceDigest> PieceHashes<H> {
    /// Starts with pieces of `piece_length` bytes (at least 1).
    pub fn new(piece_length: u64) -> Self {
        Self { piece_length: piece_length.max(1), in_piece: 0, current: H::default(), hashes: Vec::new() }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min((self.piece_length - self.in_piece) as usize);
            self.current.feed(&data[..take]);
            self.in_piece += take as u64;
            data = &data[take..];
            if self.in_piece == self.piece_length {
                self.hashes.push(std::mem::take(&mut self.current).finish_hex());
                self.in_piece = 0;
            }
        }
    }

    /// The hashes, the last (short) piece included.
    pub fn finish(mut self) -> Vec<String> {
        if self.in_piece > 0 {
            self.hashes.push(self.current.finish_hex());
        }
        self.hashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_hashed_across_updates_and_the_short_tail_counts() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut sha1 = Sha1Pieces::new(4096);
        let mut blake3 = Blake3Pieces::new(4096);
        for part in [&data[..1000], &data[1000..5000], &data[5000..]] {
            sha1.update(part);
            blake3.update(part);
        }
        let (sha1, blake3) = (sha1.finish(), blake3.finish());
        assert_eq!(sha1.len(), 3);
        assert_eq!(sha1[0], crate::torrent::sha1_hex(&data[..4096]));
        assert_eq!(sha1[2], crate::torrent::sha1_hex(&data[8192..]));
        let expected: Vec<String> = data.chunks(4096).map(|c| blake3::hash(c).to_hex().to_string()).collect();
        assert_eq!(blake3, expected);
        // An exact multiple of the piece length has no empty extra piece.
        let mut exact = Blake3Pieces::new(4096);
        exact.update(&data[..8192]);
        assert_eq!(exact.finish().len(), 2);
    }
}
