//! The operator API: HTTP/1.1 + JSON on the API address, every request authenticated with
//! `Authorization: Bearer <token>`. Handlers run on the application core and read or change
//! its state directly. See docs/api.md.

pub mod http;

use std::cell::RefCell;
use std::rc::Rc;

use glommio::net::TcpListener;
use serde_json::json;

use crate::app::App;
use http::{Request, Response};

/// Accepts API connections until the task is dropped.
pub async fn serve(listener: TcpListener, app: Rc<RefCell<App>>, token: Rc<str>) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let app = app.clone();
                let token = token.clone();
                glommio::spawn_local(async move {
                    http::serve_connection(stream, |req| handle(&app, &token, req)).await
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "operator API accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Compares without an early exit, so response time does not reveal a token prefix.
fn token_matches(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Authenticates, then routes.
pub fn handle(app: &RefCell<App>, token: &str, req: &Request) -> Response {
    let authorized = req
        .authorization
        .as_deref()
        .and_then(|h| h.strip_prefix("Bearer "))
        .is_some_and(|given| token_matches(given.trim(), token));
    if !authorized {
        return Response::error(
            401,
            "unauthorized",
            "send Authorization: Bearer <token> (see --api-token)",
        );
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "stats"]) => stats(&app.borrow()),
        (_, ["api", "stats"]) => method_not_allowed(),
        _ => Response::error(
            404,
            "not_found",
            format!("no route for {} {}", req.method, req.path),
        ),
    }
}

fn method_not_allowed() -> Response {
    Response::error(405, "method_not_allowed", "method not allowed on this path")
}

fn stats(app: &App) -> Response {
    let shards: Vec<_> = app
        .shard_snapshots()
        .into_iter()
        .enumerate()
        .map(|(i, s)| json!({"shard": i, "connections": s.connections, "counters": s}))
        .collect();
    let connections: u64 = app.shard_snapshots().iter().map(|s| s.connections).sum();
    Response::json(
        200,
        json!({
            "connections": connections,
            "viewers": app.viewers.len(),
            "shards": shards,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!token_matches("abcdefghijklmnoq", "abcdefghijklmnop"));
        assert!(!token_matches("abc", "abcdefghijklmnop"));
        assert!(!token_matches("", "abcdefghijklmnop"));
    }
}
