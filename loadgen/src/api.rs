//! A minimal HTTP/1.1 client for the operator API: one request per connection
//! (`Connection: close`), JSON bodies, bearer token, a hard timeout. Enough for a publisher
//! that sends a few requests per second, without pulling hyper into the build.
//!
//! Response parsing is a pure function over the bytes read so far ([`parse_response`],
//! netstack's client parser), so it is tested on split and malformed input without sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::cli::HttpTarget;

/// Responses larger than this are refused (the API answers with small JSON objects).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A completed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    target: HttpTarget,
    token: String,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(target: HttpTarget, token: String, timeout: Duration) -> Self {
        ApiClient {
            target,
            token,
            timeout,
        }
    }

    /// Sends one request and reads the whole response, all within the client's timeout.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<ApiResponse> {
        let req = self.encode(method, path, body);
        let addr = self.target.addr;
        let exchange = async move {
            let mut tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            tcp.write_all(req.as_bytes()).await?;
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 4096];
            loop {
                let n = tcp.read(&mut chunk).await?;
                if n > 0 {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.len() > MAX_RESPONSE_BYTES {
                        anyhow::bail!("response larger than {MAX_RESPONSE_BYTES} bytes");
                    }
                }
                if let Some(resp) = parse_response(&buf, n == 0).map_err(anyhow::Error::msg)? {
                    return Ok(resp);
                }
                if n == 0 {
                    anyhow::bail!("connection closed before the response was complete");
                }
            }
        };
        match timeout(self.timeout, exchange).await {
            Ok(r) => r.map_err(|e| e.context(format!("{method} {path} on {addr}"))),
            Err(_) => anyhow::bail!(
                "{method} {path} on {addr}: no response within {:?}",
                self.timeout
            ),
        }
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<ApiResponse> {
        self.request("POST", path, Some(&body.to_string())).await
    }

    fn encode(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ovation-loadgen/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.target.authority,
            env!("CARGO_PKG_VERSION"),
        );
        if !self.token.is_empty() {
            req.push_str("Authorization: Bearer ");
            req.push_str(&self.token);
            req.push_str("\r\n");
        }
        match body {
            Some(b) => {
                req.push_str("Content-Type: application/json\r\n");
                req.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
                req.push_str(b);
            }
            None if method == "GET" => req.push_str("\r\n"),
            None => req.push_str("Content-Length: 0\r\n\r\n"),
        }
        req
    }
}

/// Parses a response from the bytes read so far. `Ok(None)`: need more bytes. `eof`: the
/// peer closed, so a body without a length ends here. The parser is netstack's (the one the
/// server's edges use to pull from each other), with this client's size limit.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<ApiResponse>, String> {
    netstack::http::client::parse_response(buf, eof, MAX_RESPONSE_BYTES)
        .map(|r| {
            r.map(|r| ApiResponse {
                status: r.status,
                body: r.body,
            })
        })
        .map_err(|e| e.to_string())
}

/// Decodes a complete chunked body; `Ok(None)` if more bytes are needed.
pub fn decode_chunked(data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    netstack::http::client::decode_chunked(data, MAX_RESPONSE_BYTES).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_response_at_every_split() {
        let full = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"group\":\"global\",\"members\":5}";
        for cut in 0..full.len() {
            assert_eq!(
                parse_response(&full[..cut], false).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let r = parse_response(full, false).unwrap().unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(r.json().unwrap()["members"], 5);
    }

    #[test]
    fn chunked_response() {
        let full = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n7;ext=1\r\n\":\"p1\"}\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse_response(&full[..cut], false).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let r = parse_response(full, false).unwrap().unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.json().unwrap()["id"], "p1");
    }

    #[test]
    fn body_until_eof_and_empty_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\n{}", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"{}");
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n{}", false).unwrap(),
            None
        );
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(r.body.is_empty() && r.is_success());
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_response(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true).is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 O", true).is_err(),
            "head cut by EOF"
        );
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false
        )
        .is_err());
        assert!(decode_chunked(b"3\r\nabcX\r\n").is_err());
    }

    #[test]
    fn request_encoding_carries_token_and_length() {
        let c = ApiClient::new(
            crate::cli::parse_http_url("http://127.0.0.1:8081").unwrap(),
            "tok".into(),
            Duration::from_secs(1),
        );
        let r = c.encode("POST", "/api/streams", Some(r#"{"id":"s"}"#));
        assert!(r.starts_with("POST /api/streams HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"));
        assert!(r.contains("Authorization: Bearer tok\r\n"));
        assert!(r.ends_with("Content-Length: 10\r\n\r\n{\"id\":\"s\"}"));
        let anon = ApiClient::new(
            crate::cli::parse_http_url("http://127.0.0.1:8081").unwrap(),
            String::new(),
            Duration::from_secs(1),
        );
        assert!(!anon
            .encode("GET", "/api/stats", None)
            .contains("Authorization"));
    }
}
