//! A cluster of three edges over a real `nats-server -js` (spawned by the test on a free
//! loopback port, its store in a temp directory), each edge on its own 127.0.0.x address:
//! edges list each other, a group created on one edge exists on all with its size summed, a
//! group-cast posted to one edge reaches exactly the members on every edge once, a poll has
//! exact merged totals and its final reaches every audience, and the cluster recovers from a
//! NATS restart. A single edge without NATS says so.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{have, Edge, Nats};
use common::*;
use serde_json::{json, Value};

const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

struct Viewer {
    ws: Ws,
    ios: bool,
}

/// A viewer on `edge` watching `stream` (the watch applied on its edge).
fn watcher(edge: &Edge, ua: &str, stream: &str) -> Viewer {
    let (mut ws, welcome) = connect(&edge.url(), Some(ua));
    send_json(&mut ws, &json!({"type": "watch", "stream": stream}));
    next_of_type(&mut ws, "endpoint");
    let id = welcome["viewer"].as_str().unwrap();
    edge.wait(&format!("/api/viewers/{id}"), "the watch", |v| {
        v["stream"] == stream
    });
    Viewer { ws, ios: ua == IOS }
}

/// Messages of `kind` the viewer got before the `marker` payload arrived.
fn before_marker(ws: &mut Ws, kind: &str, marker: &str) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no marker");
        let m = next_json(ws);
        if m["type"] == "message" && m["payload"] == marker {
            return got;
        }
        if m["type"] == kind {
            got.push(m);
        }
    }
}

fn three_edges(nats: &Nats) -> Vec<Edge> {
    let edges: Vec<Edge> = [
        ("e1", "127.0.0.1"),
        ("e2", "127.0.0.2"),
        ("e3", "127.0.0.3"),
    ]
    .iter()
    .map(|(id, ip)| Edge::start(id, ip, Some(&nats.url()), &[]))
    .collect();
    for e in &edges {
        let c = e.wait_edges(3);
        assert_eq!(c["mode"], "nats", "{c}");
        assert_eq!(c["connected"], true, "{c}");
    }
    edges
}

#[test]
fn three_edges_share_groups_casts_and_polls() {
    if !have("nats-server", "nats-server") {
        return;
    }
    let nats = Nats::start();
    let edges = three_edges(&nats);
    let cluster = edges[0].api("GET", "/api/cluster", None).1;
    let ids: Vec<&str> = cluster["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3"], "{cluster}");
    assert_eq!(cluster["edges"][1]["viewer"], edges[1].viewer.to_string());

    // A stream registered on edge 1 can be watched on every edge.
    let (status, body) = edges[0].api("POST", "/api/streams", Some(&json!({"id": "final"})));
    assert_eq!(status, 201, "{body}");
    for e in &edges {
        e.wait("/api/streams", "the stream", |s| {
            s["streams"][0]["id"] == "final"
        });
    }
    // Two iOS viewers and one Android viewer on each edge.
    let mut viewers: Vec<(usize, Viewer)> = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        for ua in [IOS, ANDROID, IOS] {
            viewers.push((i, watcher(e, ua, "final")));
        }
    }

    // A group created on edge 1 exists on every edge, its size summed over the cluster.
    let (status, g) = edges[0].api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "ios", "match": {"os": ["ios"]}})),
    );
    assert_eq!(status, 201, "{g}");
    let key = g["id"].as_str().unwrap().to_owned();
    assert_eq!(key, "g1-e1", "custom keys name their edge");
    for e in &edges {
        e.wait(&format!("/api/groups/{key}"), "the summed size", |g| {
            g["size"] == 6
        });
    }

    // A cast posted to edge 2 reaches each member on every edge exactly once, and no one
    // else (the marker, cast to everyone through the same edge afterwards, comes after it).
    let (status, sent) = edges[1].api(
        "POST",
        &format!("/api/groups/{key}/messages"),
        Some(&json!({"payload": {"n": 1}})),
    );
    assert_eq!((status, sent["members"].as_u64()), (202, Some(6)), "{sent}");
    let (status, _) = edges[1].api(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": "marker"})),
    );
    assert_eq!(status, 202);
    for (edge, v) in viewers.iter_mut() {
        let got = before_marker(&mut v.ws, "message", "marker");
        let expected = usize::from(v.ios);
        assert_eq!(got.len(), expected, "viewer on edge {edge}: {got:?}");
        if v.ios {
            assert_eq!(got[0]["payload"]["n"], 1);
            assert_eq!(got[0]["group"], key.as_str());
        }
    }

    // A poll created on edge 3 runs on every edge; votes on all three merge exactly.
    let (status, p) = edges[2].api(
        "POST",
        "/api/polls",
        Some(&json!({"stream": "final", "question": "Who wins?", "choices": ["a", "b", "c"], "duration_s": 300})),
    );
    assert_eq!(status, 201, "{p}");
    let poll = p["id"].as_str().unwrap().to_owned();
    let mut expected = [0u64; 3];
    for (n, (_, v)) in viewers.iter_mut().enumerate() {
        let offered = next_of_type(&mut v.ws, "poll");
        assert_eq!(offered["poll"], poll.as_str());
        let choice = n % 3;
        send_json(
            &mut v.ws,
            &json!({"type": "vote", "poll": poll, "choice": choice}),
        );
        let ack = next_of_type(&mut v.ws, "voted");
        assert_eq!(ack["poll"], poll.as_str(), "{ack}");
        expected[choice] += 1;
    }
    // One viewer on edge 2 changes its mind: moved, not added.
    let (_, v) = &mut viewers[3];
    send_json(
        &mut v.ws,
        &json!({"type": "vote", "poll": poll, "choice": 2}),
    );
    next_of_type(&mut v.ws, "voted");
    expected[0] -= 1;
    expected[2] += 1;
    let want = json!(expected);
    for e in &edges {
        e.wait(&format!("/api/polls/{poll}"), "the merged counts", |p| {
            p["counts"] == want
        });
    }

    // Closed through edge 1: every edge ends with the same exact final count, and every
    // viewer on every edge gets it.
    let (status, _) = edges[0].api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    for e in &edges {
        let p = e.wait(&format!("/api/polls/{poll}"), "the final", |p| {
            p["state"] == "closed"
        });
        assert_eq!(p["counts"], want, "edge {}: {p}", e.id);
        assert_eq!(p["total"], 9);
    }
    for (edge, v) in viewers.iter_mut() {
        let last = loop {
            let r = next_of_type(&mut v.ws, "results");
            if r["final"] == true {
                break r;
            }
        };
        assert_eq!(last["counts"], want, "viewer on edge {edge}: {last}");
    }
}

