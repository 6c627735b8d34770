//! The run's figures: built from merged measurements plus the coordinator's own timings,
//! printed as a readable summary and written as JSON (schema `ovation-loadgen/1`,
//! documented in loadgen/README.md; the bench suite parses it, so fields are only added).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{Measurements, Summary};

pub const SCHEMA: &str = "ovation-loadgen/1";

/// Everything the JSON output holds. Latencies in microseconds unless the name says otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub url: String,
    pub processes: u32,
    pub seed: u64,
    pub behaviour: String,
    pub connections_requested: u64,
    pub connections_attempted: u64,
    pub connections_established: u64,
    pub connect_failures: u64,
    /// Established connections per second over the connect phase (first attempt to last
    /// welcome, across all processes).
    pub connect_rate_per_s: f64,
    pub connect_phase_s: f64,
    /// TCP connect + WebSocket upgrade + welcome.
    pub handshake_us: Summary,
    pub hello_sent: u64,
    pub watch_sent: u64,
    pub endpoints: u64,
    pub telemetry_sent: u64,
    /// Group-casts accepted by the API.
    pub published: u64,
    /// Sum of `members` from the API's publish answers (null if the server gave none).
    pub expected_deliveries: Option<u64>,
    /// Group-cast `message` frames received by all viewers.
    pub delivered: u64,
    /// Deliveries per second from the first publish to the last receipt.
    pub delivered_per_s: f64,
    /// Receipt minus the publisher's CLOCK_MONOTONIC timestamp.
    pub latency_us: Summary,
    /// Receipts timed before their publish time (recorded as 0).
    pub clock_anomalies: u64,
    /// Publish API request round trips.
    pub publish_api_us: Summary,
    pub poll_id: Option<String>,
    pub polls_received: u64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    /// Acknowledged votes per second, first vote sent to last ack received.
    pub votes_per_s: f64,
    /// Vote sent to `voted` received.
    pub vote_ack_us: Summary,
    /// Last vote sent to the last final result received.
    pub last_vote_to_final_ms: Option<f64>,
    /// Close request sent to the last final result received.
    pub close_to_final_ms: Option<f64>,
    /// From the last vote sent to the final results at the broadcaster's WebSocket.
    pub last_vote_to_broadcaster_final_ms: Option<f64>,
    /// The total in the broadcaster's final results.
    pub broadcaster_final_total: Option<u64>,
    /// Live results pushes the broadcaster received before the final one.
    pub broadcaster_live_pushes: Option<u64>,
    pub finals_received: u64,
    pub finals_inconsistent: u64,
    pub final_counts: Option<Vec<u64>>,
    pub final_total: Option<u64>,
    pub final_total_matches_acked: Option<bool>,
    /// `total` from `GET /api/polls/{id}` after closing.
    pub api_poll_total: Option<u64>,
    pub closed_by_loadgen: u64,
    pub errors: BTreeMap<String, u64>,
    pub unexpected_closes: BTreeMap<String, u64>,
    pub duration_s: f64,
    /// The run was cut by `--duration-max` (or Ctrl-C) before finishing its phases.
    pub cut_short: bool,
}

/// What the coordinator knows besides the workers' measurements.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    pub url: String,
    pub processes: u32,
    pub seed: u64,
    pub behaviour: String,
    pub connections_requested: u64,
    pub published: u64,
    pub expected_deliveries: Option<u64>,
    pub first_publish_ns: Option<u64>,
    pub publish_api: Summary,
    pub poll_id: Option<String>,
    pub poll_close_ns: Option<u64>,
    pub api_poll_total: Option<u64>,
    /// What the broadcaster WebSocket saw (ovation only).
    pub broadcaster: Option<crate::broadcaster::BroadcasterView>,
    pub duration_s: f64,
    pub cut_short: bool,
}

fn per_second(count: u64, from_ns: Option<u64>, to_ns: Option<u64>) -> f64 {
    match (from_ns, to_ns) {
        (Some(a), Some(b)) if b > a && count > 0 => count as f64 / ((b - a) as f64 / 1e9),
        _ => 0.0,
    }
}

fn span_ms(from_ns: Option<u64>, to_ns: Option<u64>) -> Option<f64> {
    let (a, b) = (from_ns?, to_ns?);
    Some(b.saturating_sub(a) as f64 / 1e6)
}

