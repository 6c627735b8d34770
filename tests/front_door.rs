//! The viewer port's front door: connections accepted in batches from the shard's reactor,
//! upgrades answered inline when their request is already there, and the handshake task for
//! everything that is not (a request that arrives late or in pieces, a client that never
//! sends).

mod common;

use std::io::Write;

use common::*;
use netstack::ws::OpCode;
use serde_json::Value;

/// A shard counter summed over the shards.
fn counter(stats: &Value, name: &str) -> u64 {
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["counters"][name].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn a_request_that_arrives_late_and_in_pieces_still_upgrades() {
    let server = Server::start(&["--shards", "1"]);
    let mut raw = Raw::connect(server.viewer);
    raw.stream.set_nodelay(true).unwrap();
    // Accepted with nothing to read: the inline read finds nothing, a task takes over.
    server.wait_stats("the connection accepted", |s| counter(s, "accepted") == 1);
    let request = Raw::request(server.viewer, "/v1/viewer", "User-Agent: pieces/1.0\r\n");
    let (a, b) = request.as_bytes().split_at(20);
    raw.send_bytes(a);
    raw.send_bytes(b);
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let welcome = raw.frame().json();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // And it is a working viewer.
    raw.send(OpCode::Text, true, br#"{"type":"ping"}"#);
    assert_eq!(raw.frame().json()["type"], "pong");
}

#[test]
fn frames_pipelined_behind_the_request_are_served() {
    let server = Server::start(&["--shards", "1"]);
    let mut raw = Raw::connect(server.viewer);
    let mut bytes = Raw::request(server.viewer, "/v1/viewer", "").into_bytes();
    netstack::ws::encode_client_frame(
        OpCode::Text,
        true,
        br#"{"type":"ping"}"#,
        [1, 2, 3, 4],
        &mut bytes,
    );
    // One write: request and frame arrive together and are read in one go.
    raw.stream.write_all(&bytes).unwrap();
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(raw.frame().json()["type"], "welcome");
    assert_eq!(raw.frame().json()["type"], "pong");
}

#[test]
fn a_client_that_never_sends_is_closed_at_the_handshake_timeout() {
    let server = Server::start(&["--shards", "1", "--handshake-timeout-ms", "300"]);
    let mut raw = Raw::connect(server.viewer);
    raw.stream.set_read_timeout(Some(3 * WAIT)).unwrap();
    assert!(raw.closed(), "the server closed the silent connection");
    let stats = server.wait_stats("the aborted handshake", |s| {
        counter(s, "handshake_aborted") == 1
    });
    assert_eq!(stats["connections"], 0, "{stats}");
    // The seat was given back: a viewer still gets in.
    let (_raw, welcome) = Raw::upgrade(server.viewer);
    assert_eq!(welcome["type"], "welcome");
}

#[test]
fn a_burst_of_connects_larger_than_one_accept_all_upgrade() {
    const N: usize = 300;
    let server = Server::start(&["--shards", "1"]);
    let request = Raw::request(server.viewer, "/v1/viewer", "");
    // Every connection is made and its request sent before any answer is read, so the
    // backlog holds many at once and each wake-up of the accept loop drains several.
    let mut clients: Vec<Raw> = (0..N)
        .map(|_| {
            let mut raw = Raw::connect(server.viewer);
            raw.send_bytes(request.as_bytes());
            raw
        })
        .collect();
    let mut viewers = std::collections::BTreeSet::new();
    for raw in &mut clients {
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let welcome = raw.frame().json();
        viewers.insert(welcome["viewer"].as_str().unwrap().to_owned());
    }
    assert_eq!(viewers.len(), N, "every connection is its own viewer");
    let stats = server.wait_stats("every viewer joined", |s| s["connections"] == N);
    assert_eq!(counter(&stats, "accepted"), N as u64, "{stats}");
    // They are served: the last one answers a ping.
    let last = clients.last_mut().unwrap();
    last.send(OpCode::Text, true, br#"{"type":"ping"}"#);
    assert_eq!(last.frame().json()["type"], "pong");
}
