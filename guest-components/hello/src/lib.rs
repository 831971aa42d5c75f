//! `hello`: answers `200 text/plain` `hello from wasmesh\n` to any request, with no inference.
//! It is the overhead benchmark, so it stays minimal (no serde, no wasi-nn).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        wasmesh_guest_common::respond(out, 200, "text/plain", &[], b"hello from wasmesh\n");
    }
}

wasi::http::proxy::export!(Hello);
