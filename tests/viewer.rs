//! Viewer connections end to end: the real server on loopback, an independent client
//! (tungstenite) and a raw client for exact protocol violations.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use netstack::ws::OpCode;
use serde_json::json;

#[test]
fn welcome_then_json_errors_keep_the_connection() {
    let server = Server::start(&[]);
    let (mut ws, welcome) = connect(&server.url("?region=hu"), None);
    assert_eq!(welcome["viewer"].as_str().map(str::len), Some(16));
    assert_eq!(welcome["resume"].as_str().map(str::len), Some(32));
    assert!(welcome["shard"].as_u64().is_some());

    ws.send(tungstenite::Message::Text("{not json".into()))
        .unwrap();
    let e = next_json(&mut ws);
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("invalid_json"))
    );

    send_json(&mut ws, &json!({"type": "teleport"}));
    let e = next_json(&mut ws);
    assert_eq!(e["code"], "unknown_type", "{e}");
    send_json(&mut ws, &json!([1, 2]));
    assert_eq!(next_json(&mut ws)["code"], "not_an_object");
    send_json(&mut ws, &json!({"kind": "x"}));
    assert_eq!(next_json(&mut ws)["code"], "missing_type");
    send_json(&mut ws, &json!({"type": "vote", "poll": 3}));
    assert_eq!(next_json(&mut ws)["code"], "bad_field");
    ws.send(tungstenite::Message::Binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(next_json(&mut ws)["code"], "binary_not_supported");

    // Still open: an application-level ping is answered.
    send_json(&mut ws, &json!({"type": "ping"}));
    assert_eq!(next_json(&mut ws)["type"], "pong");
}

