//! Durability and shutdown with a real server: a `kill -9` mid-poll loses at most one
//! checkpoint interval (the poll comes back `interrupted` with its checkpointed votes, custom
//! groups come back, late votes for the old poll get `poll_closed`), and SIGTERM gives every
//! viewer in a poll's audience the `final:true` results before its 1001 close, and every
//! broadcaster a close frame.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";

fn data_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ovation-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn wait_for(what: &str, mut f: impl FnMut() -> Option<Value>) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` viewers watching `stream`, with their welcomes.
fn watchers(server: &Server, stream: &str, n: usize) -> Vec<(Ws, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (mut ws, welcome) = connect(&server.url(""), Some(IOS));
        send_json(&mut ws, &json!({"type": "watch", "stream": stream}));
        next_of_type(&mut ws, "endpoint");
        out.push((ws, welcome));
    }
    let key = format!("/api/groups/stream:{stream}");
    wait_for("every watch applied", || {
        let (_, g) = server.api("GET", &key, None);
        (g["size"] == n).then_some(g)
    });
    out
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

fn create(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = server.api("POST", path, Some(&body));
    assert_eq!(status, 201, "{v}");
    v
}

#[test]
fn kill_9_mid_poll_keeps_checkpointed_votes_and_groups() {
    let dir = data_dir("kill");
    let flags = ["--shards", "2", "--poll-checkpoint-ms", "200"];
    let mut server = Server::start_in(&flags, dir.clone());
    server.keep_data = true;
    create(&server, "/api/streams", json!({"id": "s"}));
    let group = create(
        &server,
        "/api/groups",
        json!({"name": "apple", "match": {"os": ["ios"]}}),
    );
    assert_eq!(group["id"], "g1");
    let mut viewers = watchers(&server, "s", 100);
    let poll = create(
        &server,
        "/api/polls",
        json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 600}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (i, (ws, _)) in viewers.iter_mut().enumerate() {
        next_of_type(ws, "poll");
        assert_eq!(vote(ws, &poll, (i % 4 == 0) as i64)["type"], "voted");
    }
    let path = format!("/api/polls/{poll}");
    wait_for("100 votes counted", || {
        let (_, p) = server.api("GET", &path, None);
        (p["total"] == 100).then_some(p)
    });
    // Counted at the core: the next checkpoint (at most 200 ms away) writes them.
    server.wait_stats("the checkpoint", |s| {
        s["store"]["unsaved_polls"] == 0 && s["store"]["queued_writes"] == 0
    });

    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(viewers);
    drop(server);

    let mut restarted = Server::start_in(&flags, dir.clone());
    restarted.keep_data = true;
    let (status, p) = restarted.api("GET", &path, None);
    assert_eq!(status, 200, "the poll is back: {p}");
    assert_eq!(p["state"], "interrupted", "{p}");
    assert_eq!(p["counts"], json!([75, 25]));
    assert_eq!(p["total"], 100);
    let (status, g) = restarted.api("GET", "/api/groups/g1", None);
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["name"], "apple");
    assert_eq!(g["match"], json!({"os": ["ios"]}));
    let next = create(
        &restarted,
        "/api/groups",
        json!({"name": "other", "match": {"os": ["android"]}}),
    );
    assert_eq!(
        next["id"], "g2",
        "a restored group's key is not handed out again"
    );
    // A vote for the poll stored before the restart: closed, not unknown.
    let (mut late, _) = connect(&restarted.url(""), Some(IOS));
    let answer = vote(&mut late, &poll, 0);
    assert_eq!(answer["code"], "poll_closed", "{answer}");
    let answer = vote(&mut late, "p-never-existed", 0);
    assert_eq!(answer["code"], "unknown_poll", "{answer}");
    drop(late);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Viewer ids carry the stored boot counter (`ShardConfig::id_epoch`): ids minted after a
/// restart never equal ids of the run before.
#[test]
fn viewer_ids_are_not_reused_across_restarts() {
    let dir = data_dir("ids");
    let mut server = Server::start_in(&["--shards", "1"], dir.clone());
    server.keep_data = true;
    let before: Vec<String> = (0..3)
        .map(|_| connect(&server.url(""), None).1["viewer"].to_string())
        .collect();
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(server);
    let restarted = Server::start_in(&["--shards", "1"], dir.clone());
    for _ in 0..3 {
        let id = connect(&restarted.url(""), None).1["viewer"].to_string();
        assert!(
            !before.contains(&id),
            "{id} was minted before the restart too"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a client saw until its close frame: the results messages, then the close code.
fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    let mut results = Vec::new();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "results" {
                    results.push(v);
                }
            }
            Ok(tungstenite::Message::Close(frame)) => {
                return (results, frame.map(|f| u16::from(f.code)));
            }
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

#[test]
fn sigterm_sends_final_results_before_1001_and_closes_broadcasters() {
    let mut server = Server::start(&["--shards", "2", "--cpu-steering", "false"]);
    create(&server, "/api/streams", json!({"id": "s"}));
    let url = format!("ws://{}/v1/broadcaster?stream=s&token={TOKEN}", server.api);
    let (mut caster, resp) = tungstenite::connect(url).expect("broadcaster connects");
    assert_eq!(resp.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = caster.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(next_json(&mut caster)["role"], "broadcaster");
    let viewers = watchers(&server, "s", 4);
    let poll = create(
        &server,
        "/api/polls",
        json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 600}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut readers = Vec::new();
    for (i, (mut ws, _)) in viewers.into_iter().enumerate() {
        next_of_type(&mut ws, "poll");
        assert_eq!(vote(&mut ws, &poll, i as i64 % 2)["type"], "voted");
        readers.push(std::thread::spawn(move || until_close(&mut ws)));
    }
    let path = format!("/api/polls/{poll}");
    wait_for("4 votes counted", || {
        let (_, p) = server.api("GET", &path, None);
        (p["total"] == 4).then_some(p)
    });
    let caster = std::thread::spawn(move || until_close(&mut caster));

    assert!(server.terminate().success());

    for r in readers {
        let (results, code) = r.join().expect("viewer reader");
        let last = results.last().expect("results before the close");
        assert_eq!(last["final"], true, "{results:?}");
        assert_eq!(last["counts"], json!([2, 2]));
        assert_eq!(code, Some(1001));
    }
    let (results, code) = caster.join().expect("broadcaster reader");
    assert_eq!(
        results.last().map(|r| r["final"].clone()),
        Some(json!(true))
    );
    assert_eq!(code, Some(1001), "the broadcaster gets a close frame");
}

/// What an operator sets through the API outlives the process: a remediation rule added by
/// `POST /api/rules` and a stream's player configuration (`PUT /api/streams/{id}/config`)
/// are back after a `kill -9`; a rule deleted through the API stays deleted.
#[test]
fn api_rules_and_player_configuration_survive_kill_9() {
    let dir = data_dir("settings");
    let flags = ["--shards", "1"];
    let mut server = Server::start_in(&flags, dir.clone());
    server.keep_data = true;
    create(&server, "/api/streams", json!({"id": "s"}));
    let rule = |id: &str| {
        json!({"id": id, "failures_per_min_above": 5.0,
               "actions": [{"type": "player_config", "config": {"max_bitrate_kbps": 800}}]})
    };
    create(&server, "/api/rules", rule("kept"));
    create(&server, "/api/rules", rule("dropped"));
    let (status, v) = server.api("DELETE", "/api/rules/dropped", None);
    assert_eq!(status, 200, "{v}");
    let config = json!({"title": "Finals", "logo_url": "https://example.com/l.png"});
    let (status, v) = server.api("PUT", "/api/streams/s/config", Some(&config));
    assert_eq!(status, 200, "{v}");
    server.wait_stats("the settings written", |s| s["store"]["queued_writes"] == 0);

    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reaped");
    drop(server);

    let mut restarted = Server::start_in(&flags, dir.clone());
    restarted.keep_data = true;
    let (_, rules) = restarted.api("GET", "/api/rules", None);
    let ids: Vec<&str> = rules["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["kept"], "{rules}");
    let (status, c) = restarted.api("GET", "/api/streams/s/config", None);
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["config"]["title"], "Finals", "{c}");
    assert_eq!(c["config"]["logo_url"], "https://example.com/l.png", "{c}");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A graceful restart (SIGTERM, then a new process on the same data directory) keeps every
/// viewer's identity: the departed records are stored at shutdown, so a viewer reconnecting
/// with its resume token within the window is the same viewer, back in its stream's audience.
#[test]
fn viewers_resume_across_a_graceful_restart() {
    let dir = data_dir("restart-resume");
    let flags = ["--shards", "2"];
    let mut server = Server::start_in(&flags, dir.clone());
    server.keep_data = true;
    create(&server, "/api/streams", json!({"id": "s"}));
    let viewers = watchers(&server, "s", 3);
    let before: Vec<(String, String)> = viewers
        .iter()
        .map(|(_, w)| {
            (
                w["viewer"].as_str().unwrap().to_owned(),
                w["resume"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(server.terminate().success());
    drop(viewers);
    drop(server);

    let mut restarted = Server::start_in(&flags, dir.clone());
    restarted.keep_data = true;
    let mut back = Vec::new();
    for (id, token) in &before {
        let (ws, w) = connect(&restarted.url(&format!("?resume={token}")), Some(IOS));
        assert_eq!(w["resumed"], true, "{w}");
        assert_eq!(w["viewer"], id.as_str(), "{w}");
        assert_eq!(w["resume"], token.as_str(), "{w}");
        back.push(ws);
    }
    // Back in the stream's audience without a new `watch`.
    wait_for("the resumed viewers in stream:s", || {
        let (_, g) = restarted.api("GET", "/api/groups/stream:s", None);
        (g["size"] == 3).then_some(g)
    });
    // A token nobody was given is a new viewer.
    let (_, w) = connect(
        &restarted.url("?resume=00000000000000000000000000000000"),
        Some(IOS),
    );
    assert_eq!(w["resumed"], false, "{w}");
    drop(back);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}
