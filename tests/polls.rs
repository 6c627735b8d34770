//! Live polls end to end: audience targeting, late joiners, voting rules, exact counting
//! across reconnects, coalesced live results, and durable final results.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const ANDROID: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36";

fn stream(server: &Server, id: &str) {
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({"id": id})));
    assert_eq!(status, 201, "{body}");
}

/// A viewer watching `stream` (endpoint received, and the watch applied on its shard).
fn watcher(server: &Server, ua: &str, stream: &str) -> (Ws, Value) {
    let (mut ws, welcome) = connect(&server.url(""), Some(ua));
    watch(server, &mut ws, &welcome, stream);
    (ws, welcome)
}

fn watch(server: &Server, ws: &mut Ws, welcome: &Value, stream: &str) {
    send_json(ws, &json!({"type": "watch", "stream": stream}));
    next_of_type(ws, "endpoint");
    let id = welcome["viewer"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
        if v["stream"] == stream {
            return;
        }
        assert!(Instant::now() < deadline, "watch never applied: {v}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn create_poll(server: &Server, body: Value) -> String {
    let (status, p) = server.api("POST", "/api/polls", Some(&body));
    assert_eq!(status, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

/// Casts a marker to everyone and reports whether `kind` arrived before it.
fn got_before_marker(server: &Server, ws: &mut Ws, kind: &str) -> Option<Value> {
    let (status, _) = server.api(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": "marker"})),
    );
    assert_eq!(status, 202);
    let mut found = None;
    loop {
        let m = next_json(ws);
        if m["type"] == "message" && m["payload"] == "marker" {
            return found;
        }
        if m["type"] == kind {
            found = Some(m);
        }
    }
}

fn vote(ws: &mut Ws, poll: &str, choice: i64) -> Value {
    send_json(ws, &json!({"type": "vote", "poll": poll, "choice": choice}));
    loop {
        let m = next_json(ws);
        if m["type"] == "voted" || m["type"] == "error" {
            return m;
        }
    }
}

fn poll_state(server: &Server, id: &str) -> Value {
    let (status, p) = server.api("GET", &format!("/api/polls/{id}"), None);
    assert_eq!(status, 200, "{p}");
    p
}

fn wait_poll(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let p = poll_state(server, id);
        if pred(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {p}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn poll_reaches_its_narrowed_audience_and_late_joiners() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    stream(&server, "s");
    stream(&server, "t");
    let (mut a, _) = watcher(&server, IOS, "s");
    let (mut b, _) = watcher(&server, ANDROID, "s");
    let (mut c, _) = watcher(&server, IOS, "t");
    let (mut d, _) = connect(&server.url(""), Some(IOS));
    let poll = create_poll(
        &server,
        json!({"stream": "s", "question": "Encore?", "choices": ["yes", "no"],
               "duration_s": 60, "match": {"os": ["ios"]}}),
    );
    let got = got_before_marker(&server, &mut a, "poll").expect("ios viewer of s gets the poll");
    assert_eq!(got["poll"], poll.as_str());
    assert_eq!(got["question"], "Encore?");
    assert_eq!(got["choices"], json!(["yes", "no"]));
    assert!(got["closes_at"].as_u64().unwrap() > 0);
    for ws in [&mut b, &mut c, &mut d] {
        assert_eq!(got_before_marker(&server, ws, "poll"), None);
    }
    // Late joiners: an iOS viewer who starts watching gets it at once; an Android one does not.
    let (mut e, welcome) = connect(&server.url(""), Some(IOS));
    send_json(&mut e, &json!({"type": "watch", "stream": "s"}));
    next_of_type(&mut e, "endpoint");
    assert_eq!(next_of_type(&mut e, "poll")["poll"], poll.as_str());
    let _ = welcome;
    let (mut f, _) = watcher(&server, ANDROID, "s");
    assert_eq!(got_before_marker(&server, &mut f, "poll"), None);
    // Outside the audience: refused, nothing counted.
    let refused = vote(&mut b, &poll, 0);
    assert_eq!(refused["code"], "not_in_audience", "{refused}");
    assert_eq!(vote(&mut a, &poll, 0)["type"], "voted");
    assert_eq!(vote(&mut e, &poll, 1)["type"], "voted");
    wait_poll(&server, &poll, "2 votes", |p| p["total"] == 2);
}

#[test]
fn voting_rules_and_changed_votes() {
    let server = Server::start(&[]);
    stream(&server, "s");
    let (mut a, _) = watcher(&server, IOS, "s");
    let poll = create_poll(
        &server,
        json!({"stream": "s", "question": "Best?", "choices": ["x", "y", "z"], "duration_s": 60}),
    );
    next_of_type(&mut a, "poll");
    assert_eq!(vote(&mut a, &poll, 3)["code"], "bad_choice");
    assert_eq!(vote(&mut a, &poll, -1)["code"], "bad_choice");
    assert_eq!(vote(&mut a, "p-unknown", 0)["code"], "unknown_poll");
    let ack = vote(&mut a, &poll, 0);
    assert_eq!(
        (ack["type"].as_str(), ack["choice"].as_u64()),
        (Some("voted"), Some(0))
    );
    wait_poll(&server, &poll, "first vote", |p| {
        p["counts"] == json!([1, 0, 0])
    });
    // A later vote changes the choice: counts move, the total does not.
    assert_eq!(vote(&mut a, &poll, 2)["type"], "voted");
    let p = wait_poll(&server, &poll, "changed vote", |p| {
        p["counts"] == json!([0, 0, 1])
    });
    assert_eq!(p["total"], 1);
    // Only one open poll per stream.
    let (status, e) = server.api(
        "POST",
        "/api/polls",
        Some(
            &json!({"stream": "s", "question": "Again?", "choices": ["a", "b"], "duration_s": 60}),
        ),
    );
    assert_eq!(status, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("open poll"),
        "{e}"
    );
    // After close, votes are refused and change nothing.
    let (status, _) = server.api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    let last = next_of_type(&mut a, "results");
    let last = if last["final"] == true {
        last
    } else {
        loop {
            let r = next_of_type(&mut a, "results");
            if r["final"] == true {
                break r;
            }
        }
    };
    assert_eq!(last["counts"], json!([0, 0, 1]));
    assert_eq!(vote(&mut a, &poll, 1)["code"], "poll_closed");
    let p = wait_poll(&server, &poll, "closed", |p| p["state"] == "closed");
    assert_eq!(p["counts"], json!([0, 0, 1]));
    // A new poll may open once the old one is closed.
    create_poll(
        &server,
        json!({"stream": "s", "question": "Next?", "choices": ["a", "b"], "duration_s": 60}),
    );
}

#[test]
fn poll_validation_errors() {
    let server = Server::start(&[]);
    stream(&server, "s");
    let cases = [
        (
            json!({"stream": "nope", "question": "q", "choices": ["a", "b"], "duration_s": 60}),
            "unknown stream",
        ),
        (
            json!({"stream": "s", "question": "", "choices": ["a", "b"], "duration_s": 60}),
            "question",
        ),
        (
            json!({"stream": "s", "question": "x".repeat(201), "choices": ["a", "b"], "duration_s": 60}),
            "question",
        ),
        (
            json!({"stream": "s", "question": "q", "choices": ["a"], "duration_s": 60}),
            "choices",
        ),
        (
            json!({"stream": "s", "question": "q", "choices": ["a", "a"], "duration_s": 60}),
            "duplicate",
        ),
        (
            json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 4}),
            "duration_s",
        ),
        (
            json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 3601}),
            "duration_s",
        ),
        (
            json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 60, "match": {"os": ["beos"]}}),
            "beos",
        ),
    ];
    for (body, needle) in cases {
        let (status, e) = server.api("POST", "/api/polls", Some(&body));
        assert_eq!(status, 400, "{body}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert_eq!(server.api("GET", "/api/polls/p0000", None).0, 404);
    assert_eq!(server.api("POST", "/api/polls/p0000/close", None).0, 404);
}

#[test]
fn resume_keeps_identity_groups_and_vote_without_double_counting() {
    let server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    stream(&server, "s");
    let (mut a, welcome) = watcher(&server, IOS, "s");
    let id = welcome["viewer"].as_str().unwrap().to_owned();
    let token = welcome["resume"].as_str().unwrap().to_owned();
    let (mut other, _) = watcher(&server, ANDROID, "s");
    let poll = create_poll(
        &server,
        json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 60}),
    );
    next_of_type(&mut a, "poll");
    next_of_type(&mut other, "poll");
    assert_eq!(vote(&mut a, &poll, 0)["type"], "voted");
    assert_eq!(vote(&mut other, &poll, 0)["type"], "voted");
    wait_poll(&server, &poll, "2 votes", |p| p["counts"] == json!([2, 0]));

    // Disconnect, then come back with the token, several times (shards may differ).
    drop(a);
    for round in 0..4 {
        server.wait_stats("departure", |s| s["viewers"] == 1);
        let (mut back, w) = connect(&server.url(&format!("?resume={token}")), Some(IOS));
        assert_eq!(w["viewer"], id.as_str(), "round {round}: identity kept");
        assert_eq!(w["resumed"], true);
        assert_eq!(w["resume"], token.as_str());
        // Its stream (and so its audience groups) came back: it gets the open poll again.
        assert_eq!(next_of_type(&mut back, "poll")["poll"], poll.as_str());
        let choice = (round % 2 + 1) % 2; // 1, 0, 1, 0
        assert_eq!(vote(&mut back, &poll, choice)["type"], "voted");
        let want = if choice == 1 {
            json!([1, 1])
        } else {
            json!([2, 0])
        };
        let p = wait_poll(&server, &poll, "moved vote", |p| p["counts"] == want);
        assert_eq!(p["total"], 2, "round {round}: no double count");
        drop(back);
    }

    // Resuming while the old connection is still open replaces it.
    server.wait_stats("departure", |s| s["viewers"] == 1);
    let (mut first, _) = connect(&server.url(&format!("?resume={token}")), Some(IOS));
    next_of_type(&mut first, "poll");
    let (mut second, w) = connect(&server.url(&format!("?resume={token}")), Some(IOS));
    assert_eq!(w["viewer"], id.as_str());
    // Messages already on their way (a results tick) may come before the close; every read
    // is bounded by the socket's read timeout, and at most 100 messages are skipped.
    let mut evicted = first.read();
    for _ in 0..100 {
        match evicted {
            Ok(tungstenite::Message::Text(_) | tungstenite::Message::Ping(_)) => {
                evicted = first.read();
            }
            _ => break,
        }
    }
    assert!(
        matches!(evicted, Ok(tungstenite::Message::Close(_)) | Err(_)),
        "old connection evicted: {evicted:?}"
    );
    next_of_type(&mut second, "poll");
    assert_eq!(vote(&mut second, &poll, 1)["type"], "voted");
    let p = wait_poll(&server, &poll, "final move", |p| {
        p["counts"] == json!([1, 1])
    });
    assert_eq!(p["total"], 2);
    // An unknown token is a new viewer.
    let (_, fresh) = connect(&server.url("?resume=0123456789abcdef"), Some(IOS));
    assert_eq!(fresh["resumed"], false);
    assert_ne!(fresh["viewer"], id.as_str());
}

