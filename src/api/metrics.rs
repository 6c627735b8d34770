//! `GET /metrics`: the Prometheus text exposition format (0.0.4), rendered at scrape time
//! from the counters that already exist (the shards' relaxed atomics, the application core's
//! state and telemetry windows).
//!
//! Hand-written rather than through `prometheus-client`: that crate wants metrics registered
//! as objects it owns and updates, which would mean a second copy of every counter beside the
//! ones the shards and the core keep; the format itself is a few lines of text per family.
//! `tests/metrics.rs` parses a scrape with an independent parser (`prometheus-parse`).

use std::fmt::Write;

use shards::telemetry::Metric;
use shards::StatsSnapshot;

use crate::app::{App, PollState};

/// One metric family being written: `# HELP`, `# TYPE`, then samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label values escaped as the format requires (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family<'a>(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

/// A float as the format writes it (`NaN`, `+Inf` are never produced: values are finite).
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "0".into()
    }
}

/// Per-shard counters: one family per counter, a `shard` label per sample.
fn shard_families(out: &mut String, shards: &[StatsSnapshot]) {
    type Get = fn(&StatsSnapshot) -> u64;
    let simple: [(&str, &str, &str, Get); 14] = [
        (
            "ovation_connections",
            "gauge",
            "Open viewer connections.",
            |s| s.connections,
        ),
        (
            "ovation_accepted_total",
            "counter",
            "TCP connections accepted.",
            |s| s.accepted,
        ),
        (
            "ovation_accepted_from_neighbour_total",
            "counter",
            "Of those, taken from a neighbour shard's backlog that shard left waiting.",
            |s| s.accepted_from_neighbour,
        ),
        (
            "ovation_messages_in_total",
            "counter",
            "WebSocket messages received from viewers.",
            |s| s.messages_in,
        ),
        (
            "ovation_frames_out_total",
            "counter",
            "Frames written or queued to viewers.",
            |s| s.frames_out,
        ),
        (
            "ovation_casts_total",
            "counter",
            "Group-casts executed.",
            |s| s.casts,
        ),
        (
            "ovation_votes_total",
            "counter",
            "Votes counted (changed votes included).",
            |s| s.votes,
        ),
        (
            "ovation_telemetry_reports_total",
            "counter",
            "Telemetry reports folded on the shards.",
            |s| s.telemetry_reports,
        ),
        (
            "ovation_hls_requests_total",
            "counter",
            "HLS requests answered.",
            |s| s.hls_requests,
        ),
        (
            "ovation_hls_bytes_zerocopy_total",
            "counter",
            "Segment body bytes sent with IORING_OP_SEND_ZC.",
            |s| s.hls_bytes_zerocopy,
        ),
        (
            "ovation_hls_bytes_sendfile_total",
            "counter",
            "Recorded segment body bytes sent with sendfile from their files.",
            |s| s.hls_bytes_sendfile,
        ),
        (
            "ovation_hls_bytes_plain_total",
            "counter",
            "Segment body bytes sent with plain sends.",
            |s| s.hls_bytes_plain,
        ),
        (
            "ovation_hls_files_opened_total",
            "counter",
            "Recorded files opened to answer requests (not answered from a shard's cache).",
            |s| s.hls_files_opened,
        ),
        (
            "ovation_closed_token_expired_total",
            "counter",
            "Viewers closed with 4001 because their token expired while connected.",
            |s| s.closed_token_expired,
        ),
    ];
    for (name, kind, help, get) in simple {
        let mut f = family(out, name, kind, help);
        for (i, s) in shards.iter().enumerate() {
            f.sample(&[("shard", &i.to_string())], get(s));
        }
    }
    let refusals: [(&str, Get); 6] = [
        ("http_error", |s| s.handshake_rejected),
        ("unanswered", |s| s.refused_unanswered),
        ("aborted", |s| s.handshake_aborted),
        ("unauthorized", |s| s.handshake_unauthorized),
        ("address_cap", |s| s.refused_address_cap),
        ("rate_limited", |s| s.refused_rate_limited),
    ];
    let mut f = family(
        out,
        "ovation_handshake_refusals_total",
        "counter",
        "Viewer handshakes that did not open, by reason.",
    );
    for (i, s) in shards.iter().enumerate() {
        for (reason, get) in refusals {
            f.sample(&[("shard", &i.to_string()), ("reason", reason)], get(s));
        }
    }
    let closes: [(&str, Get); 4] = [
        ("slow_consumer", |s| s.closed_slow),
        ("timeout", |s| s.closed_timeout),
        ("protocol", |s| s.closed_protocol),
        ("shutdown", |s| s.closed_shutdown),
    ];
    let mut f = family(
        out,
        "ovation_closes_total",
        "counter",
        "Viewers closed by the server, by reason.",
    );
    for (i, s) in shards.iter().enumerate() {
        for (reason, get) in closes {
            f.sample(&[("shard", &i.to_string()), ("reason", reason)], get(s));
        }
    }
}

