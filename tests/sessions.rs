//! Viewing sessions end to end (issue 13): a real ffmpeg publish, viewers over WebSocket, and
//! their signed per-session playlists fetched over loopback and parsed with `m3u8-rs`.

mod common;

use std::time::Duration;

use common::hls::{get, param, target, with_param};
use common::media::{wait_for, Publisher};
use common::*;
use serde_json::{json, Value};

const KEY: &str = "sessions-test-key-0123456789abcdef";

/// Starts a server with a configuration file (unique per test) plus flags.
fn server_with(config: &str, flags: &[&str]) -> Server {
    let path = std::env::temp_dir().join(format!(
        "ovation-sessions-{}-{}.toml",
        std::process::id(),
        unique()
    ));
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    let server = Server::start(&args);
    let _ = std::fs::remove_file(&path);
    server
}

fn create_stream(server: &Server, id: &str) -> String {
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({ "id": id })));
    assert_eq!(status, 201, "{body}");
    body["stream_key"].as_str().unwrap().to_owned()
}

/// A viewer (query string and User-Agent given) watching `stream`: its endpoint once live.
fn watcher(server: &Server, query: &str, ua: &str, stream: &str) -> (Ws, Value) {
    let (mut ws, _) = connect(&server.url(query), Some(ua));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(common::media::MEDIA_WAIT)).unwrap();
    }
    send_json(&mut ws, &json!({"type": "watch", "stream": stream}));
    let endpoint = next_of_type(&mut ws, "endpoint");
    (ws, endpoint)
}

fn playlist(text: &str) -> m3u8_rs::MediaPlaylist {
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist ({other:?}): {text}"),
    }
}

/// The session's playlist once it lists a segment.
fn first_playlist(server: &Server, url: &str) -> m3u8_rs::MediaPlaylist {
    wait_for("a first segment", || {
        let r = get(server.viewer, &target(url));
        (r.status == 200).then(|| playlist(&r.text()))
    })
}

fn session(server: &Server, id: &str) -> Value {
    let (status, body) = server.api("GET", &format!("/api/sessions/{id}"), None);
    assert_eq!(status, 200, "{body}");
    body
}

const UA_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const UA_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

