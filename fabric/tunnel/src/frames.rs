//! The frames on a stream (one byte of kind, a big-endian `u32` length, the payload)
//! and the messages they carry. Everything here reads bytes a peer sent: each frame is
//! bounded before it is read, and a bad one is a [`TunnelError::Protocol`].
//!
//! The heads of requests and answers ([`Open`], [`ResponseHead`]) are binary
//! (postcard: varint lengths and integers, fields in order, no names), since one of each
//! crosses the link per request: JSON cost both ends a text parse and escape scan per
//! request, and an internally tagged enum a buffered copy of the whole head. A
//! [`HostReport`] (once a second) stays JSON.

use crate::TunnelError;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::AsyncWriteExt;
use wasmesh_api::ModelRef;
use wasmesh_api::wire::CachedModel;
pub use wasmesh_api::wire::GenerationIds;

/// Largest head or report frame.
const MAX_CONTROL_FRAME: usize = 1 << 20;
/// Largest data frame.
const MAX_DATA_FRAME: usize = 1 << 20;

/// The first frame of every stream a router opens: what the stream is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Open {
    /// A caller's request: body frames and `End` follow; the host answers with a
    /// [`ResponseHead`] and the response body.
    Request(RequestHead),
    /// Load a model (its base, for an adapter reference) ahead of demand. The host
    /// answers `202` and `End` at once and loads in the background.
    Preload {
        /// The model to load.
        model: ModelRef,
        /// Keep it warm too: never evicted while the registry pins it.
        pin: bool,
    },
}

/// A caller's request as the router forwards it. Every field is on the wire, in this
/// order (a binary head names none): add new ones at the end, with a new [`crate::ALPN`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestHead {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query as the caller sent them, e.g. `/fn/demo/chat?x=1`.
    pub uri: String,
    /// The caller's headers, less the hop-by-hop ones and the caller's key.
    pub headers: Vec<(String, String)>,
    /// The router's id for the request; the host's receipt names it (empty: not metered).
    pub request_id: String,
    /// The seed of the request's sampled generations that name none, chosen by the
    /// router for every request (so the few it replays on auditors are like the rest):
    /// a replay with the same seed samples the same tokens. 0: none (the engine's own).
    pub seed: u64,
    /// The router asks for the token ids of the request's generations (a
    /// [`Frame::Tokens`] before the receipt): an audit's replay checks them.
    pub tokens: bool,
    /// An audit's replay: the token ids the audited node returned, which the replay
    /// checks (teacher-forced) rather than generates. What it commits to is what
    /// generating would give, whatever the claims say; true claims only make it cheaper.
    /// On the wire in [`GenerationIds::encode`]'s form.
    #[serde(with = "claims_bytes")]
    pub claims: GenerationIds,
    /// With `claims`: score them rather than check them (an auditor of another engine
    /// build or CPU class, whose rounding differs): every claimed token is taken as is,
    /// and the receipt says how likely each was under the model (`Receipt::score`).
    pub score_claims: bool,
}

/// [`RequestHead::claims`] as one byte string of [`GenerationIds::encode`]'s form (a
/// claim's ids are most of a replay's head; the form is already checked and bounded).
mod claims_bytes {
    use super::GenerationIds;

    pub(super) fn serialize<S: serde::Serializer>(ids: &GenerationIds, serializer: S) -> Result<S::Ok, S::Error> {
        if ids.is_empty() {
            return serializer.serialize_bytes(&[]);
        }
        let bytes = ids.encode().ok_or_else(|| serde::ser::Error::custom("too many claimed token ids"))?;
        serializer.serialize_bytes(&bytes)
    }

    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = GenerationIds;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("encoded token ids")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<GenerationIds, E> {
            if bytes.is_empty() {
                return Ok(GenerationIds::default());
            }
            GenerationIds::decode(bytes).map_err(E::custom)
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<GenerationIds, D::Error> {
        deserializer.deserialize_bytes(Visitor)
    }
}

/// The start of a host's answer (binary on the wire, as [`RequestHead`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
}

/// A host's state, as the router routes by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostReport {
    /// Whether it takes requests.
    pub ready: bool,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests it serves at once.
    pub max_concurrency: u32,
    /// Model memory not used by loaded models.
    pub free_model_memory_bytes: u64,
    /// Model memory held by loaded models no request is using (and not pinned): what
    /// evicting idle models frees at once.
    #[serde(default)]
    pub idle_model_memory_bytes: u64,
    /// Models and adapters in its caches.
    pub models: Vec<CachedModel>,
    /// Apps it serves, with versions.
    pub apps: BTreeMap<String, u64>,
    /// Requests served since start (the tests' view of where requests landed).
    pub served: u64,
    /// Model loads started since the host started (each cold start of a model).
    pub cold_loads: u64,
    /// Its engine build (`InferenceEngine::build_id`): audits replay on the same one.
    #[serde(default)]
    pub engine: String,
    /// Its CPU feature class (`wasmesh_probe::cpu_class`): audits replay within one.
    #[serde(default)]
    pub cpu_class: String,
}

