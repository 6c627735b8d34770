//! The upgrade handshake: a good request (whole and cut at every byte), every refusal with
//! its status and response, size limits, pipelined frames, header-name and token case,
//! query decoding, and a full handshake against tungstenite's client.

mod common;

use common::Mem;
use netstack::http::{
    accept_key, parse_query, parse_upgrade, response, switching_protocols, HandshakeError,
    UpgradeRequest,
};

const MAX: usize = 8192;
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request(lines: &[&str]) -> Vec<u8> {
    let mut s = String::new();
    for line in lines {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn good_lines() -> Vec<String> {
    vec![
        "GET /v1/viewer?stream=s1&region=eu HTTP/1.1".into(),
        "Host: edge.example:8080".into(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".into(),
        "User-Agent: test/1.0".into(),
        "Origin: https://player.example".into(),
    ]
}

fn good() -> Vec<u8> {
    let lines = good_lines();
    request(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The good request with line `index` replaced (or removed when `line` is None).
fn with_line(index: usize, line: Option<&str>) -> Vec<u8> {
    let mut lines = good_lines();
    match line {
        Some(l) => lines[index] = l.to_string(),
        None => {
            lines.remove(index);
        }
    }
    request(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

fn refused(buf: &[u8]) -> HandshakeError {
    match parse_upgrade(buf, MAX) {
        Err(e) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Parses an HTTP response with httparse: status, headers (lower-cased names), body.
fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    let n = match res.parse(bytes).expect("well-formed response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("incomplete response"),
    };
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    let body = bytes[n..].to_vec();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .expect("Content-Length")
        .1
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (res.code.unwrap(), headers, body)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn good_request_is_parsed() {
    let buf = good();
    let req = parse_upgrade(&buf, MAX).unwrap().unwrap();
    assert_eq!(
        req,
        UpgradeRequest {
            path: "/v1/viewer".into(),
            query: "stream=s1&region=eu".into(),
            key: KEY.into(),
            host: "edge.example:8080".into(),
            user_agent: Some("test/1.0".into()),
            accept_language: None,
            origin: Some("https://player.example".into()),
            authorization: None,
            forwarded_for: None,
            protocols: None,
            header_len: buf.len(),
        }
    );
}

#[test]
fn every_prefix_needs_more_bytes() {
    let buf = good();
    for end in 0..buf.len() {
        assert_eq!(parse_upgrade(&buf[..end], MAX), Ok(None), "prefix {end}");
    }
    assert!(parse_upgrade(&buf, MAX).unwrap().is_some());
}

#[test]
fn optional_headers_and_list_headers() {
    let buf = request(&[
        "GET /v1/viewer HTTP/1.1",
        "host: h",
        "upgrade: websocket",
        "connection: upgrade",
        &format!("sec-websocket-key: {KEY}"),
        "sec-websocket-version: 13",
        "Accept-Language: fr-CH, fr;q=0.9",
        "accept-language: en;q=0.8",
        "Authorization: Bearer abc",
        "X-Forwarded-For: 203.0.113.7",
        "x-forwarded-for: 198.51.100.2, 10.0.0.1",
        "X-Unrelated: ignored",
    ]);
    let req = parse_upgrade(&buf, MAX).unwrap().unwrap();
    assert_eq!(req.path, "/v1/viewer");
    assert_eq!(req.query, "");
    assert_eq!(req.user_agent, None);
    assert_eq!(req.origin, None);
    assert_eq!(
        req.accept_language.as_deref(),
        Some("fr-CH, fr;q=0.9, en;q=0.8")
    );
    assert_eq!(req.authorization.as_deref(), Some("Bearer abc"));
    assert_eq!(
        req.forwarded_for.as_deref(),
        Some("203.0.113.7, 198.51.100.2, 10.0.0.1")
    );
}

#[test]
fn header_names_and_tokens_ignore_case() {
    let buf = request(&[
        "GET /x HTTP/1.1",
        "HOST: h",
        "UPGRADE: WebSocket",
        "CONNECTION: keep-alive, UPGRADE",
        &format!("SEC-WEBSOCKET-KEY: {KEY}"),
        "SEC-WEBSOCKET-VERSION: 13",
        "USER-AGENT: UA",
    ]);
    let req = parse_upgrade(&buf, MAX).unwrap().unwrap();
    assert_eq!((req.host.as_str(), req.key.as_str()), ("h", KEY));
    assert_eq!(req.user_agent.as_deref(), Some("UA"));
    // Tokens may be spread over repeated lines and padded with whitespace.
    let buf = request(&[
        "GET /x HTTP/1.1",
        "Host: h",
        "Upgrade: h2c",
        "Upgrade:   websocket  ",
        "Connection: keep-alive",
        "Connection:  Upgrade ",
        &format!("Sec-WebSocket-Key:   {KEY}  "),
        "Sec-WebSocket-Version: 13",
    ]);
    assert_eq!(parse_upgrade(&buf, MAX).unwrap().unwrap().key, KEY);
}

#[test]
fn pipelined_frames_after_the_headers_are_left_alone() {
    let mut buf = good();
    let head = buf.len();
    let mut frame = Vec::new();
    netstack::ws::encode_client_frame(
        netstack::ws::OpCode::Text,
        true,
        b"early",
        [1, 2, 3, 4],
        &mut frame,
    );
    buf.extend_from_slice(&frame);
    let req = parse_upgrade(&buf, MAX).unwrap().unwrap();
    assert_eq!(req.header_len, head);
    assert_eq!(&buf[req.header_len..], &frame[..]);
}

#[test]
fn bad_requests_are_400() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("HTTP/1.0", with_line(0, Some("GET /v1/viewer HTTP/1.0"))),
        ("missing Host", with_line(1, None)),
        ("empty Host", with_line(1, Some("Host:"))),
        ("duplicate Host", with_line(7, Some("Host: other.example"))),
        ("missing key", with_line(4, None)),
        (
            "key not base64",
            with_line(4, Some("Sec-WebSocket-Key: not base64 at all!!")),
        ),
        (
            "key of 15 bytes",
            with_line(4, Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA")),
        ),
        (
            "key of 17 bytes",
            with_line(4, Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=")),
        ),
        (
            "duplicate key",
            with_line(7, Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==")),
        ),
        ("asterisk target", with_line(0, Some("GET * HTTP/1.1"))),
        (
            "absolute target",
            with_line(0, Some("GET http://h/v1/viewer HTTP/1.1")),
        ),
        ("bad header name", with_line(6, Some("Bad Header: x"))),
        ("bad version", with_line(0, Some("GET / HTTP/2.0"))),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        ),
    ];
    for (name, buf) in cases {
        let err = refused(&buf);
        assert!(
            matches!(err, HandshakeError::BadRequest(_)),
            "{name}: {err:?}"
        );
        assert_eq!(err.status(), 400, "{name}");
        let (status, headers, body) = parse_response(&err.response());
        assert_eq!(status, 400);
        assert_eq!(header(&headers, "connection"), Some("close"));
        assert_eq!(
            header(&headers, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(String::from_utf8(body)
            .unwrap()
            .starts_with("bad request: "));
    }
}

#[test]
fn non_get_is_405_with_allow() {
    for method in ["POST", "PUT", "HEAD", "get"] {
        let err = refused(&with_line(
            0,
            Some(&format!("{method} /v1/viewer HTTP/1.1")),
        ));
        assert_eq!(err, HandshakeError::MethodNotAllowed, "{method}");
        let (status, headers, _) = parse_response(&err.response());
        assert_eq!(status, 405);
        assert_eq!(header(&headers, "allow"), Some("GET"));
        assert_eq!(header(&headers, "connection"), Some("close"));
    }
}

#[test]
fn missing_upgrade_or_wrong_version_is_426() {
    let cases = [
        ("no Upgrade", with_line(2, None)),
        ("Upgrade: h2c", with_line(2, Some("Upgrade: h2c"))),
        (
            "Upgrade: websockets",
            with_line(2, Some("Upgrade: websockets")),
        ),
        ("no Connection", with_line(3, None)),
        (
            "Connection: keep-alive",
            with_line(3, Some("Connection: keep-alive")),
        ),
        (
            "Connection: upgraded",
            with_line(3, Some("Connection: upgraded")),
        ),
        ("no version", with_line(5, None)),
        ("version 8", with_line(5, Some("Sec-WebSocket-Version: 8"))),
        (
            "version list",
            with_line(5, Some("Sec-WebSocket-Version: 13, 8")),
        ),
    ];
    for (name, buf) in cases {
        let err = refused(&buf);
        assert!(
            matches!(err, HandshakeError::UpgradeRequired(_)),
            "{name}: {err:?}"
        );
        let (status, headers, body) = parse_response(&err.response());
        assert_eq!(status, 426, "{name}");
        assert_eq!(header(&headers, "upgrade"), Some("websocket"));
        assert_eq!(header(&headers, "sec-websocket-version"), Some("13"));
        assert!(header(&headers, "connection").unwrap().contains("close"));
        assert!(!body.is_empty());
    }
    // A plain browser visit (no Upgrade at all) gets 426, not 400.
    let browser = request(&["GET /v1/viewer HTTP/1.1", "Host: h", "Accept: text/html"]);
    assert_eq!(refused(&browser).status(), 426);
}

#[test]
fn oversized_headers_are_431() {
    // Incomplete and longer than the limit.
    let mut long = b"GET /v1/viewer HTTP/1.1\r\nX-Pad: ".to_vec();
    long.extend_from_slice(&[b'a'; 200]);
    assert_eq!(
        parse_upgrade(&long, 100),
        Err(HandshakeError::HeadersTooLarge)
    );
    // Incomplete and exactly at the limit: more bytes cannot help.
    assert_eq!(
        parse_upgrade(&long[..100], 100),
        Err(HandshakeError::HeadersTooLarge)
    );
    assert_eq!(parse_upgrade(&long[..99], 100), Ok(None));
    // Complete, but the header block is longer than the limit.
    let buf = good();
    assert_eq!(
        parse_upgrade(&buf, buf.len() - 1),
        Err(HandshakeError::HeadersTooLarge)
    );
    assert!(parse_upgrade(&buf, buf.len()).unwrap().is_some());
    // Too many header lines.
    let mut lines = good_lines();
    for i in 0..60 {
        lines.push(format!("X-Filler-{i}: y"));
    }
    let buf = request(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let err = parse_upgrade(&buf, 1 << 20).unwrap_err();
    assert_eq!(err, HandshakeError::HeadersTooLarge);
    let (status, headers, _) = parse_response(&err.response());
    assert_eq!(status, 431);
    assert_eq!(header(&headers, "connection"), Some("close"));
    // 64 lines exactly are fine.
    let mut lines = good_lines();
    for i in 0..64 - lines.len() {
        lines.push(format!("X-Filler-{i}: y"));
    }
    let buf = request(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(parse_upgrade(&buf, 1 << 20).unwrap().is_some());
}

#[test]
fn not_found_response() {
    let err = HandshakeError::NotFound;
    assert_eq!(err.status(), 404);
    let (status, headers, body) = parse_response(&err.response());
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "connection"), Some("close"));
    assert_eq!(body, b"not found\n");
}

#[test]
fn accept_key_matches_rfc_example() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // And tungstenite's independent derivation.
    let key = "x3JJHMbDL1EzLkh9GBhXDw==";
    assert_eq!(
        accept_key(key),
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
}

#[test]
fn switching_protocols_response() {
    let bytes = switching_protocols(KEY);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut res = httparse::Response::new(&mut headers);
    assert_eq!(
        res.parse(&bytes).unwrap(),
        httparse::Status::Complete(bytes.len())
    );
    assert_eq!(res.code, Some(101));
    let get = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| std::str::from_utf8(h.value).unwrap())
    };
    assert_eq!(get("upgrade"), Some("websocket"));
    assert_eq!(get("connection"), Some("Upgrade"));
    assert_eq!(
        get("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(get("sec-websocket-extensions"), None);
    assert_eq!(get("sec-websocket-protocol"), None);
}

#[test]
fn generic_response() {
    let bytes = response(
        202,
        "Accepted",
        &[("X-Request-Id", "7")],
        "application/json",
        b"{\"members\":3}",
    );
    assert_eq!(
        bytes,
        b"HTTP/1.1 202 Accepted\r\nX-Request-Id: 7\r\nContent-Type: application/json\r\n\
          Content-Length: 13\r\n\r\n{\"members\":3}"
    );
    let empty = response(204, "No Content", &[], "", b"");
    assert_eq!(
        empty,
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn query_parsing_edge_cases() {
    let q = |s: &str| parse_query(s);
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(q(""), pairs(&[]));
    assert_eq!(q("&&"), pairs(&[]));
    assert_eq!(
        q("stream=s1&region=eu"),
        pairs(&[("stream", "s1"), ("region", "eu")])
    );
    assert_eq!(q("a"), pairs(&[("a", "")]));
    assert_eq!(q("a="), pairs(&[("a", "")]));
    assert_eq!(q("=b"), pairs(&[("", "b")]));
    assert_eq!(q("a=1=2"), pairs(&[("a", "1=2")]));
    assert_eq!(q("a=1&&b=2&"), pairs(&[("a", "1"), ("b", "2")]));
    assert_eq!(q("a=1&a=2"), pairs(&[("a", "1"), ("a", "2")]));
    assert_eq!(q("hw=Pixel+8+Pro"), pairs(&[("hw", "Pixel 8 Pro")]));
    assert_eq!(q("x=a%2Bb%26c%3Dd"), pairs(&[("x", "a+b&c=d")]));
    assert_eq!(q("%41%62=%7e"), pairs(&[("Ab", "~")]));
    assert_eq!(q("name=%C3%A9t%C3%A9"), pairs(&[("name", "été")]));
    assert_eq!(q("x=é&ü=1"), pairs(&[("x", "é"), ("ü", "1")]));
    // Invalid escapes stay literal.
    assert_eq!(q("x=%"), pairs(&[("x", "%")]));
    assert_eq!(q("x=%4"), pairs(&[("x", "%4")]));
    assert_eq!(q("x=%zz"), pairs(&[("x", "%zz")]));
    assert_eq!(q("x=%%41"), pairs(&[("x", "%A")]));
    assert_eq!(q("x=100%"), pairs(&[("x", "100%")]));
    // Escapes that decode to invalid UTF-8 become U+FFFD.
    assert_eq!(q("x=%FF"), pairs(&[("x", "\u{FFFD}")]));
    assert_eq!(q("x=%E2%82"), pairs(&[("x", "\u{FFFD}")]));
}

/// tungstenite's client writes a handshake request; we parse it and answer; tungstenite
/// checks our `Sec-WebSocket-Accept` and then exchanges frames with our codec.
#[test]
fn full_handshake_with_tungstenite_client() {
    use std::ops::ControlFlow;
    use tungstenite::handshake::HandshakeError as THandshakeError;

    let result = tungstenite::client(
        "ws://edge.example:9000/v1/viewer?stream=a%20b",
        Mem::default(),
    );
    let mut mid = match result {
        Err(THandshakeError::Interrupted(mid)) => mid,
        Err(e) => panic!("handshake failed early: {e}"),
        Ok(_) => panic!("handshake cannot finish without a response"),
    };
    let request = mid.get_mut().get_mut().output.split_off(0);
    let req = parse_upgrade(&request, MAX).unwrap().unwrap();
    assert_eq!(req.header_len, request.len());
    assert_eq!(req.path, "/v1/viewer");
    assert_eq!(
        parse_query(&req.query),
        vec![("stream".into(), "a b".into())]
    );
    assert_eq!(req.host, "edge.example:9000");

    let mut answer = switching_protocols(&req.key);
    netstack::ws::encode_frame(
        netstack::ws::OpCode::Text,
        b"{\"type\":\"welcome\"}",
        &mut answer,
    );
    mid.get_mut().get_mut().input = std::io::Cursor::new(answer);
    let (mut ws, _response) = match mid.handshake() {
        Ok(done) => done,
        Err(e) => panic!("tungstenite refused our 101: {e}"),
    };
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::Text("{\"type\":\"welcome\"}".into())
    );
    ws.send(tungstenite::Message::Text("{\"type\":\"hello\"}".into()))
        .unwrap();
    let mut sent = ws.get_mut().output.split_off(0);
    let mut dec = netstack::ws::Decoder::new(Default::default());
    let mut got = Vec::new();
    dec.feed(&mut sent, &mut |e| {
        got.push(common::Ev::from(e));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got, vec![common::Ev::Text("{\"type\":\"hello\"}".into())]);
}