/// The whole exposition at `now_ms`.
pub fn render(app: &App, now_ms: u64) -> String {
    let mut out = String::with_capacity(8 * 1024);
    shard_families(&mut out, &app.shard_snapshots());
    let gauges: [(&str, &str, u64); 4] = [
        (
            "ovation_viewers",
            "Viewers the application core knows.",
            app.viewer_count() as u64,
        ),
        (
            "ovation_streams",
            "Registered streams.",
            app.stream_count() as u64,
        ),
        (
            "ovation_streams_live",
            "Streams being published now.",
            app.live_streams() as u64,
        ),
        (
            "ovation_groups",
            "Groups (built-in and custom).",
            app.groups().count() as u64,
        ),
    ];
    for (name, help, v) in gauges {
        family(&mut out, name, "gauge", help).sample(&[], v);
    }
    let mut f = family(
        &mut out,
        "ovation_polls",
        "gauge",
        "Polls of this run, by state.",
    );
    for state in [PollState::Open, PollState::Closing, PollState::Closed] {
        let n = app.polls().filter(|p| p.state == state).count();
        f.sample(&[("state", state.as_str())], n);
    }
    let ingest = app.ingest_stats();
    let mut f = family(
        &mut out,
        "ovation_ingest_refusals_total",
        "counter",
        "RTMP publishes refused, by reason.",
    );
    for (reason, v) in [
        ("unknown_key", ingest.refused_key),
        ("busy", ingest.refused_busy),
        ("codec", ingest.refused_codec),
    ] {
        f.sample(&[("reason", reason)], v);
    }
    let counters: [(&str, &str, u64); 4] = [
        (
            "ovation_ingest_closed_bad_total",
            "RTMP connections closed for bad input or a timeout.",
            ingest.closed_bad,
        ),
        (
            "ovation_ingest_dropped_samples_total",
            "Media samples dropped at ingest.",
            ingest.dropped_samples,
        ),
        (
            "ovation_ingest_segments_total",
            "HLS segments cut.",
            ingest.segments,
        ),
        (
            "ovation_ingest_segment_bytes_total",
            "Bytes of HLS segments cut.",
            ingest.segment_bytes,
        ),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help).sample(&[], v);
    }
    let relay = app.relay_stats();
    family(
        &mut out,
        "ovation_relays_active",
        "gauge",
        "Streams relayed from another edge now.",
    )
    .sample(&[], app.relays_active());
    let counters: [(&str, &str, u64); 5] = [
        (
            "ovation_relay_segments_total",
            "Segments pulled from origin edges (each once per edge).",
            relay.segments,
        ),
        (
            "ovation_relay_bytes_total",
            "Bytes of segments pulled from origin edges.",
            relay.bytes,
        ),
        (
            "ovation_relay_failures_total",
            "Failed pulls from origin edges.",
            relay.failures,
        ),
        (
            "ovation_relay_served_segments_total",
            "Segments served to other edges as their origin.",
            relay.served_segments,
        ),
        (
            "ovation_relay_served_bytes_total",
            "Bytes of segments served to other edges as their origin.",
            relay.served_bytes,
        ),
    ];
    for (name, help, v) in counters {
        family(&mut out, name, "counter", help).sample(&[], v);
    }
    let mut f = family(
        &mut out,
        "ovation_remediation_actions_total",
        "counter",
        "Remediation rules fired (applied) and their actions undone (reverted).",
    );
    let (applied, reverted) = app.remediation_counts();
    f.sample(&[("action", "applied")], applied);
    f.sample(&[("action", "reverted")], reverted);
    family(
        &mut out,
        "ovation_remediations_in_force",
        "gauge",
        "Remediations whose actions are in force.",
    )
    .sample(&[], app.remediations_in_force());
    telemetry(&mut out, app, now_ms);
    out
}

