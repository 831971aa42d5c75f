//! The private tracker's inputs from nodes: an announce's query string (raw bytes
//! percent-encoded), and the JSON of swarm joins and peer reports.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmesh_api::torrent::Announce;
use wasmesh_api::wire::{PeerReport, SwarmJoin, is_blake3_hex};

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(announce) = Announce::parse(query)
    {
        assert_eq!(announce.info_hash.len(), 40, "an info hash is 20 bytes");
        assert_ne!(announce.port, 0);
    }
    if let Ok(report) = serde_json::from_slice::<PeerReport>(data) {
        let _ = is_blake3_hex(&report.blob);
    }
    let _ = serde_json::from_slice::<SwarmJoin>(data);
});
