//! Poll routes (`/api/polls`) and the consistency audits (`/api/audits`): parse, call the
//! application core, shape the answer. The core runs the polls and the audits.

use serde_json::{json, Value};

use super::poll_request;
use super::response::{bad, not_found, Response};
use crate::app::{unix_ms, App};

/// `POST /api/polls`: answered once the poll's opening cast is written on every shard.
pub fn create(app: &mut App, body: &[u8]) -> Response {
    match poll_request::parse_request(body) {
        Ok(poll) => match app.create_poll(poll, unix_ms()) {
            Ok(p) => Response {
                after: Some(super::response::After::CastsTo(p.audience)),
                ..Response::json(201, json!({"id": p.id, "closes_at": p.closes_at_ms}))
            },
            Err(e) => bad(e.to_string()),
        },
        Err(e) => bad(e),
    }
}

/// `GET /api/polls`: the polls in memory.
pub fn list(app: &App) -> Response {
    let polls: Vec<Value> = app.polls().map(|p| p.to_json()).collect();
    Response::json(200, json!({ "polls": polls }))
}

/// `GET /api/polls/{id}`: from memory, or from the store for older ones.
pub fn get(app: &App, id: &str) -> Response {
    match app.poll(id) {
        Some(p) => Response::json(200, p.to_json()),
        None => match app.stored_poll(id) {
            Ok(Some(stored)) => Response::json(200, stored),
            Err(e) => Response::error(500, "storage", e.to_string()),
            Ok(None) => not_found("poll", id),
        },
    }
}

/// `POST /api/polls/{id}/close`.
pub fn close(app: &mut App, id: &str) -> Response {
    match app.close_poll(id, unix_ms()) {
        Ok(state) => Response::json(202, json!({"id": id, "state": state.as_str()})),
        Err(_) => not_found("poll", id),
    }
}

/// `POST /api/audits`: starts a mirror audit on every shard.
pub fn start_audit(app: &mut App) -> Response {
    let id = app.start_audit();
    Response::json(202, json!({ "id": id, "shards": app.shards() }))
}

/// `GET /api/audits/{id}`.
pub fn audit(app: &App, id: &str) -> Response {
    let Some((n, a)) = id
        .parse::<u64>()
        .ok()
        .and_then(|n| app.audit(n).map(|a| (n, a)))
    else {
        return not_found("audit", id);
    };
    Response::json(
        200,
        json!({
            "id": n,
            "done": a.shards_reported == app.shards(),
            "shards_reported": a.shards_reported,
            "viewers_checked": a.viewers_checked,
            "mismatches": a.mismatches,
        }),
    )
}
