//! Ad routes (issue 13): the ad library (`/api/ads`), a stream's program
//! (`/api/streams/{id}/program`) and its ad breaks (`/api/streams/{id}/breaks`).

use base64::Engine as _;
use serde_json::{json, Value};
use shards::hls_ads::AdSegment;

use super::response::{bad, method_not_allowed, not_found, Response};
use super::validate;
use crate::app::ads::{AdError, Program, Selector, VastSpec};
use crate::app::{unix_ms, App};

/// Longest break, in seconds.
const MAX_BREAK_S: u64 = 600;

/// The routes of this module, or `None` for a path it does not own.
pub fn route(app: &mut App, method: &str, path: &[&str], body: &[u8]) -> Option<Response> {
    Some(match (method, path) {
        ("GET", ["api", "ads"]) => {
            let mut ads: Vec<Value> = app.ads().map(|a| a.to_json()).collect();
            ads.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
            Response::json(200, json!({ "ads": ads }))
        }
        ("POST", ["api", "ads"]) => add_ad(app, body),
        (_, ["api", "ads"]) => method_not_allowed("GET, POST"),
        ("GET", ["api", "ads", id]) => match app.ad(id) {
            Some(a) => Response::json(200, a.to_json()),
            None => not_found("ad", id),
        },
        ("DELETE", ["api", "ads", id]) => match app.delete_ad(id) {
            Ok(()) => Response::json(200, json!({ "deleted": id })),
            Err(e) => error(e),
        },
        (_, ["api", "ads", _]) => method_not_allowed("GET, DELETE"),
        ("GET", ["api", "streams", id, "program"]) => match app.stream(id) {
            Some(_) => Response::json(200, program_json(app.program(id))),
            None => not_found("stream", id),
        },
        ("PUT", ["api", "streams", id, "program"]) => match parse_program(body) {
            Ok(p) => match app.set_program(id, p) {
                Ok(()) => Response::json(200, program_json(app.program(id))),
                Err(e) => error(e),
            },
            Err(e) => bad(e),
        },
        (_, ["api", "streams", _, "program"]) => method_not_allowed("GET, PUT"),
        ("GET", ["api", "streams", id, "breaks"]) => match app.stream(id) {
            Some(_) => Response::json(200, json!({ "breaks": app.breaks_of(id) })),
            None => not_found("stream", id),
        },
        ("POST", ["api", "streams", id, "breaks"]) => {
            let duration = validate::object(body).and_then(|o| {
                validate::only_fields(&o, &["duration_s"])?;
                o.get("duration_s")
                    .and_then(Value::as_u64)
                    .filter(|d| (1..=MAX_BREAK_S).contains(d))
                    .ok_or_else(|| format!("\"duration_s\" must be 1 to {MAX_BREAK_S} seconds"))
            });
            match duration {
                Ok(d) => match app.start_break(id, d * 1000, unix_ms()) {
                    Ok(b) => Response::json(201, b),
                    Err(e) => error(e),
                },
                Err(e) => bad(e),
            }
        }
        (_, ["api", "streams", _, "breaks"]) => method_not_allowed("GET, POST"),
        _ => return None,
    })
}

/// A broadcaster's message on its socket: `{"type":"break","duration_s":N}` starts a break
/// on its stream, answered `{"type":"break",...}` (the break) or `{"type":"error",...}`.
pub fn broadcaster_command(
    app: &mut App,
    stream: &str,
    text: &str,
) -> Option<shards::proto::Frame> {
    let answer = match validate::object(text.as_bytes()) {
        Ok(o) if o.get("type").and_then(Value::as_str) == Some("break") => {
            let duration = o
                .get("duration_s")
                .and_then(Value::as_u64)
                .filter(|d| (1..=MAX_BREAK_S).contains(d));
            match duration {
                Some(d) => match app.start_break(stream, d * 1000, unix_ms()) {
                    Ok(Value::Object(fields)) => {
                        let m = protocol::BroadcasterMessage::Break(protocol::AdBreak { fields });
                        return Some(crate::app::text_frame(&m.to_json()));
                    }
                    Ok(other) => other,
                    Err(e) => {
                        json!({"type": "error", "code": error(e.clone()).body["error"]["code"].clone(), "message": e.to_string()})
                    }
                },
                None => json!({"type": "error", "code": "bad_request",
                    "message": format!("\"duration_s\" must be 1 to {MAX_BREAK_S} seconds")}),
            }
        }
        Ok(_) => {
            json!({"type": "error", "code": "unknown_type", "message": "broadcasters may send {\"type\":\"break\",\"duration_s\":N}"})
        }
        Err(e) => json!({"type": "error", "code": "invalid_json", "message": e}),
    };
    let mut frame = Vec::new();
    netstack::ws::encode_frame(
        netstack::ws::OpCode::Text,
        answer.to_string().as_bytes(),
        &mut frame,
    );
    Some(frame.into())
}

