//! Identified people's votes in a cluster (real `nats-server -js`, two edges on 127.0.0.x
//! addresses, HS256 tokens naming each person): a person's vote is answered only once stored,
//! counted once whichever edges they voted on (their latest choice), and not lost when the edge
//! that acknowledged it is killed (kill -9) before the poll closes: the final is read from the
//! store.

mod common;

use common::cluster::{have, Edge, Nats};
use common::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "cluster-test-secret-0123456789abcdef";

fn person(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// `sub` on `edge`, watching stream `s`, offered `poll`.
fn voter(edge: &Edge, sub: &str, poll: &str) -> Ws {
    let url = format!("{}?token={}", edge.url(), person(sub));
    let (mut ws, _) = connect(&url, None);
    send_json(&mut ws, &json!({"type": "watch", "stream": "s"}));
    let offered = next_of_type(&mut ws, "poll");
    assert_eq!(offered["poll"], poll);
    ws
}

fn vote(ws: &mut Ws, poll: &str, choice: u8) -> Value {
    send_json(ws, &json!({"type": "vote", "poll": poll, "choice": choice}));
    next_of_type(ws, "voted")
}

#[test]
fn a_persons_vote_counts_once_across_edges_and_survives_its_edge() {
    if !have("nats-server", "nats-server") {
        return;
    }
    let nats = Nats::start();
    let flags = ["--jwt-hs256-secret", SECRET];
    let mut e1 = Edge::start("e1", "127.0.0.1", Some(&nats.url()), &flags);
    let e2 = Edge::start("e2", "127.0.0.2", Some(&nats.url()), &flags);
    for e in [&e1, &e2] {
        e.wait_edges(2);
    }
    let (status, _) = e1.api("POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 201);
    e2.wait("/api/streams", "the stream", |s| {
        s["streams"].as_array().is_some_and(|a| !a.is_empty())
    });
    let (status, p) = e1.api(
        "POST",
        "/api/polls",
        Some(&json!({"stream": "s", "question": "?", "choices": ["a", "b"], "duration_s": 300})),
    );
    assert_eq!(status, 201, "{p}");
    let poll = p["id"].as_str().unwrap().to_owned();
    e2.wait(&format!("/api/polls/{poll}"), "the poll", |p| {
        p["state"] == "open"
    });

    // Alice votes a on edge 1 (acknowledged once stored), bob b on edge 2, then alice
    // changes to b from edge 2: one person, her latest choice.
    let mut alice1 = voter(&e1, "alice", &poll);
    assert_eq!(vote(&mut alice1, &poll, 0)["choice"], 0);
    let mut bob = voter(&e2, "bob", &poll);
    vote(&mut bob, &poll, 1);
    let mut carol = voter(&e1, "carol", &poll);
    vote(&mut carol, &poll, 1);
    let mut alice2 = voter(&e2, "alice", &poll);
    vote(&mut alice2, &poll, 1);

    // Edge 1 dies right after acknowledging carol's vote: nothing it acknowledged is lost.
    e1.kill();
    let (status, _) = e2.api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    let p = e2.wait(&format!("/api/polls/{poll}"), "the final", |p| {
        p["state"] == "closed"
    });
    // alice (b, her latest, not also a), bob (b), carol (b, acknowledged by the dead edge).
    assert_eq!(p["counts"], json!([0, 3]), "{p}");
    assert_eq!(p["total"], 3, "{p}");
}
