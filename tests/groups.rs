//! The application core end to end: profile mirror, groups, streams, group-cast and the
//! operator API, with real viewers on loopback.
//!
//! "Exactly its members" is checked without timing: after a cast to a group, the test casts a
//! marker to the global group. Commands reach each shard in order and each shard writes to a
//! connection in order, so every viewer sees the marker last; a viewer that gets the marker
//! first was not a member.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

struct Viewer {
    ws: Ws,
    id: String,
}

fn viewer(server: &Server, ua: &str, query: &str) -> Viewer {
    let (ws, welcome) = connect(&server.url(query), Some(ua));
    Viewer {
        ws,
        id: welcome["viewer"].as_str().unwrap().to_owned(),
    }
}

/// Casts `payload` to `group`, then a marker to everyone; returns which viewers got the
/// payload before the marker.
fn cast_and_collect(server: &Server, group: &str, viewers: &mut [Viewer]) -> Vec<bool> {
    let (status, body) = server.api(
        "POST",
        &format!("/api/groups/{group}/messages"),
        Some(&json!({"payload": {"hello": group}})),
    );
    assert_eq!(status, 202, "{body}");
    let (status, _) = server.api(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": "marker"})),
    );
    assert_eq!(status, 202);
    viewers
        .iter_mut()
        .map(|v| {
            let first = next_of_type(&mut v.ws, "message");
            if first["payload"] == "marker" {
                return false;
            }
            assert_eq!(first["group"], group, "{first}");
            assert_eq!(first["payload"], json!({"hello": group}));
            let marker = next_of_type(&mut v.ws, "message");
            assert_eq!(marker["payload"], "marker");
            true
        })
        .collect()
}

fn wait_viewer(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
        if status == 200 && pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn group_size(server: &Server, id: &str) -> u64 {
    let (status, g) = server.api("GET", &format!("/api/groups/{id}"), None);
    assert_eq!(status, 200, "{g}");
    g["size"].as_u64().unwrap()
}

#[test]
fn predicate_group_reaches_exactly_its_members() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    let mut vs = vec![
        viewer(&server, IOS, "?region=HU"),
        viewer(&server, IOS, "?region=hu"),
        viewer(&server, IOS, "?region=DE"),
        viewer(&server, ANDROID, "?region=HU"),
        viewer(&server, WINDOWS, ""),
    ];
    // The core's mirror learns of joins from the shards a moment after the welcomes.
    server.wait_stats("5 viewers", |s| s["viewers"] == 5);
    let (status, g) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "ios-hu", "match": {"os": ["ios"], "region": ["HU"]}})),
    );
    assert_eq!(status, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(g["size"], 2);
    assert_eq!(
        cast_and_collect(&server, &gid, &mut vs),
        vec![true, true, false, false, false]
    );

    // A viewer who connects after the group exists joins it.
    vs.push(viewer(&server, IOS, "?region=HU"));
    server.wait_stats("6 viewers", |s| s["viewers"] == 6);
    assert_eq!(group_size(&server, &gid), 3);
    assert_eq!(
        cast_and_collect(&server, &gid, &mut vs),
        vec![true, true, false, false, false, true]
    );

    // A profile change moves viewers in and out: the DE viewer says it is in HU now.
    send_json(
        &mut vs[2].ws,
        &json!({"type": "hello", "region": "HU", "app_version": "3.2"}),
    );
    let id = vs[2].id.clone();
    let v = wait_viewer(&server, &id, "region HU", |v| v["region"] == "HU");
    assert_eq!(v["app_version"], "3.2");
    send_json(&mut vs[0].ws, &json!({"type": "hello", "region": "AT"}));
    let id = vs[0].id.clone();
    wait_viewer(&server, &id, "region AT", |v| v["region"] == "AT");
    assert_eq!(group_size(&server, &gid), 3);
    assert_eq!(
        cast_and_collect(&server, &gid, &mut vs),
        vec![false, true, true, false, false, true]
    );

    // Tags set through the API go to the owning shard and come back through the mirror.
    let (status, vip) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "vip", "match": {"tags": "vip"}})),
    );
    assert_eq!(status, 201);
    let vip = vip["id"].as_str().unwrap().to_owned();
    for i in [3, 4] {
        let (status, body) = server.api(
            "PUT",
            &format!("/api/viewers/{}/tags", vs[i].id),
            Some(&json!({"tags": ["vip"]})),
        );
        assert_eq!(status, 202, "{body}");
        let id = vs[i].id.clone();
        wait_viewer(&server, &id, "vip tag", |v| v["tags"] == json!(["vip"]));
    }
    assert_eq!(
        cast_and_collect(&server, &vip, &mut vs),
        vec![false, false, false, true, true, false]
    );

    // The global group reaches everyone; deleting a group frees it everywhere.
    assert_eq!(cast_and_collect(&server, "global", &mut vs), vec![true; 6]);
    let (status, _) = server.api("DELETE", &format!("/api/groups/{gid}"), None);
    assert_eq!(status, 200);
    let (status, _) = server.api(
        "POST",
        &format!("/api/groups/{gid}/messages"),
        Some(&json!({"payload": 1})),
    );
    assert_eq!(status, 404);
    let stats = server.wait_stats("sizes", |_| true);
    let sizes: BTreeMap<String, u64> = stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                g["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sizes.get("global"), Some(&6));
    assert_eq!(sizes.get(&vip), Some(&2));
    assert!(!sizes.contains_key(&gid));
}

