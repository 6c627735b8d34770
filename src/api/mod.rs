//! The operator API: HTTP/1.1 + JSON on the API address, every request authenticated with
//! `Authorization: Bearer <token>`. Handlers run on the application core and read or change
//! its state directly. See docs/api.md.
//!
//! - [`server`]: the transport (accept loop, connection cap, pipelined keep-alive
//!   connections on netstack's request parser).
//! - [`response`]: [`Response`], an answer and its encoding.
//! - [`validate`]: validation of request bodies (strict JSON: duplicate keys are refused).
//! - [`broadcaster`]: the broadcaster WebSocket session.
//! - [`scopes`]: API tokens and their scopes (read, operate, admin).
//! - [`tls`]: the API's TLS stream (netstack's sans-IO session behind `AsyncRead`/`AsyncWrite`).
//! - [`player`]: the player configuration routes.
//! - [`metrics`]: `GET /metrics`, the Prometheus exposition.
//! - [`remediation`]: remediation rules and events; [`sessions`]: viewing sessions, CDNs,
//!   distribution rules; [`ads`]: the ad library, programs and breaks.
//! - [`relay`]: the origin route other edges pull a live stream's window from.
//! - Here: authentication, routing, the route handlers and the broadcaster upgrade.

pub mod ads;
pub mod broadcaster;
pub mod metrics;
pub mod player;
pub mod poll_request;
pub mod polls;
pub mod refusals;
pub mod relay;
pub mod remediation;
pub mod response;
pub mod scopes;
pub mod server;
pub mod sessions;
pub mod tls;
pub mod validate;

use std::cell::RefCell;

use netstack::http::server::Request;
use serde_json::json;
use serde_json::Value;
use shards::profile::ViewerId;

use crate::app::{unix_ms, App, Group, GroupError, RebroadcastError, RecordingError};
pub use response::Response;
use response::{bad, method_not_allowed, not_found};
pub use server::serve;

/// Where broadcasters follow their stream's results over WebSocket.
pub const BROADCASTER_PATH: &str = "/v1/broadcaster";

/// Upgrades a broadcaster: token (header, or `?token=` for browsers, which cannot set
/// headers on a WebSocket), an existing `?stream=`, then results until either side closes.
async fn broadcaster<S: tls::Transport>(
    mut stream: S,
    app: &RefCell<App>,
    token: &str,
    req: &Request,
    rest: Vec<u8>,
) {
    use futures_lite::AsyncWriteExt;
    let refuse = |status: u16, reason: &str, message: &str| {
        let mut headers = vec![("Connection", "close")];
        if status == 401 {
            headers.push(("WWW-Authenticate", "Bearer"));
        }
        netstack::http::response(
            status,
            reason,
            &headers,
            "text/plain; charset=utf-8",
            format!("{message}\n").as_bytes(),
        )
    };
    let verdict = match req.upgrade() {
        Ok(req) => {
            let query = netstack::http::parse_query(&req.query);
            let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let given = req
                .authorization
                .as_deref()
                .and_then(bearer)
                .map(str::to_owned)
                .or_else(|| param("token"));
            let stream_id = param("stream").unwrap_or_default();
            let extra = app.borrow().config().api_tokens.clone();
            if given.is_none_or(|g| scopes::scope_of(&g, token, &extra).is_none()) {
                Err(refuse(401, "Unauthorized", "send the API token"))
            } else if app.borrow().stream(&stream_id).is_none() {
                Err(refuse(404, "Not Found", "no such stream (?stream=)"))
            } else if broadcasters_of(&app.borrow(), &stream_id)
                >= app.borrow().config().max_broadcasters_per_stream
            {
                Err(refuse(
                    429,
                    "Too Many Requests",
                    "too many broadcasters on this stream (max_broadcasters_per_stream)",
                ))
            } else {
                Ok((req.key, stream_id))
            }
        }
        Err(e) => Err(e.response()),
    };
    let (key, stream_id) = match verdict {
        Ok(v) => v,
        Err(response) => return response::close_after(stream, &response).await,
    };
    // Register before the first await: a results push from now on lands in the sink, after
    // the snapshot, so the broadcaster cannot miss an update while its 101 is written.
    let sink = std::rc::Rc::new(crate::app::sink::Sink::default());
    {
        let mut app = app.borrow_mut();
        if let Some(snapshot) = app.results_snapshot(&stream_id) {
            sink.push(snapshot);
        }
        app.add_broadcaster(stream_id.clone(), sink.clone());
    }
    let mut head = netstack::http::switching_protocols(&key);
    let hello = protocol::BroadcasterMessage::welcome(&stream_id).to_json();
    netstack::ws::encode_frame(netstack::ws::OpCode::Text, hello.as_bytes(), &mut head);
    if stream.write_all(&head).await.is_err() {
        sink.finish();
        return;
    }
    let on_text = |text: &str| ads::broadcaster_command(&mut app.borrow_mut(), &stream_id, text);
    broadcaster::session(stream, sink, rest, &on_text).await;
}