impl Report {
    pub fn build(m: &Measurements, f: &RunFacts) -> Report {
        let c = &m.counters;
        let finals = c.finals_received > 0;
        Report {
            schema: SCHEMA.to_owned(),
            url: f.url.clone(),
            processes: f.processes,
            seed: f.seed,
            behaviour: f.behaviour.clone(),
            connections_requested: f.connections_requested,
            connections_attempted: c.attempted,
            connections_established: c.established,
            connect_failures: c.failed,
            connect_rate_per_s: per_second(
                c.established,
                c.first_attempt_ns,
                c.last_established_ns,
            ),
            connect_phase_s: span_ms(c.first_attempt_ns, c.last_established_ns)
                .map_or(0.0, |ms| ms / 1e3),
            handshake_us: m.handshake.summary(),
            hello_sent: c.hello_sent,
            watch_sent: c.watch_sent,
            endpoints: c.endpoints,
            telemetry_sent: c.telemetry_sent,
            published: f.published,
            expected_deliveries: f.expected_deliveries,
            delivered: c.delivered,
            delivered_per_s: per_second(c.delivered, f.first_publish_ns, c.last_receipt_ns),
            latency_us: m.delivery.summary(),
            clock_anomalies: m.delivery.negative,
            publish_api_us: f.publish_api,
            poll_id: f.poll_id.clone(),
            polls_received: c.polls_received,
            votes_sent: c.votes_sent,
            votes_acked: c.votes_acked,
            votes_per_s: per_second(c.votes_acked, c.first_vote_ns, c.last_ack_ns),
            vote_ack_us: m.vote_ack.summary(),
            last_vote_to_final_ms: span_ms(c.last_vote_ns, c.last_final_ns),
            close_to_final_ms: span_ms(f.poll_close_ns, c.last_final_ns),
            last_vote_to_broadcaster_final_ms: span_ms(
                c.last_vote_ns,
                f.broadcaster.as_ref().and_then(|b| b.final_ns),
            ),
            broadcaster_final_total: f.broadcaster.as_ref().and_then(|b| b.final_total),
            broadcaster_live_pushes: f.broadcaster.as_ref().map(|b| b.live_pushes),
            finals_received: c.finals_received,
            finals_inconsistent: c.finals_inconsistent,
            final_counts: c.final_counts.clone(),
            final_total: c.final_total,
            final_total_matches_acked: finals.then(|| c.final_total == Some(c.votes_acked)),
            api_poll_total: f.api_poll_total,
            closed_by_loadgen: c.closed_by_us,
            errors: c.errors.clone(),
            unexpected_closes: c.unexpected_closes.clone(),
            duration_s: f.duration_s,
            cut_short: f.cut_short,
        }
    }

    pub fn to_json(&self) -> String {
        // Plain data with string map keys: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "loadgen {}  {} viewers ({}), {} process{}, seed {}",
            self.url,
            self.connections_requested,
            self.behaviour,
            self.processes,
            if self.processes == 1 { "" } else { "es" },
            self.seed
        );
        let _ = writeln!(
            s,
            "  connections  attempted {}  established {}  failed {}",
            self.connections_attempted, self.connections_established, self.connect_failures
        );
        let _ = writeln!(
            s,
            "  connect rate {:.0}/s over {:.2} s",
            self.connect_rate_per_s, self.connect_phase_s
        );
        let _ = writeln!(s, "  handshake    {}", latency_line(&self.handshake_us));
        if self.watch_sent + self.hello_sent + self.telemetry_sent > 0 {
            let _ = writeln!(
                s,
                "  behaviours   hello {}  watch {} (endpoints {})  telemetry {}",
                self.hello_sent, self.watch_sent, self.endpoints, self.telemetry_sent
            );
        }
        if self.published > 0 || self.delivered > 0 {
            let expected = self
                .expected_deliveries
                .map_or_else(String::new, |e| format!(" of {e} expected"));
            let _ = writeln!(
                s,
                "  group-cast   published {}  delivered {}{}  {:.0} msg/s",
                self.published, self.delivered, expected, self.delivered_per_s
            );
            let _ = writeln!(s, "  latency      {}", latency_line(&self.latency_us));
            if self.clock_anomalies > 0 {
                let _ = writeln!(s, "  clock        {} anomalies", self.clock_anomalies);
            }
        }
        if self.poll_id.is_some() || self.votes_sent > 0 {
            let _ = writeln!(
                s,
                "  votes        polls received {}  sent {}  acked {}  {:.0}/s  ack {}",
                self.polls_received,
                self.votes_sent,
                self.votes_acked,
                self.votes_per_s,
                latency_line(&self.vote_ack_us)
            );
            let fmt_ms =
                |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
            let _ = writeln!(
                s,
                "  poll {}  finals {}  total {}  counts {:?}  total == acked: {}  api total {}",
                self.poll_id.as_deref().unwrap_or("-"),
                self.finals_received,
                self.final_total.map_or("-".to_owned(), |t| t.to_string()),
                self.final_counts.as_deref().unwrap_or(&[]),
                match self.final_total_matches_acked {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                },
                self.api_poll_total
                    .map_or("-".to_owned(), |t| t.to_string()),
            );
            let _ = writeln!(
                s,
                "  poll timing  last vote -> final {}  close -> final {}{}",
                fmt_ms(self.last_vote_to_final_ms),
                fmt_ms(self.close_to_final_ms),
                if self.finals_inconsistent > 0 {
                    format!("  ({} inconsistent finals)", self.finals_inconsistent)
                } else {
                    String::new()
                }
            );
            if let Some(pushes) = self.broadcaster_live_pushes {
                let _ = writeln!(
                    s,
                    "  broadcaster  last vote -> final {}  final total {}  live pushes {}",
                    fmt_ms(self.last_vote_to_broadcaster_final_ms),
                    self.broadcaster_final_total
                        .map_or("-".to_owned(), |t| t.to_string()),
                    pushes
                );
            }
        }
        let _ = writeln!(s, "  errors       {}", map_line(&self.errors));
        let _ = writeln!(
            s,
            "  closes       unexpected {}",
            map_line(&self.unexpected_closes)
        );
        let _ = writeln!(
            s,
            "  duration     {:.2} s{}",
            self.duration_s,
            if self.cut_short {
                "  (cut short by --duration-max or Ctrl-C)"
            } else {
                ""
            }
        );
        s
    }
}

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1} ms", v as f64 / 1e3)
    } else if v >= 1_000 {
        format!("{:.2} ms", v as f64 / 1e3)
    } else {
        format!("{v} µs")
    }
}