fn error(e: AdError) -> Response {
    match e {
        AdError::NoStream(_) | AdError::NoAd(_) => Response::error(404, "not_found", e.to_string()),
        AdError::Exists(_) => Response::error(409, "exists", e.to_string()),
        AdError::NotLive(_) => Response::error(409, "not_live", e.to_string()),
        AdError::Invalid(_) => Response::error(400, "bad_request", e.to_string()),
        AdError::Io(_) => Response::error(500, "storage", e.to_string()),
    }
}

/// `POST /api/ads`: `{"id", "segments": [{"duration_ms", "data": base64 MPEG-TS}]}` or
/// `{"id", "recording": {"stream", "id"}}`.
fn add_ad(app: &mut App, body: &[u8]) -> Response {
    let parsed = validate::object(body).and_then(|o| {
        validate::only_fields(&o, &["id", "segments", "recording"])?;
        let id = validate::identifier(&o, "id")?;
        match (o.get("segments"), o.get("recording")) {
            (Some(Value::Array(items)), None) => {
                let segments = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let duration = s["duration_ms"]
                            .as_u64()
                            .and_then(|d| u32::try_from(d).ok());
                        let data = s["data"]
                            .as_str()
                            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
                        match (duration, data) {
                            (Some(duration_ms), Some(data)) => Ok(AdSegment {
                                duration_ms,
                                data: data.into(),
                            }),
                            _ => Err(format!(
                                "segments[{i}] needs \"duration_ms\" and \"data\" (base64 MPEG-TS)"
                            )),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((id, Ok(segments)))
            }
            (None, Some(Value::Object(r))) => {
                let stream = validate::identifier(r, "stream")?;
                let recording = validate::identifier(r, "id")?;
                Ok((id, Err((stream, recording))))
            }
            _ => Err(
                "give either \"segments\" (an array) or \"recording\" ({\"stream\", \"id\"})"
                    .into(),
            ),
        }
    });
    let now = unix_ms();
    let added = match parsed {
        Ok((id, Ok(segments))) => app.add_ad(id, segments, "upload".into(), now),
        Ok((id, Err((stream, recording)))) => app.ad_from_recording(id, &stream, &recording, now),
        Err(e) => return bad(e),
    };
    match added {
        Ok(ad) => Response::json(201, ad.to_json()),
        Err(e) => error(e),
    }
}

fn names(v: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= validate::MAX_VALUES => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| !s.is_empty() && s.len() <= validate::MAX_NAME)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{what} must list ad ids"))
            })
            .collect(),
        _ => Err(format!("{what} must be an array of ad ids")),
    }
}

/// `{"selectors": [{"match": {...}, "ads": [...]}], "default": [...], "slate": ID | null}`.
fn parse_program(body: &[u8]) -> Result<Program, String> {
    let o = validate::object(body)?;
    validate::only_fields(&o, &["selectors", "default", "slate", "vast"])?;
    let selectors = match o.get("selectors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.len() <= 64 => items
            .iter()
            .map(|s| {
                let m = s.get("match").ok_or("each selector needs \"match\"")?;
                Ok(Selector {
                    predicate: validate::predicate(m)?,
                    ads: names(s.get("ads"), "a selector's \"ads\"")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err("\"selectors\" must be an array of at most 64".into()),
    };
    let slate = match o.get("slate") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => return Err("\"slate\" must be an ad id or null".into()),
    };
    let vast = match o.get("vast") {
        None | Some(Value::Null) => None,
        Some(Value::Object(v)) => {
            validate::only_fields(v, &["url", "timeout_ms"])?;
            let url = validate::string(v, "url", 1024)?;
            let ip_literal = url
                .strip_prefix("http://")
                .and_then(|r| r.split('/').next())
                .is_some_and(|a| a.parse::<std::net::SocketAddr>().is_ok());
            if !ip_literal || url.bytes().any(|b| b <= b' ') {
                return Err(
                    "\"vast\".\"url\" must be http://IP:PORT/... (an address literal)".into(),
                );
            }
            let timeout_ms = match v.get("timeout_ms") {
                None => 500,
                Some(t) => t
                    .as_u64()
                    .filter(|t| (1..=10_000).contains(t))
                    .ok_or("\"vast\".\"timeout_ms\" must be 1 to 10000")?,
            };
            Some(VastSpec { url, timeout_ms })
        }
        _ => return Err("\"vast\" must be {\"url\", \"timeout_ms\"} or null".into()),
    };
    Ok(Program {
        selectors,
        default: names(o.get("default"), "\"default\"")?,
        slate,
        vast,
    })
}

fn program_json(p: Option<&Program>) -> Value {
    let p = p.cloned().unwrap_or_default();
    json!({
        "selectors": p.selectors.iter().map(|s| json!({
            "match": validate::predicate_json(&s.predicate),
            "ads": s.ads,
        })).collect::<Vec<_>>(),
        "default": p.default,
        "slate": p.slate,
        "vast": p.vast.map(|v| json!({"url": v.url, "timeout_ms": v.timeout_ms})),
    })
}
