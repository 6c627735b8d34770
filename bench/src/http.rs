//! A blocking HTTP/1.1 client for the operator APIs: one request per connection
//! (`Connection: close`), a bearer token, and one deadline over connect, write and read.
//! The suite sends a handful of requests per run (stats polls, the poll probe), so std's
//! `TcpStream` is enough. Responses are parsed by the loadgen's pure parser
//! ([`parse_response`], re-exported here).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Larger responses are refused: the APIs answer with small JSON objects.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub use loadgen::api::{decode_chunked, parse_response, ApiResponse as Response};

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