/// A frame on a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A head ([`Open`] or [`ResponseHead`], binary: [`encode_head`]) or a report
    /// ([`HostReport`], JSON: [`write_json`]).
    Head(Bytes),
    /// Body bytes.
    Data(Bytes),
    /// The body ended.
    End,
    /// The sender failed; the message says why.
    Error(String),
    /// The host's signed receipt of what the request used (JSON of a
    /// `wasmesh_api::wire::SignedReceipt`), sent just before `End`.
    Receipt(Bytes),
    /// The token ids of the request's generations ([`GenerationIds::encode`]), when the
    /// router asked ([`RequestHead::tokens`]); after the body, before the receipt.
    Tokens(Bytes),
}

const HEAD: u8 = 1;
const DATA: u8 = 2;
const END: u8 = 3;
const ERROR: u8 = 4;
const RECEIPT: u8 = 5;
const TOKENS: u8 = 6;
/// Largest token-ids frame.
const MAX_TOKENS_FRAME: usize = GenerationIds::MAX_ENCODED;
/// Largest receipt frame.
const MAX_RECEIPT_FRAME: usize = 16 << 10;

/// Payloads up to this size are written with their frame header in one write (one
/// lock of the QUIC connection, one wake of its driver); larger ones are not copied.
const COALESCE: usize = 16 << 10;

fn parts(frame: &Frame) -> ([u8; 5], &[u8]) {
    let (kind, payload): (u8, &[u8]) = match frame {
        Frame::Head(b) => (HEAD, b),
        Frame::Data(b) => (DATA, b),
        Frame::End => (END, &[]),
        Frame::Error(m) => (ERROR, m.as_bytes()),
        Frame::Receipt(b) => (RECEIPT, b),
        Frame::Tokens(b) => (TOKENS, b),
    };
    let mut header = [0u8; 5];
    header[0] = kind;
    header[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    (header, payload)
}

/// Appends one frame to `out`, for writing several frames at once.
pub fn encode_frame(out: &mut Vec<u8>, frame: &Frame) {
    let (header, payload) = parts(frame);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Appends `value` ([`Open`] or [`ResponseHead`]) as a binary head frame to `out`.
/// On an error `out` is as it was.
pub fn encode_head(out: &mut Vec<u8>, value: &impl Serialize) -> std::io::Result<()> {
    /// Appends to a borrowed buffer (postcard takes its writer by value).
    struct Append<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Append<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
            self.0.extend(bytes);
        }
    }
    let at = out.len();
    out.extend_from_slice(&[HEAD, 0, 0, 0, 0]);
    let written = postcard::to_extend(value, Append(out)).map(drop);
    let written = written
        .map_err(std::io::Error::other)
        .and_then(|()| u32::try_from(out.len() - at - 5).map_err(|_| std::io::Error::other("a head over 4 GiB")));
    match written {
        Ok(len) => {
            out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(at);
            Err(e)
        }
    }
}

/// Writes a binary head ([`Open`] or [`ResponseHead`]).
pub async fn write_head<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode_head(&mut buf, value)?;
    out.write_all(&buf).await
}

/// Parses a binary head's payload; every byte must be used.
pub fn decode_head<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TunnelError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((head, [])) => Ok(head),
        Ok((_, rest)) => Err(TunnelError::Protocol(format!("bad head: {} bytes after its end", rest.len()))),
        Err(e) => Err(TunnelError::Protocol(format!(
            "bad head: {e} (a peer of another wasmesh version? hosts and routers must speak {})",
            String::from_utf8_lossy(crate::ALPN)
        ))),
    }
}

/// Appends `value` as a JSON frame (a [`HostReport`]) to `out`.
pub fn encode_json(out: &mut Vec<u8>, value: &impl Serialize) -> std::io::Result<()> {
    let at = out.len();
    out.extend_from_slice(&[HEAD, 0, 0, 0, 0]);
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::other)?;
    let len = u32::try_from(out.len() - at - 5).map_err(std::io::Error::other)?;
    out[at + 1..at + 5].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes one frame.
