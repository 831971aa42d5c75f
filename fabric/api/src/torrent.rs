//! BitTorrent metainfo for model and LoRA files, built from the registry's piece
//! manifest: the registry records it at push, and a host rebuilds the very same bytes
//! from the manifest it trusts (so no `.torrent` file ever travels on its own).
//!
//! The info dictionary is a single file named `BLAKE3.gguf` with the manifest's piece
//! length and SHA-1 piece hashes, marked private (no DHT, no peer exchange: peers come
//! only from the registry). Keys are written in bencode's sorted order.

use crate::wire::PieceManifest;
use sha1::{Digest, Sha1};

/// The file name inside the torrent (and in a host's weight cache).
pub fn file_name(blake3: &str) -> String {
    format!("{blake3}.gguf")
}

/// The bencoded info dictionary of file `blake3` (`size` bytes).
///
/// Fails when the manifest has no SHA-1 hashes (pushed before torrents were recorded)
/// or they do not fit the size.
pub fn info_dict(blake3: &str, size: u64, pieces: &PieceManifest) -> Result<Vec<u8>, String> {
    if pieces.piece_length == 0 || pieces.sha1.len() as u64 != size.div_ceil(pieces.piece_length) {
        return Err(format!(
            "the piece manifest of {blake3} has {} SHA-1 hashes for {size} bytes in pieces of {}: it was stored before the registry recorded torrents, so it has no swarm",
            pieces.sha1.len(),
            pieces.piece_length
        ));
    }
    let mut concatenated = Vec::with_capacity(pieces.sha1.len() * 20);
    for (i, hex) in pieces.sha1.iter().enumerate() {
        let digest =
            decode_hex(hex).filter(|d| d.len() == 20).ok_or_else(|| format!("SHA-1 hash {i} is not 40 hex digits"))?;
        concatenated.extend_from_slice(&digest);
    }
    let mut out = Vec::new();
    out.push(b'd');
    bytes(&mut out, b"length");
    int(&mut out, size);
    bytes(&mut out, b"name");
    bytes(&mut out, file_name(blake3).as_bytes());
    bytes(&mut out, b"piece length");
    int(&mut out, pieces.piece_length);
    bytes(&mut out, b"pieces");
    bytes(&mut out, &concatenated);
    bytes(&mut out, b"private");
    int(&mut out, 1);
    out.push(b'e');
    Ok(out)
}

/// The info hash (SHA-1 of the info dictionary), as 40 hex digits.
pub fn info_hash(info: &[u8]) -> String {
    hex(&Sha1::digest(info))
}

/// A whole `.torrent` file around `info`, announcing to `announce` when given.
pub fn metainfo(info: &[u8], announce: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(info.len() + 128);
    out.push(b'd');
    if let Some(url) = announce {
        bytes(&mut out, b"announce");
        bytes(&mut out, url.as_bytes());
    }
    bytes(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

pub use crate::pieces::Sha1Pieces;

/// SHA-1 of one piece, as 40 hex digits.
pub fn sha1_hex(data: &[u8]) -> String {
    hex(&Sha1::digest(data))
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

fn int(out: &mut Vec<u8>, n: u64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex digits.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// An HTTP announce's parameters (BitTorrent percent-encodes the raw 20-byte hash,
/// which is not UTF-8, so the query is parsed here rather than by serde).
#[derive(Debug, PartialEq)]
pub struct Announce {
    /// The info hash, hex.
    pub info_hash: String,
    /// The port the peer listens on.
    pub port: u16,
    /// Bytes it still needs.
    pub left: u64,
    /// `event=stopped`.
    pub stopped: bool,
}

impl Announce {
    /// Parses a raw query string.
    pub fn parse(query: &str) -> Result<Self, String> {
        let mut info_hash = None;
        let (mut port, mut left, mut stopped) = (None, None, false);
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            // `+` is a space in a query; a literal plus arrives as `%2B`.
            let v: Vec<u8> = percent_encoding::percent_decode(v.replace('+', " ").as_bytes()).collect();
            match k {
                "info_hash" if v.len() == 20 => info_hash = Some(hex(&v)),
                "info_hash" => return Err("info_hash must be 20 bytes".into()),
                "port" => port = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()),
                "left" => left = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok()),
                "event" => stopped = v == b"stopped",
                _ => {}
            }
        }
        Ok(Self {
            info_hash: info_hash.ok_or("missing info_hash")?,
            port: port.filter(|p| *p != 0).ok_or("missing or bad port")?,
            left: left.ok_or("missing or bad left")?,
            stopped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(data: &[u8], piece_length: u64) -> PieceManifest {
        let mut sha = Sha1Pieces::new(piece_length);
        sha.update(data);
        PieceManifest {
            piece_length,
            hashes: data.chunks(piece_length as usize).map(|c| blake3::hash(c).to_hex().to_string()).collect(),
            sha1: sha.finish(),
            info_hash: None,
        }
    }

    #[test]
    fn the_info_dict_is_sorted_bencode_and_its_hash_is_stable() {
        let data = vec![1u8; 5000];
        let m = manifest(&data, 4096);
        let info = info_dict("ab", 5000, &m).unwrap();
        let expected_prefix = b"d6:lengthi5000e4:name7:ab.gguf12:piece lengthi4096e6:pieces40:";
        assert_eq!(&info[..expected_prefix.len()], expected_prefix);
        assert!(info.ends_with(b"7:privatei1ee"));
        assert_eq!(info_hash(&info), info_hash(&info_dict("ab", 5000, &m).unwrap()));
        assert_ne!(info_hash(&info), info_hash(&info_dict("ac", 5000, &m).unwrap()));
        let file = metainfo(&info, Some("http://t/announce"));
        assert!(file.starts_with(b"d8:announce17:http://t/announce4:infod6:length"));
    }

    #[test]
    fn a_manifest_without_sha1_hashes_is_refused_with_what_to_do() {
        let mut m = manifest(&[0u8; 100], 64);
        m.sha1.clear();
        let err = info_dict("ab", 100, &m).unwrap_err();
        assert!(err.contains("no swarm"), "{err}");
        assert!(decode_hex("zz").is_none() && decode_hex("abc").is_none());
        assert_eq!(decode_hex("00ff").unwrap(), vec![0, 255]);
    }

    #[test]
    fn announce_queries_parse() {
        let q = "info_hash=%01%02%03%04%05%06%07%08%09%0a%0b%0c%0d%0e%0f%10%11%12%13A&peer_id=-rQ0000-abcdefghijkl&port=4242&uploaded=0&downloaded=0&left=77&event=started&compact=1";
        let a = Announce::parse(q).unwrap();
        assert_eq!(a.info_hash, "0102030405060708090a0b0c0d0e0f1011121341");
        assert_eq!((a.port, a.left, a.stopped), (4242, 77, false));
        assert!(Announce::parse("port=1&left=0").unwrap_err().contains("info_hash"));
        assert!(Announce::parse("info_hash=%zz").is_err());
    }
}