#[test]
fn signed_session_playlists_cdns_and_states() {
    let server = server_with(
        &format!(
            r#"
            session_key = "{KEY}"
            [[cdns]]
            name = "edge-eu"
            base = "http://127.0.0.1:9/eu"
            regions = ["EU"]
            [[cdns]]
            name = "backup"
            base = "http://127.0.0.1:9/backup/"
            weight = 0
            "#
        ),
        &["--shards", "2", "--session-stall-targets", "1"],
    );
    let key = create_stream(&server, "main");
    create_stream(&server, "other");
    let (_status, cdns) = server.api("GET", "/api/cdns", None);
    assert_eq!(cdns["cdns"][0]["name"], "edge-eu", "{cdns}");
    let publisher = Publisher::start(server.rtmp, &key, 30);
    wait_for("main to go live", || {
        let (_, s) = server.api("GET", "/api/streams", None);
        (s["streams"][0]["state"] == "live").then_some(())
    });

    // An iPhone in region EU gets the EU edge; an Android elsewhere gets ovation itself.
    let (_eu, eu) = watcher(&server, "?region=EU", UA_IOS, "main");
    let (mut us_ws, us) = watcher(&server, "?region=US", UA_ANDROID, "main");
    let (eu_url, us_url) = (eu["url"].as_str().unwrap(), us["url"].as_str().unwrap());
    let (eu_id, us_id) = (
        eu["session"].as_str().unwrap(),
        us["session"].as_str().unwrap(),
    );
    assert_ne!(eu_id, us_id);
    for (url, id) in [(eu_url, eu_id), (us_url, us_id)] {
        assert!(
            url.starts_with(&format!(
                "http://{}/hls/main/index.m3u8?session={id}&exp=",
                server.viewer
            )),
            "{url}"
        );
        assert_eq!(param(url, "sig").len(), 64, "{url}");
    }
    assert_eq!(session(&server, eu_id)["state"], "created");

    let eu_list = first_playlist(&server, eu_url);
    for s in &eu_list.segments {
        assert!(
            s.uri.starts_with("http://127.0.0.1:9/eu/hls/main/")
                && s.uri.ends_with(&format!(".ts?session={eu_id}")),
            "{}",
            s.uri
        );
    }
    let us_list = first_playlist(&server, us_url);
    let first = &us_list.segments[0].uri;
    assert!(
        first.ends_with(&format!(".ts?session={us_id}")) && !first.contains("://"),
        "{first}"
    );
    assert_eq!(session(&server, eu_id)["cdn"], "edge-eu");
    assert_eq!(session(&server, us_id)["cdn"], "ovation");

    // The Android viewer fetches a segment from ovation: its session plays, bytes counted.
    let seg = get(server.viewer, &format!("/hls/main/{first}"));
    assert_eq!(seg.status, 200, "{}", seg.head);
    let playing = wait_for("the session to play", || {
        let s = session(&server, us_id);
        (s["state"] == "playing").then_some(s)
    });
    assert_eq!(playing["bytes"], seg.body.len() as u64, "{playing}");
    assert_eq!(playing["segments"], 1);
    assert_eq!(playing["stream"], "main");
    // Nothing fetched for a target duration (stall_targets 1): stalled, while EU is created.
    wait_for("the session to stall", || {
        (session(&server, us_id)["state"] == "stalled").then_some(())
    });
    let (_, counts) = server.api("GET", "/api/streams/main/sessions", None);
    assert_eq!(counts["sessions"]["stalled"], 1, "{counts}");
    assert_eq!(counts["sessions"]["created"], 1, "{counts}");

    // Forged, expired, cross-session and unknown-session URLs.
    let bad_sig = with_param(us_url, "sig", &"0".repeat(64));
    let later = with_param(
        us_url,
        "exp",
        &(param(us_url, "exp").parse::<u64>().unwrap() + 1).to_string(),
    );
    let cross = with_param(us_url, "session", eu_id);
    let signer = shards::session_sign::SessionKey::new(KEY.as_bytes());
    let past = 1_000_000_000u64;
    let expired = with_param(
        &with_param(us_url, "exp", &past.to_string()),
        "sig",
        &signer.sign(us_id, "main", past),
    );
    let far = 99_999_999_999u64;
    let unknown = with_param(
        &with_param(
            &with_param(us_url, "session", "feedfacefeedface"),
            "exp",
            &far.to_string(),
        ),
        "sig",
        &signer.sign("feedfacefeedface", "main", far),
    );
    let other_stream = us_url.replace("/hls/main/", "/hls/other/");
    for (what, url, status) in [
        ("forged", &bad_sig, 403),
        ("a later expiry", &later, 403),
        ("another session", &cross, 403),
        ("expired", &expired, 403),
        ("unknown session", &unknown, 404),
        ("another stream", &other_stream, 503),
    ] {
        let r = get(server.viewer, &target(url));
        assert_eq!(r.status, status, "{what}: {}", r.text());
    }
    assert!(get(server.viewer, &target(&expired))
        .text()
        .contains("expired"));

    // The Android viewers' group moves to the backup CDN: its next playlist points there.
    let (status, group) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "android", "match": {"os": ["android"]}})),
    );
    assert_eq!(status, 201, "{group}");
    let gid = group["id"].as_str().unwrap();
    let path = format!("/api/groups/{gid}/cdn");
    let (status, refused) = server.api("PUT", &path, Some(&json!({"cdn": "nowhere"})));
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("unknown_cdn")),
        "{refused}"
    );
    let (status, _) = server.api("PUT", &path, Some(&json!({"cdn": "backup"})));
    assert_eq!(status, 200);
    wait_for("the backup CDN in the next playlist", || {
        let p = playlist(&get(server.viewer, &target(us_url)).text());
        p.segments[0]
            .uri
            .starts_with("http://127.0.0.1:9/backup/hls/main/")
            .then_some(())
    });
    assert_eq!(session(&server, us_id)["cdn"], "backup");
    let eu_again = playlist(&get(server.viewer, &target(eu_url)).text());
    assert!(
        eu_again.segments[0]
            .uri
            .starts_with("http://127.0.0.1:9/eu/"),
        "others keep theirs"
    );
    let (_, g) = server.api("GET", &format!("/api/groups/{gid}"), None);
    assert_eq!(g["cdn"], "backup");

    // Watching another stream ends the session; its URL is 404 from then on.
    send_json(&mut us_ws, &json!({"type": "watch", "stream": "other"}));
    let ended = wait_for("the session to end", || {
        let s = session(&server, us_id);
        (s["state"] == "ended").then_some(s)
    });
    assert_eq!(ended["end_reason"], "left");
    wait_for("the ended session's playlist to be gone", || {
        (get(server.viewer, &target(us_url)).status == 404).then_some(())
    });
    let (status, _) = server.api("GET", "/api/sessions/nope", None);
    assert_eq!(status, 404);
    drop(publisher);
    let _ = Duration::ZERO;
}

