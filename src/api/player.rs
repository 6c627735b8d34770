//! Player configuration routes: validation of a `PUT /api/streams/{id}/config` body and the
//! `GET`/`PUT` handlers (issue 14). The application core keeps and pushes the configuration.

use serde_json::{json, Map, Value};

use super::response::Response;
use super::validate;
use crate::app::{unix_ms, App};

/// The keys an operator may set.
pub const FIELDS: &[&str] = &["title", "logo_url", "max_bitrate_kbps", "fields"];
/// Largest `fields` object, as compact JSON.
pub const MAX_FIELDS_BYTES: usize = 4096;
const MAX_URL: usize = 500;
const MAX_TITLE: usize = 200;

/// Checks a configuration body; absent or `null` keys are left out. The error names the
/// problem.
pub fn parse_settings(body: &[u8]) -> Result<Map<String, Value>, String> {
    let obj = validate::object(body)?;
    validate::only_fields(&obj, FIELDS)?;
    let mut out = Map::new();
    let present = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    if present("title") {
        out.insert(
            "title".into(),
            json!(validate::string(&obj, "title", MAX_TITLE)?),
        );
    }
    if present("logo_url") {
        let url = validate::string(&obj, "logo_url", MAX_URL)?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("\"logo_url\" must be an http:// or https:// URL".into());
        }
        out.insert("logo_url".into(), json!(url));
    }
    if present("max_bitrate_kbps") {
        match obj["max_bitrate_kbps"].as_u64() {
            Some(n @ 1..=1_000_000) => out.insert("max_bitrate_kbps".into(), json!(n)),
            _ => return Err("\"max_bitrate_kbps\" must be an integer from 1 to 1000000".into()),
        };
    }
    if present("fields") {
        let fields = &obj["fields"];
        if !fields.is_object() {
            return Err("\"fields\" must be an object".into());
        }
        if fields.to_string().len() > MAX_FIELDS_BYTES {
            return Err(format!(
                "\"fields\" must be at most {MAX_FIELDS_BYTES} bytes of JSON"
            ));
        }
        out.insert("fields".into(), fields.clone());
    }
    Ok(out)
}

/// `GET /api/streams/{id}/config`.
pub fn get(app: &App, id: &str) -> Response {
    match app.player_config(id, unix_ms()) {
        Some((version, config)) => Response::json(
            200,
            json!({"stream": id, "version": version, "config": config}),
        ),
        None => Response::error(404, "not_found", format!("no stream \"{id}\"")),
    }
}

/// `PUT /api/streams/{id}/config`: replaces the configuration and pushes it to the audience.
pub fn put(app: &mut App, id: &str, body: &[u8]) -> Response {
    let settings = match parse_settings(body) {
        Ok(s) => s,
        Err(e) => return Response::error(400, "bad_request", e),
    };
    match app.set_player_config(id, settings, unix_ms()) {
        Ok((version, config)) => Response::json(
            200,
            json!({"stream": id, "version": version, "config": config}),
        ),
        Err(e) => Response::error(404, "not_found", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = parse_settings(
            br#"{"title":" Main ","logo_url":"https://x/l.png","max_bitrate_kbps":1500,"fields":{"a":[1]}}"#,
        )
        .unwrap();
        assert_eq!(ok["title"], "Main");
        assert_eq!(ok["fields"]["a"][0], 1);
        assert!(parse_settings(br#"{"title":null}"#).unwrap().is_empty());
        for bad in [
            &br#"{"colour":"red"}"#[..],
            br#"{"logo_url":"javascript:alert(1)"}"#,
            br#"{"max_bitrate_kbps":0}"#,
            br#"{"max_bitrate_kbps":1.5}"#,
            br#"{"fields":[1]}"#,
            br#"[]"#,
        ] {
            assert!(
                parse_settings(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(r#"{{"fields":{{"k":"{}"}}}}"#, "x".repeat(MAX_FIELDS_BYTES));
        assert!(parse_settings(big.as_bytes()).is_err());
    }
}