/// Many votes, few pushes: results are coalesced per interval, and the final count is exact.
#[test]
fn results_are_coalesced_and_final_counts_exact() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--cpu-steering",
        "false",
        "--results-interval-ms",
        "200",
        "--max-messages-per-sec",
        "1000",
    ]);
    stream(&server, "live");
    // The broadcaster follows results over WebSocket with the API token.
    let url = format!(
        "ws://{}/v1/broadcaster?stream=live&token={TOKEN}",
        server.api
    );
    let (mut caster, resp) = tungstenite::connect(url).expect("broadcaster connects");
    assert_eq!(resp.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = caster.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(next_json(&mut caster)["role"], "broadcaster");
    let mut viewers: Vec<Ws> = (0..20).map(|_| watcher(&server, IOS, "live").0).collect();
    let poll = create_poll(
        &server,
        json!({"stream": "live", "question": "q", "choices": ["a", "b", "c"], "duration_s": 60}),
    );
    for v in &mut viewers {
        next_of_type(v, "poll");
    }
    // 20 viewers vote, then each changes its vote twice: 60 votes in all.
    let mut expected = [0u64; 3];
    let mut votes = 0;
    for (i, v) in viewers.iter_mut().enumerate() {
        for k in 0..3 {
            assert_eq!(vote(v, &poll, ((i + k) % 3) as i64)["type"], "voted");
            votes += 1;
        }
        expected[(i + 2) % 3] += 1;
    }
    let (status, _) = server.api("POST", &format!("/api/polls/{poll}/close"), None);
    assert_eq!(status, 202);
    let mut pushes = 0;
    let last = loop {
        let m = next_json(&mut caster);
        if m["type"] != "results" {
            continue;
        }
        assert_eq!(m["poll"], poll.as_str());
        pushes += 1;
        if m["final"] == true {
            break m;
        }
    };
    assert_eq!(last["counts"], json!(expected));
    assert_eq!(last["total"], 20);
    assert!(pushes < votes, "{pushes} pushes for {votes} votes");
    // Viewers get the same final results.
    let r = loop {
        let r = next_of_type(&mut viewers[0], "results");
        if r["final"] == true {
            break r;
        }
    };
    assert_eq!(r["counts"], json!(expected));
    // Broadcaster authentication and stream checks.
    let bad = format!(
        "ws://{}/v1/broadcaster?stream=live&token=wrong-token-123456",
        server.api
    );
    match tungstenite::connect(bad) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let unknown = format!(
        "ws://{}/v1/broadcaster?stream=nope&token={TOKEN}",
        server.api
    );
    match tungstenite::connect(unknown) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
}

