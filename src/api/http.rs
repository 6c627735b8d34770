//! A small HTTP/1.1 server for the operator API: keep-alive, `Content-Length` bodies, bounded
//! heads and bodies, timeouts. Requests are parsed with `httparse`; handlers are synchronous
//! functions of a [`Request`] that return a [`Response`].

use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use serde_json::Value;

/// Largest request head.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time to send one request once its first byte arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an idle keep-alive connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

/// One response: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body,
            allow: None,
        }
    }

    /// `{"error":{"code":...,"message":...}}` with `status`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(
            status,
            serde_json::json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
        body.push(b'\n');
        let mut headers = vec![(
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        )];
        if self.status == 401 {
            headers.push(("WWW-Authenticate", "Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.push(("Allow", allow));
        }
        netstack::http::response(
            self.status,
            netstack::http::reason_phrase(self.status),
            &headers,
            "application/json",
            &body,
        )
    }
}

/// What parsing a buffered request head found.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    /// A complete head: the request (without body yet), head length and body length.
    Head(Request, usize, usize, bool),
    /// A request we answer with an error and then close.
    Bad(Response),
}

/// Parses a request head from `buf`. Pure, so it is tested without sockets.
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Parsed::Bad(Response::error(
                431,
                "headers_too_large",
                "request head too large",
            ))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Bad(Response::error(
                431,
                "headers_too_large",
                "too many headers",
            ))
        }
        Err(e) => return Parsed::Bad(Response::error(400, "bad_request", e.to_string())),
    };
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut content_length: Option<usize> = None;
    let mut authorization = None;
    let mut keep_alive = req.version == Some(1);
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_owned();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                // Differing lengths are a framing attack (RFC 9112 6.3): refuse them.
                Ok(n) if content_length.is_some_and(|c| c != n) => {
                    return Parsed::Bad(Response::error(
                        400,
                        "bad_request",
                        "conflicting Content-Length headers",
                    ))
                }
                Ok(n) => content_length = Some(n),
                Err(_) => {
                    return Parsed::Bad(Response::error(400, "bad_request", "bad Content-Length"))
                }
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(Response::error(
                411,
                "length_required",
                "send the body with Content-Length",
            ));
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Parsed::Bad(Response::error(
            413,
            "body_too_large",
            format!("body over {MAX_BODY} bytes"),
        ));
    }
    Parsed::Head(
        Request {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            authorization,
            body: Vec::new(),
        },
        head_len,
        content_length,
        keep_alive,
    )
}

/// How an API connection ended.
pub enum Outcome {
    Done,
    /// A `GET` on the upgrade path: the caller takes over the connection. Carries the raw
    /// request head and any bytes received after it.
    Upgrade {
        stream: TcpStream,
        head: Vec<u8>,
        rest: Vec<u8>,
    },
}

/// Serves one API connection until it closes, times out, sends a bad request, or asks for a
/// WebSocket upgrade on `upgrade_path`.
pub async fn serve_connection(
    mut stream: TcpStream,
    upgrade_path: &str,
    handler: impl Fn(&Request) -> Response,
) -> Outcome {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Wait for the next request (idle timeout), then give it a bounded time to arrive.
        let mut chunk = [0u8; 4096];
        let first = future::or(async { stream.read(&mut chunk).await.ok() }, async {
            sleep(IDLE_TIMEOUT).await;
            None
        })
        .await;
        match first {
            Some(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ if buf.is_empty() => return Outcome::Done,
            _ => {}
        }
        let complete = future::or(read_request(&mut stream, &mut buf), async {
            sleep(REQUEST_TIMEOUT).await;
            None
        })
        .await;
        let Some((outcome, keep_alive, head)) = complete else {
            return Outcome::Done;
        };
        let response = match outcome {
            Ok(req) if req.method == "GET" && req.path == upgrade_path => {
                return Outcome::Upgrade {
                    stream,
                    head,
                    rest: std::mem::take(&mut buf),
                };
            }
            Ok(req) => handler(&req),
            Err(resp) => resp,
        };
        let keep_alive = keep_alive && response.status < 500;
        if stream
            .write_all(&response.encode(keep_alive))
            .await
            .is_err()
            || !keep_alive
        {
            let _ = stream.close().await;
            return Outcome::Done;
        }
    }
}

/// Reads until `buf` holds a whole request; returns it (or the error to answer), whether the
/// connection may be kept, and the raw head. The bytes of the request are removed from `buf`.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(Result<Request, Response>, bool, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_head(buf) {
            Parsed::Bad(resp) => return Some((Err(resp), false, Vec::new())),
            Parsed::Head(mut req, head, body, keep_alive) => {
                while buf.len() < head + body {
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                req.body = buf[head..head + body].to_vec();
                let raw_head = buf[..head].to_vec();
                buf.drain(..head + body);
                return Some((Ok(req), keep_alive, raw_head));
            }
            Parsed::Partial => {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_rejects_bad_ones() {
        let raw = b"POST /api/groups?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}";
        for cut in 0..raw.len() - 2 {
            let p = parse_head(&raw[..cut]);
            assert!(matches!(p, Parsed::Partial), "cut {cut}: {p:?}");
        }
        match parse_head(raw) {
            Parsed::Head(req, head, body, keep) => {
                assert_eq!(req.method, "POST");
                assert_eq!(req.path, "/api/groups");
                assert_eq!(req.query, "x=1");
                assert_eq!(req.authorization.as_deref(), Some("Bearer t"));
                assert_eq!((head, body, keep), (raw.len() - 2, 2, true));
            }
            other => panic!("{other:?}"),
        }
        let status = |raw: &[u8]| match parse_head(raw) {
            Parsed::Bad(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(status(b"\x01\x02 / HTTP/1.1\r\n\r\n"), 400);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(big.as_bytes()), 431);
    }
}
