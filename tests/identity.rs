//! Viewer identity end to end, with tokens signed the way an operator's backend would
//! (jsonwebtoken) and an independent client (tungstenite): refused tokens get 401 with a
//! reason, one person on several connections over two shards has exactly one vote, anonymous
//! voters are refused when the settings say so, and resume tokens stay with their person.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn person(sub: &str) -> String {
    token(json!({"sub": sub, "exp": now_s() + 600}))
}

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--shards", "2", "--cpu-steering", "false"];
    args.extend_from_slice(&["--jwt-hs256-secret", SECRET]);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// The raw HTTP answer to an upgrade request with `query`.
fn refused(server: &Server, query: &str) -> String {
    let mut raw = Raw::connect(server.viewer);
    raw.send_bytes(Raw::request(server.viewer, &format!("/v1/viewer{query}"), "").as_bytes());
    String::from_utf8_lossy(&raw.read_to_end()).into_owned()
}

fn vote(ws: &mut Ws, poll: &str, choice: i64) -> Value {
    send_json(ws, &json!({"type": "vote", "poll": poll, "choice": choice}));
    let deadline = Instant::now() + WAIT;
    loop {
        let m = next_json(ws);
        if m["type"] == "voted" || m["type"] == "error" {
            return m;
        }
        assert!(Instant::now() < deadline, "no answer to the vote");
    }
}

fn watch(ws: &mut Ws, stream: &str) {
    send_json(ws, &json!({"type": "watch", "stream": stream}));
    next_of_type(ws, "endpoint");
}

fn open_poll(server: &Server) -> String {
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({"id": "s"})));
    assert_eq!(status, 201, "{body}");
    let (status, p) = server.api(
        "POST",
        "/api/polls",
        Some(
            &json!({"stream": "s", "question": "Q?", "choices": ["a", "b", "c"], "duration_s": 60}),
        ),
    );
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

