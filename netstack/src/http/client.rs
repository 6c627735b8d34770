//! HTTP/1.1, client side, sans-IO: the request line ovation's edges send each other
//! ([`get_request`]) and the parser of the answer ([`parse_response`]), a pure function of
//! the bytes read so far. The I/O (connect, timeouts) belongs to the caller; this module
//! only refuses what it must not buffer: a head over [`MAX_RESPONSE_HEAD`] or a body over
//! the caller's limit.
//!
//! A body is framed by `Content-Length`, by chunked coding, or by the end of the connection;
//! [`ClientResponse::close`] says whether the connection may carry another request.

/// Largest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Header lines parsed in a response head.
const MAX_RESPONSE_HEADERS: usize = 32;

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    /// `Content-Type`, if given.
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The server closes the connection after this answer (`Connection: close`, an
    /// HTTP/1.0 answer without keep-alive, or a body framed by the close).
    pub close: bool,
}

impl ClientResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not HTTP/1.x, or a broken header line.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The head is larger than [`MAX_RESPONSE_HEAD`].
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    /// The body is (or announces to be) larger than the caller's limit.
    #[error("response body over {0} bytes")]
    BodyTooLarge(usize),
    /// The peer closed before the response was complete.
    #[error("connection closed {0}")]
    Truncated(&'static str),
}

/// `GET path` to `host`, with a bearer `token` (none when empty); `keep_alive` false asks
/// the server to close after the answer.
pub fn get_request(host: &str, path: &str, token: &str, agent: &str, keep_alive: bool) -> Vec<u8> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nConnection: {connection}\r\n"
    );
    if !token.is_empty() {
        req.push_str("Authorization: Bearer ");
        req.push_str(token);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Parses a response from the bytes read so far. `Ok(None)`: more bytes are needed. `eof`:
/// the peer closed, so a body without a length ends here. A body over `max_body` is an
/// error as soon as its length (announced or read) shows it.
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<ClientResponse>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(ResponseError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) if eof => {
            return Err(ResponseError::Truncated("inside the response head"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ResponseError::Malformed(e.to_string())),
    };
    if head_len > MAX_RESPONSE_HEAD {
        return Err(ResponseError::HeadTooLarge);
    }
    let status = resp
        .code
        .ok_or_else(|| ResponseError::Malformed("no status".into()))?;
    let (mut length, mut chunked, mut content_type) = (None, false, None);
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 closes unless told.
    let mut close = resp.version != Some(1);
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).map(str::trim);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| ResponseError::Malformed("bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::Malformed(
                    "conflicting Content-Length".into(),
                ));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = value.ok().map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.unwrap_or_default().to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let unframed = !chunked && length.is_none();
    let done = |body: Vec<u8>| {
        Ok(Some(ClientResponse {
            status,
            content_type: content_type.clone(),
            body,
            close: close || unframed,
        }))
    };
    // 1xx, 204 and 304 carry no body.
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some(ClientResponse {
            status,
            content_type,
            body: Vec::new(),
            close,
        }));
    }
    let rest = &buf[head_len..];
    if chunked {
        return match decode_chunked(rest, max_body)? {
            Some(body) => done(body),
            None if eof => Err(ResponseError::Truncated("inside a chunked body")),
            None => Ok(None),
        };
    }
    match length {
        Some(len) if len > max_body => Err(ResponseError::BodyTooLarge(max_body)),
        Some(len) if rest.len() >= len => done(rest[..len].to_vec()),
        Some(_) if eof => Err(ResponseError::Truncated("inside the body")),
        Some(_) => Ok(None),
        None if rest.len() > max_body => Err(ResponseError::BodyTooLarge(max_body)),
        None if eof => done(rest.to_vec()),
        None => Ok(None),
    }
}

