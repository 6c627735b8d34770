//! Poll results broken down by one profile field (issue 14): counted on the shards like the
//! totals, exact against the votes cast (seeded voters on three shards, some changing their
//! vote), readable at `GET /api/polls/{id}` and pushed to the stream's broadcasters.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const UAS: [(&str, &str); 3] = [
    ("ios", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"),
    ("android", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"),
    ("windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
];
const REGIONS: [&str; 3] = ["HU", "DE", "BR"];

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

struct Voter {
    ws: Ws,
    os: &'static str,
    region: &'static str,
}

fn watcher(server: &Server, ua: &str, query: &str) -> Ws {
    let (mut ws, welcome) = connect(&server.url(query), Some(ua));
    send_json(&mut ws, &json!({"type": "watch", "stream": "live"}));
    next_of_type(&mut ws, "endpoint");
    let id = welcome["viewer"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, v) = server.api("GET", &format!("/api/viewers/{id}"), None);
        if v["stream"] == "live" {
            return ws;
        }
        assert!(Instant::now() < deadline, "watch never applied: {v}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn broadcaster(server: &Server) -> Ws {
    let url = format!(
        "ws://{}/v1/broadcaster?stream=live&token={TOKEN}",
        server.api
    );
    let (mut ws, _) = tungstenite::connect(url).expect("broadcaster connects");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(next_json(&mut ws)["role"], "broadcaster");
    ws
}

/// Opens a poll broken down by `field`, lets every voter vote (some twice), closes it and
/// checks the breakdown against the final choices; returns the poll's API view.
fn run_poll(
    server: &Server,
    voters: &mut [Voter],
    field: &str,
    rng: &mut Rng,
    value_of: fn(&Voter) -> &'static str,
) -> Value {
    let mut caster = broadcaster(server);
    let (status, p) = server.api(
        "POST",
        "/api/polls",
        Some(
            &json!({"stream": "live", "question": "q", "choices": ["a", "b", "c"],
                     "duration_s": 60, "breakdown": field}),
        ),
    );
    assert_eq!(status, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for v in voters.iter_mut() {
        next_of_type(&mut v.ws, "poll");
        let mut choice = rng.below(3);
        for _ in 0..=rng.below(2) {
            choice = rng.below(3);
            send_json(
                &mut v.ws,
                &json!({"type": "vote", "poll": id, "choice": choice}),
            );
            assert_eq!(next_of_type(&mut v.ws, "voted")["choice"], choice);
        }
        expected.entry(value_of(v).to_owned()).or_insert(vec![0; 3])[choice as usize] += 1;
    }
    let (status, _) = server.api("POST", &format!("/api/polls/{id}/close"), None);
    assert!(status == 200 || status == 202, "{status}");
    let deadline = Instant::now() + WAIT;
    let poll = loop {
        let (_, p) = server.api("GET", &format!("/api/polls/{id}"), None);
        if p["state"] == "closed" {
            break p;
        }
        assert!(Instant::now() < deadline, "poll never closed: {p}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let want = json!({"field": field, "counts": expected});
    assert_eq!(poll["breakdown"], want, "{poll}");
    assert_eq!(poll["total"], voters.len());
    // The broadcaster's final results carry the same breakdown.
    let last = loop {
        let m = next_of_type(&mut caster, "results");
        // (A broadcaster first gets the stream's latest results: the earlier poll's.)
        if m["final"] == true && m["poll"] == id.as_str() {
            break m;
        }
    };
    assert_eq!(last["breakdown"], want);
    assert_eq!(last["counts"], poll["counts"]);
    poll
}

#[test]
fn breakdowns_by_os_and_by_region_are_exact() {
    let server = Server::start(&["--shards", "3", "--cpu-steering", "false"]);
    let (status, _) = server.api("POST", "/api/streams", Some(&json!({"id": "live"})));
    assert_eq!(status, 201);
    let mut rng = Rng(0x0b5e_55ed);
    let mut voters: Vec<Voter> = (0..30)
        .map(|_| {
            let (os, ua) = UAS[rng.below(3) as usize];
            let region = REGIONS[rng.below(3) as usize];
            Voter {
                ws: watcher(&server, ua, &format!("?region={region}")),
                os,
                region,
            }
        })
        .collect();
    run_poll(&server, &mut voters, "os", &mut rng, |v| v.os);
    run_poll(&server, &mut voters, "region", &mut rng, |v| v.region);

    let (status, e) = server.api(
        "POST",
        "/api/polls",
        Some(
            &json!({"stream": "live", "question": "q", "choices": ["a", "b"],
                     "duration_s": 60, "breakdown": "tag"}),
        ),
    );
    assert_eq!(status, 400, "{e}");
}
