//! kill -9 of an edge mid-poll, behind a real `haproxy` and over a real `nats-server -js`
//! (both spawned by the test on free loopback ports): the killed edge's viewers reconnect
//! through HAProxy to the other edges with their resume tokens, get their state back, can
//! still change their vote, and the final count equals the acknowledged votes, each once.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{have, Edge, HaProxy, Nats};
use common::*;
use serde_json::{json, Value};

fn haproxy_config(edges: &[&Edge]) -> String {
    let mut servers = String::new();
    for e in edges {
        let agent = e.agent.unwrap();
        servers.push_str(&format!(
            "    server {} {} agent-addr {} agent-port {}\n",
            e.id,
            e.viewer,
            agent.ip(),
            agent.port()
        ));
    }
    format!(
        "global\n    stats socket {{socket}} mode 600 level admin\n    maxconn 4000\n\
         defaults\n    mode http\n    option redispatch\n    retries 3\n\
         \x20   timeout connect 1s\n    timeout client 30s\n\
         \x20   timeout server 30s\n    timeout tunnel 1h\n\
         frontend viewers\n    bind {{front}}\n    default_backend edges\n\
         backend edges\n    balance roundrobin\n    source 127.0.0.29\n\
         \x20   default-server send-proxy-v2 check inter 100ms fall 1 rise 1 agent-check agent-inter 100ms weight 100\n{servers}"
    )
}

struct Voter {
    ws: Option<Ws>,
    token: String,
    id: String,
    edge: String,
    choice: usize,
}

/// Connects through HAProxy (retrying while a dead edge is still being noticed).
fn connect_via(front: &str, query: &str) -> (Ws, Value) {
    use tungstenite::client::IntoClientRequest;
    let deadline = Instant::now() + WAIT;
    loop {
        let req = format!("ws://{front}/v1/viewer{query}")
            .into_client_request()
            .unwrap();
        match tungstenite::connect(req) {
            Ok((mut ws, _)) => {
                if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
                    s.set_read_timeout(Some(WAIT)).unwrap();
                }
                let welcome = next_json(&mut ws);
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                return (ws, welcome);
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no edge took the viewer: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn a_killed_edges_viewers_resume_elsewhere_and_keep_their_votes() {
    if !have("nats-server", "nats-server") || !have("haproxy", "haproxy") {
        return;
    }
    let nats = Nats::start();
    let url = nats.url();
    let trust = ["--trusted-proxies", "127.0.0.29"];
    let mut edges: Vec<Edge> = [
        ("f1", "127.0.0.21"),
        ("f2", "127.0.0.22"),
        ("f3", "127.0.0.23"),
    ]
    .iter()
    .map(|(id, ip)| Edge::start(id, ip, Some(&url), &trust))
    .collect();
    for e in &edges {
        e.wait_edges(3);
    }
    let haproxy = HaProxy::start(
        "127.0.0.20",
        &haproxy_config(&[&edges[0], &edges[1], &edges[2]]),
    );
    let front = haproxy.front.to_string();
    let (status, body) = edges[0].api("POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 201, "{body}");
    for e in &edges {
        e.wait("/api/streams", "the stream", |s| {
            s["streams"][0]["id"] == "s"
        });
    }

    // Nine viewers through HAProxy, spread over the three edges.
    let mut voters = Vec::new();
    for i in 0..9 {
        let (mut ws, welcome) = connect_via(&front, "");
        send_json(&mut ws, &json!({"type": "watch", "stream": "s"}));
        next_of_type(&mut ws, "endpoint");
        let id = welcome["viewer"].as_str().unwrap().to_owned();
        let edge = edges
            .iter()
            .find(|e| e.api("GET", &format!("/api/viewers/{id}"), None).0 == 200)
            .expect("the viewer is on an edge");
        edge.wait(&format!("/api/viewers/{id}"), "the watch", |v| {
            v["stream"] == "s"
        });
        voters.push(Voter {
            ws: Some(ws),
            token: welcome["resume"].as_str().unwrap().to_owned(),
            id,
            edge: edge.id.clone(),
            choice: i % 3,
        });
    }
    let on_f2 = voters.iter().filter(|v| v.edge == "f2").count();
    assert!(on_f2 >= 1, "HAProxy sent no viewer to f2");

    let (status, p) = edges[0].api(
        "POST",
        "/api/polls",
        Some(
            &json!({"stream": "s", "question": "q", "choices": ["a", "b", "c"], "duration_s": 300}),
        ),
    );
    assert_eq!(status, 201, "{p}");
    let poll = p["id"].as_str().unwrap().to_owned();
    // Every vote acknowledged (stored in JetStream before the answer).
    for v in &mut voters {
        let ws = v.ws.as_mut().unwrap();
        next_of_type(ws, "poll");
        send_json(
            ws,
            &json!({"type": "vote", "poll": poll, "choice": v.choice}),
        );
        let ack = next_of_type(ws, "voted");
        assert_eq!(ack["poll"], poll.as_str(), "{ack}");
    }

    // kill -9 of f2, mid-poll.
    edges[1].kill();
    for v in voters.iter_mut().filter(|v| v.edge == "f2") {
        v.ws = None;
    }
    // Its viewers come back through HAProxy with their tokens and land on f1 or f3.
    let mut moved = 0;
    for v in voters.iter_mut().filter(|v| v.edge == "f2") {
        let (ws, welcome) = connect_via(&front, &format!("?resume={}", v.token));
        assert_eq!(welcome["resumed"], true, "{welcome}");
        assert_eq!(welcome["resume"], v.token.as_str(), "{welcome}");
        v.ws = Some(ws);
        v.id = welcome["viewer"].as_str().unwrap().to_owned();
        moved += 1;
    }
    assert_eq!(moved, on_f2);
    let mut expected = [0u64; 3];
    for v in &voters {
        expected[v.choice] += 1;
    }
    // A resumed viewer changes its vote: moved, not added.
    let changer = voters.iter_mut().find(|v| v.edge == "f2").unwrap();
    let ws = changer.ws.as_mut().unwrap();
    let next = (changer.choice + 1) % 3;
    send_json(ws, &json!({"type": "vote", "poll": poll, "choice": next}));
    let ack = next_of_type(ws, "voted");
    assert_eq!(ack["choice"], next as u64, "{ack}");
    expected[changer.choice] -= 1;
    expected[next] += 1;
    changer.choice = next;

    let want = json!(expected);
    let (status, _) = edges[0].api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    for e in [&edges[0], &edges[2]] {
        let p = e.wait(&format!("/api/polls/{poll}"), "the final", |p| {
            p["state"] == "closed"
        });
        assert_eq!(p["counts"], want, "edge {}: {p}", e.id);
        assert_eq!(p["total"], 9, "every acknowledged vote once: {p}");
    }
    // Every viewer, the resumed ones too, gets the final results.
    for v in &mut voters {
        let ws = v.ws.as_mut().unwrap();
        let last = loop {
            let r = match ws.read() {
                Ok(tungstenite::Message::Text(t)) => serde_json::from_str::<Value>(&t).unwrap(),
                Ok(_) => continue,
                Err(e) => panic!("viewer {} (first on {}): {e}", v.id, v.edge),
            };
            if r["type"] == "results" && r["final"] == true {
                break r;
            }
        };
        assert_eq!(last["counts"], want, "viewer {}: {last}", v.id);
    }
}
