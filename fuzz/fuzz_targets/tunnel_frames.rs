//! The tunnel's frames and the heads and reports they carry, as a router or a host
//! reads them from a peer: every frame is read until the stream ends or breaks the
//! protocol, each head is parsed as every message a peer may send (binary heads, JSON
//! reports), token ids are decoded, and each frame read writes back to the very bytes it
//! came from, as does each head that parses. The first byte of the input cuts the rest
//! into pieces (as QUIC delivers a stream in chunks): however it is cut, the same frames
//! and the same outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use wasmesh_tunnel::{
    Chunks, Frame, FrameReader, GenerationIds, HostReport, Open, ResponseHead, decode_head, encode_head, write_frame,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

/// Encodes `head`, reads that back and encodes it again: the same bytes both times.
fn same_again<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(head: &T) {
    let mut once = Vec::new();
    encode_head(&mut once, head).expect("encoding a head that was read");
    let again: T = decode_head(&once[5..]).expect("reading a head just written");
    let mut twice = Vec::new();
    encode_head(&mut twice, &again).expect("encoding it again");
    assert_eq!(once, twice, "head {head:?} did not read back as written");
}

/// A stream delivered in pieces of `size` bytes (and an empty one now and then).
struct Pieces<'a> {
    rest: &'a [u8],
    size: usize,
    calls: usize,
}

impl Chunks for Pieces<'_> {
    async fn chunk(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        self.calls += 1;
        if self.rest.is_empty() {
            return Ok(None);
        }
        if self.calls % 7 == 0 {
            return Ok(Some(bytes::Bytes::new()));
        }
        let (piece, rest) = self.rest.split_at(self.size.min(self.rest.len()));
        self.rest = rest;
        Ok(Some(bytes::Bytes::copy_from_slice(piece)))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    runtime().block_on(async {
        let mut whole = FrameReader::new(data);
        let mut pieces = FrameReader::new(Pieces { rest: data, size: usize::from(cut % 64) + 1, calls: 0 });
        let mut at = 0;
        loop {
            let read = whole.frame().await;
            let cut_read = pieces.frame().await;
            assert_eq!(
                format!("{read:?}"),
                format!("{cut_read:?}"),
                "a stream cut in pieces of {} read otherwise",
                usize::from(cut % 64) + 1
            );
            let frame = match read {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => break,
            };
            if let Frame::Head(bytes) = &frame {
                let _ = serde_json::from_slice::<HostReport>(bytes);
                // A binary head that parses writes out as something that reads back the
                // same (the input itself may be longer: varints and claims have more than
                // one form).
                if let Ok(open) = decode_head::<Open>(bytes) {
                    same_again(&open);
                }
                if let Ok(head) = decode_head::<ResponseHead>(bytes) {
                    same_again(&head);
                }
            }
            // Token ids that parse encode back to the very bytes they came from.
            if let Frame::Tokens(bytes) = &frame
                && let Ok(ids) = GenerationIds::decode(bytes)
            {
                assert_eq!(ids.encode().as_deref(), Some(&bytes[..]), "token ids {ids:?} did not round-trip");
            }
            // What was read is what was sent (an error frame's text is read lossily,
            // so only valid UTF-8 round-trips): the frame's header says how long it was.
            let len = 5 + u32::from_be_bytes(data[at + 1..at + 5].try_into().expect("4 bytes")) as usize;
            let consumed = &data[at..at + len];
            at += len;
            let mut written = Vec::new();
            write_frame(&mut written, &frame).await.expect("writing to a Vec");
            if !matches!(&frame, Frame::Error(_)) || std::str::from_utf8(&consumed[5..]).is_ok() {
                assert_eq!(written, consumed, "frame {frame:?} did not round-trip");
            }
        }
    });
});
