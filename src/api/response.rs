//! One answer of the operator API: a status, a JSON body and the headers that go with them,
//! its encoding on the wire, and the bounded writes that deliver it (with the linger before
//! a close). Shared by the router (`api`), which builds answers and refuses broadcaster
//! upgrades, and the transport (`api::server`), which writes them; it depends on neither.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::timer::sleep;
use serde_json::Value;
use shards::proto::GroupId;

use super::tls::Transport;

/// Time a write may take before the peer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last response of a closing connection: how long its unread input is drained,
/// so the close is a FIN the client reads after the response, not a reset that destroys it.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes drained while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// A media body and its content type (boxed in [`Response`]: most answers have none).
pub type Media = (&'static str, Arc<[u8]>);

/// What an answer waits for before it is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum After {
    /// Every shard has written the casts to this group sent so far: a poll is answered once
    /// every shard knows it, so a vote sent right after the answer is counted.
    CastsTo(GroupId),
    /// The recorder thread has carried out this job: a deleted recording's files are gone
    /// when `DELETE` answers, so a request for them right after gets 404.
    RecorderJob(u64),
}

/// One response: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// What the answer waits for (at most `api::server::CAST_WAIT`).
    pub after: Option<After>,
    /// The `Retry-After` header (seconds) of a 429.
    pub retry_after: Option<u64>,
    /// A plain-text body (the Prometheus exposition) sent instead of `body`.
    pub text: Option<String>,
    /// A media body (a playlist or segment other edges pull) and its content type, sent
    /// instead of `body`.
    pub media: Option<Box<Media>>,
}

impl Response {
    pub fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            body,
            allow: None,
            after: None,
            retry_after: None,
            text: None,
            media: None,
        }
    }

    /// A 200 with a media body (`application/vnd.apple.mpegurl`, `video/mp2t`).
    pub fn media(content_type: &'static str, body: Arc<[u8]>) -> Response {
        Response {
            media: Some(Box::new((content_type, body))),
            ..Response::json(200, Value::Null)
        }
    }

    /// A 200 with the Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(text: String) -> Response {
        Response {
            text: Some(text),
            ..Response::json(200, Value::Null)
        }
    }

    /// `{"error":{"code":...,"message":...}}` with `status`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Response {
        Response::json(
            status,
            serde_json::json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    /// Whether the connection may carry another request after this answer: not after a 401
    /// (an unauthenticated client gets one answer) nor after a 5xx.
    pub fn keeps_connection(&self) -> bool {
        self.status != 401 && self.status < 500
    }

    /// Appends the encoded response to `out`.
    pub fn write(&self, out: &mut Vec<u8>, keep_alive: bool) {
        let (body, content_type) = match (&self.text, &self.media) {
            (_, Some(media)) => (media.1.to_vec(), media.0),
            (Some(text), None) => (
                text.as_bytes().to_vec(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (None, None) => {
                let mut body = serde_json::to_vec(&self.body).unwrap_or_default();
                body.push(b'\n');
                (body, "application/json")
            }
        };
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
        netstack::http::write_response(out, self.status, keep_alive, &headers, content_type, &body);
    }
}

/// Writes `bytes`, giving up after [`WRITE_TIMEOUT`] (a client that stopped reading).
pub async fn write_bounded<S: Transport>(stream: &mut S, bytes: &[u8]) -> bool {
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

/// 404 `not_found` for a missing `what` named `id`.
pub fn not_found(what: &str, id: &str) -> Response {
    Response::error(404, "not_found", format!("no {what} \"{id}\""))
}

/// 400 `bad_request`.
pub fn bad(message: impl Into<String>) -> Response {
    Response::error(400, "bad_request", message)
}

/// 405 with the `Allow` methods.
pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = Response::error(
        405,
        "method_not_allowed",
        format!("method not allowed on this path (allowed: {allow})"),
    );
    r.allow = Some(allow);
    r
}
