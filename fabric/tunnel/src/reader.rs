//! Reading frames: the one parser of the tunnel's frames, over the pieces a stream
//! delivers ([`Chunks`]: QUIC's received chunks, or a byte slice).
//!
//! A frame that arrived inside one chunk (nearly every head, small body and end) is a
//! slice of that chunk: no buffer to zero, no copy. Only a frame split across chunks is
//! put together, each of its bytes copied once. The reader keeps what it has taken from
//! the stream and not yet returned, so a read it gives up (a timeout) loses nothing, and a
//! stream that carries one request after another keeps the next request's first bytes.

use crate::TunnelError;
use crate::frames::{Frame, check_header, frame_of};
use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;

/// Where a [`FrameReader`] gets its bytes: the pieces of a stream in order, `None` at its
/// clean end. Implemented for QUIC's receive streams (each chunk as quinn received it)
/// and for byte slices (the whole slice at once; tests and the fuzz target).
pub trait Chunks: Send {
    /// The next piece of the stream (possibly empty), or `None` once it has ended.
    fn chunk(&mut self) -> impl Future<Output = std::io::Result<Option<Bytes>>> + Send;
}

impl Chunks for &[u8] {
    async fn chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.is_empty() {
            return Ok(None);
        }
        let all = Bytes::copy_from_slice(self);
        *self = &[];
        Ok(Some(all))
    }
}

/// Reads frames off a stream of [`Chunks`].
pub struct FrameReader<C> {
    source: C,
    /// Received, not yet returned (empty while `assembling` holds the bytes).
    pending: Bytes,
    /// A frame split across chunks, being put together.
    assembling: BytesMut,
}

impl<C: Chunks> FrameReader<C> {
    /// A reader of `source` from its start.
    pub fn new(source: C) -> Self {
        Self { source, pending: Bytes::new(), assembling: BytesMut::new() }
    }