#[test]
fn watch_puts_viewers_into_stream_audiences() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    for id in ["main", "backstage"] {
        let (status, s) = server.api("POST", "/api/streams", Some(&json!({"id": id})));
        assert_eq!(status, 201, "{s}");
        assert_eq!(s["group"], format!("stream:{id}"));
    }
    let mut vs: Vec<Viewer> = (0..4).map(|_| viewer(&server, WINDOWS, "")).collect();

    send_json(&mut vs[0].ws, &json!({"type": "watch", "stream": "nope"}));
    let e = next_of_type(&mut vs[0].ws, "error");
    assert_eq!(e["code"], "unknown_stream");

    for (i, stream) in [(0, "main"), (1, "main"), (2, "backstage")] {
        send_json(&mut vs[i].ws, &json!({"type": "watch", "stream": stream}));
        let ep = next_of_type(&mut vs[i].ws, "endpoint");
        assert_eq!(ep["stream"], stream);
        let session = ep["session"].as_str().unwrap();
        assert!(ep["url"].as_str().unwrap().contains(stream));
        assert!(ep["url"].as_str().unwrap().contains(session));
        let id = vs[i].id.clone();
        wait_viewer(&server, &id, "stream", |v| v["stream"] == stream);
    }
    assert_eq!(group_size(&server, "stream:main"), 2);
    assert_eq!(
        cast_and_collect(&server, "stream:main", &mut vs),
        vec![true, true, false, false]
    );
    // Watching another stream leaves the first audience.
    send_json(
        &mut vs[1].ws,
        &json!({"type": "watch", "stream": "backstage"}),
    );
    next_of_type(&mut vs[1].ws, "endpoint");
    let id = vs[1].id.clone();
    wait_viewer(&server, &id, "backstage", |v| v["stream"] == "backstage");
    assert_eq!(
        cast_and_collect(&server, "stream:main", &mut vs),
        vec![true, false, false, false]
    );
    assert_eq!(
        cast_and_collect(&server, "stream:backstage", &mut vs),
        vec![false, true, true, false]
    );
    // Leaving (disconnecting) shrinks the audience.
    drop(vs.remove(2));
    server.wait_stats("3 viewers", |s| s["viewers"] == 3);
    assert_eq!(group_size(&server, "stream:backstage"), 1);
    let (_, streams) = server.api("GET", "/api/streams", None);
    let audiences: Vec<(String, u64)> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["audience"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(audiences, vec![("backstage".into(), 1), ("main".into(), 1)]);
}

