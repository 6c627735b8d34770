//! Telemetry aggregated at the edge (issue 14): the per-group and global windows served by
//! `GET /api/telemetry` and `GET /api/groups/{id}/telemetry` equal a brute-force computation
//! over the same reports, sent by seeded viewers spread over three shards, half of whom
//! reconnect midway: some as new viewers, some resuming with their token (on any shard) as the
//! same viewer. The distinct reporting viewers of each window equal the brute-force set of
//! viewer ids that reported, so a resumed viewer counts once. Values include ones the server
//! must not count (negative, over a limit, not a number). Sums use integers and sixteenths, so
//! floating-point addition is exact in any order and the comparison is exact.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use shards::telemetry::{Metric, BUCKETS};

const IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// xorshift64*: the same reports on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The brute-force figures of one metric.
#[derive(Default, Clone)]
struct Expect {
    count: u64,
    sum: f64,
    max: f64,
    buckets: [u64; BUCKETS],
}

struct Totals {
    reports: u64,
    /// Ids (from the welcome) of the viewers that reported.
    viewers: BTreeSet<String>,
    metrics: Vec<Expect>,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            reports: 0,
            viewers: BTreeSet::new(),
            metrics: vec![Expect::default(); Metric::ALL.len()],
        }
    }

    fn add(&mut self, viewer: &str, report: &Value) {
        self.reports += 1;
        self.viewers.insert(viewer.to_owned());
        for (e, m) in self.metrics.iter_mut().zip(Metric::ALL) {
            let Some(x) = report.get(m.as_str()).and_then(Value::as_f64) else {
                continue;
            };
            if x < 0.0 || x > m.limit() {
                continue;
            }
            e.max = if e.count == 0 { x } else { e.max.max(x) };
            e.count += 1;
            e.sum += x;
            let bucket = m
                .bounds()
                .iter()
                .position(|&b| x <= b)
                .unwrap_or(BUCKETS - 1);
            e.buckets[bucket] += 1;
        }
    }

    fn check(&self, window: &Value, what: &str) {
        assert_eq!(window["reports"], self.reports, "{what}: {window}");
        assert_eq!(
            window["viewers"],
            self.viewers.len(),
            "{what}: distinct reporting viewers"
        );
        for (e, m) in self.metrics.iter().zip(Metric::ALL) {
            let got = &window[m.as_str()];
            let name = m.as_str();
            assert_eq!(got["count"], e.count, "{what} {name} count: {got}");
            assert_eq!(got["sum"].as_f64(), Some(e.sum), "{what} {name} sum");
            let max = (e.count > 0).then_some(e.max);
            assert_eq!(got["max"].as_f64(), max, "{what} {name} max");
            let buckets: Vec<u64> = got["histogram"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_u64().unwrap())
                .collect();
            assert_eq!(buckets, e.buckets, "{what} {name} histogram");
        }
        let failures = self.metrics[Metric::Failures as usize].sum;
        assert_eq!(
            window["failures_per_min"].as_f64(),
            Some(failures * 60.0 / 60.0),
            "{what}: the 60 s window's failures per minute"
        );
    }
}

/// One report: each field present or not, some values outside what is counted.
fn report(rng: &mut Rng) -> Value {
    let mut r = json!({"type": "telemetry"});
    let mut maybe = |rng: &mut Rng, key: &str, v: Value| {
        if rng.below(5) != 0 {
            r[key] = v;
        }
    };
    let v = json!(rng.below(9500));
    maybe(rng, "bitrate_kbps", v);
    let v = json!(rng.below(6000));
    maybe(rng, "buffering_ms", v);
    let v = json!(rng.below(20) as f64 / 16.0); // 17..19 sixteenths: over 1, not counted
    maybe(rng, "buffering_ratio", v);
    let v = json!(rng.below(120));
    maybe(rng, "dropped_frames", v);
    let v = json!(rng.below(1300));
    maybe(rng, "rtt_ms", v);
    let v = match rng.below(8) {
        0 => json!(-1), // not counted
        1 => json!("x"),
        n => json!(n - 2),
    };
    maybe(rng, "failures", v);
    r
}

