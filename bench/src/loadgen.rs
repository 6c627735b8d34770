//! The loadgen side: the command line each scenario runs (`loadgen run ... --json PATH`),
//! and the part of its JSON report (schema `ovation-loadgen/1`, loadgen/README.md) that the
//! tables use. Fields missing from the JSON take their defaults, so the suite keeps working
//! when loadgen adds fields; a different schema name is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The schema family this parser understands (minor additions keep the `/1`): the one the
/// loadgen writes.
pub use loadgen::report::SCHEMA;

/// Percentiles of one latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The report fields the suite reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Report {
    pub schema: String,
    pub connections_requested: u64,
    pub connections_attempted: u64,
    pub connections_established: u64,
    pub connect_failures: u64,
    pub connect_rate_per_s: f64,
    pub connect_phase_s: f64,
    pub handshake_us: Latency,
    pub published: u64,
    pub expected_deliveries: Option<u64>,
    pub delivered: u64,
    pub delivered_per_s: f64,
    pub latency_us: Latency,
    pub clock_anomalies: u64,
    pub poll_id: Option<String>,
    pub polls_received: u64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    pub votes_per_s: f64,
    pub vote_ack_us: Latency,
    pub last_vote_to_final_ms: Option<f64>,
    pub close_to_final_ms: Option<f64>,
    /// Last vote to the final results at the broadcaster's WebSocket (ovation only).
    pub last_vote_to_broadcaster_final_ms: Option<f64>,
    pub broadcaster_final_total: Option<u64>,
    pub finals_received: u64,
    pub finals_inconsistent: u64,
    pub final_total: Option<u64>,
    pub api_poll_total: Option<u64>,
    pub errors: BTreeMap<String, u64>,
    pub unexpected_closes: BTreeMap<String, u64>,
    pub duration_s: f64,
    pub cut_short: bool,
}