/// Broadcaster sockets open on `stream`.
fn broadcasters_of(app: &App, stream: &str) -> usize {
    app.broadcasters_of(stream)
}

/// The credentials of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 9110 11.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
use scopes::token_matches;

/// Authenticates (`token` is the admin token; `api_tokens` adds scoped ones), checks the
/// token's scope against the request, then routes.
pub fn handle(app: &RefCell<App>, token: &str, req: &Request) -> Response {
    let given = req.header_str("authorization").and_then(bearer);
    // GET /metrics also takes the read-only metrics token (issue 14); any API token reads it.
    if req.method == "GET" && req.path == "/metrics" {
        let app = app.borrow();
        let metrics_token = app.config().metrics_token.as_deref();
        let ok = given.is_some_and(|g| {
            scopes::scope_of(g, token, &app.config().api_tokens).is_some()
                || metrics_token.is_some_and(|m| scopes::token_matches(g, m))
        });
        return if ok {
            Response::prometheus(metrics::render(&app, unix_ms()))
        } else {
            Response::error(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (the API or metrics token)",
            )
        };
    }
    let scope =
        given.and_then(|given| scopes::scope_of(given, token, &app.borrow().config().api_tokens));
    let Some(scope) = scope else {
        return Response::error(
            401,
            "unauthorized",
            "send Authorization: Bearer <token> (see --api-token)",
        );
    };
    let needed = scopes::Scope::needed(&req.method, &req.path);
    if scope < needed {
        return Response::error(
            403,
            "forbidden",
            format!(
                "this token's scope ({}) does not allow {} {} (needs {})",
                scope.as_str(),
                req.method,
                req.path,
                needed.as_str()
            ),
        );
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let mut app = app.borrow_mut();
    if let Some(r) = sessions::route(&mut app, &req.method, &segments, &req.body) {
        return r;
    }
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "stats"]) => stats(&app),
        // The edges of the cluster (issue 17): `{"mode":"single"}` without NATS.
        ("GET", ["api", "cluster"]) => Response::json(200, app.cluster_json(unix_ms())),
        ("GET", ["api", "streams"]) => list_streams(&app),
        // Streams across edges (issue 17): what other edges pull from the origin.
        ("GET", ["api", "relay", stream, file]) => relay::get(&mut app, stream, file),
        (_, ["api", "relay", _, _]) => method_not_allowed("GET"),
        ("POST", ["api", "streams"]) => create_stream(&mut app, &req.body),
        ("POST", ["api", "streams", id, "key"]) => match app.rotate_key(id) {
            Ok(key) => Response::json(
                200,
                json!({"id": id, "stream_key": key, "publish_url": app.publish_url()}),
            ),
            Err(_) => not_found("stream", id),
        },
        // Player configuration (issue 14).
        ("GET", ["api", "streams", id, "config"]) => player::get(&app, id),
        ("PUT", ["api", "streams", id, "config"]) => player::put(&mut app, id, &req.body),
        // Recordings and rebroadcast (issue 12).
        ("GET", ["api", "streams", id, "recordings"]) => list_recordings(&app, id),
        ("DELETE", ["api", "streams", id, "recordings", rec]) => {
            match app.delete_recording(id, rec) {
                Ok(ticket) => Response {
                    after: ticket.map(response::After::RecorderJob),
                    ..Response::json(200, json!({ "deleted": rec }))
                },
                Err(e @ RecordingError::NotFound(_)) => {
                    Response::error(404, "not_found", e.to_string())
                }
                Err(e @ RecordingError::Active(_)) => Response::error(409, "active", e.to_string()),
            }
        }
        ("POST", ["api", "streams", id, "rebroadcast"]) => rebroadcast(&mut app, id, &req.body),
        (_, ["api", "streams", _, "rebroadcast"]) => method_not_allowed("POST"),
        (_, ["api", "streams", _, "recordings"]) => method_not_allowed("GET"),
        (_, ["api", "streams", _, "recordings", _]) => method_not_allowed("DELETE"),
        ("GET", ["api", "groups"]) => {
            let groups: Vec<Value> = app.groups().map(|g| group_json(&app, g)).collect();
            Response::json(200, json!({ "groups": groups }))
        }
        ("POST", ["api", "groups"]) => create_group(&mut app, &req.body),
        ("GET", ["api", "groups", id]) => match app.group(id) {
            Some(g) => {
                let mut body = group_json(&app, g);
                // Set by a remediation rule or PUT /api/groups/{id}/cdn; members' playlists use it.
                body["cdn"] = json!(app.group_cdn(g.id));
                Response::json(200, body)
            }
            None => not_found("group", id),
        },
        // Remediation rules and events (issue 14).
        ("GET", ["api", "rules"]) => remediation::list_rules(&app),
        ("POST", ["api", "rules"]) => remediation::add_rule(&mut app, &req.body),
        ("DELETE", ["api", "rules", id]) => remediation::delete_rule(&mut app, id),
        ("GET", ["api", "remediations"]) => remediation::events(&app),
        ("POST", ["api", "remediations", id, "revert"]) => remediation::revert(&mut app, id),
        // Telemetry over sliding windows (issue 14): O(window seconds) per request.
        ("GET", ["api", "telemetry"]) => telemetry_json(&app, "global"),
        ("GET", ["api", "groups", id, "telemetry"]) => telemetry_json(&app, id),
        ("DELETE", ["api", "groups", id]) => match app.delete_group(id) {
            Ok(()) => Response::json(200, json!({ "deleted": id })),
            Err(e @ GroupError::NotFound(_)) => Response::error(404, "not_found", e.to_string()),
            Err(e @ GroupError::BuiltIn(_)) => Response::error(409, "built_in", e.to_string()),
        },
        ("POST", ["api", "groups", id, "messages"]) => group_message(&mut app, id, &req.body),
        ("GET", ["api", "viewers", id]) => match find_viewer(&app, id) {
            Some(v) => Response::json(200, viewer_json(v)),
            None => not_found("viewer", id),
        },
        ("PUT", ["api", "viewers", id, "tags"]) => set_tags(&app, id, &req.body),
        ("POST", ["api", "polls"]) => polls::create(&mut app, &req.body),
        ("GET", ["api", "polls"]) => polls::list(&app),
        ("GET", ["api", "polls", id]) => polls::get(&app, id),
        ("POST", ["api", "polls", id, "close"]) => polls::close(&mut app, id),
        ("POST", ["api", "audits"]) => polls::start_audit(&mut app),
        ("GET", ["api", "audits", id]) => polls::audit(&app, id),
        (_, ["api", "stats" | "cluster"]) | (_, ["api", "viewers" | "audits", _]) => {
            method_not_allowed("GET")
        }
        (_, ["api", "streams" | "groups" | "polls"]) => method_not_allowed("GET, POST"),
        (_, ["api", "audits"]) => method_not_allowed("POST"),
        (_, ["api", "groups", _]) => method_not_allowed("GET, DELETE"),
        (_, ["api", "polls", _]) => method_not_allowed("GET"),
        (_, ["api", "polls", _, "close"])
        | (_, ["api", "groups", _, "messages"])
        | (_, ["api", "streams", _, "key"]) => method_not_allowed("POST"),
        (_, ["api", "viewers", _, "tags"]) => method_not_allowed("PUT"),
        _ => Response::error(
            404,
            "not_found",
            format!("no route for {} {}", req.method, req.path),
        ),
    }
}

