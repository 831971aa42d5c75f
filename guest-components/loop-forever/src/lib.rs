//! `loop-forever`: on any request, spins forever and never responds. The host's epoch deadline
//! must stop it (a test guest).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct LoopForever;

impl Guest for LoopForever {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        let mut counter: u64 = 0;
        // `black_box` keeps the optimizer from proving the loop has no effect.
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

wasi::http::proxy::export!(LoopForever);
