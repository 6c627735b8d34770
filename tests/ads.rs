//! Ads end to end (issue 13): an ad library built from MPEG-TS segments ffmpeg encodes here
//! (the publisher's codecs), a program with media selectors, a break started through the API
//! during a real ffmpeg RTMP publish, two viewers with different profiles getting different
//! ads, playlists parsed with `m3u8-rs` and played by ffprobe through the discontinuities,
//! and beacon counts that equal the sessions that fetched each quartile's segment.

mod common;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use common::hls::{get, target};
use common::media::{encode_ad, require_tool, wait_for, Publisher, MEDIA_WAIT};
use common::*;
use serde_json::{json, Value};

const UA_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const UA_ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

fn upload(server: &Server, id: &str, segments: &[Vec<u8>]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let segments: Vec<Value> = segments
        .iter()
        .map(|s| json!({"duration_ms": 1000, "data": b64.encode(s)}))
        .collect();
    let (status, ad) = server.api(
        "POST",
        "/api/ads",
        Some(&json!({"id": id, "segments": segments})),
    );
    assert_eq!(status, 201, "{ad}");
    ad
}

fn viewer(server: &Server, query: &str, ua: &str) -> (Ws, String, String) {
    let (mut ws, _) = connect(&server.url(query), Some(ua));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(MEDIA_WAIT)).unwrap();
    }
    send_json(&mut ws, &json!({"type": "watch", "stream": "main"}));
    let e = next_of_type(&mut ws, "endpoint");
    (
        ws,
        e["session"].as_str().unwrap().to_owned(),
        e["url"].as_str().unwrap().to_owned(),
    )
}

fn playlist(server: &Server, url: &str) -> (String, m3u8_rs::MediaPlaylist) {
    let r = get(server.viewer, &target(url));
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    match m3u8_rs::parse_playlist_res(text.as_bytes()) {
        Ok(m3u8_rs::Playlist::MediaPlaylist(p)) => (text, p),
        other => panic!("not a media playlist ({other:?}): {text}"),
    }
}