fn stats(app: &App) -> Response {
    let snapshots = app.shard_snapshots();
    let queued = app.commands_queued();
    let shards: Vec<_> = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "shard": i,
                "connections": s.connections,
                "commands_queued": queued.get(i).copied().unwrap_or(0),
                "counters": s,
            })
        })
        .collect();
    let connections: u64 = snapshots.iter().map(|s| s.connections).sum();
    let groups: Vec<Value> = app
        .groups()
        .map(|g| json!({"id": g.key, "name": g.name, "size": g.size}))
        .collect();
    let resume = app.resume_stats();
    let store = app.store_stats();
    let ingest = app.ingest_stats();
    Response::json(
        200,
        json!({
            "connections": connections,
            "viewers": app.viewer_count(),
            "streams": app.stream_count(),
            "ingest": {
                "live": app.live_streams(),
                "refused_key": ingest.refused_key,
                "refused_busy": ingest.refused_busy,
                "refused_codec": ingest.refused_codec,
                "closed_bad": ingest.closed_bad,
                "dropped_samples": ingest.dropped_samples,
                "segments": ingest.segments,
                "segment_bytes": ingest.segment_bytes,
            },
            "relay": relay_json(app),
            "resume": {
                "departed": resume.departed,
                "departed_bytes": resume.departed_bytes,
                "dropped": resume.dropped,
            },
            "store": {
                "unsaved_polls": store.unsaved_polls,
                "queued_writes": store.queued_writes,
                "failed_writes": store.failed_writes,
            },
            "shards": shards,
            "groups": groups,
            "api": refusals::refusal_counts(),
        }),
    )
}