/// The global group's telemetry windows as gauges (a window is a snapshot, not a counter).
fn telemetry(out: &mut String, app: &App, now_ms: u64) {
    let windows = app.global_telemetry(now_ms);
    let label = |w: u64| format!("{}s", w / 1000);
    let mut f = family(
        out,
        "ovation_telemetry_reports",
        "gauge",
        "Telemetry reports of every viewer over the window.",
    );
    for (w, agg) in &windows {
        f.sample(&[("window", &label(*w))], agg.reports);
    }
    let mut f = family(
        out,
        "ovation_telemetry_viewers",
        "gauge",
        "Distinct viewers who reported telemetry over the window.",
    );
    for (w, agg) in &windows {
        f.sample(
            &[("window", &label(*w))],
            crate::app::telemetry::viewers(agg),
        );
    }
    let mut f = family(
        out,
        "ovation_telemetry_failures_per_minute",
        "gauge",
        "Connection failures reported per minute over the window.",
    );
    for (w, agg) in &windows {
        let rate = crate::app::telemetry::failures_per_min(agg, *w);
        f.sample(&[("window", &label(*w))], num(rate));
    }
    type Get = fn(&shards::telemetry::Series) -> f64;
    let stats: [(&str, &str, Get); 3] = [
        (
            "ovation_telemetry_count",
            "Reports that carried the metric.",
            |s| s.count as f64,
        ),
        (
            "ovation_telemetry_sum",
            "Sum of the metric's values.",
            |s| s.sum,
        ),
        (
            "ovation_telemetry_max",
            "Largest value of the metric (0 without values).",
            |s| {
                if s.count > 0 {
                    s.max
                } else {
                    0.0
                }
            },
        ),
    ];
    for (name, help, get) in stats {
        let mut f = family(out, name, "gauge", help);
        for (w, agg) in &windows {
            for m in Metric::ALL {
                let labels = [("window", label(*w)), ("metric", m.as_str().to_owned())];
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                f.sample(&labels, num(get(agg.series(m))));
            }
        }
    }
    let mut f = family(
        out,
        "ovation_telemetry_bucket",
        "gauge",
        "Values of the metric up to le over the window (cumulative, as histogram buckets).",
    );
    for (w, agg) in &windows {
        for m in Metric::ALL {
            let s = agg.series(m);
            let mut cumulative = 0;
            for (i, n) in s.buckets.iter().enumerate() {
                cumulative += n;
                let le = m.bounds().get(i).map_or("+Inf".to_owned(), |b| num(*b));
                let labels = [
                    ("window", label(*w)),
                    ("metric", m.as_str().to_owned()),
                    ("le", le),
                ];
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                f.sample(&labels, cumulative);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_escaped_and_typed() {
        let mut out = String::new();
        let mut f = family(&mut out, "x_total", "counter", "An x.");
        f.sample(&[("a", "q\"\\\n")], 3);
        f.sample(&[], 4);
        assert_eq!(
            out,
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\"} 3\nx_total 4\n"
        );
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(0.5), "0.5");
    }
}
