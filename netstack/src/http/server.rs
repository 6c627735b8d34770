//! The server-side HTTP/1.1 request parser: sans-IO, so every framing rule is tested in memory.
//!
//! [`RequestParser::next`] takes the bytes received so far and returns one complete request
//! ([`Step::Request`]), a request for more bytes ([`Step::Partial`]), or the interim
//! `100 Continue` to send ([`Step::Continue`]), with how many bytes it consumed. A connection
//! loop calls it until `Partial`, answering every request already buffered (pipelining)
//! before it reads again. The parser keeps a parsed head and the body decoded so far, so a
//! body that arrives a byte at a time costs linear work.
//!
//! Framing (RFC 9112 section 6): `Content-Length` must be digits only, repeated values must be
//! equal; `Transfer-Encoding: chunked` bodies with chunk extensions and trailers (both read
//! and dropped); both headers in one request is a 400, so is any other transfer coding (501).
//! A [`RequestError`] is final: answer it with `Connection: close` and close.

use super::upgrade::{self, HandshakeError, Head, UpgradeRequest};
use super::{describe, has_token, refuse_duplicates, MAX_HEADERS};

/// Bounds on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and header lines), and separately the largest
    /// chunked-body trailer section; more is 431.
    pub max_head: usize,
    /// Most header lines (at most [`MAX_HEADERS`]); more is 431.
    pub max_headers: usize,
    /// Largest body (after chunked decoding); more is 413.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: MAX_HEADERS,
            max_body: 1024 * 1024,
        }
    }
}

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a request cannot be served; the connection closes after the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// 400: malformed request line, header, length or chunk; the text names the problem.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// 413: the body is larger than [`Limits::max_body`].
    #[error("request body too large")]
    BodyTooLarge,
    /// 417: an `Expect` other than `100-continue`.
    #[error("unsupported Expect header (only 100-continue)")]
    ExpectationFailed,
    /// 431: the head or the trailers exceed [`Limits::max_head`] or [`Limits::max_headers`].
    #[error("request header fields too large: {0}")]
    HeadersTooLarge(&'static str),
    /// 501: a transfer coding other than `chunked`.
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

impl RequestError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::BodyTooLarge => 413,
            Self::ExpectationFailed => 417,
            Self::HeadersTooLarge(_) => 431,
            Self::NotImplemented(_) => 501,
        }
    }
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target up to `?`, not decoded.
    pub path: String,
    /// The target after `?`, or empty.
    pub query: String,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Header lines in order: name as sent, value without surrounding whitespace.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the connection may carry another request: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Bytes of the head, including the final CRLFCRLF.
    pub header_len: usize,
}

impl Request {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// [`Request::header`] as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Validates this request as a WebSocket upgrade, without parsing its head again.
    pub fn upgrade(&self) -> Result<UpgradeRequest, HandshakeError> {
        let head = Head {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            minor_version: self.minor_version,
            header_len: self.header_len,
        };
        upgrade::validate(
            &head,
            self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        )
    }
}

/// What [`RequestParser::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A complete request.
    Request(Request),
    /// The head asked for `Expect: 100-continue` and its body has not all arrived: send
    /// [`super::CONTINUE`], then read on. Returned at most once per request.
    Continue,
    /// Read more bytes, then call again with the unconsumed ones and the new ones.
    Partial,
}

/// Where in a body the parser is.
#[derive(Debug)]
enum Body {
    /// `Content-Length`: this many bytes still to come.
    Length(usize),
    /// Chunked: the phase of the chunked grammar.
    Chunked(Chunk),
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line; bytes of trailers so far.
    Trailers(usize),
}

/// A request whose head is parsed and whose body is still arriving.
#[derive(Debug)]
struct Pending {
    request: Request,
    body: Body,
    /// `Expect: 100-continue` was asked and not yet answered.
    wants_continue: bool,
}