#[test]
fn the_cluster_recovers_from_a_nats_restart() {
    if !have("nats-server", "nats-server") {
        return;
    }
    let mut nats = Nats::start();
    let url = nats.url();
    let e1 = Edge::start("r1", "127.0.0.4", Some(&url), &[]);
    let e2 = Edge::start("r2", "127.0.0.5", Some(&url), &[]);
    e1.wait_edges(2);
    e2.wait_edges(2);
    let (status, body) = e1.api("POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 201, "{body}");
    e2.wait("/api/streams", "the stream", |s| {
        s["streams"][0]["id"] == "s"
    });

    nats.kill();
    for e in [&e1, &e2] {
        e.wait("/api/cluster", "the loss", |c| c["connected"] == false);
    }
    // Both edges keep serving their own viewers while NATS is gone.
    let mut on_e2 = watcher(&e2, IOS, "s");
    let (status, g) = e1.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "ios", "match": {"os": ["ios"]}})),
    );
    assert_eq!(status, 201, "{g}");
    let key = g["id"].as_str().unwrap().to_owned();
    let (status, _) = e2.api("GET", &format!("/api/groups/{key}"), None);
    assert_eq!(
        status, 404,
        "the bus is down: edge 2 cannot know the group yet"
    );

    // NATS comes back: the edges reconnect and reconcile what was made meanwhile.
    nats.restart();
    for e in [&e1, &e2] {
        e.wait("/api/cluster", "the return", |c| {
            c["connected"] == true && c["edges"].as_array().is_some_and(|e| e.len() == 2)
        });
    }
    // Sizes over the cluster follow the announcements (every 100 ms here).
    for e in [&e1, &e2] {
        e.wait(&format!("/api/groups/{key}"), "the reconciled group", |g| {
            g["size"] == 1
        });
    }
    let (status, sent) = e1.api(
        "POST",
        &format!("/api/groups/{key}/messages"),
        Some(&json!({"payload": "after"})),
    );
    assert_eq!((status, sent["members"].as_u64()), (202, Some(1)), "{sent}");
    let m = next_of_type(&mut on_e2.ws, "message");
    assert_eq!(m["payload"], "after");
}

#[test]
fn a_single_edge_runs_without_nats() {
    let e = Edge::start("solo", "127.0.0.1", None, &["--max-connections", "50"]);
    let (status, c) = e.api("GET", "/api/cluster", None);
    assert_eq!(status, 200);
    assert_eq!(c["mode"], "single", "{c}");
    assert_eq!(c["edges"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(e.agent_says(), "up 100% maxconn:50\n");
    let (status, _) = e.api("POST", "/api/cluster", None);
    assert_eq!(status, 405);
    // Custom group keys stay as a single edge always had them.
    let (status, g) = e.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "all", "match": {}})),
    );
    assert_eq!((status, g["id"].as_str()), (201, Some("g1")), "{g}");
    // The load follows connections.
    let _viewers: Vec<_> = (0..5).map(|_| connect(&e.url(), None)).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let said = e.agent_says();
        if said == "up 90% maxconn:50\n" {
            break;
        }
        assert!(Instant::now() < deadline, "agent still says {said:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn edges_start_without_nats_and_reconcile_when_it_comes() {
    if !have("nats-server", "nats-server") {
        return;
    }
    let port = common::cluster::free_port("127.0.0.1");
    let url = format!("nats://127.0.0.1:{port}");
    // No NATS yet: the edge starts anyway and serves its own viewers.
    let e1 = Edge::start("d1", "127.0.0.6", Some(&url), &[]);
    let c = e1.api("GET", "/api/cluster", None).1;
    assert_eq!(
        (c["mode"].as_str(), c["connected"].as_bool()),
        (Some("nats"), Some(false)),
        "{c}"
    );
    let (status, body) = e1.api("POST", "/api/streams", Some(&json!({"id": "early"})));
    assert_eq!(status, 201, "{body}");
    let _viewer = watcher(&e1, IOS, "early");

    let dir = std::env::temp_dir().join(format!("ovation-nats-late-{}", std::process::id()));
    let _nats = Nats::start_on(port, dir);
    let e2 = Edge::start("d2", "127.0.0.7", Some(&url), &[]);
    for e in [&e1, &e2] {
        let c = e.wait_edges(2);
        assert_eq!(c["connected"], true, "{c}");
    }
    // What edge 1 made before NATS existed reaches edge 2.
    e2.wait("/api/streams", "the early stream", |s| {
        s["streams"][0]["id"] == "early"
    });
    e2.wait("/api/groups/stream:early", "its audience on edge 1", |g| {
        g["size"] == 1
    });
}