#[test]
fn timer_closes_the_poll_and_results_survive_a_restart() {
    let data_dir =
        std::env::temp_dir().join(format!("ovation-polls-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut server = Server::start_in(&[], data_dir.clone());
    server.keep_data = true;
    stream(&server, "s");
    let (mut a, _) = watcher(&server, IOS, "s");
    let (mut b, _) = watcher(&server, ANDROID, "s");
    let poll = create_poll(
        &server,
        json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 5}),
    );
    next_of_type(&mut a, "poll");
    next_of_type(&mut b, "poll");
    vote(&mut a, &poll, 1);
    vote(&mut b, &poll, 1);
    // The 5 s timer closes it; the read timeout (10 s) bounds the wait.
    let last = loop {
        let r = next_of_type(&mut a, "results");
        if r["final"] == true {
            break r;
        }
    };
    assert_eq!(last["counts"], json!([0, 2]));
    let before = wait_poll(&server, &poll, "closed", |p| p["state"] == "closed");
    assert!(server.terminate().success());
    drop(server);

    let after_restart = Server::start_in(&[], data_dir.clone());
    let after = poll_state(&after_restart, &poll);
    assert_eq!(after["counts"], json!([0, 2]));
    assert_eq!(after["state"], "closed");
    assert_eq!(after, before);
    drop(after_restart);
}