/// The sans-IO request parser of one connection.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: Limits,
    pending: Option<Pending>,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            pending: None,
        }
    }

    /// Whether part of a request has been consumed (a head or body bytes are held).
    pub fn in_request(&self) -> bool {
        self.pending.is_some()
    }

    /// Parses from the start of `buf`, the bytes not consumed by earlier calls. Returns what it
    /// found and how many bytes of `buf` it consumed; the caller drops those bytes and keeps
    /// the rest (the start of the next, pipelined request) for the next call.
    pub fn next(&mut self, buf: &[u8]) -> Result<(Step, usize), RequestError> {
        let mut used = 0;
        if self.pending.is_none() {
            match self.head(buf)? {
                Some((pending, n)) => {
                    self.pending = Some(pending);
                    used = n;
                }
                None => return Ok((Step::Partial, 0)),
            }
        }
        let max_body = self.limits.max_body;
        let max_trailers = self.limits.max_head;
        let Some(pending) = self.pending.as_mut() else {
            return Ok((Step::Partial, used));
        };
        let done = match &mut pending.body {
            Body::Length(left) => {
                let take = (*left).min(buf.len() - used);
                pending
                    .request
                    .body
                    .extend_from_slice(&buf[used..used + take]);
                used += take;
                *left -= take;
                *left == 0
            }
            Body::Chunked(state) => {
                let (n, done) = dechunk(
                    state,
                    &buf[used..],
                    &mut pending.request.body,
                    max_body,
                    max_trailers,
                )?;
                used += n;
                done
            }
        };
        if done {
            let pending = self.pending.take();
            return Ok(match pending {
                Some(p) => (Step::Request(p.request), used),
                None => (Step::Partial, used),
            });
        }
        if std::mem::take(&mut pending.wants_continue) {
            return Ok((Step::Continue, used));
        }
        Ok((Step::Partial, used))
    }

    /// Parses a head; `None` while it is incomplete.
    fn head(&self, buf: &[u8]) -> Result<Option<(Pending, usize)>, RequestError> {
        let limits = &self.limits;
        let window = &buf[..buf.len().min(limits.max_head)];
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let max_headers = limits.max_headers.min(MAX_HEADERS);
        let mut req = httparse::Request::new(&mut headers[..max_headers]);
        let header_len = match req.parse(window) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
                return Err(RequestError::HeadersTooLarge("request head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(RequestError::HeadersTooLarge("too many header lines"));
            }
            Err(e) => return Err(RequestError::BadRequest(describe(e))),
        };
        let minor_version = req.version.unwrap_or(1);
        let fields = || req.headers.iter().map(|h| (h.name, h.value));
        refuse_duplicates(fields()).map_err(RequestError::BadRequest)?;
        let framing = Framing::of(fields(), minor_version)?;
        let body = match framing.chunked {
            true => Body::Chunked(Chunk::Size),
            false => match framing.length {
                Some(n) if n > limits.max_body as u64 => return Err(RequestError::BodyTooLarge),
                Some(n) => Body::Length(n as usize),
                None => Body::Length(0),
            },
        };
        let has_body = !matches!(body, Body::Length(0));
        let target = req.path.unwrap_or("/");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: req.method.unwrap_or("").to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            minor_version,
            headers: fields()
                .map(|(n, v)| (n.to_owned(), v.trim_ascii().to_vec()))
                .collect(),
            body: Vec::new(),
            keep_alive: framing.keep_alive,
            header_len,
        };
        let pending = Pending {
            request,
            body,
            wants_continue: framing.expect_continue && has_body,
        };
        Ok(Some((pending, header_len)))
    }
}