fn wait_counts(server: &Server, poll: &str, want: Value) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, p) = server.api("GET", &format!("/api/polls/{poll}"), None);
        if p["counts"] == want {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "counts never reached {want}: {p}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The viewer's shard, once the application core's mirror knows it (it trails the welcome).
fn shard_of(server: &Server, welcome: &Value) -> u64 {
    let id = welcome["viewer"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
        if status == 200 {
            return v["shard"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "the mirror never saw {id}: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_tokens_are_refused_at_the_handshake_with_a_reason() {
    let server = start(&[]);
    let expired = token(json!({"sub": "a", "exp": now_s() - 60}));
    let wrong = encode(
        &Header::default(),
        &json!({"sub": "a", "exp": now_s() + 600}),
        &EncodingKey::from_secret(b"some-other-secret-some-other-secret"),
    )
    .unwrap();
    let none_alg = encode(
        &Header::new(Algorithm::HS384),
        &json!({"sub": "a", "exp": now_s() + 600}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (query, reason) in [
        (format!("?token={expired}"), "token expired"),
        (format!("?token={wrong}"), "signature does not verify"),
        (format!("?token={none_alg}"), "signature does not verify"),
        ("?token=abc.def".to_string(), "malformed token"),
        ("?token=not-a-jwt-at-all".to_string(), "malformed token"),
    ] {
        let answer = refused(&server, &query);
        assert!(answer.starts_with("HTTP/1.1 401"), "{query}: {answer}");
        assert!(answer.contains(reason), "{query}: {answer}");
    }
    // Anonymous viewers are allowed by default; a good token in the subprotocol works too,
    // and the chosen subprotocol is echoed.
    connect(&server.url(""), None);
    use tungstenite::client::IntoClientRequest;
    let mut req = server.url("").into_client_request().unwrap();
    let offered = format!("ovation.v1, token.{}", person("carol"));
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", offered.parse().unwrap());
    let (mut ws, resp) = tungstenite::connect(req).expect("token in subprotocol");
    assert_eq!(
        resp.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "ovation.v1"
    );
    assert_eq!(next_json(&mut ws)["type"], "welcome");
    let stats = server.wait_stats("401s counted", |s| {
        s["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["counters"]["handshake_unauthorized"].as_u64().unwrap())
            .sum::<u64>()
            == 5
    });
    let _ = stats;
}

#[test]
fn one_person_on_three_connections_over_two_shards_has_one_vote() {
    let server = start(&[]);
    let alice = person("alice");
    let poll = open_poll(&server);
    // Three connections of alice, on both shards (reuseport hashing spreads them; connect
    // until both shards hold one, bounded).
    let mut conns: Vec<(Ws, u64)> = Vec::new();
    let mut attempts = 0;
    while conns.len() < 3 || conns.iter().all(|c| c.1 == conns[0].1) {
        attempts += 1;
        assert!(attempts < 64, "connections never reached both shards");
        let (mut ws, welcome) = connect(&server.url(&format!("?token={alice}")), None);
        let shard = shard_of(&server, &welcome);
        if conns.len() >= 2 && conns.iter().all(|c| c.1 == shard) {
            continue; // keep looking for the other shard
        }
        watch(&mut ws, "s");
        next_of_type(&mut ws, "poll");
        conns.push((ws, shard));
        if conns.len() > 3 {
            conns.remove(0);
        }
    }
    // Each connection votes; the last vote is the person's vote.
    assert_eq!(vote(&mut conns[0].0, &poll, 0)["type"], "voted");
    wait_counts(&server, &poll, json!([1, 0, 0]));
    assert_eq!(vote(&mut conns[1].0, &poll, 1)["type"], "voted");
    wait_counts(&server, &poll, json!([0, 1, 0]));
    assert_eq!(vote(&mut conns[2].0, &poll, 2)["type"], "voted");
    let p = wait_counts(&server, &poll, json!([0, 0, 1]));
    assert_eq!(p["total"], 1);
    // Another person and an anonymous viewer count once each, beside alice.
    let (mut bob, _) = connect(&server.url(&format!("?token={}", person("bob"))), None);
    watch(&mut bob, "s");
    next_of_type(&mut bob, "poll");
    assert_eq!(vote(&mut bob, &poll, 2)["type"], "voted");
    let (mut anon, _) = connect(&server.url(""), None);
    watch(&mut anon, "s");
    next_of_type(&mut anon, "poll");
    assert_eq!(vote(&mut anon, &poll, 0)["type"], "voted");
    let p = wait_counts(&server, &poll, json!([1, 0, 2]));
    assert_eq!(p["total"], 3);
    // Closing: the final count keeps one vote per person.
    let (status, _) = server.api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, p) = server.api("GET", &format!("/api/polls/{poll}"), None);
        if p["state"] == "closed" {
            assert_eq!(p["counts"], json!([1, 0, 2]));
            break;
        }
        assert!(Instant::now() < deadline, "poll never closed: {p}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn anonymous_settings_refuse_viewers_or_their_votes() {
    let server = start(&["--anonymous-votes", "false"]);
    let poll = open_poll(&server);
    let (mut anon, _) = connect(&server.url(""), None);
    watch(&mut anon, "s");
    next_of_type(&mut anon, "poll");
    let refused_vote = vote(&mut anon, &poll, 0);
    assert_eq!(refused_vote["code"], "identity_required", "{refused_vote}");
    let (mut dana, _) = connect(&server.url(&format!("?token={}", person("dana"))), None);
    watch(&mut dana, "s");
    next_of_type(&mut dana, "poll");
    assert_eq!(vote(&mut dana, &poll, 1)["type"], "voted");
    wait_counts(&server, &poll, json!([0, 1, 0]));

    let closed = start(&["--anonymous-viewers", "false"]);
    let answer = refused(&closed, "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("a token is required"), "{answer}");
    connect(&closed.url(&format!("?token={}", person("erin"))), None);
}

#[test]
fn allowed_streams_tags_expiry_and_resume_binding() {
    let server = start(&[]);
    let (status, _) = server.api("POST", "/api/streams", Some(&json!({"id": "main"})));
    assert_eq!(status, 201);
    let limited = token(json!({"sub": "frank", "exp": now_s() + 600,
                               "streams": ["main"], "tags": ["vip"]}));
    let (mut ws, welcome) = connect(&server.url(&format!("?token={limited}")), None);
    send_json(&mut ws, &json!({"type": "watch", "stream": "other"}));
    assert_eq!(next_of_type(&mut ws, "error")["code"], "stream_not_allowed");
    watch(&mut ws, "main");
    let id = welcome["viewer"].as_str().unwrap();
    let (_, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
    assert!(
        v.to_string().contains("vip"),
        "token tags join the profile: {v}"
    );

    // A resume token presented by another person is unknown to it: a new viewer.
    let resume = welcome["resume"].as_str().unwrap().to_owned();
    drop(ws);
    let other = person("grace");
    let (_, w) = connect(
        &server.url(&format!("?token={other}&resume={resume}")),
        None,
    );
    assert_ne!(
        w["viewer"], id,
        "another person cannot take frank's identity"
    );
    // Frank himself gets it back.
    let (_, w) = connect(
        &server.url(&format!("?token={limited}&resume={resume}")),
        None,
    );
    assert_eq!(w["viewer"], id, "the person who earned the token resumes");

    // A token that expires while connected closes the viewer with 4001.
    let short = token(json!({"sub": "henry", "exp": now_s() + 2}));
    let (mut ws, _) = connect(&server.url(&format!("?token={short}")), None);
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "never closed");
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 4001);
                assert_eq!(frame.reason, "token expired");
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}
