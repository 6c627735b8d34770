//! HTTP/1.1 for the WebSocket upgrade: parsing the client's upgrade request (RFC 6455
//! section 4.2.1) with `httparse`, the `101 Switching Protocols` answer, error responses, a
//! generic response writer (also used by the operator API), and query-string decoding.
//!
//! Everything here is pure: bytes in, values or bytes out.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Most header lines accepted in one request; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` to derive `Sec-WebSocket-Accept`.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid WebSocket upgrade request, with the fields ovation uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRequest {
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, without the `?` (empty if none).
    pub query: String,
    /// `Sec-WebSocket-Key`, trimmed (base64 of 16 bytes).
    pub key: String,
    /// `Host`.
    pub host: String,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Accept-Language` (repeated lines joined with ", ").
    pub accept_language: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `X-Forwarded-For` (repeated lines joined with ", ").
    pub forwarded_for: Option<String>,
    /// Bytes consumed, including the final CRLFCRLF; WebSocket frames start here.
    pub header_len: usize,
}

/// Why an upgrade request was refused; [`HandshakeError::response`] is the answer to send
/// before closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// 400: malformed request or invalid handshake field; the text names the problem.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 405: the method is not GET.
    #[error("method not allowed: a WebSocket upgrade must use GET")]
    MethodNotAllowed,
    /// 426: missing `Upgrade: websocket` / `Connection: upgrade`, or a version other than 13.
    #[error("upgrade required: {0}")]
    UpgradeRequired(&'static str),
    /// 431: the header block exceeds the size or header-count limit.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// 404: no such endpoint (produced by callers, not by the parser).
    #[error("not found")]
    NotFound,
}

impl HandshakeError {
    /// The HTTP status code of the response.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UpgradeRequired(_) => 426,
            Self::HeadersTooLarge => 431,
        }
    }

    /// A complete HTTP/1.1 response: status line, `Connection: close`, a plain-text body
    /// naming the problem. 405 adds `Allow: GET`; 426 adds `Upgrade: websocket` and
    /// `Sec-WebSocket-Version: 13` (and, as RFC 9110 requires with `Upgrade`, lists `upgrade`
    /// in `Connection` too).
    pub fn response(&self) -> Vec<u8> {
        let status = self.status();
        let body = format!("{self}\n");
        let headers: &[(&str, &str)] = match self {
            Self::MethodNotAllowed => &[("Connection", "close"), ("Allow", "GET")],
            Self::UpgradeRequired(_) => &[
                ("Connection", "upgrade, close"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
            _ => &[("Connection", "close")],
        };
        response(
            status,
            reason_phrase(status),
            headers,
            "text/plain; charset=utf-8",
            body.as_bytes(),
        )
    }
}

/// The standard reason phrase for the status codes ovation sends ("" for others).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
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
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Parses a WebSocket upgrade request at the start of `buf`.
///
/// `Ok(None)` means the header block is incomplete and may still fit: read more and call
/// again with the whole buffer. A header block that does not end within `max_header_bytes`
/// (including a buffer of exactly `max_header_bytes` still incomplete, which more bytes
/// cannot fix) or has more than [`MAX_HEADERS`] lines is `HeadersTooLarge`. Bytes after the
/// header block (frames the client pipelined) are left alone: they start at `header_len`.
pub fn parse_upgrade(
    buf: &[u8],
    max_header_bytes: usize,
) -> Result<Option<UpgradeRequest>, HandshakeError> {
    let window = &buf[..buf.len().min(max_header_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let header_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_header_bytes {
                Err(HandshakeError::HeadersTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::HeadersTooLarge),
        Err(e) => return Err(HandshakeError::BadRequest(describe(e))),
    };

    if req.version != Some(1) {
        return Err(HandshakeError::BadRequest("HTTP/1.1 required"));
    }
    if req.method != Some("GET") {
        return Err(HandshakeError::MethodNotAllowed);
    }
    let target = req.path.unwrap_or("");
    if !target.starts_with('/') {
        return Err(HandshakeError::BadRequest(
            "request target must be a path (origin-form)",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut fields = Fields::default();
    for h in req.headers.iter() {
        fields.add(h.name, h.value)?;
    }

    let host = fields
        .host
        .ok_or(HandshakeError::BadRequest("missing Host header"))?;
    let host = required_str(host, "Host header is not valid UTF-8")?;
    if host.is_empty() {
        return Err(HandshakeError::BadRequest("empty Host header"));
    }
    if !fields.upgrade_websocket {
        return Err(HandshakeError::UpgradeRequired(
            "missing \"Upgrade: websocket\" header",
        ));
    }
    if !fields.connection_upgrade {
        return Err(HandshakeError::UpgradeRequired(
            "missing \"Connection: upgrade\" header",
        ));
    }
    match fields.version.map(<[u8]>::trim_ascii) {
        Some(b"13") => {}
        Some(_) => {
            return Err(HandshakeError::UpgradeRequired(
                "unsupported Sec-WebSocket-Version (13 required)",
            ))
        }
        None => {
            return Err(HandshakeError::UpgradeRequired(
                "missing Sec-WebSocket-Version header",
            ))
        }
    }
    let key = fields.key.ok_or(HandshakeError::BadRequest(
        "missing Sec-WebSocket-Key header",
    ))?;
    let key = required_str(key, "Sec-WebSocket-Key is not valid UTF-8")?;
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => {
            return Err(HandshakeError::BadRequest(
                "Sec-WebSocket-Key must be base64 of 16 bytes",
            ))
        }
    }

    Ok(Some(UpgradeRequest {
        path: path.to_owned(),
        query: query.to_owned(),
        key: key.to_owned(),
        host: host.to_owned(),
        user_agent: fields.user_agent.map(lossy),
        accept_language: fields.accept_language,
        origin: fields.origin.map(lossy),
        authorization: fields.authorization.map(lossy),
        forwarded_for: fields.forwarded_for,
        header_len,
    }))
}

fn describe(e: httparse::Error) -> &'static str {
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

/// The header fields the upgrade looks at, collected from the header lines.
#[derive(Default)]
struct Fields<'b> {
    host: Option<&'b [u8]>,
    key: Option<&'b [u8]>,
    version: Option<&'b [u8]>,
    user_agent: Option<&'b [u8]>,
    origin: Option<&'b [u8]>,
    authorization: Option<&'b [u8]>,
    accept_language: Option<String>,
    forwarded_for: Option<String>,
    upgrade_websocket: bool,
    connection_upgrade: bool,
}

impl<'b> Fields<'b> {
    /// Records one header line. Single-valued fields may appear once; list-valued fields
    /// (Upgrade, Connection, Accept-Language, X-Forwarded-For) may be split over lines.
    fn add(&mut self, name: &str, value: &'b [u8]) -> Result<(), HandshakeError> {
        let value = value.trim_ascii();
        let single = |slot: &mut Option<&'b [u8]>, what: &'static str| {
            if slot.replace(value).is_some() {
                Err(HandshakeError::BadRequest(what))
            } else {
                Ok(())
            }
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            single(&mut self.host, "duplicate Host header")?;
        } else if is("sec-websocket-key") {
            single(&mut self.key, "duplicate Sec-WebSocket-Key header")?;
        } else if is("sec-websocket-version") {
            single(&mut self.version, "duplicate Sec-WebSocket-Version header")?;
        } else if is("user-agent") {
            single(&mut self.user_agent, "duplicate User-Agent header")?;
        } else if is("origin") {
            single(&mut self.origin, "duplicate Origin header")?;
        } else if is("authorization") {
            single(&mut self.authorization, "duplicate Authorization header")?;
        } else if is("upgrade") {
            self.upgrade_websocket |= has_token(value, b"websocket");
        } else if is("connection") {
            self.connection_upgrade |= has_token(value, b"upgrade");
        } else if is("accept-language") {
            append_list(&mut self.accept_language, value);
        } else if is("x-forwarded-for") {
            append_list(&mut self.forwarded_for, value);
        }
        Ok(())
    }
}

/// Whether a comma-separated header value contains `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn append_list(slot: &mut Option<String>, value: &[u8]) {
    let value = String::from_utf8_lossy(value);
    match slot {
        Some(list) => {
            list.push_str(", ");
            list.push_str(&value);
        }
        None => *slot = Some(value.into_owned()),
    }
}

fn required_str<'b>(value: &'b [u8], what: &'static str) -> Result<&'b str, HandshakeError> {
    std::str::from_utf8(value).map_err(|_| HandshakeError::BadRequest(what))
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The `101 Switching Protocols` response accepting `key`; no extension, no subprotocol.
pub fn switching_protocols(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
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
    use std::fmt::Write as _;
    let mut head = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = write!(head, "HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in extra_headers {
        debug_assert!(!format!("{name}{value}").contains(['\r', '\n']));
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !content_type.is_empty() {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
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