/// What the header fields say about framing and the connection.
struct Framing {
    length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Framing {
    fn of<'a>(
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
        minor_version: u8,
    ) -> Result<Framing, RequestError> {
        let mut f = Framing {
            length: None,
            chunked: false,
            keep_alive: minor_version == 1,
            expect_continue: false,
        };
        let mut transfer_encoding = false;
        for (name, value) in headers {
            let value = value.trim_ascii();
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("content-length") {
                // Repeated equal values were allowed by refuse_duplicates; so is "5, 5".
                for part in value.split(|&b| b == b',') {
                    let n = content_length(part.trim_ascii())?;
                    if f.length.is_some_and(|m| m != n) {
                        return Err(RequestError::BadRequest(
                            "conflicting Content-Length values",
                        ));
                    }
                    f.length = Some(n);
                }
            } else if is("transfer-encoding") {
                transfer_encoding = true;
                if !value.eq_ignore_ascii_case(b"chunked") {
                    return Err(RequestError::NotImplemented(
                        "only the chunked transfer coding is supported",
                    ));
                }
                f.chunked = true;
            } else if is("connection") {
                if has_token(value, b"close") {
                    f.keep_alive = false;
                } else if has_token(value, b"keep-alive") {
                    f.keep_alive = true;
                }
            } else if is("expect") && minor_version == 1 {
                // An HTTP/1.0 client cannot mean 100-continue (RFC 9110 10.1.1): ignored.
                if !value.eq_ignore_ascii_case(b"100-continue") {
                    return Err(RequestError::ExpectationFailed);
                }
                f.expect_continue = true;
            }
        }
        if transfer_encoding && f.length.is_some() {
            return Err(RequestError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if transfer_encoding && minor_version == 0 {
            return Err(RequestError::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        Ok(f)
    }
}

/// A `Content-Length` value: one or more ASCII digits, nothing else, fitting in a u64.
fn content_length(value: &[u8]) -> Result<u64, RequestError> {
    const BAD: RequestError = RequestError::BadRequest("Content-Length must be digits only");
    if value.is_empty() {
        return Err(BAD);
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(RequestError::BadRequest("Content-Length too large"))
    })
}

/// Decodes as much of a chunked body from `buf` as is there. Returns bytes consumed and
/// whether the body (with its trailers) is complete.
fn dechunk(
    state: &mut Chunk,
    buf: &[u8],
    body: &mut Vec<u8>,
    max_body: usize,
    max_trailers: usize,
) -> Result<(usize, bool), RequestError> {
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        match *state {
            Chunk::Size => {
                let Some(line) = line(rest, MAX_CHUNK_LINE)? else {
                    return Ok((at, false));
                };
                let size = chunk_size(&rest[..line - 2])?;
                if size > (max_body - body.len()) as u64 {
                    return Err(RequestError::BodyTooLarge);
                }
                at += line;
                *state = match size {
                    0 => Chunk::Trailers(0),
                    n => Chunk::Data(n as usize),
                };
            }
            Chunk::Data(left) => {
                let take = left.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                at += take;
                if take < left {
                    *state = Chunk::Data(left - take);
                    return Ok((at, false));
                }
                *state = Chunk::DataEnd;
            }
            Chunk::DataEnd => match rest {
                [b'\r', b'\n', ..] => {
                    at += 2;
                    *state = Chunk::Size;
                }
                [] | [b'\r'] => return Ok((at, false)),
                _ => return Err(RequestError::BadRequest("chunk data not followed by CRLF")),
            },
            Chunk::Trailers(seen) => {
                let room = max_trailers.saturating_sub(seen);
                let Some(line) = line(rest, room)
                    .map_err(|_| RequestError::HeadersTooLarge("chunked trailers too large"))?
                else {
                    return Ok((at, false));
                };
                at += line;
                if line == 2 {
                    return Ok((at, true));
                }
                let field = &rest[..line - 2];
                if !field.contains(&b':')
                    || field.iter().any(|&b| b.is_ascii_control() && b != b'\t')
                {
                    return Err(RequestError::BadRequest("malformed trailer field"));
                }
                *state = Chunk::Trailers(seen + line);
            }
        }
    }
}

/// The length of the CRLF-terminated line at the start of `buf` (CRLF included), `None` if
/// it has not all arrived. A line longer than `max` or a bare LF is an error.
fn line(buf: &[u8], max: usize) -> Result<Option<usize>, RequestError> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i + 1)),
        Some(_) => Err(RequestError::BadRequest("bare LF in chunked body")),
        None if !buf.is_empty() && buf.len() >= max => {
            Err(RequestError::BadRequest("chunk-size line too long"))
        }
        None => Ok(None),
    }
}

/// The size of a chunk-size line (without CRLF): hex digits, then optional extensions
/// (`;name[=value]`, read and dropped).
fn chunk_size(line: &[u8]) -> Result<u64, RequestError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(RequestError::BadRequest("chunk size must be hex digits"));
    }
    if digits > 15 {
        return Err(RequestError::BadRequest("chunk size too large"));
    }
    let ext = line[digits..].trim_ascii_start();
    if !ext.is_empty()
        && (ext[0] != b';' || ext.iter().any(|&b| b.is_ascii_control() && b != b'\t'))
    {
        return Err(RequestError::BadRequest("malformed chunk extension"));
    }
    // At most 15 hex digits fit in a u64.
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        n << 4 | u64::from((b as char).to_digit(16).unwrap_or(0))
    }))
}

#[cfg(test)]
mod tests;