fn tags(s: &m3u8_rs::MediaSegment) -> Vec<String> {
    s.unknown_tags.iter().map(|t| t.tag.clone()).collect()
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovation-ads-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn two_profiles_get_different_ads_in_one_break_and_beacons_are_exact() {
    let dir = scratch();
    let ios_ad = encode_ad(&dir, "ios", "testsrc", 4);
    let android_ad = encode_ad(&dir, "android", "smptebars", 4);
    let slate = encode_ad(&dir, "slate", "rgbtestsrc", 1);
    let server = Server::start(&["--shards", "2", "--hls-window", "40"]);
    let ad = upload(&server, "ios-spot", &ios_ad);
    assert_eq!(ad["duration_ms"], 4000, "{ad}");
    upload(&server, "android-spot", &android_ad);
    upload(&server, "slate", &slate);
    let (status, refused) = server.api(
        "POST",
        "/api/ads",
        Some(&json!({"id": "junk", "segments": [{"duration_ms": 1000, "data": "aGVsbG8="}]})),
    );
    assert_eq!(status, 400, "not MPEG-TS: {refused}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&slate[0]);
    for id in ["..", ".hidden"] {
        let body = json!({"id": id, "segments": [{"duration_ms": 1000, "data": b64}]});
        let (status, refused) = server.api("POST", "/api/ads", Some(&body));
        assert_eq!(status, 400, "{id}: {refused}");
    }

    let (status, body) = server.api("POST", "/api/streams", Some(&json!({"id": "main"})));
    assert_eq!(status, 201);
    let key = body["stream_key"].as_str().unwrap().to_owned();
    let program = json!({
        "selectors": [
            {"match": {"os": ["ios"], "region": ["A"]}, "ads": ["ios-spot"]},
            {"match": {"os": ["android"]}, "ads": ["android-spot"]}
        ],
        "default": [],
        "slate": "slate"
    });
    let (status, stored) = server.api("PUT", "/api/streams/main/program", Some(&program));
    assert_eq!(status, 200, "{stored}");
    let (status, _) = server.api(
        "PUT",
        "/api/streams/main/program",
        Some(&json!({"default": ["missing"]})),
    );
    assert_eq!(status, 404, "a program names ads of the library");

    let (_ios_ws, ios, ios_url) = viewer(&server, "?region=A", UA_IOS);
    let (_android_ws, android, android_url) = viewer(&server, "?region=B", UA_ANDROID);
    let (status, _) = server.api(
        "POST",
        "/api/streams/main/breaks",
        Some(&json!({"duration_s": 6})),
    );
    assert_eq!(status, 409, "not live yet");

    let publisher = Publisher::start(server.rtmp, &key, 16);
    wait_for("a first segment", || {
        (get(server.viewer, &target(&ios_url)).status == 200).then_some(())
    });
    // The broadcaster starts the break from its WebSocket and follows the beacons there.
    let (mut console, welcome) = connect(
        &format!(
            "ws://{}/v1/broadcaster?stream=main&token={TOKEN}",
            server.api
        ),
        None,
    );
    assert_eq!(welcome["role"], "broadcaster");
    send_json(&mut console, &json!({"type": "break", "duration_s": 0}));
    assert_eq!(next_of_type(&mut console, "error")["code"], "bad_request");
    send_json(&mut console, &json!({"type": "break", "duration_s": 6}));
    let brk = next_of_type(&mut console, "break");
    assert_eq!(brk["sessions"], 2, "{brk}");
    assert_eq!(brk["duration_ms"], 6000, "{brk}");
    let brk_id = brk["id"].as_u64().unwrap();

    // Wait for the content after the break (CUE-IN) in both playlists.
    for url in [&ios_url, &android_url] {
        wait_for("the end of the break", || {
            let (text, _) = playlist(&server, url);
            text.contains("#EXT-X-CUE-IN").then_some(())
        });
    }
    let (ios_text, ios_list) = playlist(&server, &ios_url);
    let (_, android_list) = playlist(&server, &android_url);
    let ads_of = |list: &m3u8_rs::MediaPlaylist| -> Vec<String> {
        list.segments
            .iter()
            .filter(|s| s.uri.starts_with("/hls/_ads/"))
            .map(|s| s.uri.split('?').next().unwrap().to_owned())
            .collect()
    };
    let want = |ad: &str| -> Vec<String> {
        let mut v: Vec<String> = (0..4).map(|i| format!("/hls/_ads/{ad}/{i}.ts")).collect();
        v.extend([
            "/hls/_ads/slate/0.ts".to_owned(),
            "/hls/_ads/slate/0.ts".to_owned(),
        ]);
        v
    };
    assert_eq!(ads_of(&ios_list), want("ios-spot"), "{ios_text}");
    assert_eq!(ads_of(&android_list), want("android-spot"));
    // Discontinuities at content->ad, ad->slate, slate->slate and ad->content; CUE markers.
    for list in [&ios_list, &android_list] {
        let first_ad = list
            .segments
            .iter()
            .position(|s| s.uri.starts_with("/hls/_ads/"))
            .unwrap();
        let s = &list.segments[first_ad];
        assert!(s.discontinuity, "content -> ad");
        assert!(tags(s).iter().any(|t| t == "X-CUE-OUT"), "{:?}", tags(s));
        assert!(list.segments[first_ad + 4].discontinuity, "ad -> slate");
        assert!(list.segments[first_ad + 5].discontinuity, "slate repeats");
        let back = &list.segments[first_ad + 6];
        assert!(
            !back.uri.starts_with("/hls/_ads/") && back.discontinuity,
            "ad -> content"
        );
        assert!(
            tags(back).iter().any(|t| t == "X-CUE-IN"),
            "{:?}",
            tags(back)
        );
        assert!(back.uri.contains("?session="));
    }

    // Beacons: iOS fetches its whole ad, Android its first two segments.
    for (i, uploaded) in ios_ad.iter().enumerate() {
        let r = get(
            server.viewer,
            &format!("/hls/_ads/ios-spot/{i}.ts?session={ios}"),
        );
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, uploaded, "served as uploaded");
    }
    for i in 0..2 {
        get(
            server.viewer,
            &format!("/hls/_ads/android-spot/{i}.ts?session={android}"),
        );
        get(
            server.viewer,
            &format!("/hls/_ads/android-spot/{i}.ts?session={android}"),
        );
    }
    let counts = |b: &Value, ad: &str| -> Vec<u64> {
        [
            "impression",
            "start",
            "first_quartile",
            "midpoint",
            "third_quartile",
            "complete",
        ]
        .iter()
        .map(|e| b["beacons"][ad][e].as_u64().unwrap_or(99))
        .collect()
    };
    let breaks = wait_for("the beacons", || {
        let (_, b) = server.api("GET", "/api/streams/main/breaks", None);
        let b = b["breaks"][0].clone();
        (counts(&b, "ios-spot")[5] == 1 && counts(&b, "android-spot")[2] == 1).then_some(b)
    });
    assert_eq!(breaks["id"], brk_id);
    // The same counts were pushed to the broadcaster's socket.
    let pushed = (0..100)
        .map(|_| next_of_type(&mut console, "beacons"))
        .find(|b| counts(b, "ios-spot")[5] == 1 && counts(b, "android-spot")[2] == 1)
        .expect("a beacons push with the counts");
    assert_eq!(pushed["beacons"], breaks["beacons"], "{pushed}");
    assert_eq!(counts(&breaks, "ios-spot"), [1, 1, 1, 1, 1, 1], "{breaks}");
    assert_eq!(
        counts(&breaks, "android-spot"),
        [1, 1, 1, 0, 0, 0],
        "refetches count once: {breaks}"
    );
    let (_, s) = server.api("GET", &format!("/api/sessions/{android}"), None);
    assert_eq!(
        s["beacons"][brk_id.to_string()]["android-spot"],
        json!(["impression", "start", "first_quartile"]),
        "{s}"
    );

    // ffprobe plays each session's playlist through the discontinuities once it ended.
    let (ok, err) = publisher.wait();
    assert!(ok, "{err}");
    for url in [&ios_url, &android_url] {
        wait_for("the playlist to end", || {
            playlist(&server, url)
                .0
                .contains("#EXT-X-ENDLIST")
                .then_some(())
        });
        require_tool("ffprobe");
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-count_packets", "-select_streams", "v:0"])
            .args([
                "-show_entries",
                "stream=codec_name,width,height,nb_read_packets",
            ])
            .args([
                "-of",
                "default=noprint_wrappers=1",
                "-rw_timeout",
                "10000000",
            ])
            .arg(url.as_str())
            .output()
            .expect("ffprobe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("codec_name=h264") && text.contains("width=320"),
            "{text}"
        );
        let packets: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("nb_read_packets="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            packets >= 25 * 10,
            "content and 6 s of ads were read: {text}"
        );
    }
    // ffprobe fetched every ad segment: Android completes now, iOS counts nothing twice.
    let after = wait_for("android to complete", || {
        let (_, b) = server.api("GET", "/api/streams/main/breaks", None);
        let b = b["breaks"][0].clone();
        (counts(&b, "android-spot")[5] == 1).then_some(b)
    });
    assert_eq!(counts(&after, "android-spot"), [1, 1, 1, 1, 1, 1]);
    assert_eq!(counts(&after, "ios-spot"), [1, 1, 1, 1, 1, 1]);
    assert_eq!(counts(&after, "slate"), [2, 2, 2, 2, 2, 2], "{after}");

    // The publish was recorded: the recording becomes an ad of the library.
    let recording = wait_for("the recording to finish", || {
        let (_, r) = server.api("GET", "/api/streams/main/recordings", None);
        let r = r["recordings"][0].clone();
        (r["ended"] == true).then_some(r)
    });
    let rec = recording["id"].as_str().unwrap();
    let (status, replay) = server.api(
        "POST",
        "/api/ads",
        Some(&json!({"id": "replay", "recording": {"stream": "main", "id": rec}})),
    );
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["source"], format!("recording:main/{rec}"));
    assert_eq!(
        replay["segments"].as_array().unwrap().len() as u64,
        recording["segments"].as_u64().unwrap()
    );
    assert!(replay["duration_ms"].as_u64().unwrap() > 10_000, "{replay}");
    let (status, _) = server.api(
        "POST",
        "/api/ads",
        Some(&json!({"id": "nothing", "recording": {"stream": "main", "id": "nope"}})),
    );
    assert_eq!(status, 400);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny VAST server on loopback: answers `<Ad id="{ad}">`, after `slow_ms` for requests
/// whose query has `region=B`. Returns its address and the queries it received.
fn vast_server(
    ad: &'static str,
    slow_ms: u64,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(WAIT)).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let query = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(query.clone());
                if query.contains("region=B") {
                    // Slower than the program's timeout: the selectors' ads must stay.
                    std::thread::sleep(std::time::Duration::from_millis(slow_ms));
                }
                let body = format!(
                    "<?xml version=\"1.0\"?><VAST version=\"4.0\"><Ad id=\"{ad}\" sequence=\"1\"><InLine><AdTitle>t</AdTitle><Creatives><Creative><Linear><MediaFiles><MediaFile type=\"application/x-mpegURL\">http://ads.example/{ad}.m3u8</MediaFile></MediaFiles></Linear></Creative></Creatives></InLine></Ad></VAST>"
                );
                let mut conn = conn;
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (addr, seen)
}