/// A `watch` outside a stream's distribution rules gets `not_entitled` and no session; the
/// rules survive a restart.
#[test]
fn distribution_rules_refuse_watch_without_a_session() {
    let dir = std::env::temp_dir().join(format!(
        "ovation-test-distribution-{}-{}",
        std::process::id(),
        unique()
    ));
    let mut server = Server::start_in(&["--shards", "2"], dir.clone());
    server.keep_data = true;
    create_stream(&server, "gated");
    let rules = json!({"regions": ["eu"], "devices": ["mobile"], "entitlement": "premium"});
    let (status, stored) = server.api("PUT", "/api/streams/gated/distribution", Some(&rules));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["regions"],
        json!(["EU"]),
        "normalised like group predicates"
    );
    let (status, refused) = server.api(
        "PUT",
        "/api/streams/gated/distribution",
        Some(&json!({"country": ["HU"]})),
    );
    assert_eq!(status, 400, "{refused}");

    let refusal = |query: &str, ua: &str| -> Value {
        let (mut ws, _) = connect(&server.url(query), Some(ua));
        send_json(&mut ws, &json!({"type": "watch", "stream": "gated"}));
        next_json(&mut ws)
    };
    // Wrong region, wrong device, and right both without the entitlement tag.
    for (query, ua, needle) in [
        ("?region=US", UA_IOS, "region"),
        (
            "?region=EU",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "device",
        ),
        ("?region=EU", UA_ANDROID, "entitlement"),
    ] {
        let error = refusal(query, ua);
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["code"], "not_entitled", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let (_, counts) = server.api("GET", "/api/streams/gated/sessions", None);
    assert_eq!(
        counts["sessions"],
        json!({"created": 0, "playing": 0, "stalled": 0, "ended": 0}),
        "no session for a refused watch"
    );

    // With the entitlement tag the same viewer gets its endpoint (and a session).
    let (mut ws, welcome) = connect(&server.url("?region=EU"), Some(UA_ANDROID));
    let viewer = welcome["viewer"].as_str().unwrap().to_owned();
    send_json(&mut ws, &json!({"type": "watch", "stream": "gated"}));
    assert_eq!(next_json(&mut ws)["code"], "not_entitled");
    let (status, _) = server.api(
        "PUT",
        &format!("/api/viewers/{viewer}/tags"),
        Some(&json!({"tags": ["premium"]})),
    );
    assert_eq!(status, 202);
    let endpoint = wait_for("the tag to reach the core", || {
        send_json(&mut ws, &json!({"type": "watch", "stream": "gated"}));
        let mut answer = next_json(&mut ws);
        if answer["type"] == "stream" {
            answer = next_json(&mut ws);
        }
        (answer["type"] == "endpoint").then_some(answer)
    });
    assert!(endpoint["url"].as_str().unwrap().contains("&sig="));
    let (_, counts) = server.api("GET", "/api/streams/gated/sessions", None);
    assert_eq!(counts["sessions"]["created"], 1, "{counts}");

    // A time window in the past: nobody may watch.
    let (status, _) = server.api(
        "PUT",
        "/api/streams/gated/distribution",
        Some(&json!({"not_after_ms": 1_000_000})),
    );
    assert_eq!(status, 200);
    let error = refusal("?region=EU", UA_ANDROID);
    assert_eq!(error["code"], "not_entitled");
    assert!(
        error["message"].as_str().unwrap().contains("no longer"),
        "{error}"
    );

    // The rules are stored with the stream.
    drop(ws);
    assert!(server.terminate().success());
    let mut restarted = Server::start_in(&["--shards", "1"], dir.clone());
    restarted.keep_data = false;
    let (_, rules) = restarted.api("GET", "/api/streams/gated/distribution", None);
    assert_eq!(rules["not_after_ms"], 1_000_000, "{rules}");
}