#[test]
fn ping_is_answered_with_pong() {
    let server = Server::start(&[]);
    let (mut ws, _) = connect(&server.url(""), None);
    ws.send(tungstenite::Message::Ping(b"are you there".to_vec()))
        .unwrap();
    match ws.read().unwrap() {
        tungstenite::Message::Pong(p) => assert_eq!(p, b"are you there"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn fragmented_message_with_ping_between_fragments() {
    let server = Server::start(&[]);
    let (mut raw, _) = Raw::upgrade(server.viewer);
    raw.send(OpCode::Text, false, br#"{"type":"#);
    raw.send(OpCode::Ping, true, b"mid");
    raw.send(OpCode::Continuation, false, br#" "pi"#);
    raw.send(OpCode::Continuation, true, br#"ng"}"#);
    let pong = raw.frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (0xA, &b"mid"[..]));
    assert_eq!(raw.frame().json()["type"], "pong");
}

/// Each violation closes with its code; the server then closes the TCP connection.
#[test]
fn protocol_violations_close_with_their_codes() {
    let server = Server::start(&["--max-frame-bytes", "1024", "--max-message-bytes", "2048"]);
    type Violation = Box<dyn Fn(&mut Raw)>;
    let cases: Vec<(&str, Violation, u16)> = vec![
        (
            "unmasked frame",
            Box::new(|r: &mut Raw| r.send_bytes(&[0x81, 0x02, b'h', b'i'])),
            1002,
        ),
        (
            "reserved bit",
            Box::new(|r: &mut Raw| r.send_bytes(&[0xC1, 0x80, 0, 0, 0, 0])),
            1002,
        ),
        (
            "unknown opcode",
            Box::new(|r: &mut Raw| r.send_bytes(&[0x83, 0x80, 0, 0, 0, 0])),
            1002,
        ),
        (
            "fragmented control frame",
            Box::new(|r: &mut Raw| r.send(OpCode::Ping, false, b"x")),
            1002,
        ),
        (
            "continuation without a message",
            Box::new(|r: &mut Raw| r.send(OpCode::Continuation, true, b"x")),
            1002,
        ),
        (
            "invalid UTF-8",
            Box::new(|r: &mut Raw| r.send(OpCode::Text, true, &[0x7b, 0xff, 0xfe])),
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            Box::new(|r: &mut Raw| {
                r.send(OpCode::Text, false, &[b'a', 0xe2, 0x82]);
                r.send(OpCode::Continuation, true, b"b");
            }),
            1007,
        ),
        (
            "frame over max_frame_bytes",
            Box::new(|r: &mut Raw| r.send(OpCode::Text, true, &[b' '; 1025])),
            1009,
        ),
        (
            "message over max_message_bytes",
            Box::new(|r: &mut Raw| {
                r.send(OpCode::Text, false, &[b' '; 1000]);
                r.send(OpCode::Continuation, false, &[b' '; 1000]);
                r.send(OpCode::Continuation, true, &[b' '; 1000]);
            }),
            1009,
        ),
    ];
    for (name, violate, code) in cases {
        let (mut raw, _) = Raw::upgrade(server.viewer);
        violate(&mut raw);
        assert_eq!(raw.close_code(), Some(code), "{name}");
        assert!(raw.closed(), "{name}: TCP connection closed");
    }
    // Each connection leaves once its close handshake ends (client EOF after the drop).
    server.wait_stats("protocol closes", |s| {
        s["connections"] == 0
            && s["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["counters"]["closed_protocol"].as_u64().unwrap())
                .sum::<u64>()
                == 9
    });
}

#[test]
fn close_handshake_echoes_the_code() {
    let server = Server::start(&[]);
    for code in [1000u16, 1001, 3000, 4999] {
        let (mut raw, _) = Raw::upgrade(server.viewer);
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        raw.send(OpCode::Close, true, &payload);
        assert_eq!(raw.close_code(), Some(code));
        assert!(raw.closed());
    }
    // A close code that may not be sent on the wire is a protocol error.
    let (mut raw, _) = Raw::upgrade(server.viewer);
    raw.send(OpCode::Close, true, &1005u16.to_be_bytes());
    assert_eq!(raw.close_code(), Some(1002));
    // tungstenite's own close handshake completes normally.
    let (mut ws, _) = connect(&server.url(""), None);
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn handshake_status(server: &Server, request: &[u8]) -> (u16, String) {
    let mut raw = Raw::connect(server.viewer);
    let _ = raw.stream.write_all(request);
    let response = String::from_utf8_lossy(&raw.read_to_end()).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    (status, response)
}

#[test]
fn bad_handshakes_get_http_errors_and_are_closed() {
    let server = Server::start(&["--max-header-bytes", "1024"]);
    let addr = server.viewer;
    let good = Raw::request(addr, "/v1/viewer", "");
    let cases: Vec<(&str, String, u16)> = vec![
        ("garbage", "\x01\x02\x03 nonsense\r\n\r\n".into(), 400),
        ("other path", Raw::request(addr, "/v2/other", ""), 404),
        ("POST", good.replacen("GET", "POST", 1), 405),
        (
            "no upgrade headers",
            format!("GET /v1/viewer HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
            426,
        ),
        (
            "wrong version",
            good.replace("Version: 13", "Version: 8"),
            426,
        ),
        (
            "bad key",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            400,
        ),
        ("HTTP/1.0", good.replacen("HTTP/1.1", "HTTP/1.0", 1), 400),
        (
            "oversized headers",
            Raw::request(
                addr,
                "/v1/viewer",
                &format!("X-Pad: {}\r\n", "a".repeat(2000)),
            ),
            431,
        ),
    ];
    for (name, request, want) in cases {
        let (status, response) = handshake_status(&server, request.as_bytes());
        assert_eq!(status, want, "{name}: {response}");
        let connection = response
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("connection:"))
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(connection.contains("close"), "{name}: {response}");
    }
    let (_, response) = handshake_status(
        &server,
        good.replace("Version: 13", "Version: 8").as_bytes(),
    );
    assert!(response.contains("Sec-WebSocket-Version: 13"), "{response}");
}

#[test]
fn handshake_timeout_stops_slowloris() {
    let server = Server::start(&["--handshake-timeout-ms", "300"]);
    let mut raw = Raw::connect(server.viewer);
    raw.send_bytes(b"GET /v1/viewer HTTP/1.1\r\nHost: x\r\n");
    // The server closes after 300 ms; the read timeout bounds the wait, generously, since a
    // machine busy with parallel builds can hold a test server off the CPU for seconds.
    raw.stream.set_read_timeout(Some(3 * WAIT)).unwrap();
    assert!(raw.closed(), "server closed the slow handshake");
    server.wait_stats("aborted handshake", |s| {
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["counters"]["handshake_aborted"].as_u64() == Some(1))
    });
}

#[test]
fn keepalive_closes_dead_viewers_and_keeps_live_ones() {
    let server = Server::start(&["--ping-interval-s", "1", "--pong-timeout-s", "1"]);
    // Raw client that never answers pings.
    let (mut dead, _) = Raw::upgrade(server.viewer);
    let ping = dead.frame();
    assert_eq!(ping.opcode, 9, "server pinged the silent viewer");
    assert!(dead.closed(), "unanswered ping closes the connection");
    // tungstenite answers pings by itself: still served after several ping intervals.
    let (mut live, _) = connect(&server.url(""), None);
    let deadline = std::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    while std::time::Instant::now() < deadline {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = live.get_mut() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
        }
        match live.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = live.flush();
            }
            Err(e) => panic!("live viewer lost: {e}"),
        }
    }
    assert!(pings >= 1);
    send_json(&mut live, &json!({"type": "ping"}));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = live.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(next_of_type(&mut live, "pong")["type"], "pong");
}

#[test]
fn full_server_answers_503() {
    let server = Server::start(&["--shards", "1", "--max-connections", "1"]);
    let (_first, _) = connect(&server.url(""), None);
    let request = Raw::request(server.viewer, "/v1/viewer", "");
    let (status, response) = handshake_status(&server, request.as_bytes());
    assert_eq!(status, 503, "{response}");
    assert!(response.contains("Retry-After"));
}

#[test]
fn sigterm_closes_viewers_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--shutdown-grace-ms", "2000"]);
    let mut viewers: Vec<Ws> = (0..4).map(|_| connect(&server.url(""), None).0).collect();
    server.wait_stats("4 viewers", |s| s["connections"] == 4);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    for ws in &mut viewers {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1001);
            }
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
}

/// With two shards and CPU steering, a connection made from a thread pinned to CPU c lands on
/// the shard pinned to c; without steering, reuseport hashing still uses both shards.
#[test]
fn two_shards_both_serve_connections() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Without accept stealing: a shard held up for 2 ms by the tests running beside this one
    // would have its neighbour take the connection (tests/accept_stealing.rs covers that).
    let server = Server::start(&["--shards", "2", "--accept-stealing", "false"]);
    assert_eq!(server.shards, 2);
    if server.steering && cpus >= 2 {
        for cpu in 0..2usize {
            let url = server.url("");
            let shards: Vec<u64> = std::thread::spawn(move || {
                netstack::sys::pin_current_thread(cpu).expect("pin");
                (0..8)
                    .map(|_| connect(&url, None).1["shard"].as_u64().unwrap())
                    .collect()
            })
            .join()
            .unwrap();
            assert!(
                shards.iter().all(|&s| s == cpu as u64),
                "from CPU {cpu}: shards {shards:?}"
            );
        }
    }
    let hashing = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    assert!(!hashing.steering);
    let mut seen = [0u32; 2];
    let mut keep = Vec::new();
    for _ in 0..64 {
        let (ws, welcome) = connect(&hashing.url(""), None);
        seen[welcome["shard"].as_u64().unwrap() as usize] += 1;
        keep.push(ws);
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both shards used: {seen:?}");
    let stats = hashing.wait_stats("64 viewers", |s| s["connections"] == 64);
    let per_shard: Vec<u64> = stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .collect();
    assert_eq!(per_shard, vec![seen[0] as u64, seen[1] as u64], "{stats}");
}
