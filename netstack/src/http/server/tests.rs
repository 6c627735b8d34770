//! Pingora-style: every request stream is parsed whole, split at every position, and a byte
//! at a time, and must give the same requests (or the same error) each way.

use super::*;

/// Feeds `chunks` one after another, answering every complete request before the next chunk
/// (as the connection loop does). Returns the requests, how many `Continue`s were asked for,
/// and the bytes left over.
fn drive(limits: Limits, chunks: &[&[u8]]) -> Result<(Vec<Request>, usize, Vec<u8>), RequestError> {
    let mut parser = RequestParser::new(limits);
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    let mut continues = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let (step, used) = parser.next(&buf)?;
            assert!(used <= buf.len());
            buf.drain(..used);
            match step {
                Step::Request(r) => requests.push(r),
                Step::Continue => continues += 1,
                Step::Partial => break,
            }
        }
    }
    Ok((requests, continues, buf))
}

/// Parses `stream` whole, at every two-way split and byte by byte; all must agree.
fn parse_all(limits: Limits, stream: &[u8]) -> Result<Vec<Request>, RequestError> {
    let whole = drive(limits, &[stream]).map(|(r, _, rest)| (r, rest));
    for cut in 0..=stream.len() {
        let split = drive(limits, &[&stream[..cut], &stream[cut..]]).map(|(r, _, rest)| (r, rest));
        assert_eq!(
            split,
            whole,
            "split at {cut} of {:?}",
            String::from_utf8_lossy(stream)
        );
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let bytewise = drive(limits, &bytes).map(|(r, _, rest)| (r, rest));
    assert_eq!(bytewise, whole, "byte at a time");
    let (requests, rest) = whole?;
    assert!(
        rest.is_empty(),
        "left over: {:?}",
        String::from_utf8_lossy(&rest)
    );
    Ok(requests)
}

fn ok(stream: &[u8]) -> Vec<Request> {
    parse_all(Limits::default(), stream).unwrap()
}

fn status(stream: &[u8]) -> u16 {
    status_with(Limits::default(), stream)
}

fn status_with(limits: Limits, stream: &[u8]) -> u16 {
    match parse_all(limits, stream) {
        Err(e) => e.status(),
        Ok(r) => panic!("accepted: {r:?}"),
    }
}

#[test]
fn get_with_query_and_headers() {
    let r = ok(b"GET /api/x?a=1&b HTTP/1.1\r\nHost: h\r\nAuthorization:  Bearer t \r\n\r\n");
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/api/x"));
    assert_eq!(r.query, "a=1&b");
    assert_eq!(r.header_str("AUTHORIZATION"), Some("Bearer t"));
    assert_eq!(r.header("x-none"), None);
    assert!(r.keep_alive && r.body.is_empty());
    assert_eq!(r.minor_version, 1);
}

#[test]
fn content_length_body() {
    let r = ok(b"POST /p HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(r[0].body, b"hello world");
    // Equal repeated values are one length (RFC 9112 6.3).
    let r = ok(b"POST /p HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(r[0].body, b"ab");
    let r = ok(b"POST /p HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nab");
    assert_eq!(r[0].body, b"ab");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let r = ok(b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n");
    assert_eq!(r[0].body, b"hello world0123456789");
    let r = ok(b"POST /p HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n");
    assert!(r[0].body.is_empty());
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let stream = b"GET /1 HTTP/1.1\r\n\r\n\
        POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
        POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n\
        GET /4 HTTP/1.1\r\nConnection: close\r\n\r\n";
    let r = ok(stream);
    let paths: Vec<&str> = r.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/1", "/2", "/3", "/4"]);
    assert_eq!(r[1].body, b"abc");
    assert_eq!(r[2].body, b"de");
    assert!(r[2].keep_alive && !r[3].keep_alive);
    // One call per request, on one buffer, without reading in between.
    let mut parser = RequestParser::default();
    let mut at = 0;
    for want in ["/1", "/2", "/3", "/4"] {
        let (step, used) = parser.next(&stream[at..]).unwrap();
        at += used;
        assert!(matches!(step, Step::Request(r) if r.path == want));
    }
    assert_eq!(at, stream.len());
    assert_eq!(parser.next(&[]).unwrap(), (Step::Partial, 0));
}

#[test]
fn keep_alive_rules() {
    let alive = |s: &[u8]| ok(s)[0].keep_alive;
    assert!(alive(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!alive(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(!alive(b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n"));
    assert!(!alive(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(alive(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n")[0].minor_version, 0);
}

#[test]
fn expect_100_continue_is_asked_once() {
    let head = b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let (r, continues, _) = drive(Limits::default(), &[head, b"ab", b"cd"]).unwrap();
    assert_eq!((r.len(), continues), (1, 1));
    assert_eq!(r[0].body, b"abcd");
    // The body already there: no interim answer needed.
    let whole = [&head[..], b"abcd"].concat();
    let (r, continues, _) = drive(Limits::default(), &[&whole]).unwrap();
    assert_eq!((r.len(), continues), (1, 0));
    // No body: nothing to continue.
    let (_, continues, _) = drive(
        Limits::default(),
        &[b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"],
    )
    .unwrap();
    assert_eq!(continues, 0);
    // HTTP/1.0 cannot ask for it.
    let (_, continues, _) = drive(
        Limits::default(),
        &[b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"],
    )
    .unwrap();
    assert_eq!(continues, 0);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx"),
        417
    );
}

#[test]
fn content_length_must_be_digits() {
    for bad in [
        "+10",
        "-1",
        "1 0",
        "0x10",
        "1.0",
        "",
        "18446744073709551616",
        "99999999999999999999999",
    ] {
        let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(status(req.as_bytes()), 400, "Content-Length: {bad:?}");
    }
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length:  1 0\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\nx"),
        400
    );
}

#[test]
fn framing_conflicts_and_codings() {
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(
        status(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        501
    );
    assert_eq!(
        status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
}

#[test]
fn duplicate_single_valued_headers() {
    for name in ["Authorization", "Host", "Transfer-Encoding"] {
        let req = format!(
            "GET / HTTP/1.1\r\n{name}: a\r\n{}: b\r\n\r\n",
            name.to_lowercase()
        );
        assert_eq!(status(req.as_bytes()), 400, "{name}");
    }
    // List-valued fields may repeat.
    let r = ok(b"GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n");
    assert_eq!(r[0].headers.len(), 2);
}

#[test]
fn bad_chunks() {
    let chunked =
        |body: &str| format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    for body in [
        "zz\r\n",
        "-1\r\n",
        ";x\r\n",
        "5 x\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "1000000000000000\r\n",
        "0\r\nno-colon\r\n\r\n",
    ] {
        assert_eq!(status(chunked(body).as_bytes()), 400, "{body:?}");
    }
    let long = chunked(&format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE)));
    assert_eq!(status(long.as_bytes()), 400);
}

#[test]
fn limits() {
    let small = Limits {
        max_head: 256,
        max_headers: 4,
        max_body: 8,
    };
    let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
    assert_eq!(status_with(small, big_head.as_bytes()), 431);
    assert_eq!(
        status_with(
            small,
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n"
        ),
        431
    );
    assert_eq!(
        status_with(small, b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n"),
        413
    );
    assert_eq!(
        status_with(
            small,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4\r\n"
        ),
        413
    );
    let trailers = format!(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
        "a".repeat(300)
    );
    assert_eq!(status_with(small, trailers.as_bytes()), 431);
    // Exactly at the limits is fine.
    let r = parse_all(
        small,
        b"POST / HTTP/1.1\r\nContent-Length: 8\r\n\r\n12345678",
    )
    .unwrap();
    assert_eq!(r[0].body, b"12345678");
    // The default limits: 64 header lines, 16 KiB head.
    let many: String = (0..65).map(|i| format!("X-{i}: 1\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        drive(Limits::default(), &[req.as_bytes()])
            .unwrap_err()
            .status(),
        431
    );
}

#[test]
fn malformed_heads() {
    assert_eq!(status(b"\x01\x02 / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), 400);
}

#[test]
fn upgrade_from_a_parsed_request() {
    let r = ok(
        b"GET /v1/broadcaster?stream=s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nAuthorization: Bearer t\r\n\r\n",
    );
    let up = r[0].upgrade().unwrap();
    assert_eq!(
        (up.path.as_str(), up.query.as_str()),
        ("/v1/broadcaster", "stream=s")
    );
    assert_eq!(up.authorization.as_deref(), Some("Bearer t"));
    assert_eq!(up.header_len, r[0].header_len);
    let r = ok(b"GET /v1/broadcaster HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r[0].upgrade().unwrap_err().status(), 426);
}

#[test]
fn an_error_names_its_status() {
    for (e, s) in [
        (RequestError::BadRequest("x"), 400),
        (RequestError::BodyTooLarge, 413),
        (RequestError::ExpectationFailed, 417),
        (RequestError::HeadersTooLarge("x"), 431),
        (RequestError::NotImplemented("x"), 501),
    ] {
        assert_eq!(e.status(), s);
        assert!(!crate::http::reason_phrase(s).is_empty());
    }
}

/// Deterministic mutations of valid streams (a fixed-seed xorshift, so every run is the
/// same): never a panic, never more consumed than given, and the same outcome whether fed
/// whole or in pieces. The fuzz target `request_parser` does this without bounds.
#[test]
fn mutated_streams_never_panic_and_ignore_splits() {
    let seeds: [&[u8]; 3] = [
        b"POST /p?q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let small = Limits {
        max_head: 64,
        max_headers: 4,
        max_body: 16,
    };
    for round in 0..3000 {
        let mut bytes = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => bytes.insert(at, b"\r\n:;0 9aF"[(next() % 9) as usize]),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        let cut = (next() % (bytes.len() as u64 + 1)) as usize;
        for limits in [Limits::default(), small] {
            let whole = drive(limits, &[&bytes]).map(|(r, _, rest)| (r, rest));
            let split =
                drive(limits, &[&bytes[..cut], &bytes[cut..]]).map(|(r, _, rest)| (r, rest));
            assert_eq!(
                split,
                whole,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