/// Streams across edges: relays here, and what this edge served other edges as an origin.
fn relay_json(app: &App) -> Value {
    let r = app.relay_stats();
    json!({
        "active": app.relays_active(),
        "started": r.started,
        "segments": r.segments,
        "bytes": r.bytes,
        "playlists": r.playlists,
        "failures": r.failures,
        "missed": r.missed,
        "served_segments": r.served_segments,
        "served_bytes": r.served_bytes,
    })
}

/// The API view of a group (its size summed over the edges of a cluster).
fn group_json(app: &App, g: &Group) -> Value {
    json!({
        "id": g.key,
        "name": g.name,
        "kind": g.kind.as_str(),
        "match": validate::predicate_json(&g.predicate),
        "size": app.cluster_group_size(g, unix_ms()),
        "created_ms": g.created_ms,
    })
}

fn stream_json(app: &App, s: &crate::app::Stream) -> Value {
    let audience = app.audience_size(s);
    json!({
        "id": s.id,
        "title": s.title,
        "group": format!("stream:{}", s.id),
        "audience": audience,
        "created_ms": s.created_ms,
        "state": s.state.as_str(),
        "live": s.state == crate::app::StreamState::Live,
        "bitrate_kbps": s.bitrate_kbps,
        "publisher": s.publisher.map(|a| a.to_string()),
        // Live on another edge of the cluster and relayed from it (issue 17).
        "relayed_from": app.relayed_from(&s.id),
        "scheduled_ms": app.scheduled_start(&s.id),
        "last_segment": app.last_segment(&s.id).map(|(sequence, completed_ms)| {
            json!({"sequence": sequence, "completed_ms": completed_ms})
        }),
    })
}

/// `POST /api/streams/{id}/rebroadcast {"recording": R}`.
fn rebroadcast(app: &mut App, stream: &str, body: &[u8]) -> Response {
    let recording = match validate::object(body).and_then(|o| {
        validate::only_fields(&o, &["recording"])?;
        validate::identifier(&o, "recording")
    }) {
        Ok(r) => r,
        Err(e) => return bad(e),
    };
    match app.start_rebroadcast(stream, &recording) {
        Ok(rb) => Response::json(
            202,
            json!({"stream": rb.turn.stream, "recording": rb.recording, "state": "live"}),
        ),
        Err(e @ (RebroadcastError::NoStream(_) | RebroadcastError::NoRecording(_))) => {
            Response::error(404, "not_found", e.to_string())
        }
        Err(e @ RebroadcastError::Busy(_)) => Response::error(409, "busy", e.to_string()),
    }
}

fn list_recordings(app: &App, stream: &str) -> Response {
    if app.stream(stream).is_none() {
        return not_found("stream", stream);
    }
    let list: Vec<Value> = app
        .recordings_of(stream)
        .map(|r| app.recording_json(r))
        .collect();
    Response::json(200, json!({ "recordings": list }))
}

fn list_streams(app: &App) -> Response {
    let streams: Vec<Value> = app.streams().map(|s| stream_json(app, s)).collect();
    Response::json(200, json!({ "streams": streams }))
}

fn create_stream(app: &mut App, body: &[u8]) -> Response {
    let parsed = validate::object(body).and_then(|obj| {
        validate::only_fields(&obj, &["id", "title", "scheduled_ms"])?;
        let id = validate::identifier(&obj, "id")?;
        let title = match obj.get("title") {
            None | Some(Value::Null) => None,
            Some(_) => Some(validate::string(&obj, "title", 200)?),
        };
        let scheduled = match obj.get("scheduled_ms") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or("\"scheduled_ms\" must be Unix milliseconds")?,
            ),
        };
        Ok((id, title, scheduled))
    });
    let (id, title, scheduled) = match parsed {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let now = unix_ms();
    match app.add_stream(id, title, now) {
        Ok((s, key)) => {
            if let Some(start) = scheduled {
                app.schedule_stream(&s.id, start, now);
            }
            let mut body = stream_json(app, &s);
            body["stream_key"] = json!(key);
            body["publish_url"] = json!(app.publish_url());
            Response::json(201, body)
        }
        Err(e) => Response::error(409, "exists", e.to_string()),
    }
}