impl Report {
    /// Errors and unexpected closes as one short line, e.g. `connect_timeout 3, close 1006 2`.
    pub fn trouble(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        parts.extend(
            self.unexpected_closes
                .iter()
                .map(|(k, v)| format!("close {k} {v}")),
        );
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Parses a loadgen `--json` file.
pub fn parse_report(json: &str) -> anyhow::Result<Report> {
    let report: Report = serde_json::from_str(json).context("loadgen JSON does not parse")?;
    if report.schema != SCHEMA {
        bail!(
            "loadgen JSON has schema {:?}; this suite reads {SCHEMA:?}",
            report.schema
        );
    }
    Ok(report)
}

/// What one scenario asks of the loadgen.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub viewer: SocketAddr,
    pub api: SocketAddr,
    pub token: String,
    pub connections: u64,
    /// Connections per second.
    pub rate: f64,
    pub behaviour: &'static str,
    pub hold: Duration,
    pub duration_max: Duration,
    /// Group-casts to publish and the interval between them.
    pub publish: Option<(u64, Duration)>,
    /// Poll storm on this stream with this many choices.
    pub poll: Option<(String, u32)>,
    /// Worker processes; `None` leaves the loadgen's default (one per 18,000 connections).
    pub processes: Option<u32>,
}

impl Run {
    /// The arguments after the `loadgen` executable.
    pub fn args(&self, json: &Path) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--url".into(),
            format!("ws://{}/v1/viewer", self.viewer),
            "--api".into(),
            format!("http://{}", self.api),
            "--api-token".into(),
            self.token.clone(),
            "--connections".into(),
            self.connections.to_string(),
            "--rate".into(),
            format!("{}", self.rate),
            "--behaviour".into(),
            self.behaviour.into(),
            "--hold".into(),
            format!("{}", self.hold.as_secs_f64()),
            "--duration-max".into(),
            format!("{}", self.duration_max.as_secs_f64()),
            "--json".into(),
            json.display().to_string(),
            "--quiet".into(),
        ];
        if let Some(p) = self.processes {
            a.extend(["--processes".into(), p.to_string()]);
        }
        if let Some((count, interval)) = self.publish {
            a.extend([
                "--publish-count".into(),
                count.to_string(),
                "--publish-interval-ms".into(),
                interval.as_millis().max(1).to_string(),
            ]);
        }
        if let Some((stream, choices)) = &self.poll {
            a.extend([
                "--poll".into(),
                "--poll-stream".into(),
                stream.clone(),
                "--poll-choices".into(),
                choices.to_string(),
            ]);
        }
        a
    }

    /// The command as a reader could paste it (the token shown as `$TOKEN`).
    pub fn display(&self, loadgen: &Path) -> String {
        let args = self.args(Path::new("OUT.json"));
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if *a == self.token {
                    "$TOKEN".to_owned()
                } else {
                    a.clone()
                }
            })
            .collect();
        format!("{} {}", loadgen.display(), shown.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "schema": "ovation-loadgen/1",
      "url": "ws://127.0.0.1:40000/v1/viewer",
      "processes": 1,
      "connections_requested": 200,
      "connections_attempted": 200,
      "connections_established": 199,
      "connect_failures": 1,
      "connect_rate_per_s": 8123.5,
      "connect_phase_s": 0.0245,
      "handshake_us": {"count": 199, "p50": 800, "p90": 1500, "p99": 2100, "p999": 2300, "max": 2400, "mean": 900.5},
      "published": 20,
      "expected_deliveries": 3980,
      "delivered": 3980,
      "delivered_per_s": 51234.0,
      "latency_us": {"count": 3980, "p50": 1200, "p90": 2000, "p99": 3500, "p999": 4000, "max": 4100, "mean": 1300.0},
      "poll_id": null,
      "last_vote_to_final_ms": null,
      "final_total": null,
      "errors": {"connect_timeout": 1},
      "unexpected_closes": {"1001": 2},
      "duration_s": 3.2,
      "cut_short": false,
      "a_field_added_later": [1, 2, 3]
    }"#;

    #[test]
    fn parses_the_fields_used_and_ignores_new_ones() {
        let r = parse_report(SAMPLE).unwrap();
        assert_eq!(r.connections_established, 199);
        assert_eq!(r.connect_failures, 1);
        assert_eq!(r.handshake_us.p99, 2100);
        assert_eq!(r.expected_deliveries, Some(3980));
        assert_eq!(r.latency_us.max, 4100);
        assert_eq!(r.delivered_per_s, 51234.0);
        assert_eq!(r.last_vote_to_final_ms, None);
        assert_eq!(r.votes_acked, 0, "missing fields take defaults");
        assert_eq!(
            r.trouble().as_deref(),
            Some("connect_timeout 1, close 1001 2")
        );
    }

    #[test]
    fn refuses_other_schemas_and_garbage() {
        assert!(parse_report(r#"{"schema":"ovation-loadgen/2"}"#).is_err());
        assert!(parse_report(r#"{"connections_established":3}"#).is_err());
        assert!(parse_report("not json").is_err());
        assert!(parse_report(r#"{"schema":"ovation-loadgen/1","delivered":"many"}"#).is_err());
    }

    #[test]
    fn command_line() {
        let run = Run {
            viewer: "127.0.0.1:4000".parse().unwrap(),
            api: "127.0.0.1:4001".parse().unwrap(),
            token: "secret-token".into(),
            connections: 300,
            rate: 5000.0,
            behaviour: "vote",
            hold: Duration::from_millis(1500),
            duration_max: Duration::from_secs(60),
            publish: Some((20, Duration::from_millis(10))),
            poll: Some(("bench-poll".into(), 4)),
            processes: Some(2),
        };
        let a = run.args(Path::new("/tmp/x.json")).join(" ");
        assert!(
            a.starts_with("run --url ws://127.0.0.1:4000/v1/viewer --api http://127.0.0.1:4001 ")
        );
        for part in [
            "--connections 300",
            "--rate 5000 ",
            "--behaviour vote",
            "--hold 1.5",
            "--duration-max 60",
            "--json /tmp/x.json --quiet",
            "--publish-count 20 --publish-interval-ms 10",
            "--poll --poll-stream bench-poll --poll-choices 4",
            "--processes 2",
        ] {
            assert!(a.contains(part), "{part:?} missing from {a}");
        }
        let shown = run.display(Path::new("target/release/loadgen"));
        assert!(shown.contains("--api-token $TOKEN") && !shown.contains("secret-token"));
    }
}