pub async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, frame: &Frame) -> std::io::Result<()> {
    let (header, payload) = parts(frame);
    if payload.len() <= COALESCE {
        let mut buf = Vec::with_capacity(5 + payload.len());
        buf.extend_from_slice(&header);
        buf.extend_from_slice(payload);
        return out.write_all(&buf).await;
    }
    out.write_all(&header).await?;
    out.write_all(payload).await
}

/// Checks a frame's header: its kind and its payload's length, bounded by the kind's limit.
pub(crate) fn check_header(header: [u8; 5]) -> Result<(u8, usize), TunnelError> {
    let len = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
    let limit = match header[0] {
        HEAD | ERROR => MAX_CONTROL_FRAME,
        DATA => MAX_DATA_FRAME,
        // An end carries nothing (found by the fuzz target `tunnel_frames`: a payload
        // on it used to be read and dropped).
        END => 0,
        RECEIPT => MAX_RECEIPT_FRAME,
        TOKENS => MAX_TOKENS_FRAME,
        other => return Err(TunnelError::Protocol(format!("unknown frame kind {other}"))),
    };
    if len > limit {
        return Err(TunnelError::Protocol(format!("frame of {len} bytes is over the limit of {limit}")));
    }
    Ok((header[0], len))
}

/// The frame of a checked kind ([`check_header`]) with its payload.
pub(crate) fn frame_of(kind: u8, payload: Bytes) -> Frame {
    match kind {
        HEAD => Frame::Head(payload),
        DATA => Frame::Data(payload),
        END => Frame::End,
        ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
        RECEIPT => Frame::Receipt(payload),
        TOKENS => Frame::Tokens(payload),
        other => unreachable!("frame kind {other} passed check_header"),
    }
}