#[test]
fn an_ad_decision_server_decides_and_a_slow_one_falls_back_to_selectors() {
    let dir = scratch();
    let vast_ad = encode_ad(&dir, "vast", "testsrc", 2);
    let sel_ad = encode_ad(&dir, "sel", "smptebars", 2);
    let slate = encode_ad(&dir, "slate", "rgbtestsrc", 1);
    let (vast_addr, queries) = vast_server("vast-spot", 3_000);
    let server = Server::start(&["--shards", "2", "--hls-window", "40"]);
    upload(&server, "vast-spot", &vast_ad);
    upload(&server, "sel-spot", &sel_ad);
    upload(&server, "slate", &slate);
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({"id": "main"})));
    assert_eq!(status, 201);
    let key = body["stream_key"].as_str().unwrap().to_owned();
    let program = json!({
        "selectors": [{"match": {"os": ["ios", "android"]}, "ads": ["sel-spot"]}],
        "slate": "slate",
        "vast": {"url": format!("http://{vast_addr}/vast?site=test"), "timeout_ms": 800}
    });
    let (status, stored) = server.api("PUT", "/api/streams/main/program", Some(&program));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["vast"]["timeout_ms"], 800);
    let (status, _) = server.api(
        "PUT",
        "/api/streams/main/program",
        Some(&json!({"vast": {"url": "http://ads.example/vast"}})),
    );
    assert_eq!(status, 400, "an address literal is required");

    let (_a, ios, ios_url) = viewer(&server, "?region=A", UA_IOS);
    let (_b, _android, android_url) = viewer(&server, "?region=B", UA_ANDROID);
    let publisher = Publisher::start(server.rtmp, &key, 14);
    wait_for("a first segment", || {
        (get(server.viewer, &target(&ios_url)).status == 200).then_some(())
    });
    let (status, brk) = server.api(
        "POST",
        "/api/streams/main/breaks",
        Some(&json!({"duration_s": 4})),
    );
    assert_eq!(status, 201, "{brk}");
    assert_eq!(brk["vast"], json!({"answered": 0, "fallback": 0}), "{brk}");

    let decided = wait_for("one answer and one timeout", || {
        let (_, b) = server.api("GET", "/api/streams/main/breaks", None);
        let b = b["breaks"][0].clone();
        (b["vast"] == json!({"answered": 1, "fallback": 1})).then_some(b)
    });
    assert!(decided["beacons"]["vast-spot"].is_object(), "{decided}");
    for url in [&ios_url, &android_url] {
        wait_for("the end of the break", || {
            playlist(&server, url)
                .0
                .contains("#EXT-X-CUE-IN")
                .then_some(())
        });
    }
    let ads_of = |url: &str| -> Vec<String> {
        playlist(&server, url)
            .1
            .segments
            .iter()
            .filter(|s| s.uri.starts_with("/hls/_ads/"))
            .map(|s| s.uri.split('?').next().unwrap().to_owned())
            .collect()
    };
    let with_slate = |ad: &str| -> Vec<String> {
        vec![
            format!("/hls/_ads/{ad}/0.ts"),
            format!("/hls/_ads/{ad}/1.ts"),
            "/hls/_ads/slate/0.ts".into(),
            "/hls/_ads/slate/0.ts".into(),
        ]
    };
    assert_eq!(
        ads_of(&ios_url),
        with_slate("vast-spot"),
        "the server's decision"
    );
    assert_eq!(
        ads_of(&android_url),
        with_slate("sel-spot"),
        "the timeout's fallback"
    );
    let asked = queries.lock().unwrap().clone();
    assert_eq!(asked.len(), 2, "{asked:?}");
    let for_ios = asked
        .iter()
        .find(|q| q.contains(&format!("session={ios}")))
        .unwrap();
    for part in [
        "/vast?site=test&",
        "stream=main",
        "duration_s=4",
        "os=ios",
        "region=A",
        "device=mobile",
    ] {
        assert!(for_ios.contains(part), "{part} in {for_ios}");
    }
    drop(publisher);
    let _ = std::fs::remove_dir_all(&dir);
}
