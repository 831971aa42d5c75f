//! The tunnel's frames and the JSON they carry, as a router or a host reads them
//! from a peer: every frame is read until the stream ends or breaks the protocol,
//! each head is parsed as every message a peer may send, token ids are decoded, and
//! each frame read writes back to the very bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use wasmesh_tunnel::{Frame, GenerationIds, HostReport, Open, ResponseHead, read_frame, write_frame};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let mut input = data;
        loop {
            let before = input;
            let frame = match read_frame(&mut input).await {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => break,
            };
            if let Frame::Head(bytes) = &frame {
                let _ = serde_json::from_slice::<Open>(bytes);
                let _ = serde_json::from_slice::<HostReport>(bytes);
                let _ = serde_json::from_slice::<ResponseHead>(bytes);
            }
            // Token ids that parse encode back to the very bytes they came from.
            if let Frame::Tokens(bytes) = &frame
                && let Ok(ids) = GenerationIds::decode(bytes)
            {
                assert_eq!(ids.encode().as_deref(), Some(&bytes[..]), "token ids {ids:?} did not round-trip");
            }
            // What was read is what was sent (an error frame's text is read lossily,
            // so only valid UTF-8 round-trips).
            let consumed = &before[..before.len() - input.len()];
            let mut written = Vec::new();
            write_frame(&mut written, &frame).await.expect("writing to a Vec");
            if !matches!(&frame, Frame::Error(_)) || std::str::from_utf8(&consumed[5..]).is_ok() {
                assert_eq!(written, consumed, "frame {frame:?} did not round-trip");
            }
        }
    });
});