/// Decodes a complete chunked body; `Ok(None)` if more bytes are needed.
pub fn decode_chunked(mut data: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, ResponseError> {
    let bad = |m: &str| ResponseError::Malformed(m.to_owned());
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            if data.len() > 64 {
                return Err(bad("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| bad("bad chunk size line"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            // Trailers (if any) end with an empty line.
            return Ok(data.windows(2).any(|w| w == b"\r\n").then_some(out));
        }
        if size > max_body.saturating_sub(out.len()) {
            return Err(ResponseError::BodyTooLarge(max_body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 20;

    #[test]
    fn a_length_framed_response_at_every_split() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false, BIG), Ok(None), "{cut}");
        }
        let r = parse_response(full, false, BIG).unwrap().unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(r.content_type.as_deref(), Some("video/mp2t"));
        assert!(r.is_success() && !r.close, "HTTP/1.1 keeps the connection");
        let closing =
            b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_response(closing, false, BIG).unwrap().unwrap().close);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_response(old, false, BIG).unwrap().unwrap().close);
        let kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!parse_response(kept, false, BIG).unwrap().unwrap().close);
    }

    #[test]
    fn chunked_and_until_close_bodies() {
        let full = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut], false, BIG), Ok(None), "{cut}");
        }
        let r = parse_response(full, false, BIG).unwrap().unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.1 404 Not Found\r\n\r\nnope", true, BIG)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        assert!(r.close, "a body framed by the close");
        let r = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n", false, BIG)
            .unwrap()
            .unwrap();
        assert!(r.body.is_empty());
    }

    #[test]
    fn limits_and_malformed_answers_are_errors_not_panics() {
        let over = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(
            parse_response(over, false, 10),
            Err(ResponseError::BodyTooLarge(10)),
            "refused from the announced length, before reading it"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n";
        assert_eq!(
            parse_response(chunked, false, 10),
            Err(ResponseError::BodyTooLarge(10))
        );
        let unframed = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[0u8; 11]].concat();
        assert_eq!(
            parse_response(&unframed, false, 10),
            Err(ResponseError::BodyTooLarge(10))
        );
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.resize(MAX_RESPONSE_HEAD + 1, b'a');
        assert_eq!(
            parse_response(&endless, false, BIG),
            Err(ResponseError::HeadTooLarge)
        );
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        ] {
            assert!(
                matches!(
                    parse_response(bad, false, BIG),
                    Err(ResponseError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
                true,
                BIG
            ),
            Err(ResponseError::Truncated("inside the body"))
        );
        assert!(parse_response(b"HTTP/1.1 200 O", true, BIG).is_err());
    }

    #[test]
    fn the_request_names_host_token_and_closes() {
        let r = get_request("10.0.0.1:81", "/api/x", "tok", "ovation/1", false);
        let r = String::from_utf8(r).unwrap();
        assert!(
            r.starts_with("GET /api/x HTTP/1.1\r\nHost: 10.0.0.1:81\r\n"),
            "{r}"
        );
        assert!(r.contains("Connection: close\r\n") && r.contains("Authorization: Bearer tok\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let anon = String::from_utf8(get_request("h", "/", "", "a", true)).unwrap();
        assert!(!anon.contains("Authorization") && anon.contains("Connection: keep-alive\r\n"));
    }

    /// The fuzz target's property on stable Rust: pseudo-random bytes never panic the
    /// parser, and once a prefix gives a complete answer every longer prefix gives the same.
    #[test]
    fn arbitrary_answers_never_panic_and_complete_answers_are_stable() {
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcdXYZ",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nzz",
            b"HTTP/1.0 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2_000 {
            let mut bytes = seeds[round % 3].to_vec();
            for _ in 0..next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            let max = (next() % 16) as usize;
            let mut first = None;
            for end in 0..=bytes.len() {
                let _ = parse_response(&bytes[..end], true, max);
                if let Ok(Some(answer)) = parse_response(&bytes[..end], false, max) {
                    assert!(answer.body.len() <= max);
                    match &first {
                        None => first = Some(answer),
                        Some(f) => assert_eq!(f, &answer, "{bytes:?}"),
                    }
                } else if let Ok(None) = parse_response(&bytes[..end], false, max) {
                    assert!(first.is_none(), "{bytes:?}");
                }
            }
        }
    }
}
