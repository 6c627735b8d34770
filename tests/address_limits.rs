//! Per-address abuse limits on the viewer port: the connection cap (503 + Retry-After) and
//! the handshake token bucket (429 + Retry-After), counted in `/api/stats`, while viewers
//! from other addresses (127.0.0.2, also loopback) are served.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Instant;

use common::*;
use serde_json::Value;

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback source address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

/// The upgrade's answer: the head, and the body of a refusal.
fn attempt(from: Ipv4Addr, server: &Server) -> (Raw, String) {
    let mut raw = Raw::from_stream(connect_from(from, server.viewer));
    raw.stream
        .write_all(Raw::request(server.viewer, "/v1/viewer", "").as_bytes())
        .unwrap();
    let head = raw.read_head();
    (raw, head)
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["counters"][name].as_u64().unwrap())
        .sum()
}

const ONE: Ipv4Addr = Ipv4Addr::LOCALHOST;
const TWO: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn the_per_address_cap_answers_503_and_frees_places_on_close() {
    let server = Server::start(&["--shards", "2", "--max-connections-per-address", "2"]);
    let (a, head) = attempt(ONE, &server);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (_b, head) = attempt(ONE, &server);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (mut refused, head) = attempt(ONE, &server);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After: 10"), "{head}");
    let body = String::from_utf8_lossy(&refused.read_to_end()).into_owned();
    assert!(
        body.contains("too many connections from your address"),
        "{body}"
    );
    // Another address is not affected.
    let (_c, head) = attempt(TWO, &server);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    server.wait_stats("cap refusal counted", |s| {
        counter(s, "refused_address_cap") == 1
    });
    // A closed viewer gives its place back (once the shard has seen the close).
    drop(a);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_d, head) = attempt(ONE, &server);
        if head.starts_with("HTTP/1.1 101") {
            break;
        }
        assert!(Instant::now() < deadline, "place never freed: {head}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_handshake_flood_from_one_address_gets_429_while_others_are_served() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--handshakes-per-address-per-s",
        "1",
        "--handshake-burst-per-address",
        "3",
    ]);
    // A viewer from another address, connected before the flood, keeps being served.
    let stream = connect_from(TWO, server.viewer);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (mut other, resp) = tungstenite::client(server.url(""), stream).expect("upgrade");
    assert_eq!(resp.status(), 101);
    // The flood: 20 handshakes at once from 127.0.0.1. The burst (3) passes, plus at most
    // one more per second of the flood; the rest get 429 with Retry-After.
    let started = Instant::now();
    let mut refused = 0;
    let mut accepted = Vec::new();
    for _ in 0..20 {
        let (raw, head) = attempt(ONE, &server);
        if head.starts_with("HTTP/1.1 429") {
            assert!(head.contains("Retry-After: "), "{head}");
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            accepted.push(raw);
        }
    }
    let seconds = started.elapsed().as_secs() as usize;
    assert!(
        accepted.len() <= 3 + seconds + 1,
        "{} accepted in {seconds} s",
        accepted.len()
    );
    assert!(accepted.len() >= 3, "the burst passes");
    let stats = server.wait_stats("429s counted", |s| {
        counter(s, "refused_rate_limited") == refused as u64
    });
    assert!(refused > 0, "{stats}");
    // The other address's viewer still gets casts.
    let (status, _) = server.api(
        "POST",
        "/api/groups/global/messages",
        Some(&serde_json::json!({"payload": "still here"})),
    );
    assert_eq!(status, 202);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no cast");
        if let tungstenite::Message::Text(t) = other.read().expect("read") {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "message" {
                assert_eq!(v["payload"], "still here");
                break;
            }
        }
    }
    // And a new viewer from the other address is admitted during the flood.
    let (_x, head) = attempt(TWO, &server);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// One API request from `from`; returns the raw response.
fn api_from(from: Ipv4Addr, server: &Server, path: &str) -> String {
    use std::io::Read;
    let mut s = connect_from(from, server.api);
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_api_port_has_the_same_limits() {
    let server = Server::start(&[
        "--api-connections-per-address-per-s",
        "1",
        "--handshake-burst-per-address",
        "3",
    ]);
    let started = Instant::now();
    let answers: Vec<String> = (0..12)
        .map(|_| api_from(ONE, &server, "/api/stats"))
        .collect();
    let seconds = started.elapsed().as_secs() as usize;
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    let limited: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 429"))
        .collect();
    assert_eq!(ok + limited.len(), 12, "{answers:?}");
    assert!(ok >= 3 && ok <= 3 + seconds + 1, "{ok} in {seconds} s");
    assert!(limited[0].contains("Retry-After: "), "{}", limited[0]);
    assert!(limited[0].contains("rate_limited"), "{}", limited[0]);
    // Another address reads the count.
    let stats = api_from(TWO, &server, "/api/stats");
    let body: Value = serde_json::from_str(stats.split_once("\r\n\r\n").unwrap().1.trim()).unwrap();
    assert_eq!(
        body["api"]["refused_rate_limited"].as_u64(),
        Some(limited.len() as u64)
    );
}