fn latency_line(s: &Summary) -> String {
    if s.count == 0 {
        return "no samples".to_owned();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
        us(s.p50),
        us(s.p90),
        us(s.p99),
        us(s.p999),
        us(s.max),
        s.count
    )
}

fn map_line(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Measurements, RunFacts) {
        let mut m = Measurements::default();
        let c = &mut m.counters;
        c.attempted = 10;
        c.established = 9;
        c.failed = 1;
        c.first_attempt_ns = Some(1_000_000_000);
        c.last_established_ns = Some(1_500_000_000);
        c.delivered = 90;
        c.last_receipt_ns = Some(3_000_000_000);
        c.votes_sent = 4;
        c.votes_acked = 4;
        c.first_vote_ns = Some(4_000_000_000);
        c.last_vote_ns = Some(4_100_000_000);
        c.last_ack_ns = Some(4_200_000_000);
        c.record_final("p1", vec![3, 1], 4, 4_250_000_000);
        c.error("connect_refused");
        c.unexpected_close("1011");
        m.handshake.record_us(700);
        m.delivery.record_us(1_200);
        let f = RunFacts {
            url: "ws://127.0.0.1:8080/v1/viewer".into(),
            processes: 1,
            connections_requested: 10,
            published: 10,
            expected_deliveries: Some(90),
            first_publish_ns: Some(2_000_000_000),
            poll_id: Some("p1".into()),
            poll_close_ns: Some(4_230_000_000),
            duration_s: 5.0,
            ..RunFacts::default()
        };
        (m, f)
    }

    #[test]
    fn rates_and_spans() {
        let (m, f) = sample();
        let r = Report::build(&m, &f);
        assert!((r.connect_rate_per_s - 18.0).abs() < 1e-9, "9 in 0.5 s");
        assert!((r.delivered_per_s - 90.0).abs() < 1e-9, "90 in 1 s");
        assert!((r.votes_per_s - 20.0).abs() < 1e-9, "4 in 0.2 s");
        assert_eq!(r.last_vote_to_final_ms, Some(150.0));
        assert_eq!(r.close_to_final_ms, Some(20.0));
        assert_eq!(r.final_total_matches_acked, Some(true));
        assert_eq!(r.handshake_us.count, 1);
    }

    #[test]
    fn empty_run_has_zero_rates_and_no_poll_figures() {
        let r = Report::build(&Measurements::default(), &RunFacts::default());
        assert_eq!(r.connect_rate_per_s, 0.0);
        assert_eq!(r.delivered_per_s, 0.0);
        assert_eq!(r.last_vote_to_final_ms, None);
        assert_eq!(r.final_total_matches_acked, None);
        assert!(r.render().contains("no samples"));
    }

    #[test]
    fn json_round_trip_and_required_keys() {
        let (m, f) = sample();
        let r = Report::build(&m, &f);
        let json = r.to_json();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for key in [
            "connections_established",
            "connect_failures",
            "connect_rate_per_s",
            "delivered",
            "delivered_per_s",
            "votes_sent",
            "votes_acked",
            "votes_per_s",
            "last_vote_to_final_ms",
            "final_total",
            "duration_s",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p99", "max"] {
            assert!(v["handshake_us"][key].is_u64());
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(v["latency_us"][key].is_u64());
        }
        assert_eq!(v["errors"]["connect_refused"], 1);
        assert_eq!(v["unexpected_closes"]["1011"], 1);
        assert_eq!(v["schema"], SCHEMA);
    }

    #[test]
    fn summary_mentions_the_figures() {
        let (m, f) = sample();
        let text = Report::build(&m, &f).render();
        assert!(text.contains("established 9"));
        assert!(text.contains("delivered 90 of 90 expected"));
        assert!(text.contains("total == acked: yes"));
        assert!(text.contains("connect_refused 1"));
        assert!(text.contains("1011 1"));
    }
}