/// Writes a JSON frame (a [`HostReport`]).
pub async fn write_json<W: tokio::io::AsyncWrite + Unpin>(out: &mut W, value: &impl Serialize) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    encode_json(&mut buf, value)?;
    out.write_all(&buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameReader;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        let open = Open::Request(RequestHead {
            method: "GET".into(),
            uri: "/x".into(),
            headers: vec![],
            request_id: "r1".into(),
            seed: 7,
            tokens: true,
            claims: GenerationIds { nn: vec![vec![1, -2, 3], vec![]], llm: vec![vec![i32::MAX]] },
            score_claims: true,
        });
        write_head(&mut buf, &open).await.unwrap();
        write_frame(&mut buf, &Frame::Data(Bytes::from_static(b"body"))).await.unwrap();
        write_frame(&mut buf, &Frame::Receipt(Bytes::from_static(b"{}"))).await.unwrap();
        write_frame(&mut buf, &Frame::End).await.unwrap();
        let mut input = FrameReader::new(&buf[..]);
        let Open::Request(head) = input.head().await.unwrap() else { panic!("a request head") };
        assert_eq!((head.uri.as_str(), head.request_id.as_str()), ("/x", "r1"));
        assert!(head.tokens);
        assert_eq!(head.claims.nn, vec![vec![1, -2, 3], vec![]]);
        assert!(head.score_claims);
        assert_eq!(input.frame().await.unwrap(), Some(Frame::Data(Bytes::from_static(b"body"))));
        assert_eq!(input.frame().await.unwrap(), Some(Frame::Receipt(Bytes::from_static(b"{}"))));
        assert_eq!(input.frame().await.unwrap(), Some(Frame::End));
        assert_eq!(input.frame().await.unwrap(), None);
        let mut buf = Vec::new();
        write_head(&mut buf, &Open::Preload { model: "smollm2:sql".parse().unwrap(), pin: true }).await.unwrap();
        let Open::Preload { model, pin } = FrameReader::new(&buf[..]).head().await.unwrap() else {
            panic!("a pre-load")
        };
        assert!(pin);
        assert_eq!((model.model(), model.adapter()), ("smollm2", Some("sql")));
        let huge = [DATA, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(FrameReader::new(&huge[..]).frame().await, Err(TunnelError::Protocol(_))));
        // Frames encoded together read back one by one.
        let mut buf = Vec::new();
        let headers = vec![("content-type".to_string(), "text/plain".to_string())];
        encode_head(&mut buf, &ResponseHead { status: 200, headers: headers.clone() }).unwrap();
        encode_frame(&mut buf, &Frame::Data(Bytes::from_static(b"hi")));
        encode_frame(&mut buf, &Frame::End);
        let mut input = FrameReader::new(&buf[..]);
        let head: ResponseHead = input.head().await.unwrap();
        assert_eq!((head.status, head.headers), (200, headers));
        assert_eq!(input.frame().await.unwrap(), Some(Frame::Data(Bytes::from_static(b"hi"))));
        assert_eq!(input.frame().await.unwrap(), Some(Frame::End));
        assert_eq!(input.frame().await.unwrap(), None);
        // Regression (fuzz target `tunnel_frames`): an end with a payload is refused,
        // not read and dropped.
        let loaded_end = [END, 0, 0, 0, 2, 0, 0];
        assert!(matches!(FrameReader::new(&loaded_end[..]).frame().await, Err(TunnelError::Protocol(_))));
    }

    #[tokio::test]
    async fn heads_are_binary_and_foreign_ones_are_refused_with_the_reason() {
        let head = RequestHead {
            method: "POST".into(),
            uri: "/fn/demo/chat".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            request_id: String::new(),
            seed: 0,
            tokens: false,
            claims: GenerationIds::default(),
            score_claims: false,
        };
        let open = Open::Request(head.clone());
        let mut buf = Vec::new();
        encode_head(&mut buf, &open).unwrap();
        // Less than half its JSON: lengths and integers as varints, no field names.
        let json = serde_json::to_vec(&open).unwrap();
        assert!(2 * (buf.len() - 5) < json.len(), "{} bytes against {} of JSON", buf.len() - 5, json.len());
        // A version-1 peer's JSON head, trailing bytes and a cut head are each refused
        // with what went wrong, never misread.
        let v1 = br#"{"kind":"request","method":"GET","uri":"/x","headers":[]}"#;
        let err = decode_head::<Open>(v1).unwrap_err().to_string();
        assert!(err.contains("bad head") && err.contains("wasmesh/2"), "{err}");
        let payload = &buf[5..];
        let mut long = payload.to_vec();
        long.push(0);
        assert!(decode_head::<Open>(&long).unwrap_err().to_string().contains("after its end"));
        for cut in 0..payload.len() {
            assert!(decode_head::<Open>(&payload[..cut]).is_err(), "a head cut at {cut} was read");
        }
        // The fuzz target's seeds are heads of this version (after the byte that says how
        // the target cuts them into pieces).
        let seed = include_bytes!("../../../fuzz/corpus/tunnel_frames/request");
        let Open::Request(head) = FrameReader::new(&seed[1..]).head().await.unwrap() else { panic!("a request seed") };
        assert_eq!((head.seed, head.tokens, head.claims.nn), (7, true, vec![vec![5, -1]]));
        let seed = include_bytes!("../../../fuzz/corpus/tunnel_frames/preload");
        assert!(matches!(FrameReader::new(&seed[1..]).head().await.unwrap(), Open::Preload { pin: true, .. }));
        let seed = include_bytes!("../../../fuzz/corpus/tunnel_frames/response");
        assert_eq!(FrameReader::new(&seed[1..]).head::<ResponseHead>().await.unwrap().status, 200);
        // A head that cannot be written leaves what was encoded before it as it was.
        let mut out = vec![1, 2, 3];
        let too_many = GenerationIds { nn: vec![vec![0; GenerationIds::MAX_ENCODED / 4]], llm: vec![] };
        let replay = RequestHead { claims: too_many, ..head };
        assert!(encode_head(&mut out, &Open::Request(replay)).is_err());
        assert_eq!(out, [1, 2, 3]);
        // An error frame in a head's place is the peer's refusal.
        let mut refused = Vec::new();
        write_frame(&mut refused, &Frame::Error("bad head: no".into())).await.unwrap();
        let err = FrameReader::new(&refused[..]).head::<ResponseHead>().await.unwrap_err();
        assert_eq!(err.to_string(), "protocol error: bad head: no");
    }

    #[test]
    fn token_ids_round_trip_and_malformed_ones_are_refused() {
        let ids = GenerationIds { nn: vec![vec![5, -1, i32::MIN], vec![]], llm: vec![vec![7; 1000]] };
        let bytes = ids.encode().unwrap();
        assert_eq!(GenerationIds::decode(&bytes).unwrap(), ids);
        assert_eq!(
            GenerationIds::decode(&GenerationIds::default().encode().unwrap()).unwrap(),
            GenerationIds::default()
        );
        for cut in 0..bytes.len() {
            assert!(GenerationIds::decode(&bytes[..cut]).is_err(), "a payload cut at {cut} was read");
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(GenerationIds::decode(&trailing).is_err());
        // A count far beyond what follows is refused before anything is allocated for it.
        assert!(GenerationIds::decode(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(GenerationIds { nn: vec![vec![0; MAX_TOKENS_FRAME / 4]], llm: vec![] }.encode().is_none());
    }
}
