//! The caller's response: the host's head, then its body frames as they arrive.
//!
//! A failure mid-body ends an event stream with an `error` event and aborts any other
//! body (the caller sees a truncated response, never a hang). The host's receipt,
//! just before the end, settles the request's hold: it is queued before the caller
//! sees the end of the body. For the OpenAI API, the receipt's cost is written into
//! the answer's `usage` (`cost` in credits, `cost_micros` exactly): a JSON answer is
//! held until its end (it is complete by then anyway), an event stream from its first
//! `usage` event on (the last events, with `stream_options.include_usage`).

use crate::lanes::InFlight;
use crate::link::Exchange;
use crate::meter::Hold;
use crate::{Body, error};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use std::collections::VecDeque;
use wasmesh_tunnel::{Frame, ResponseHead};

/// The most of an OpenAI JSON answer held to add its cost; a larger one passes as is.
const MAX_HELD: usize = 1 << 20;

/// How an OpenAI answer gets its cost.
enum Costing {
    /// Not an OpenAI answer, or not metered.
    None,
    /// A JSON answer: held whole.
    Json(Vec<u8>),
    /// An event stream: held from the first event that carries `usage`.
    Sse(Vec<u8>),
}

struct Relay {
    /// The host's stream; handed back for the next request once the answer has ended.
    exchange: Option<Exchange>,
    _guard: InFlight,
    hold: Option<Hold>,
    receipt: Option<Bytes>,
    /// The token ids of the request's generations (kept for an audit's replay).
    tokens: Option<Bytes>,
    costing: Costing,
    out: VecDeque<Bytes>,
    ended: bool,
    /// Body bytes still to come when the caller's answer has a length: the caller's
    /// connection stops reading the body once it has that many, so the last bytes wait
    /// here until the host's end (its receipt, and the stream's release) is read too.
    remaining: Option<u64>,
}

/// `usage` with the cost added.
fn with_cost(value: &mut serde_json::Value, micros: u64) {
    if let Some(usage) = value.get_mut("usage").and_then(|u| u.as_object_mut()) {
        let credits = wasmesh_api::wire::format_micros(micros as i64);
        usage.insert("cost".into(), serde_json::from_str(&credits).unwrap_or(serde_json::Value::Null));
        usage.insert("cost_micros".into(), micros.into());
    }
}

fn costed_json(body: &[u8], micros: u64) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) => {
            with_cost(&mut value, micros);
            Bytes::from(serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec()))
        }
        Err(_) => Bytes::copy_from_slice(body),
    }
}

