//! The WebSocket upgrade (RFC 6455 section 4.2.1): validating the client's upgrade request,
//! error responses, and the `101 Switching Protocols` answer.
//!
//! A request head is parsed once: [`parse_upgrade`] parses it with `httparse` (the viewer
//! shards, where the head is all there is), and [`super::server::Request::upgrade`] validates a
//! head the API's request parser already parsed. Both end in [`validate`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::MAX_HEADERS;
use super::{append_list, describe, has_token, reason_phrase, refuse_duplicates, response};

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
    /// `Sec-WebSocket-Protocol`: the subprotocols offered (repeated lines joined with ", ").
    pub protocols: Option<String>,
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

    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let head = Head {
        method: req.method.unwrap_or(""),
        path,
        query,
        minor_version: req.version.unwrap_or(0),
        header_len,
    };
    validate(&head, req.headers.iter().map(|h| (h.name, h.value))).map(Some)
}

/// The request line of a parsed head, as [`validate`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a str,
    /// The target up to `?` (the whole target when there is no query).
    pub path: &'a str,
    /// The target after `?`, or empty.
    pub query: &'a str,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Bytes of the head, including the final CRLFCRLF.
    pub header_len: usize,
}

/// Validates an already parsed head as a WebSocket upgrade request.
pub fn validate<'a>(
    head: &Head<'a>,
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Result<UpgradeRequest, HandshakeError> {
    if head.minor_version != 1 {
        return Err(HandshakeError::BadRequest("HTTP/1.1 required"));
    }
    if head.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if !head.path.starts_with('/') {
        return Err(HandshakeError::BadRequest(
            "request target must be a path (origin-form)",
        ));
    }
    refuse_duplicates(headers.clone()).map_err(HandshakeError::BadRequest)?;
    let mut fields = Fields::default();
    for (name, value) in headers {
        fields.add(name, value);
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

    Ok(UpgradeRequest {
        path: head.path.to_owned(),
        query: head.query.to_owned(),
        key: key.to_owned(),
        host: host.to_owned(),
        user_agent: fields.user_agent.map(lossy),
        accept_language: fields.accept_language,
        origin: fields.origin.map(lossy),
        authorization: fields.authorization.map(lossy),
        forwarded_for: fields.forwarded_for,
        protocols: fields.protocols,
        header_len: head.header_len,
    })
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
    protocols: Option<String>,
    upgrade_websocket: bool,
    connection_upgrade: bool,
}

impl<'b> Fields<'b> {
    /// Records one header line. Duplicates of single-valued fields were already refused by
    /// [`refuse_duplicates`]; list-valued fields (Upgrade, Connection, Accept-Language,
    /// X-Forwarded-For) may be split over lines.
    fn add(&mut self, name: &str, value: &'b [u8]) {
        let value = value.trim_ascii();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("host") {
            self.host = Some(value);
        } else if is("sec-websocket-key") {
            self.key = Some(value);
        } else if is("sec-websocket-version") {
            self.version = Some(value);
        } else if is("user-agent") {
            self.user_agent = Some(value);
        } else if is("origin") {
            self.origin = Some(value);
        } else if is("authorization") {
            self.authorization = Some(value);
        } else if is("upgrade") {
            self.upgrade_websocket |= has_token(value, b"websocket");
        } else if is("connection") {
            self.connection_upgrade |= has_token(value, b"upgrade");
        } else if is("accept-language") {
            append_list(&mut self.accept_language, value);
        } else if is("x-forwarded-for") {
            append_list(&mut self.forwarded_for, value);
        } else if is("sec-websocket-protocol") {
            append_list(&mut self.protocols, value);
        }
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

/// The `101 Switching Protocols` response accepting `key` with the subprotocol `protocol`
/// (which must be one the client offered).
pub fn switching_protocols_with(key: &str, protocol: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n",
        accept_key(key)
    )
    .into_bytes()
}
