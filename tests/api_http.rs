//! The operator API's HTTP/1.1 rules on a real server over loopback: pipelining (issue 10
//! item 1), strict headers and bodies (item 6), closing after 401 and bounding connections,
//! groups and broadcasters (item 7), chunked bodies and 100-continue.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{parse_response, read_response, Raw, Server, TOKEN, WAIT};
use serde_json::{json, Value};

/// Well under the API's 60 s idle timeout: pipelined answers must not wait for it.
const PIPELINE_WAIT: Duration = Duration::from_secs(5);

fn connect(server: &Server, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect(server.api).expect("connect api");
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
}

/// [`get`] that asks the server to close after answering.
fn get_close(path: &str) -> String {
    get(path).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Whether the server closes the connection (EOF or reset) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A whole exchange on a fresh connection: `raw` written at once, everything read to EOF.
fn exchange(server: &Server, raw: &[u8]) -> (u16, Value, String) {
    let mut s = connect(server, WAIT);
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, body) = parse_response(&out);
    (status, body, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn three_pipelined_requests_are_answered_at_once() {
    let server = Server::start(&[]);
    let mut s = connect(&server, PIPELINE_WAIT);
    let three = [
        get("/api/stats"),
        post("/api/streams", r#"{"id":"piped"}"#),
        get("/api/streams"),
    ]
    .concat();
    s.write_all(three.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let (a, _, stats) = read_response(&mut s, &mut buf);
    let (b, _, created) = read_response(&mut s, &mut buf);
    let (c, head, list) = read_response(&mut s, &mut buf);
    assert_eq!((a, b, c), (200, 201, 200));
    assert!(stats["shards"].is_array(), "{stats}");
    assert_eq!(created["id"], "piped");
    assert_eq!(list["streams"][0]["id"], "piped", "answered in order");
    assert!(head.contains("Connection: keep-alive"), "{head}");
    // The connection is still usable.
    s.write_all(get("/api/stats").as_bytes()).unwrap();
    assert_eq!(read_response(&mut s, &mut buf).0, 200);
}

#[test]
fn a_broadcaster_upgrade_pipelined_behind_a_get() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .api("POST", "/api/streams", Some(&json!({"id": "live"})))
            .0,
        201
    );
    let mut s = connect(&server, PIPELINE_WAIT);
    let upgrade = Raw::request(
        server.api,
        "/v1/broadcaster?stream=live",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    s.write_all([get("/api/stats"), upgrade].concat().as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let (status, _, stats) = read_response(&mut s, &mut buf);
    assert_eq!(status, 200);
    assert!(stats["shards"].is_array());
    // Then the 101 and the welcome frame, without waiting for any timeout.
    let welcome = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let frame = &buf[i + 4..];
            if frame.len() >= 2 && frame.len() >= 2 + usize::from(frame[1]) {
                assert_eq!(frame[0], 0x81, "one text frame");
                assert!(frame[1] < 126, "a short welcome");
                let payload = &frame[2..2 + usize::from(frame[1])];
                break serde_json::from_slice::<Value>(payload).unwrap();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("the 101 within the wait");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(welcome["role"], "broadcaster");
    assert_eq!(welcome["stream"], "live");
}

#[test]
fn duplicate_authorization_is_refused() {
    let server = Server::start(&[]);
    // Wrong then right: the last one must not win.
    let raw = format!(
        "GET /api/stats HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong-token-xxxxxxxx\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    let (status, body, text) = exchange(&server, raw.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("duplicate Authorization"),
        "{body}"
    );
    assert!(text.contains("Connection: close"), "{text}");
}

#[test]
fn content_length_must_be_digits() {
    let server = Server::start(&[]);
    for bad in ["+10", "-1", "1 0", "99999999999999999999999"] {
        let raw = format!(
            "POST /api/streams HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {bad}\r\n\r\n{{\"id\":\"abcdefg\"}}"
        );
        let (status, body, _) = exchange(&server, raw.as_bytes());
        assert_eq!(status, 400, "Content-Length: {bad} -> {body}");
    }
    // Nothing was created by any of them.
    assert_eq!(
        server.api("GET", "/api/streams", None).1["streams"],
        json!([])
    );
}

#[test]
fn duplicate_json_keys_are_refused_naming_the_key() {
    let server = Server::start(&[]);
    let cases = [
        (
            "/api/groups",
            r#"{"name":"a","name":"b","match":{}}"#,
            "name",
        ),
        (
            "/api/groups",
            r#"{"name":"a","match":{"os":"ios","os":"android"}}"#,
            "os",
        ),
        ("/api/streams", r#"{"id":"x","id":"y"}"#, "id"),
    ];
    for (path, body, key) in cases {
        let raw = post(path, body).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
        let (status, v, _) = exchange(&server, raw.as_bytes());
        assert_eq!(status, 400, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("duplicate key \"{key}\"")),
            "{message}"
        );
    }
    assert_eq!(
        server.api("GET", "/api/streams", None).1["streams"],
        json!([])
    );
}

#[test]
fn a_401_closes_the_connection() {
    let server = Server::start(&[]);
    let mut s = connect(&server, WAIT);
    // A second request pipelined behind the unauthenticated one is not answered.
    let raw = format!(
        "GET /api/stats HTTP/1.1\r\nHost: t\r\n\r\n{}",
        get("/api/stats")
    );
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let (status, head, _) = read_response(&mut s, &mut buf);
    assert_eq!(status, 401);
    assert!(head.contains("Connection: close"), "{head}");
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    assert!(closed(&mut s), "the server keeps a 401 connection open");
}

#[test]
fn the_connection_cap_answers_503() {
    let server = Server::start(&["--api-max-connections", "2"]);
    // Two connections, each known to be served (one answered request each), stay open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&server, WAIT);
        s.write_all(get("/api/stats").as_bytes()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_response(&mut s, &mut buf).0, 200);
        held.push(s);
    }
    let (status, body, text) = exchange(&server, get_close("/api/stats").as_bytes());
    assert_eq!(status, 503, "{text}");
    assert_eq!(body["error"]["code"], "too_many_connections");
    assert!(text.contains("Connection: close") && text.contains("Retry-After: 1"));
    // A place freed is a place given: bounded wait for the server to see the close.
    drop(held.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, _, _) = exchange(&server, get_close("/api/stats").as_bytes());
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn chunked_bodies_and_100_continue_are_accepted() {
    let server = Server::start(&[]);
    let body = r#"{"id":"chunky","title":"in chunks"}"#;
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /api/streams HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
        a.len(),
        b.len()
    );
    let (status, v, text) = exchange(&server, raw.as_bytes());
    assert_eq!(status, 201, "{text}");
    assert_eq!(v["title"], "in chunks");
    // Expect: 100-continue gets the interim answer before the body is sent.
    let mut s = connect(&server, WAIT);
    let body = r#"{"id":"later"}"#;
    s.write_all(
        format!(
            "POST /api/streams HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        got.push(byte[0]);
    }
    assert_eq!(got, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut s, &mut buf).0, 201);
}

#[test]
fn framing_errors_have_their_statuses() {
    let server = Server::start(&[]);
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let cases: [(String, u16); 5] = [
        (
            format!("POST /api/streams HTTP/1.1\r\n{auth}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{{}}"),
            400,
        ),
        (
            format!("POST /api/streams HTTP/1.1\r\n{auth}Transfer-Encoding: gzip\r\n\r\n"),
            501,
        ),
        (
            format!("POST /api/streams HTTP/1.1\r\n{auth}Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{{}}"),
            417,
        ),
        (
            format!("POST /api/streams HTTP/1.1\r\n{auth}Content-Length: 2000000\r\n\r\n"),
            413,
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(17 * 1024)),
            431,
        ),
    ];
    for (raw, want) in cases {
        let (status, v, text) = exchange(&server, raw.as_bytes());
        assert_eq!(status, want, "{v}");
        assert!(text.contains("Connection: close"), "{text}");
    }
}

#[test]
fn groups_and_broadcasters_are_bounded() {
    let server = Server::start(&["--max-groups", "2", "--max-broadcasters-per-stream", "1"]);
    let group = json!({"name": "g", "match": {}});
    assert_eq!(server.api("POST", "/api/groups", Some(&group)).0, 201);
    assert_eq!(server.api("POST", "/api/groups", Some(&group)).0, 201);
    let (status, v) = server.api("POST", "/api/groups", Some(&group));
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "too_many_groups");
    // Deleting one makes room again.
    assert_eq!(server.api("DELETE", "/api/groups/g1", None).0, 200);
    assert_eq!(server.api("POST", "/api/groups", Some(&group)).0, 201);

    assert_eq!(
        server
            .api("POST", "/api/streams", Some(&json!({"id": "live"})))
            .0,
        201
    );
    let url = format!(
        "ws://{}/v1/broadcaster?stream=live&token={TOKEN}",
        server.api
    );
    let (_first, resp) = tungstenite::connect(url.as_str()).expect("first broadcaster");
    assert_eq!(resp.status(), 101);
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!("second broadcaster: {:?}", other.map(|(_, r)| r.status())),
    }
}

#[test]
fn an_unauthenticated_idle_connection_is_closed() {
    let server = Server::start(&[]);
    // Never sends a byte: closed after the unauthenticated timeout (10 s), not the 60 s
    // keep-alive one. The read timeout only bounds the wait.
    let mut idle = connect(&server, Duration::from_secs(30));
    // An authenticated connection stays, and answers after the idle one was closed.
    let mut kept = connect(&server, WAIT);
    kept.write_all(get("/api/stats").as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut kept, &mut buf).0, 200);
    assert!(
        closed(&mut idle),
        "an idle unauthenticated connection is kept"
    );
    kept.write_all(get("/api/stats").as_bytes()).unwrap();
    assert_eq!(read_response(&mut kept, &mut buf).0, 200);
}
