//! `tensor-flood`: on any request, makes `wasi:nn` tensors of 1 MiB without bound and keeps
//! them, never responding. Each tensor's bytes are copied into the host, outside the guest's
//! linear memory: the host must count them against the component's memory limit and stop it
//! (a test guest).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};
use wasmesh_guest_common::bindings::wasi::nn::tensor::{Tensor, TensorType};

const CHUNK: usize = 1 << 20;

struct TensorFlood;

impl Guest for TensorFlood {
    fn handle(_request: IncomingRequest, _out: ResponseOutparam) {
        // One buffer in the guest, reused: only the host's copies grow.
        let bytes = vec![7u8; CHUNK];
        let mut hoard: Vec<Tensor> = Vec::new();
        loop {
            hoard.push(Tensor::new(&[CHUNK as u32], TensorType::U8, &bytes));
            std::hint::black_box(&mut hoard);
        }
    }
}

wasi::http::proxy::export!(TensorFlood);