/// Deterministic xorshift for the random walk.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

#[test]
fn mirror_stays_consistent_under_random_changes() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    server.api("POST", "/api/streams", Some(&json!({"id": "s1"})));
    server.api("POST", "/api/streams", Some(&json!({"id": "s2"})));
    let (_, g) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "mobile-hu", "match": {"device": ["mobile"], "region": ["HU"]}})),
    );
    let group = g["id"].as_str().unwrap().to_owned();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    // The test's own model of each live viewer: (ws, id, is_mobile, region).
    let mut live: Vec<(Ws, String, bool, String)> = Vec::new();
    for _ in 0..300 {
        match rng.next() % 5 {
            0 | 1 => {
                let (ua, mobile) = *rng.pick(&[(IOS, true), (ANDROID, true), (WINDOWS, false)]);
                let region = rng.pick(&["HU", "DE", "US"]).to_string();
                let (ws, w) = connect(&server.url(&format!("?region={region}")), Some(ua));
                live.push((ws, w["viewer"].as_str().unwrap().into(), mobile, region));
            }
            2 if !live.is_empty() => {
                let i = (rng.next() % live.len() as u64) as usize;
                live.swap_remove(i);
            }
            3 if !live.is_empty() => {
                let i = (rng.next() % live.len() as u64) as usize;
                let region = rng.pick(&["HU", "DE", "US"]).to_string();
                send_json(&mut live[i].0, &json!({"type": "hello", "region": region}));
                live[i].3 = region;
            }
            4 if !live.is_empty() => {
                let i = (rng.next() % live.len() as u64) as usize;
                let stream = *rng.pick(&["s1", "s2"]);
                send_json(&mut live[i].0, &json!({"type": "watch", "stream": stream}));
                if rng.next() % 2 == 0 {
                    let tags = json!({"tags": [*rng.pick(&["a", "b"])]});
                    server.api(
                        "PUT",
                        &format!("/api/viewers/{}/tags", live[i].1),
                        Some(&tags),
                    );
                }
            }
            _ => {}
        }
    }
    let n = live.len() as u64;
    let expected = live.iter().filter(|v| v.2 && v.3 == "HU").count() as u64;
    // Every change has reached the mirror once each viewer answers a ping (messages on one
    // connection are handled in order) and the server counts exactly the live viewers.
    for v in &mut live {
        send_json(&mut v.0, &json!({"type": "ping"}));
        next_of_type(&mut v.0, "pong");
    }
    server.wait_stats("live viewers", |s| {
        s["viewers"] == n && s["connections"] == n
    });
    let deadline = Instant::now() + WAIT;
    while group_size(&server, &group) != expected {
        assert!(
            Instant::now() < deadline,
            "group size never reached {expected}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The audit compares every shard's profiles with the mirror at the same point.
    let (status, a) = server.api("POST", "/api/audits", None);
    assert_eq!(status, 202);
    let path = format!("/api/audits/{}", a["id"]);
    let deadline = Instant::now() + WAIT;
    let audit = loop {
        let (_, r) = server.api("GET", &path, None);
        if r["done"] == true {
            break r;
        }
        assert!(Instant::now() < deadline, "audit never finished: {r}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(audit["mismatches"], json!([]), "{audit}");
    assert_eq!(audit["viewers_checked"], n);
    let per_shard: u64 = server.wait_stats("", |_| true)["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, n);
}

#[test]
fn api_errors() {
    let server = Server::start(&[]);
    let api = server.api;
    // 401: missing or wrong token, on every route.
    for path in ["/api/stats", "/api/groups", "/api/nope"] {
        assert_eq!(api_call(api, "GET", path, None, None).0, 401);
        assert_eq!(
            api_call(api, "GET", path, None, Some("wrong-token-xxxxxxxx")).0,
            401
        );
    }
    // The scheme is case-insensitive (RFC 9110).
    assert_eq!(api_call(api, "GET", "/api/stats", None, Some(TOKEN)).0, 200);
    let raw = {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(api).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(format!("GET /api/stats HTTP/1.1\r\nHost: t\r\nAuthorization: bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    assert_eq!(parse_response(&raw).0, 200);
    // 400 with a message naming the problem.
    let bad = |path: &str, body: &[u8], needle: &str| {
        let raw = raw_api_call(api, "POST", path, body, Some(TOKEN));
        let (status, v) = parse_response(&raw);
        assert_eq!(status, 400, "{path} {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path}: {message:?} lacks {needle:?}"
        );
    };
    bad("/api/groups", b"{nope", "valid JSON");
    bad("/api/groups", b"[]", "object");
    bad("/api/groups", br#"{"match":{}}"#, "\"name\"");
    bad("/api/groups", br#"{"name":"x"}"#, "\"match\"");
    bad(
        "/api/groups",
        br#"{"name":"x","match":{"colour":["red"]}}"#,
        "colour",
    );
    bad(
        "/api/groups",
        br#"{"name":"x","match":{"os":["beos"]}}"#,
        "beos",
    );
    bad(
        "/api/groups",
        br#"{"name":"x","match":{},"extra":1}"#,
        "extra",
    );
    bad("/api/streams", br#"{"id":"has space"}"#, "\"id\"");
    bad("/api/streams", br#"{}"#, "\"id\"");
    bad("/api/groups/global/messages", br#"{}"#, "payload");
    let raw = raw_api_call(
        api,
        "PUT",
        "/api/viewers/0000000000000001/tags",
        br#"{"tags":"x"}"#,
        Some(TOKEN),
    );
    assert_eq!(parse_response(&raw).0, 400);
    // 404: unknown ids and routes.
    assert_eq!(server.api("GET", "/api/groups/g999", None).0, 404);
    assert_eq!(server.api("DELETE", "/api/groups/g999", None).0, 404);
    assert_eq!(
        server
            .api(
                "POST",
                "/api/groups/g999/messages",
                Some(&json!({"payload": 1}))
            )
            .0,
        404
    );
    assert_eq!(
        server.api("GET", "/api/viewers/00000000000000ff", None).0,
        404
    );
    assert_eq!(server.api("GET", "/api/viewers/zz", None).0, 404);
    assert_eq!(
        server
            .api(
                "PUT",
                "/api/viewers/00000000000000ff/tags",
                Some(&json!({"tags": []}))
            )
            .0,
        404
    );
    assert_eq!(server.api("GET", "/api/audits/77", None).0, 404);
    assert_eq!(server.api("GET", "/nothing", None).0, 404);
    // 409: a stream that exists, a built-in group; 405: wrong method.
    assert_eq!(
        server
            .api("POST", "/api/streams", Some(&json!({"id": "s"})))
            .0,
        201
    );
    assert_eq!(
        server
            .api("POST", "/api/streams", Some(&json!({"id": "s"})))
            .0,
        409
    );
    assert_eq!(server.api("DELETE", "/api/groups/global", None).0, 409);
    assert_eq!(server.api("DELETE", "/api/groups/stream:s", None).0, 409);
    assert_eq!(server.api("PATCH", "/api/streams", None).0, 405);
    let raw = raw_api_call(api, "PUT", "/api/stats", b"", Some(TOKEN));
    assert!(
        String::from_utf8_lossy(&raw).contains("Allow: GET\r\n"),
        "405 names the allowed methods"
    );
    let (_, e) = server.api("DELETE", "/api/groups/g999", None);
    assert_eq!(e["error"]["code"], "not_found");
    // A request with a body larger than allowed, and chunked bodies.
    let mut s = std::net::TcpStream::connect(api).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("POST /api/groups HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 99999999\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert_eq!(parse_response(&out).0, 413);
}

/// A viewer that stops reading is closed (1008) once its send queue is full, while the
/// others keep receiving every message.
#[test]
fn slow_consumer_is_closed_while_others_are_served() {
    let server = Server::start(&["--send-queue-bytes", "65536", "--shards", "1"]);
    // The slow viewer: a tiny receive buffer and no reads.
    let slow = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&server.viewer.into()).unwrap();
        let mut raw = Raw::from_stream(socket.into());
        raw.send_bytes(Raw::request(server.viewer, "/v1/viewer", "").as_bytes());
        raw
    };
    let (mut fast, _) = connect(&server.url(""), None);
    server.wait_stats("2 viewers", |s| s["viewers"] == 2);
    const CASTS: usize = 400;
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < CASTS {
            let m = next_of_type(&mut fast, "message");
            assert_eq!(m["payload"]["seq"], got);
            got += 1;
        }
        got
    });
    let pad = "x".repeat(16 * 1024);
    for seq in 0..CASTS {
        let (status, _) = server.api(
            "POST",
            "/api/groups/global/messages",
            Some(&json!({"payload": {"seq": seq, "pad": pad}})),
        );
        assert_eq!(status, 202);
    }
    assert_eq!(reader.join().unwrap(), CASTS);
    // The shard's counters move at once; the mirror follows when the Left event arrives.
    server.wait_stats("slow viewer closed", |s| {
        s["shards"][0]["counters"]["closed_slow"] == 1 && s["connections"] == 1 && s["viewers"] == 1
    });
    drop(slow);
}

/// Telemetry is aggregated per group (FIG. 3's data aggregation) on the shards and served over
/// sliding windows: means and maxima over the reports of the group's members.
#[test]
fn telemetry_is_aggregated_per_group() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    let mut ios = viewer(&server, IOS, "?region=HU");
    let mut win = viewer(&server, WINDOWS, "?region=HU");
    let (_, g) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "ios", "match": {"os": ["ios"]}})),
    );
    let gid = g["id"].as_str().unwrap().to_owned();
    // A marker cast after the group: a shard that delivered it knows the group (commands
    // reach a shard in order), so the reports below count in it.
    let (status, _) = server.api(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": "marker"})),
    );
    assert_eq!(status, 202);
    for v in [&mut ios, &mut win] {
        next_of_type(&mut v.ws, "message");
    }
    send_json(
        &mut ios.ws,
        &json!({"type": "telemetry", "bitrate_kbps": 3000, "buffering_ms": 120, "rtt_ms": 40}),
    );
    send_json(
        &mut win.ws,
        &json!({"type": "telemetry", "bitrate_kbps": 1000, "buffering_ms": 0, "dropped_frames": 7}),
    );
    let deadline = Instant::now() + WAIT;
    let global = loop {
        let (_, g) = server.api("GET", "/api/telemetry", None);
        if g["windows"]["10s"]["reports"] == 2 {
            break g;
        }
        assert!(Instant::now() < deadline, "telemetry never arrived: {g}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(global["group"], "global");
    let t = &global["windows"]["60s"];
    assert_eq!(t["bitrate_kbps"]["mean"], 2000.0);
    assert_eq!(t["bitrate_kbps"]["max"], 3000.0);
    assert_eq!(t["dropped_frames"]["count"], 1);
    assert_eq!(t["rtt_ms"]["mean"], 40.0);
    let (_, g) = server.api("GET", &format!("/api/groups/{gid}/telemetry"), None);
    let t = &g["windows"]["10s"];
    assert_eq!(t["reports"], 1);
    assert_eq!(t["bitrate_kbps"]["mean"], 3000.0);
    assert_eq!(t["dropped_frames"]["count"], 0);
    assert_eq!(t["dropped_frames"]["mean"], Value::Null);
    let (status, _) = server.api("GET", "/api/groups/nope/telemetry", None);
    assert_eq!(status, 404);
    drop((ios, win));
}