fn costed_events(held: &[u8], micros: u64) -> Bytes {
    let text = String::from_utf8_lossy(held);
    let mut out = String::with_capacity(text.len() + 64);
    for event in text.split_inclusive("\n\n") {
        let rewritten = event.strip_prefix("data: ").and_then(|rest| {
            let (json, tail) = rest.split_once('\n')?;
            let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
            value.get("usage")?.as_object()?;
            with_cost(&mut value, micros);
            Some(format!("data: {value}\n{tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(event));
    }
    Bytes::from(out)
}

impl Relay {
    /// The next piece for the caller: `Some(Ok)` bytes, `Some(Err)` an abort, `None` the end.
    async fn next(&mut self, sse: bool) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if (self.ended || self.remaining != Some(0))
                && let Some(bytes) = self.out.pop_front()
            {
                return Some(Ok(bytes));
            }
            if self.ended {
                return None;
            }
            let failed = |this: &mut Self, message: String| {
                this.ended = true;
                if sse {
                    let event = format!("event: error\ndata: {}\n\n", serde_json::json!({ "error": message }));
                    Some(Ok(Bytes::from(event)))
                } else {
                    Some(Err(std::io::Error::other(message)))
                }
            };
            let Some(exchange) = self.exchange.as_mut() else {
                return failed(self, "the host's stream is gone".into());
            };
            match exchange.recv.frame().await {
                Ok(Some(Frame::Receipt(bytes))) if self.receipt.is_none() => self.receipt = Some(bytes),
                Ok(Some(Frame::Tokens(bytes))) if self.receipt.is_none() && self.tokens.is_none() => {
                    self.tokens = Some(bytes)
                }
                Ok(Some(Frame::Data(bytes))) if self.receipt.is_none() => match &mut self.costing {
                    Costing::None => match &mut self.remaining {
                        Some(left) => {
                            *left = left.saturating_sub(bytes.len() as u64);
                            self.out.push_back(bytes);
                        }
                        None => return Some(Ok(bytes)),
                    },
                    Costing::Json(held) => {
                        held.extend_from_slice(&bytes);
                        if held.len() > MAX_HELD {
                            self.out.push_back(Bytes::from(std::mem::take(held)));
                            self.costing = Costing::None;
                        }
                    }
                    Costing::Sse(held) => {
                        if held.is_empty() && !bytes.windows(7).any(|w| w == b"\"usage\"") {
                            return Some(Ok(bytes));
                        }
                        held.extend_from_slice(&bytes);
                    }
                },
                Ok(Some(Frame::End)) => {
                    self.ended = true;
                    if let Some(exchange) = self.exchange.take() {
                        exchange.release();
                    }
                    let tokens = self.tokens.take();
                    let cost = self.hold.take().map(|hold| hold.finish(self.receipt.as_deref(), tokens));
                    match (std::mem::replace(&mut self.costing, Costing::None), cost) {
                        (Costing::Json(held), Some(cost)) => self.out.push_back(costed_json(&held, cost)),
                        (Costing::Sse(held), Some(cost)) if !held.is_empty() => {
                            self.out.push_back(costed_events(&held, cost))
                        }
                        (Costing::Json(held) | Costing::Sse(held), _) if !held.is_empty() => {
                            self.out.push_back(Bytes::from(held))
                        }
                        _ => {}
                    }
                }
                Ok(Some(Frame::Data(_) | Frame::Receipt(_) | Frame::Tokens(_))) => {
                    return failed(self, "protocol error: token ids or a receipt out of place".into());
                }
                Ok(Some(Frame::Error(message))) => {
                    return failed(self, format!("the host failed mid-response: {message}"));
                }
                Ok(None) => return failed(self, "the host's stream ended without finishing the response".into()),
                Ok(Some(Frame::Head(_))) => return failed(self, "protocol error: a second head".into()),
                Err(e) => return failed(self, format!("the host was lost mid-response: {e}")),
            }
        }
    }
}

/// The caller's response for the host's `head` and the rest of its stream.
pub(crate) fn respond(
    head: ResponseHead,
    exchange: Exchange,
    guard: InFlight,
    hold: Option<Hold>,
    openai: bool,
) -> Response<Body> {
    let content_type = |prefix: &str| {
        head.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with(prefix))
    };
    let sse = content_type("text/event-stream");
    let costing = match (&hold, openai) {
        (Some(_), true) if sse => Costing::Sse(Vec::new()),
        (Some(_), true) if content_type("application/json") => Costing::Json(Vec::new()),
        _ => Costing::None,
    };
    let mut builder = Response::builder().status(head.status);
    // A body that passes as it came keeps its length (no chunked framing); one whose
    // usage gets its cost written in changes length. An empty one is sent chunked, so
    // that its body is still read to the host's end (see `Relay::remaining`).
    let length = match costing {
        Costing::None => head
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .filter(|n| *n > 0),
        _ => None,
    };
    for (name, value) in &head.headers {
        if (length.is_none() && name.eq_ignore_ascii_case("content-length"))
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        builder = builder.header(name, value);
    }
    if let Some(hold) = &hold {
        // The id `GET /v1/generation?id=...` (and `wasmesh usage --request`) looks up.
        builder = builder.header(wasmesh_api::REQUEST_ID_HEADER, hold.request_id.as_str());
    }
    let relay = Relay {
        exchange: Some(exchange),
        _guard: guard,
        hold,
        receipt: None,
        tokens: None,
        costing,
        out: VecDeque::new(),
        ended: false,
        remaining: length,
    };
    let stream = futures::stream::unfold(relay, move |mut relay| async move {
        let next = relay.next(sse).await?;
        Some((next.map(hyper::body::Frame::data), relay))
    });
    builder
        .body(http_body_util::StreamBody::new(stream).boxed())
        .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, format!("the host sent an invalid response head: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn costs_go_into_usage() {
        let json = super::costed_json(br#"{"id":"x","usage":{"prompt_tokens":3}}"#, 1_500);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!((v["usage"]["cost_micros"].as_u64(), v["usage"]["cost"].as_f64()), (Some(1_500), Some(0.0015)));
        let events =
            super::costed_events(b"data: {\"choices\":[],\"usage\":{\"total_tokens\":4}}\n\ndata: [DONE]\n\n", 7);
        let text = String::from_utf8(events.to_vec()).unwrap();
        assert!(text.contains("\"cost_micros\":7") && text.ends_with("data: [DONE]\n\n"), "{text}");
    }
}