    /// The stream it reads.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.source
    }

    /// Reads one frame; `None` at a clean end of stream (one that ends between frames).
    pub async fn frame(&mut self) -> Result<Option<Frame>, TunnelError> {
        if !self.fill(5).await? {
            return Ok(None);
        }
        let header: [u8; 5] = self.pending[..5].try_into().expect("5 bytes");
        let (kind, len) = check_header(header)?;
        if !self.fill(5 + len).await? {
            unreachable!("a reader holding a header has bytes");
        }
        let mut payload = self.pending.split_to(5 + len);
        payload.advance(5);
        Ok(Some(frame_of(kind, payload)))
    }

    /// Reads a binary head ([`crate::Open`] or [`crate::ResponseHead`]).
    pub async fn head<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, TunnelError> {
        crate::frames::decode_head(&self.head_frame().await?)
    }

    /// Reads a JSON frame (a [`crate::HostReport`]).
    pub async fn json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, TunnelError> {
        let bytes = self.head_frame().await?;
        serde_json::from_slice(&bytes).map_err(|e| TunnelError::Protocol(format!("bad report: {e}")))
    }

    /// The payload of the next frame, which must be a head; an `Error` frame in its place
    /// is the peer's refusal, and its text the error.
    async fn head_frame(&mut self) -> Result<Bytes, TunnelError> {
        match self.frame().await? {
            Some(Frame::Head(bytes)) => Ok(bytes),
            Some(Frame::Error(message)) => Err(TunnelError::Protocol(message)),
            Some(other) => Err(TunnelError::Protocol(format!("expected a head, got {other:?}"))),
            None => Err(TunnelError::Protocol("stream ended before its head".into())),
        }
    }

    /// Makes `pending` hold at least `need` bytes; false if the stream ended cleanly
    /// before any (a stream that ends inside a frame is an error). Whatever it took from
    /// the stream stays in `self`, so dropping this future loses nothing.
    async fn fill(&mut self, need: usize) -> Result<bool, TunnelError> {
        loop {
            if self.assembling.is_empty() {
                if self.pending.len() >= need {
                    return Ok(true);
                }
            } else if self.assembling.len() >= need {
                self.pending = self.assembling.split().freeze();
                return Ok(true);
            }
            match self.source.chunk().await? {
                None if self.pending.is_empty() && self.assembling.is_empty() => return Ok(false),
                None => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Some(chunk) if self.pending.is_empty() && self.assembling.is_empty() => self.pending = chunk,
                Some(chunk) => {
                    if self.assembling.is_empty() {
                        self.assembling.reserve(need.max(self.pending.len() + chunk.len()));
                        self.assembling.extend_from_slice(&std::mem::take(&mut self.pending));
                    }
                    self.assembling.extend_from_slice(&chunk);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ResponseHead, encode_frame, encode_head};

    /// A stream that delivers its bytes in pieces of the given sizes (the last repeats),
    /// each after a wait when `waits` (as a network would).
    struct Pieces {
        bytes: Bytes,
        sizes: Vec<usize>,
        waits: bool,
    }

    impl Chunks for Pieces {
        async fn chunk(&mut self) -> std::io::Result<Option<Bytes>> {
            if self.waits {
                let mut waited = false;
                std::future::poll_fn(|cx| {
                    if std::mem::replace(&mut waited, true) {
                        return std::task::Poll::Ready(());
                    }
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                })
                .await;
            }
            if self.bytes.is_empty() {
                return Ok(None);
            }
            let size = if self.sizes.len() > 1 { self.sizes.remove(0) } else { self.sizes[0] };
            Ok(Some(self.bytes.split_to(size.min(self.bytes.len()))))
        }
    }

    fn stream() -> (Vec<u8>, Vec<Frame>) {
        let mut bytes = Vec::new();
        let head = ResponseHead { status: 200, headers: vec![("a".into(), "b".into())] };
        encode_head(&mut bytes, &head).unwrap();
        let frames = vec![
            Frame::Data(Bytes::from_static(b"hello")),
            Frame::Data(Bytes::from(vec![7u8; 3000])),
            Frame::Data(Bytes::new()),
            Frame::Error("no".into()),
            Frame::End,
        ];
        for frame in &frames {
            encode_frame(&mut bytes, frame);
        }
        (bytes, frames)
    }

    #[tokio::test]
    async fn frames_read_the_same_however_the_stream_is_cut() {
        let (bytes, frames) = stream();
        for sizes in [vec![1], vec![2], vec![5], vec![7, 1], vec![4, 9, 1000], vec![bytes.len()], vec![0, 3]] {
            let mut reader =
                FrameReader::new(Pieces { bytes: Bytes::from(bytes.clone()), sizes: sizes.clone(), waits: false });
            let head: ResponseHead = reader.head().await.unwrap();
            assert_eq!(head.status, 200, "pieces of {sizes:?}");
            for frame in &frames {
                assert_eq!(reader.frame().await.unwrap().as_ref(), Some(frame), "pieces of {sizes:?}");
            }
            assert_eq!(reader.frame().await.unwrap(), None, "pieces of {sizes:?}");
        }
        // A frame inside one piece is a slice of it, not a copy.
        let piece = Bytes::from(bytes.clone());
        let mut reader = FrameReader::new(Pieces { bytes: piece.clone(), sizes: vec![bytes.len()], waits: false });
        let _: ResponseHead = reader.head().await.unwrap();
        let Some(Frame::Data(hello)) = reader.frame().await.unwrap() else { panic!("data") };
        assert!(piece.as_ptr_range().contains(&hello.as_ptr()), "the frame was copied");
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error_and_a_dropped_read_loses_nothing() {
        let (bytes, _) = stream();
        for cut in 1..bytes.len() {
            let mut reader = FrameReader::new(&bytes[..cut]);
            let mut result = Ok(Some(Frame::End));
            while let Ok(Some(_)) = result {
                result = reader.frame().await;
            }
            // Ends between frames read as a clean end; anywhere else as an error.
            let between = {
                let mut at = 0;
                let mut ends = vec![0];
                while at + 5 <= bytes.len() {
                    at += 5 + u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
                    ends.push(at);
                }
                ends.contains(&cut)
            };
            assert_eq!(result.is_ok(), between, "a stream cut at {cut}");
        }
        // A read given up while a frame is half in (a timeout) keeps what it took.
        let mut reader = FrameReader::new(Pieces { bytes: Bytes::from(bytes.clone()), sizes: vec![3], waits: true });
        assert!(still_pending_after(4, reader.head::<ResponseHead>()), "the head takes more than three pieces");
        assert_eq!(reader.head::<ResponseHead>().await.unwrap().status, 200);
        assert_eq!(reader.frame().await.unwrap(), Some(Frame::Data(Bytes::from_static(b"hello"))));
    }

    /// Polls `future` `times` times and drops it; whether it was still pending.
    fn still_pending_after<F: Future>(times: usize, future: F) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut future = std::pin::pin!(future);
        (0..times).all(|_| future.as_mut().poll(&mut cx).is_pending())
    }
}