fn create_group(app: &mut App, body: &[u8]) -> Response {
    let parsed = validate::object(body).and_then(|obj| {
        validate::only_fields(&obj, &["name", "match"])?;
        let name = validate::string(&obj, "name", validate::MAX_NAME)?;
        let predicate = validate::predicate(obj.get("match").ok_or("\"match\" is required")?)?;
        Ok((name, predicate))
    });
    match parsed {
        Ok((name, predicate)) => {
            let custom = app
                .groups()
                .filter(|g| g.kind == crate::app::GroupKind::Custom)
                .count();
            if custom >= app.config().max_groups {
                return Response::error(
                    429,
                    "too_many_groups",
                    format!("{custom} custom groups exist, the most allowed (max_groups); delete one first"),
                );
            }
            let key = app.add_custom_group(name, predicate, unix_ms());
            let group = app.group(&key).map(|g| group_json(app, g));
            Response::json(201, group.unwrap_or(Value::Null))
        }
        Err(e) => bad(e),
    }
}

fn group_message(app: &mut App, id: &str, body: &[u8]) -> Response {
    let payload = match validate::object(body).and_then(|mut obj| {
        validate::only_fields(&obj, &["payload"])?;
        obj.remove("payload")
            .ok_or_else(|| "\"payload\" is required".to_owned())
    }) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    match app.cast(id, &payload) {
        Ok(_) => {
            let members = app
                .group(id)
                .map_or(0, |g| app.cluster_group_size(g, unix_ms()));
            Response::json(202, json!({ "group": id, "members": members }))
        }
        Err(_) => not_found("group", id),
    }
}

fn find_viewer<'a>(app: &'a App, id: &str) -> Option<&'a crate::app::Viewer> {
    ViewerId::parse(id).and_then(|v| app.viewer(v))
}

fn viewer_json(v: &crate::app::Viewer) -> Value {
    let p = &v.profile;
    json!({
        "id": p.viewer.to_string(),
        "shard": v.at().shard,
        "peer": p.peer.to_string(),
        "os": p.os.as_str(),
        "browser": p.browser.as_str(),
        "device": p.device.as_str(),
        "language": p.language,
        "region": p.region,
        "country": p.country,
        "stream": p.stream,
        "app_version": p.app_version,
        "hardware": p.hardware,
        "tags": p.tags(),
        "params": p.params.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "connected_at_ms": p.connected_at_ms,
    })
}

/// `{"group": id, "windows": {"10s": {...}, ...}}` for a group key.
fn telemetry_json(app: &App, key: &str) -> Response {
    match app.group(key) {
        Some(g) => Response::json(
            200,
            json!({"group": key, "windows": app.group_telemetry(g.id, unix_ms())}),
        ),
        None => not_found("group", key),
    }
}

fn set_tags(app: &App, id: &str, body: &[u8]) -> Response {
    let tags = validate::object(body).and_then(|obj| {
        validate::only_fields(&obj, &["tags"])?;
        let Some(Value::Array(items)) = obj.get("tags") else {
            return Err("\"tags\" must be an array of strings".to_owned());
        };
        if items.len() > validate::MAX_VALUES {
            return Err(format!("at most {} tags", validate::MAX_VALUES));
        }
        items
            .iter()
            .map(|t| match t.as_str().map(str::trim) {
                Some(s) if !s.is_empty() && s.chars().count() <= validate::MAX_NAME => {
                    Ok(Box::<str>::from(s))
                }
                _ => Err(format!(
                    "each tag must be a string of 1 to {} characters",
                    validate::MAX_NAME
                )),
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let tags = match tags {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let Some(viewer) = ViewerId::parse(id) else {
        return not_found("viewer", id);
    };
    match app.set_tags(viewer, tags.clone()) {
        Some(()) => Response::json(202, json!({ "viewer": id, "tags": tags })),
        None => not_found("viewer", id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(token_matches("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!token_matches("abcdefghijklmnoq", "abcdefghijklmnop"));
        assert!(!token_matches("abc", "abcdefghijklmnop"));
        assert!(!token_matches("", "abcdefghijklmnop"));
    }
}
