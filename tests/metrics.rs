//! `GET /metrics` (issue 14): a scrape parsed by an independent Prometheus text-format parser
//! (`prometheus-parse`) shows what the server did: connections per shard, votes, telemetry
//! reports and the global telemetry window, streams and polls. The read-only metrics token
//! and the API token are accepted; anything else is 401.

mod common;

use std::time::{Duration, Instant};

use common::*;
use prometheus_parse::{Scrape, Value as PValue};
use serde_json::json;

const METRICS_TOKEN: &str = "metrics-read-token-0123456789";

fn scrape(server: &Server, token: Option<&str>) -> (u16, String) {
    let raw = raw_api_call(server.api, "GET", "/metrics", b"", token);
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status == 200 {
        assert!(
            head.contains("text/plain; version=0.0.4"),
            "content type: {head}"
        );
    }
    (status, body.to_owned())
}

fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("a valid exposition")
}

/// The sum of a family's samples whose labels include `labels`.
fn total(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => v,
            _ => panic!("{name} is not a counter or gauge"),
        })
        .sum()
}

#[test]
fn a_scrape_parses_and_counts_what_happened() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--cpu-steering",
        "false",
        "--metrics-token",
        METRICS_TOKEN,
    ]);
    let (status, _) = server.api("POST", "/api/streams", Some(&json!({"id": "live"})));
    assert_eq!(status, 201);
    let (mut ws, welcome) = connect(&server.url(""), None);
    send_json(&mut ws, &json!({"type": "watch", "stream": "live"}));
    next_of_type(&mut ws, "endpoint");
    let id = welcome["viewer"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WAIT;
    while server.api("GET", &format!("/api/viewers/{id}"), None).1["stream"] != "live" {
        assert!(Instant::now() < deadline, "watch never applied");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, p) = server.api(
        "POST",
        "/api/polls",
        Some(&json!({"stream": "live", "question": "q", "choices": ["a", "b"], "duration_s": 60})),
    );
    assert_eq!(status, 201, "{p}");
    let poll = p["id"].as_str().unwrap();
    next_of_type(&mut ws, "poll");
    send_json(&mut ws, &json!({"type": "vote", "poll": poll, "choice": 1}));
    next_of_type(&mut ws, "voted");
    send_json(
        &mut ws,
        &json!({"type": "telemetry", "rtt_ms": 80, "failures": 2, "buffering_ratio": 0.25}),
    );

    let deadline = Instant::now() + WAIT;
    let s = loop {
        let (status, body) = scrape(&server, Some(METRICS_TOKEN));
        assert_eq!(status, 200, "{body}");
        let s = parse(&body);
        if total(&s, "ovation_telemetry_reports", &[("window", "10s")]) == 1.0 {
            break s;
        }
        assert!(Instant::now() < deadline, "telemetry never arrived: {body}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(total(&s, "ovation_connections", &[]), 1.0);
    assert_eq!(
        s.samples
            .iter()
            .filter(|x| x.metric == "ovation_connections")
            .count(),
        2,
        "one sample per shard"
    );
    assert_eq!(total(&s, "ovation_votes_total", &[]), 1.0);
    assert_eq!(total(&s, "ovation_telemetry_reports_total", &[]), 1.0);
    assert_eq!(
        total(&s, "ovation_telemetry_viewers", &[("window", "60s")]),
        1.0
    );
    assert_eq!(total(&s, "ovation_streams", &[]), 1.0);
    assert_eq!(total(&s, "ovation_polls", &[("state", "open")]), 1.0);
    assert_eq!(total(&s, "ovation_viewers", &[]), 1.0);
    assert_eq!(
        total(
            &s,
            "ovation_telemetry_failures_per_minute",
            &[("window", "60s")]
        ),
        2.0
    );
    assert_eq!(
        total(
            &s,
            "ovation_telemetry_max",
            &[("window", "10s"), ("metric", "rtt_ms")]
        ),
        80.0
    );
    let le = |v| {
        total(
            &s,
            "ovation_telemetry_bucket",
            &[("window", "10s"), ("metric", "buffering_ratio"), ("le", v)],
        )
    };
    assert_eq!((le("0.2"), le("0.5"), le("+Inf")), (0.0, 1.0, 1.0));
    assert!(s.docs.contains_key("ovation_closes_total"));

    // The API token works too; no token or a wrong one does not.
    assert_eq!(scrape(&server, Some(TOKEN)).0, 200);
    assert_eq!(scrape(&server, None).0, 401);
    assert_eq!(scrape(&server, Some("wrong-token-0123456789")).0, 401);
    drop(ws);
}
