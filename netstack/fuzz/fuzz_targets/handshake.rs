//! Fuzzes the HTTP upgrade parser with raw bytes and with requests assembled from plausible
//! parts (so the fuzzer reaches the handshake checks, not only httparse's). Must never panic;
//! an accepted request must lie within the buffer and the size limit and re-parse the same
//! from exactly its header bytes.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::http::{accept_key, parse_query, parse_upgrade, switching_protocols};

#[derive(Arbitrary, Debug)]
enum Name {
    Host,
    Upgrade,
    Connection,
    Key,
    Version,
    UserAgent,
    AcceptLanguage,
    Origin,
    Authorization,
    ForwardedFor,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    /// A value that satisfies the check for this header.
    Good,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Request {
    Raw(Vec<u8>),
    Parts {
        get: bool,
        target: String,
        http11: bool,
        headers: Vec<(Name, Value)>,
        trailer: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_header_bytes: u16,
    request: Request,
}

fn assemble(request: Request) -> Vec<u8> {
    let (get, target, http11, headers, trailer) = match request {
        Request::Raw(bytes) => return bytes,
        Request::Parts {
            get,
            target,
            http11,
            headers,
            trailer,
        } => (get, target, http11, headers, trailer),
    };
    let mut out = Vec::new();
    out.extend_from_slice(if get { b"GET " } else { b"POST " });
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if http11 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    for (name, value) in headers {
        let (name, good): (String, &[u8]) = match name {
            Name::Host => ("Host".into(), b"example.com"),
            Name::Upgrade => ("Upgrade".into(), b"websocket"),
            Name::Connection => ("Connection".into(), b"keep-alive, Upgrade"),
            Name::Key => ("Sec-WebSocket-Key".into(), b"dGhlIHNhbXBsZSBub25jZQ=="),
            Name::Version => ("Sec-WebSocket-Version".into(), b"13"),
            Name::UserAgent => ("User-Agent".into(), b"fuzz"),
            Name::AcceptLanguage => ("Accept-Language".into(), b"en"),
            Name::Origin => ("Origin".into(), b"https://example.com"),
            Name::Authorization => ("Authorization".into(), b"Bearer t"),
            Name::ForwardedFor => ("X-Forwarded-For".into(), b"192.0.2.1"),
            Name::Other(name) => (name, b"x"),
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        match value {
            Value::Good => out.extend_from_slice(good),
            Value::Raw(raw) => out.extend_from_slice(&raw),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&trailer);
    out
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_header_bytes);
    let buf = assemble(input.request);
    match parse_upgrade(&buf, max) {
        Ok(Some(req)) => {
            assert!(req.header_len <= buf.len());
            assert!(req.header_len <= max);
            assert!(req.path.starts_with('/'));
            assert_eq!(
                parse_upgrade(&buf[..req.header_len], max),
                Ok(Some(req.clone()))
            );
            let _ = accept_key(&req.key);
            let _ = switching_protocols(&req.key);
            let _ = parse_query(&req.query);
        }
        Ok(None) => assert!(buf.len() < max),
        Err(e) => {
            let response = e.response();
            assert!(response.starts_with(format!("HTTP/1.1 {} ", e.status()).as_bytes()));
        }
    }
    let _ = parse_query(&String::from_utf8_lossy(&buf));
});