struct Viewer {
    ws: Ws,
    ios: bool,
    /// Its viewer id and resume token (from the welcome).
    id: String,
    token: String,
}

fn connect_viewer(server: &Server, ios: bool) -> Viewer {
    connect_with(server, ios, "")
}

fn connect_with(server: &Server, ios: bool, query: &str) -> Viewer {
    let (ws, welcome) = connect(&server.url(query), Some(if ios { IOS } else { WINDOWS }));
    Viewer {
        ws,
        ios,
        id: welcome["viewer"].as_str().unwrap().to_owned(),
        token: welcome["resume"].as_str().unwrap().to_owned(),
    }
}

/// The viewer comes back on a new connection with its resume token: the same viewer.
fn resume_viewer(server: &Server, v: &Viewer) -> Viewer {
    let back = connect_with(server, v.ios, &format!("?resume={}", v.token));
    assert_eq!(back.id, v.id, "resumed as the same viewer");
    back
}

/// Sends `n` reports and waits for a pong, so the shard has folded them in.
fn send_reports(v: &mut Viewer, n: u64, rng: &mut Rng, global: &mut Totals, ios: &mut Totals) {
    for _ in 0..n {
        let r = report(rng);
        send_json(&mut v.ws, &r);
        global.add(&v.id, &r);
        if v.ios {
            ios.add(&v.id, &r);
        }
    }
    send_json(&mut v.ws, &json!({"type": "ping"}));
    next_of_type(&mut v.ws, "pong");
}

#[test]
fn windows_equal_brute_force_across_shards_and_reconnects() {
    let server = Server::start(&["--shards", "3", "--cpu-steering", "false"]);
    let (status, g) = server.api(
        "POST",
        "/api/groups",
        Some(&json!({"name": "ios", "match": {"os": ["ios"]}})),
    );
    assert_eq!(status, 201, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let mut rng = Rng(0x5eed_0014);
    let (mut global, mut ios) = (Totals::new(), Totals::new());

    let mut viewers: Vec<Viewer> = (0..24)
        .map(|i| connect_viewer(&server, i % 3 == 0))
        .collect();
    // A marker cast after the group was defined: every shard that delivers it to one of the
    // viewers knows the group (commands reach a shard in order) before any report below.
    let (status, _) = server.api(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": "marker"})),
    );
    assert_eq!(status, 202);
    for v in &mut viewers {
        next_of_type(&mut v.ws, "message");
    }
    let (mut resumed, mut renewed) = (0, 0);
    for round in 0..3 {
        for v in &mut viewers {
            let n = 1 + rng.below(3);
            send_reports(v, n, &mut rng, &mut global, &mut ios);
        }
        if round < 2 {
            // Half the viewers drop their connection and come back on a new one (any shard):
            // half of those resume with their token, the others come back as new viewers.
            for v in viewers.iter_mut() {
                let how = rng.below(4);
                if how >= 2 {
                    continue;
                }
                v.ws.close(None).ok();
                *v = if how == 0 {
                    resumed += 1;
                    resume_viewer(&server, v)
                } else {
                    renewed += 1;
                    connect_viewer(&server, v.ios)
                };
            }
        }
    }

    let deadline = Instant::now() + WAIT;
    let global_body = loop {
        let (status, body) = server.api("GET", "/api/telemetry", None);
        assert_eq!(status, 200);
        if body["windows"]["60s"]["reports"] == global.reports {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "expected {} reports: {body}",
            global.reports
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    global.check(&global_body["windows"]["60s"], "global");
    let (_, ios_body) = server.api("GET", &format!("/api/groups/{gid}/telemetry"), None);
    ios.check(&ios_body["windows"]["60s"], "ios");
    assert!(ios.reports > 0 && ios.reports < global.reports);
    assert!(
        resumed > 0 && renewed > 0,
        "{resumed} resumed, {renewed} new"
    );
    assert_eq!(
        global.viewers.len(),
        viewers.len() + renewed,
        "a resumed viewer keeps its id"
    );
}
