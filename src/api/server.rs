//! The operator API's transport: the accept loop (a cap on open connections, throttled
//! accept-failure logs) and one glommio task per connection that feeds the bytes it reads to
//! netstack's sans-IO [`RequestParser`] and answers every complete request already buffered,
//! in order, in one write, before it reads again (pipelining). Handlers are synchronous
//! functions of a [`Request`] that return a [`Response`]; a `GET` on the broadcaster path is
//! handed over, with the bytes that followed it, already parsed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use netstack::http::server::{Limits, Request, RequestError, RequestParser, Step};
use netstack::tls::{ServerConfig, TlsSession};
use serde_json::Value;

use super::tls::{TlsStream, Transport};
use crate::app::App;

/// Largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 1024 * 1024;
/// Time to send one request once its first byte arrived.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an idle keep-alive connection that has authenticated is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a connection that has not yet sent an authenticated request is kept idle.
pub const UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a write may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last response of a closing connection: how long its unread input is drained,
/// so the close is a FIN the client reads after the response, not a reset that destroys it.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// One response: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The `Retry-After` header (seconds) of a 429.
    pub retry_after: Option<u64>,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body,
            allow: None,
            retry_after: None,
        }
    }

    /// `{"error":{"code":...,"message":...}}` with `status`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(
            status,
            serde_json::json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    /// The answer to a request the parser refused.
    pub fn refused(e: &RequestError) -> Response {
        let code = match e {
            RequestError::BadRequest(_) => "bad_request",
            RequestError::BodyTooLarge => {
                return Response::error(
                    413,
                    "body_too_large",
                    format!("body over {MAX_BODY} bytes"),
                )
            }
            RequestError::ExpectationFailed => "expectation_failed",
            RequestError::HeadersTooLarge(_) => "headers_too_large",
            RequestError::NotImplemented(_) => "not_implemented",
        };
        Response::error(e.status(), code, e.to_string())
    }

    /// Whether the connection may carry another request after this answer: not after a 401
    /// (an unauthenticated client gets one answer) nor after a 5xx.
    pub fn keeps_connection(&self) -> bool {
        self.status != 401 && self.status < 500
    }

    /// Appends the encoded response to `out`.
    pub fn write(&self, out: &mut Vec<u8>, keep_alive: bool) {
        let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
        body.push(b'\n');
        let mut headers = Vec::with_capacity(2);
        if self.status == 401 {
            headers.push(("WWW-Authenticate", "Bearer"));
        }
        if let Some(allow) = self.allow {
            headers.push(("Allow", allow));
        }
        let retry = self.retry_after.map(|s| s.to_string());
        if let Some(s) = &retry {
            headers.push(("Retry-After", s.as_str()));
        } else if self.status == 503 {
            headers.push(("Retry-After", "1"));
        }
        netstack::http::write_response(
            out,
            self.status,
            keep_alive,
            &headers,
            "application/json",
            &body,
        );
    }
}

/// API connections refused by the per-address limits (one API per process).
static REFUSED_ADDRESS_CAP: AtomicU64 = AtomicU64::new(0);
static REFUSED_RATE_LIMITED: AtomicU64 = AtomicU64::new(0);

/// The API's per-address refusals, for `/api/stats`.
pub fn refusal_counts() -> Value {
    serde_json::json!({
        "refused_address_cap": REFUSED_ADDRESS_CAP.load(Ordering::Relaxed),
        "refused_rate_limited": REFUSED_RATE_LIMITED.load(Ordering::Relaxed),
    })
}

/// The per-address verdict on an API connection: `Ok` with the place to give back (if
/// limits are on), or the refusal to send.
fn admit_address(
    limits: &shards::limits::AddressLimits,
    stream: &TcpStream,
) -> Result<Option<std::net::IpAddr>, Response> {
    use shards::limits::Admit;
    let Some(ip) = stream.peer_addr().ok().map(|a| a.ip()) else {
        return Ok(None);
    };
    if !limits.active() {
        return Ok(None);
    }
    match limits.admit(ip, Instant::now()) {
        Admit::Yes => Ok(Some(ip)),
        Admit::Capped => {
            REFUSED_ADDRESS_CAP.fetch_add(1, Ordering::Relaxed);
            Err(Response::error(
                503,
                "too_many_connections",
                "too many API connections from your address (api_max_connections_per_address)",
            ))
        }
        Admit::Limited { retry_after_s } => {
            REFUSED_RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::error(
                429,
                "rate_limited",
                "too many API connections per second from your address (api_connections_per_address_per_s)",
            );
            r.retry_after = Some(retry_after_s);
            Err(r)
        }
    }
}

