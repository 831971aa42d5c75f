//! `memory-bomb`: on any request, allocates memory without bound (1 MiB chunks, each written to
//! so it is really used) and never responds. The host's memory limit must trap it (a test guest).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

const CHUNK: usize = 1 << 20;

struct MemoryBomb;

impl Guest for MemoryBomb {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        let mut fill: u8 = 0;
        loop {
            fill = fill.wrapping_add(1);
            // `vec![x; n]` with x != 0 writes every byte; `black_box` keeps the chunk alive.
            let chunk = std::hint::black_box(vec![fill | 1; CHUNK]);
            hoard.push(chunk);
            std::hint::black_box(&mut hoard);
        }
    }
}

wasi::http::proxy::export!(MemoryBomb);
