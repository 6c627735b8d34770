//! Plain HTTP/1.1 requests to the viewer port's HLS (one connection each, bounded reads).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::WAIT;

/// One answer: status, head and body.
pub struct Http {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Http {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET target` on `addr`, `Connection: close`.
pub fn get(addr: SocketAddr, target: &str) -> Http {
    request(addr, "GET", target)
}

/// `method target` on `addr`, `Connection: close`: the whole answer.
pub fn request(addr: SocketAddr, method: &str, target: &str) -> Http {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    split_response(&raw)
}

/// A whole response split into status, head and body.
pub fn split_response(raw: &[u8]) -> Http {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Http {
        status,
        head,
        body: raw[at + 4..].to_vec(),
    }
}

/// Reads exactly one response (head, then `Content-Length` bytes) from a keep-alive socket.
pub fn read_one_response(s: &mut TcpStream) -> Http {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|n| n.parse().ok())
                .expect("Content-Length");
            if raw.len() >= at + 4 + len {
                return split_response(&raw[..at + 4 + len]);
            }
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "closed mid-response");
        raw.extend_from_slice(&chunk[..n]);
    }
}

/// The path and query of an `http://host/...` URL.
pub fn target(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    rest[rest.find('/').expect("path")..].to_owned()
}

/// Replaces the value of `name` in a URL's query.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').expect("a query");
    let query: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k == name => format!("{k}={value}"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// The value of `name` in a URL's query.
pub fn param<'a>(url: &'a str, name: &str) -> &'a str {
    let (_, query) = url.split_once('?').expect("a query");
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}