/// Accepts API connections until the task is dropped. At most `api_max_connections` are
/// served at once; one more is answered 503 and closed. Accept failures (EMFILE, ENFILE,
/// ENOBUFS) back off and are logged at most once per 10 s.
/// With `tls`, a second listener's connections run TLS (the certificate current at each
/// handshake); over a limit they are closed before the handshake, unanswered.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, std::sync::Arc<ServerConfig>)>,
    app: Rc<RefCell<App>>,
    token: Rc<str>,
) {
    let max = app.borrow().config().api_max_connections;
    let addresses = {
        let app = app.borrow();
        let c = app.config();
        std::sync::Arc::new(shards::limits::AddressLimits::new(
            c.api_max_connections_per_address,
            c.api_connections_per_address_per_s,
            c.handshake_burst_per_address,
        ))
    };
    let open = Rc::new(Cell::new(0usize));
    let refusing = Rc::new(Cell::new(0usize));
    let mut warned_at: Option<Instant> = None;
    loop {
        let next = async { (listener.accept().await, None) };
        let (accepted, tls_config) = match &tls {
            None => next.await,
            Some((tls_listener, config)) => {
                future::or(next, async {
                    (tls_listener.accept().await, Some(config.clone()))
                })
                .await
            }
        };
        let accepted = accepted.map(|stream| {
            let verdict = admit_address(&addresses, &stream);
            (stream, verdict)
        });
        let accepted = match (tls_config, accepted) {
            (Some(config), Ok((stream, verdict))) => {
                let address = match verdict {
                    Ok(address) if open.get() < max => address,
                    Ok(address) => {
                        if let Some(ip) = address {
                            addresses.release(ip);
                        }
                        continue;
                    }
                    Err(_) => continue,
                };
                let Ok(session) = TlsSession::new(config) else {
                    if let Some(ip) = address {
                        addresses.release(ip);
                    }
                    continue;
                };
                let slot = Slot::take(&open);
                let (app, token, addresses) = (app.clone(), token.clone(), addresses.clone());
                glommio::spawn_local(async move {
                    let _slot = slot;
                    connection(TlsStream::new(stream, session), app, token).await;
                    if let Some(ip) = address {
                        addresses.release(ip);
                    }
                })
                .detach();
                continue;
            }
            (_, other) => other,
        };
        match accepted {
            Ok((stream, Err(refusal))) => {
                if refusing.get() < max {
                    let slot = Slot::take(&refusing);
                    glommio::spawn_local(async move {
                        let _slot = slot;
                        let mut out = Vec::new();
                        refusal.write(&mut out, false);
                        close_after(stream, &out).await;
                    })
                    .detach();
                }
            }
            Ok((stream, Ok(address))) if open.get() >= max => {
                if let Some(ip) = address {
                    addresses.release(ip);
                }
                // Refusals linger too; beyond `max` of them the peer just sees the close.
                if refusing.get() < max {
                    let slot = Slot::take(&refusing);
                    glommio::spawn_local(async move {
                        let _slot = slot;
                        let mut out = Vec::new();
                        Response::error(
                            503,
                            "too_many_connections",
                            format!(
                                "more than {max} API connections are open (api_max_connections)"
                            ),
                        )
                        .write(&mut out, false);
                        close_after(stream, &out).await;
                    })
                    .detach();
                }
            }
            Ok((stream, Ok(address))) => {
                let slot = Slot::take(&open);
                let app = app.clone();
                let token = token.clone();
                let addresses = addresses.clone();
                glommio::spawn_local(async move {
                    let _slot = slot;
                    connection(stream, app, token).await;
                    if let Some(ip) = address {
                        addresses.release(ip);
                    }
                })
                .detach();
            }
            Err(e) => {
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "operator API accept failed");
                    warned_at = Some(Instant::now());
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One counted place in a [`Cell`] counter, given back on drop.
struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(count: &Rc<Cell<usize>>) -> Slot {
        count.set(count.get() + 1);
        Slot(count.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// How the requests buffered so far end.
enum After {
    /// Everything complete is answered: read more.
    Read,
    /// The last answer closes the connection.
    Close,
    /// A broadcaster upgrade: the request and the bytes after it.
    Upgrade(Box<Request>),
}

/// Serves one API connection until it closes, times out, sends a bad or unauthenticated
/// request, or becomes a broadcaster socket.
async fn connection<S: Transport>(mut stream: S, app: Rc<RefCell<App>>, token: Rc<str>) {
    let mut parser = RequestParser::new(Limits {
        max_head: MAX_HEAD,
        max_headers: netstack::http::MAX_HEADERS,
        max_body: MAX_BODY,
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut authenticated = false;
    // When the first byte of the request being received arrived.
    let mut started: Option<Instant> = None;
    loop {
        // Answer every complete request already in the buffer, in order.
        let mut at = 0;
        let after = loop {
            match parser.next(&buf[at..]) {
                Ok((Step::Request(req), used)) => {
                    at += used;
                    if req.method == "GET" && req.path == super::BROADCASTER_PATH {
                        break After::Upgrade(Box::new(req));
                    }
                    let response = super::handle(&app, &token, &req);
                    authenticated |= response.status != 401;
                    let keep = req.keep_alive && response.keeps_connection();
                    response.write(&mut out, keep);
                    if !keep {
                        break After::Close;
                    }
                }
                Ok((Step::Continue, used)) => {
                    at += used;
                    out.extend_from_slice(netstack::http::CONTINUE);
                }
                Ok((Step::Partial, used)) => {
                    at += used;
                    break After::Read;
                }
                Err(e) => {
                    at = buf.len();
                    Response::refused(&e).write(&mut out, false);
                    break After::Close;
                }
            }
        };
        buf.drain(..at);
        match after {
            After::Read => {}
            After::Close => return close_after(stream, &out).await,
            After::Upgrade(req) => {
                if !out.is_empty() && !write_bounded(&mut stream, &out).await {
                    return;
                }
                return super::broadcaster(stream, &app, &token, &req, buf).await;
            }
        }
        if !out.is_empty() {
            if !write_bounded(&mut stream, &out).await {
                return;
            }
            out.clear();
        }
        started = match (parser.in_request() || !buf.is_empty(), started) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
            (false, _) => None,
        };
        let wait = match started {
            Some(t) => REQUEST_TIMEOUT.saturating_sub(t.elapsed()),
            None if authenticated => IDLE_TIMEOUT,
            None => UNAUTHENTICATED_TIMEOUT,
        };
        let read = future::or(async { stream.read(&mut chunk).await.ok() }, async {
            sleep(wait).await;
            None
        })
        .await;
        match read {
            Some(n) if n > 0 => {
                started.get_or_insert_with(Instant::now);
                buf.extend_from_slice(&chunk[..n]);
            }
            // EOF, an error, or a timeout: close without an answer.
            _ => {
                let _ = stream.close().await;
                return;
            }
        }
    }
}

/// Writes `bytes`, giving up after [`WRITE_TIMEOUT`] (a client that stopped reading).
async fn write_bounded<S: Transport>(stream: &mut S, bytes: &[u8]) -> bool {
    future::or(async { stream.write_all(bytes).await.is_ok() }, async {
        sleep(WRITE_TIMEOUT).await;
        false
    })
    .await
}

/// Writes the last response, half-closes, and drains what the client still sends (bounded)
/// before closing: closing with unread input would send a reset, and a reset can destroy the
/// response before the client reads it.
pub async fn close_after<S: Transport>(mut stream: S, last: &[u8]) {
    if write_bounded(&mut stream, last).await && stream.shutdown_write().await.is_ok() {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        let deadline = Instant::now() + LINGER;
        while drained < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = future::or(async { stream.read(&mut sink).await.ok() }, async {
                sleep(left).await;
                None
            })
            .await;
            match n {
                Some(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
    let _ = stream.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses_and_codes() {
        for (e, status, code) in [
            (RequestError::BadRequest("x"), 400, "bad_request"),
            (RequestError::BodyTooLarge, 413, "body_too_large"),
            (RequestError::ExpectationFailed, 417, "expectation_failed"),
            (RequestError::HeadersTooLarge("x"), 431, "headers_too_large"),
            (RequestError::NotImplemented("x"), 501, "not_implemented"),
        ] {
            let r = Response::refused(&e);
            assert_eq!(r.status, status);
            assert_eq!(r.body["error"]["code"], code);
        }
    }

    #[test]
    fn encoding_carries_the_connection_and_extra_headers() {
        let text = |r: &Response, keep: bool| {
            let mut out = Vec::new();
            r.write(&mut out, keep);
            String::from_utf8(out).unwrap()
        };
        let unauthorized = Response::error(401, "unauthorized", "no");
        assert!(!unauthorized.keeps_connection());
        let t = text(&unauthorized, false);
        assert!(t.starts_with("HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n"));
        assert!(t.contains("WWW-Authenticate: Bearer\r\n"));
        let mut not_allowed = Response::error(405, "method_not_allowed", "no");
        not_allowed.allow = Some("GET");
        assert!(not_allowed.keeps_connection());
        let t = text(&not_allowed, true);
        assert!(
            t.contains("Connection: keep-alive\r\nAllow: GET\r\n"),
            "{t}"
        );
        assert!(t.ends_with("}\n"));
        let busy = Response::error(503, "too_many_connections", "full");
        assert!(!busy.keeps_connection());
        assert!(text(&busy, false).contains("Retry-After: 1\r\n"));
    }
}
