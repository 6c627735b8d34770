//! Viewing-session routes (issue 13): `GET /api/sessions/{id}`, a stream's sessions by state,
//! the configured CDN resources, a group's CDN and a stream's distribution rules.

use serde_json::{json, Value};

use super::response::{bad, method_not_allowed, not_found, Response};
use super::validate;
use crate::app::distribution::Distribution;
use crate::app::sessions::{CdnError, Session};
use crate::app::App;

/// The routes of this module, or `None` for a path it does not own.
pub fn route(app: &mut App, method: &str, path: &[&str], body: &[u8]) -> Option<Response> {
    Some(match (method, path) {
        ("GET", ["api", "sessions", id]) => match app.session(id) {
            Some(s) => {
                let mut body = session_json(s);
                body["beacons"] = app.session_beacons(id);
                Response::json(200, body)
            }
            None => not_found("session", id),
        },
        (_, ["api", "sessions", _]) => method_not_allowed("GET"),
        ("GET", ["api", "streams", id, "sessions"]) => {
            if app.stream(id).is_none() {
                return Some(not_found("stream", id));
            }
            let counts: serde_json::Map<String, Value> = app
                .session_counts(id)
                .into_iter()
                .map(|(state, n)| (state.to_owned(), json!(n)))
                .collect();
            Response::json(200, json!({"stream": id, "sessions": counts}))
        }
        (_, ["api", "streams", _, "sessions"]) => method_not_allowed("GET"),
        ("GET", ["api", "cdns"]) => {
            let cdns: Vec<Value> = app
                .config()
                .cdns
                .iter()
                .map(|c| json!({"name": c.name, "base": c.base, "weight": c.weight, "regions": c.regions}))
                .collect();
            Response::json(200, json!({ "cdns": cdns }))
        }
        (_, ["api", "cdns"]) => method_not_allowed("GET"),
        ("PUT", ["api", "groups", id, "cdn"]) => set_group_cdn(app, id, body),
        ("GET", ["api", "streams", id, "distribution"]) => match app.stream(id) {
            Some(_) => Response::json(200, app.distribution(id).to_json()),
            None => not_found("stream", id),
        },
        ("PUT", ["api", "streams", id, "distribution"]) => {
            let rules = validate::object(body).and_then(|o| Distribution::from_json(&o));
            match rules {
                Ok(d) => {
                    if app.set_distribution(id, d) {
                        Response::json(200, app.distribution(id).to_json())
                    } else {
                        not_found("stream", id)
                    }
                }
                Err(e) => bad(e),
            }
        }
        (_, ["api", "streams", _, "distribution"]) => method_not_allowed("GET, PUT"),
        (_, ["api", "groups", _, "cdn"]) => method_not_allowed("PUT"),
        _ => return super::ads::route(app, method, path, body),
    })
}

/// `PUT /api/groups/{id}/cdn {"cdn": NAME | null}`.
fn set_group_cdn(app: &mut App, key: &str, body: &[u8]) -> Response {
    let cdn = validate::object(body).and_then(|o| {
        validate::only_fields(&o, &["cdn"])?;
        match o.get("cdn") {
            Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(Some(s.clone())),
            _ => Err("\"cdn\" must be a configured CDN name, \"ovation\", or null".to_owned()),
        }
    });
    let cdn = match cdn {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    match app.set_group_cdn(key, cdn.clone()) {
        Ok(_) => Response::json(200, json!({"group": key, "cdn": cdn})),
        Err(e @ CdnError::NoGroup(_)) => Response::error(404, "not_found", e.to_string()),
        Err(e @ CdnError::NoCdn(_)) => Response::error(400, "unknown_cdn", e.to_string()),
    }
}

/// The API view of a session.
pub fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id,
        "viewer": s.viewer.to_string(),
        "stream": s.stream,
        "state": s.state.as_str(),
        "created_ms": s.created_ms,
        "last_fetch_ms": s.last_fetch_ms,
        "ended_ms": s.ended_ms,
        "end_reason": s.end_reason,
        "playlists": s.playlists,
        "segments": s.segments,
        "bytes": s.bytes,
        "cdn": s.cdn,
    })
}
