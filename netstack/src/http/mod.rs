//! HTTP/1.1: one request parser for every HTTP endpoint ovation serves, and the response
//! parser of the one client it runs (an edge pulling a stream from its origin edge).
//!
//! - [`server`]: the sans-IO request parser (keep-alive, pipelining, `Content-Length` and
//!   chunked bodies, limits, `Expect: 100-continue`) used by the operator API.
//! - [`upgrade`]: the WebSocket upgrade (RFC 6455 section 4.2.1): validating an upgrade
//!   request, whether parsed here ([`parse_upgrade`], the viewer shards) or by
//!   [`server::RequestParser`] (the broadcaster socket on the API), and the `101` answer.
//! - [`client`]: the client side, sans-IO: a `GET` request and the response parser (body
//!   size limit, chunked bodies), for origin-edge pulls.
//! - Here: the response writer, reason phrases, header rules shared by both (duplicate
//!   single-valued fields are refused in one place, [`refuse_duplicates`]) and query strings.
//!
//! Everything here is pure: bytes in, values or bytes out.

pub mod client;
pub mod server;
pub mod upgrade;

pub use upgrade::{
    accept_key, parse_upgrade, switching_protocols, switching_protocols_with, HandshakeError,
    UpgradeRequest, WEBSOCKET_GUID,
};

/// Most header lines accepted in one request; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// Header fields that may appear at most once in a request, with the 400 message for a
/// second one. `Content-Length` is not here: repeated equal values are allowed (RFC 9112
/// section 6.3), differing ones are refused by [`server`]'s framing rules and by
/// [`refuse_duplicates`].
const SINGLETONS: [(&str, &str); 7] = [
    ("host", "duplicate Host header"),
    ("authorization", "duplicate Authorization header"),
    ("transfer-encoding", "duplicate Transfer-Encoding header"),
    ("sec-websocket-key", "duplicate Sec-WebSocket-Key header"),
    (
        "sec-websocket-version",
        "duplicate Sec-WebSocket-Version header",
    ),
    ("user-agent", "duplicate User-Agent header"),
    ("origin", "duplicate Origin header"),
];

/// Refuses a request that repeats a single-valued header field (a second `Authorization`
/// must not silently win over the first) or carries differing `Content-Length` values. The
/// one place both the upgrade and the API parser check this; the error is the 400 message.
pub fn refuse_duplicates<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<(), &'static str> {
    let mut seen = 0u8;
    let mut length: Option<&[u8]> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            let value = value.trim_ascii();
            match length {
                Some(first) if first != value => {
                    return Err("conflicting Content-Length headers");
                }
                _ => length = Some(value),
            }
            continue;
        }
        if let Some(i) = SINGLETONS
            .iter()
            .position(|(n, _)| name.eq_ignore_ascii_case(n))
        {
            if seen & (1 << i) != 0 {
                return Err(SINGLETONS[i].1);
            }
            seen |= 1 << i;
        }
    }
    Ok(())
}

/// A short description of an `httparse` error, for a 400 body.
pub(crate) fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or token",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The standard reason phrase for the status codes ovation sends ("" for others).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A complete HTTP/1.1 response with `Content-Length`. `Content-Type` is omitted when
/// `content_type` is empty. Header names, values and `reason` come from the caller and must
/// not contain CR or LF.
pub fn response(
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    write_head(
        &mut out,
        status,
        reason,
        extra_headers,
        content_type,
        body.len(),
    );
    out.extend_from_slice(body);
    out
}

/// Appends a complete response to `out` (so the answers to pipelined requests go out in one
/// write): the status line with [`reason_phrase`], `Connection: keep-alive` or `close`, the
/// extra headers, `Content-Type` (omitted when empty), `Content-Length` and the body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    keep_alive: bool,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
) {
    let connection = (
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    );
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(extra_headers.len() + 1);
    headers.push(connection);
    headers.extend_from_slice(extra_headers);
    write_head(
        out,
        status,
        reason_phrase(status),
        &headers,
        content_type,
        body.len(),
    );
    out.extend_from_slice(body);
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn write_head(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    content_type: &str,
    content_length: usize,
) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in extra_headers {
        debug_assert!(!name.contains(['\r', '\n']) && !value.contains(['\r', '\n']));
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !content_type.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(out, "Content-Length: {content_length}\r\n\r\n");
}

/// Whether a comma-separated header value contains `token` (ASCII case-insensitive).
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

pub(crate) fn append_list(slot: &mut Option<String>, value: &[u8]) {
    let value = String::from_utf8_lossy(value);
    match slot {
        Some(list) => {
            list.push_str(", ");
            list.push_str(&value);
        }
        None => *slot = Some(value.into_owned()),
    }
}

/// Splits a query string into decoded `(name, value)` pairs: pairs are separated by `&`,
/// name and value by the first `=` (a pair without `=` has an empty value), empty pairs are
/// skipped, `+` is a space and `%XX` a byte. Invalid escapes are kept literally and invalid
/// UTF-8 is replaced with U+FFFD. Never panics.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
