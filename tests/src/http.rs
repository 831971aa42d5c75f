//! A minimal HTTP/1.1 client, so tests see exactly what goes over the wire.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response as read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (any case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or a panic that shows it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Body framing for [`request`].
pub enum Payload<'a> {
    /// With `Content-Length`.
    Sized(&'a [u8]),
    /// `Transfer-Encoding: chunked`, in one chunk (no length announced up front).
    Chunked(&'a [u8]),
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Payload<'_>>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    // A guard against a hung server, not a timing check: generous, since CI runs two
    // tests at once on 2 cores.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &body {
        Some(Payload::Sized(b)) => head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
        Some(Payload::Chunked(_)) => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        None => head.push_str("\r\n"),
    }
    stream.write_all(head.as_bytes())?;
    match body {
        Some(Payload::Sized(b)) => {
            // The server may answer (413) and close before reading it all.
            let _ = stream.write_all(b);
        }
        Some(Payload::Chunked(b)) => {
            let _ = stream.write_all(format!("{:x}\r\n", b.len()).as_bytes());
            let _ = stream.write_all(b);
            let _ = stream.write_all(b"\r\n0\r\n\r\n");
        }
        None => {}
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpResponse { status, headers, body })
}

/// POSTs JSON and returns the response.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("json");
    request(addr, "POST", path, &[("Content-Type", "application/json")], Some(Payload::Sized(&bytes)))
        .unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
}

/// `method path` at `addr` with `Authorization: Bearer KEY` and a JSON `body`; panics
/// (naming the request) when it cannot be sent.
pub fn call_with_key(
    addr: std::net::SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> HttpResponse {
    let auth = format!("Bearer {key}");
    request(
        addr,
        method,
        path,
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.map(Payload::Sized),
    )
    .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"))
}
