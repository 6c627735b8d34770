//! Player configuration (issue 14): `PUT /api/streams/{id}/config` is pushed to the stream's
//! audience as `{"type":"config",...}`, a viewer who starts watching gets the current one,
//! and streams registered with `scheduled_ms` are listed as upcoming broadcasts.

mod common;

use common::*;
use serde_json::json;

#[test]
fn config_is_pushed_on_change_and_sent_on_watch() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    let (status, _) = server.api(
        "POST",
        "/api/streams",
        Some(&json!({"id": "main", "title": "Main stage"})),
    );
    assert_eq!(status, 201);
    let (status, body) = server.api(
        "POST",
        "/api/streams",
        Some(&json!({"id": "finals", "title": "The finals", "scheduled_ms": 4_000_000_000_000u64})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["scheduled_ms"], 4_000_000_000_000u64);

    // A viewer of main hears of the scheduled finals on watch, before any setting exists.
    let (mut first, _) = connect(&server.url(""), None);
    send_json(&mut first, &json!({"type": "watch", "stream": "main"}));
    let c = next_of_type(&mut first, "config");
    assert_eq!(c["stream"], "main");
    assert_eq!(
        c["config"],
        json!({"upcoming": [{"stream": "finals", "title": "The finals", "scheduled_ms": 4_000_000_000_000u64}]})
    );
    let v0 = c["version"].as_u64().unwrap();

    let settings = json!({"title": "Main stage", "logo_url": "https://example.com/l.png", "fields": {"sponsor": "ACME"}});
    let (status, put) = server.api("PUT", "/api/streams/main/config", Some(&settings));
    assert_eq!(status, 200, "{put}");
    let pushed = next_of_type(&mut first, "config");
    assert!(pushed["version"].as_u64().unwrap() > v0);
    assert_eq!(pushed["version"], put["version"]);
    assert_eq!(pushed["config"]["logo_url"], "https://example.com/l.png");
    assert_eq!(pushed["config"]["fields"]["sponsor"], "ACME");
    assert_eq!(pushed["config"]["upcoming"][0]["stream"], "finals");

    // A later viewer gets the same configuration when it starts watching.
    let (mut late, _) = connect(&server.url(""), None);
    send_json(&mut late, &json!({"type": "watch", "stream": "main"}));
    let got = next_of_type(&mut late, "config");
    assert_eq!(got["config"], pushed["config"]);
    let (_, read) = server.api("GET", "/api/streams/main/config", None);
    assert_eq!(read["config"], pushed["config"]);

    let (status, e) = server.api(
        "PUT",
        "/api/streams/main/config",
        Some(&json!({"logo_url": "ftp://x"})),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = server.api("PUT", "/api/streams/nope/config", Some(&json!({})));
    assert_eq!(status, 404);
    let (status, _) = server.api("GET", "/api/streams/nope/config", None);
    assert_eq!(status, 404);
    let (status, _) = server.api(
        "POST",
        "/api/streams",
        Some(&json!({"id": "x", "scheduled_ms": "soon"})),
    );
    assert_eq!(status, 400);
}
