//! `unknown-import`: a `wasi:http` component that also imports `example:unknown/frobnicator`,
//! which no wasmesh host provides. Hosts must refuse it when it is loaded, and the
//! registry when it is deployed, naming the import.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

wit_bindgen::generate!({
    inline: "
        package example:unknown;
        interface frobnicator {
            frob: func(x: u32) -> u32;
        }
        world unknown-import {
            import frobnicator;
        }
    ",
});

struct UnknownImport;

impl Guest for UnknownImport {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let n = example::unknown::frobnicator::frob(41);
        wasmesh_guest_common::respond(out, 200, "text/plain", &[], n.to_string().as_bytes());
    }
}

wasi::http::proxy::export!(UnknownImport);
