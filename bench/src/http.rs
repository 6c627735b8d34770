//! A blocking HTTP/1.1 client for the operator APIs: one request per connection
//! (`Connection: close`), a bearer token, and one deadline over connect, write and read.
//! The suite sends a handful of requests per run (stats polls, the poll probe), so std's
//! `TcpStream` is enough. [`parse_response`] is pure and tested on split input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Larger responses are refused: the APIs answer with small JSON objects.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends one request to `addr` and reads the whole response, all within `timeout`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Response> {
    let deadline = Instant::now() + timeout;
    let what = || format!("{method} {path} on {addr}");
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).with_context(what)?;
    let _ = tcp.set_nodelay(true);
    tcp.set_write_timeout(Some(timeout)).with_context(what)?;
    tcp.write_all(encode(addr, method, path, token, body).as_bytes())
        .with_context(what)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{}: no complete response within {timeout:?}", what());
        }
        tcp.set_read_timeout(Some(left)).with_context(what)?;
        let n = match tcp.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("{}: no complete response within {timeout:?}", what())
            }
            Err(e) => return Err(e).with_context(what),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE_BYTES {
            bail!(
                "{}: response larger than {MAX_RESPONSE_BYTES} bytes",
                what()
            );
        }
        let parsed = parse_response(&buf, n == 0).map_err(anyhow::Error::msg);
        if let Some(resp) = parsed.with_context(what)? {
            return Ok(resp);
        }
        if n == 0 {
            bail!(
                "{}: connection closed before the response was complete",
                what()
            );
        }
    }
}

fn encode(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<&str>) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ovation-bench\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if !token.is_empty() {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None if method == "GET" => req.push_str("\r\n"),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    req
}

/// Parses a response from the bytes read so far. `Ok(None)`: more bytes are needed. `eof`:
/// the server closed, so a body without a length ends here.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if eof => {
            return Err("connection closed inside the response head".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let status = resp.code.ok_or("response without a status code")?;
    let mut content_length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            content_length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .to_ascii_lowercase()
                .windows(7)
                .any(|w| w == b"chunked");
        }
    }
    let rest = &buf[head_len..];
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some(Response {
            status,
            body: Vec::new(),
        }));
    }
    let body = if chunked {
        match decode_chunked(rest)? {
            Some(b) => b,
            None if eof => return Err("connection closed inside a chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(len) = content_length {
        if rest.len() < len {
            if eof {
                return Err(format!("body cut short: {} of {len} bytes", rest.len()));
            }
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response { status, body }))
}

/// Decodes a complete chunked body; `Ok(None)` if more bytes are needed.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size line")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(data.windows(2).any(|w| w == b"\r\n").then_some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response_at_every_split() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"connections\":5}";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false), Ok(None), "cut {cut}");
        }
        let r = parse_response(full, false).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json().unwrap()["connections"], 5);
    }

    #[test]
    fn chunked_and_eof_delimited_bodies() {
        let full = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n7\r\n\":\"p1\"}\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_response(full, false)
                .unwrap()
                .unwrap()
                .json()
                .unwrap()["id"],
            "p1"
        );
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope", true)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
    }

    #[test]
    fn malformed_or_cut_responses_are_errors() {
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", true).is_err());
        assert!(parse_response(b"HTTP/1.1 200 O", true).is_err());
        assert!(decode_chunked(b"3\r\nabcX\r\n").is_err());
    }

    #[test]
    fn request_carries_token_length_and_close() {
        let addr: SocketAddr = "127.0.0.1:9081".parse().unwrap();
        let r = encode(addr, "POST", "/api/polls", "tok", Some("{}"));
        assert!(r.starts_with("POST /api/polls HTTP/1.1\r\nHost: 127.0.0.1:9081\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.contains("Authorization: Bearer tok\r\n"));
        assert!(r.ends_with("Content-Length: 2\r\n\r\n{}"));
        assert!(encode(addr, "GET", "/api/stats", "", None).ends_with("close\r\n\r\n"));
    }
}