/// SIGTERM closes open polls first: their final counts are stored and survive the restart.
#[test]
fn shutdown_closes_and_stores_open_polls() {
    let data_dir =
        std::env::temp_dir().join(format!("ovation-polls-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mut server = Server::start_in(&["--shards", "2"], data_dir.clone());
    server.keep_data = true;
    stream(&server, "s");
    let (mut a, _) = watcher(&server, IOS, "s");
    let poll = create_poll(
        &server,
        json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 600}),
    );
    next_of_type(&mut a, "poll");
    assert_eq!(vote(&mut a, &poll, 1)["type"], "voted");
    wait_poll(&server, &poll, "the vote", |p| p["total"] == 1);
    assert!(server.terminate().success());
    drop(server);
    let restarted = Server::start_in(&[], data_dir);
    let p = poll_state(&restarted, &poll);
    assert_eq!(p["state"], "closed", "{p}");
    assert_eq!(p["counts"], json!([0, 1]));
}

/// Issue 10: a vote sent the moment `POST /api/polls` has answered is counted. The API answers
/// only once every shard has the poll (its opening cast is written everywhere); before that
/// fix, most such votes got `unknown_poll`.
#[test]
fn a_vote_right_after_the_poll_is_created_is_counted() {
    let server = Server::start(&["--shards", "2"]);
    stream(&server, "race");
    let mut viewers: Vec<Ws> = (0..4)
        .map(|i| watcher(&server, if i % 2 == 0 { IOS } else { ANDROID }, "race").0)
        .collect();
    for round in 0..20 {
        let id = create_poll(
            &server,
            json!({"stream": "race", "question": format!("round {round}?"),
                   "choices": ["a", "b"], "duration_s": 60}),
        );
        for ws in &mut viewers {
            let answer = vote(ws, &id, (round % 2) as i64);
            assert_eq!(answer["type"], "voted", "round {round}: {answer}");
        }
        let (status, _) = server.api("POST", &format!("/api/polls/{id}/close"), None);
        assert_eq!(status, 202);
        let deadline = Instant::now() + WAIT;
        loop {
            let p = poll_state(&server, &id);
            if p["state"] == "closed" {
                assert_eq!(p["total"], 4, "round {round}: {p}");
                break;
            }
            assert!(Instant::now() < deadline, "poll never closed: {p}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
