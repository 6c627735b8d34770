//! The operator API's transport: the accept loop (a cap on open connections, throttled
//! accept-failure logs) and one glommio task per connection that feeds the bytes it reads to
//! netstack's sans-IO [`RequestParser`] and answers every complete request already buffered,
//! in order, in one write, before it reads again (pipelining). Handlers are synchronous
//! functions of a [`Request`] that return a [`Response`]; a `GET` on the broadcaster path is
//! handed over, with the bytes that followed it, already parsed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use netstack::http::server::{Limits, Request, RequestError, RequestParser, Step};
use netstack::tls::{ServerConfig, TlsSession};

use super::refusals;
use super::response::{self, close_after, write_bounded, Response};
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
/// The longest an answer waits for the shards or the recorder (see [`Response::after`]).
pub const CAST_WAIT: Duration = Duration::from_secs(2);

/// The answer to a request the parser refused.
fn refused(e: &RequestError) -> Response {
    let code = match e {
        RequestError::BadRequest(_) => "bad_request",
        RequestError::BodyTooLarge => {
            return Response::error(413, "body_too_large", format!("body over {MAX_BODY} bytes"))
        }
        RequestError::ExpectationFailed => "expectation_failed",
        RequestError::HeadersTooLarge(_) => "headers_too_large",
        RequestError::NotImplemented(_) => "not_implemented",
    };
    Response::error(e.status(), code, e.to_string())
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
            refusals::REFUSED_ADDRESS_CAP.fetch_add(1, Ordering::Relaxed);
            Err(Response::error(
                503,
                "too_many_connections",
                "too many API connections from your address (api_max_connections_per_address)",
            ))
        }
        Admit::Limited { retry_after_s } => {
            refusals::REFUSED_RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
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

/// Whether a request that begins with `first` (or has this method) may send the shards a
/// command: every method but `GET` and `HEAD`, which only read. Leading empty lines are
/// allowed before a request (RFC 9112, 2.2), so a request that starts with one is counted in.
///
/// Such a request wakes the sleeping shards as its first bytes arrive
/// (`App::wake_shards_ahead`) only on a connection whose last such request succeeded: a
/// token that may not write (a read-only scope, the metrics token), a new connection or a
/// refused request cannot make the shards wait for nothing more than once in a row.
fn may_command(first: &[u8]) -> bool {
    let method = first.split(|&b| b == b' ').next().unwrap_or_default();
    method != b"GET" && method != b"HEAD"
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
    // The last request that may command the shards was answered with success: its token may
    // write, so the next such request is announced to the shards ([`may_command`]).
    let mut wakes_shards = false;
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
                    // The console page and its assets: public, no token.
                    let viewer_port = app.borrow().viewer_addr().port();
                    let site = web::Site::Console { viewer_port };
                    if let Some(page) = web::answer(site, web::Ask::of(&req)) {
                        out.extend_from_slice(&page);
                        if !req.keep_alive {
                            break After::Close;
                        }
                        continue;
                    }
                    let response = super::handle(&app, &token, &req);
                    if let Some(response::After::CastsTo(group)) = response.after {
                        let written = App::casts_written(&app, group);
                        future::or(written, sleep(CAST_WAIT)).await;
                    }
                    if let Some(response::After::RecorderJob(ticket)) = response.after {
                        // The recorder thread has no waker: look every millisecond (bounded).
                        let deadline = std::time::Instant::now() + CAST_WAIT;
                        while !app.borrow().recorder_finished(ticket)
                            && std::time::Instant::now() < deadline
                        {
                            sleep(Duration::from_millis(1)).await;
                        }
                    }
                    authenticated |= response.status != 401;
                    if may_command(req.method.as_bytes()) {
                        wakes_shards = (200..300).contains(&response.status);
                    }
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
                    refused(&e).write(&mut out, false);
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
                if wakes_shards && started.is_none() && may_command(&chunk[..n]) {
                    app.borrow().wake_shards_ahead();
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_may_command_wake_the_shards() {
        for (first, wakes) in [
            (&b"POST /api/groups/g/messages HTTP/1.1\r\n"[..], true),
            (b"DELETE /api/polls/p HTTP/1.1\r\n", true),
            (b"PUT /api/x HTTP/1.1", true),
            (b"P", true),
            (b"\r\nGET / HTTP/1.1", true),
            (b"GET /api/stats HTTP/1.1\r\n", false),
            (b"HEAD /api/stats HTTP/1.1\r\n", false),
            (b"GET", false), // a request's method alone
            (b"HEAD", false),
            (b"POST", true),
        ] {
            assert_eq!(
                may_command(first),
                wakes,
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }

    #[test]
    fn refusals_map_to_statuses_and_codes() {
        for (e, status, code) in [
            (RequestError::BadRequest("x"), 400, "bad_request"),
            (RequestError::BodyTooLarge, 413, "body_too_large"),
            (RequestError::ExpectationFailed, 417, "expectation_failed"),
            (RequestError::HeadersTooLarge("x"), 431, "headers_too_large"),
            (RequestError::NotImplemented("x"), 501, "not_implemented"),
        ] {
            let r = refused(&e);
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
