//! Telemetry of every group over sliding windows, merged from the shards' deltas.
//!
//! Each shard folds its viewers' reports per group (`shards::telemetry`) and sends the deltas a
//! few times per second; here they land in one-second buckets per group, at the time they
//! arrive (`now_ms`). A window is the merge of its last buckets: reading one costs
//! O(window seconds), never O(viewers), and merging a delta costs O(1). Buckets older than the
//! longest window are dropped. Must not touch: shard queues, the mirror, the store.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};
use shards::proto::GroupId;
use shards::telemetry::{Aggregate, Metric};

/// Width of one bucket.
const BUCKET_MS: u64 = 1000;

/// Sliding windows of telemetry per group.
#[derive(Debug)]
pub struct TelemetryWindows {
    /// Window lengths served, in ms (whole seconds), shortest first.
    windows_ms: Vec<u64>,
    /// Per group: (bucket start ms, what arrived in it), oldest first.
    groups: HashMap<GroupId, VecDeque<(u64, Aggregate)>>,
}

impl TelemetryWindows {
    /// Windows of `windows_s` seconds (each at least 1).
    pub fn new(windows_s: &[u64]) -> TelemetryWindows {
        let mut windows_ms: Vec<u64> = windows_s.iter().map(|s| s.max(&1) * 1000).collect();
        windows_ms.sort_unstable();
        windows_ms.dedup();
        TelemetryWindows {
            windows_ms,
            groups: HashMap::new(),
        }
    }

    fn longest_ms(&self) -> u64 {
        self.windows_ms.last().copied().unwrap_or(BUCKET_MS)
    }

    /// The window lengths served, in ms.
    pub fn windows_ms(&self) -> &[u64] {
        &self.windows_ms
    }

    /// Merges a shard's delta for `group` arriving at `now_ms`.
    pub fn merge(&mut self, group: GroupId, delta: &Aggregate, now_ms: u64) {
        let start = now_ms - now_ms % BUCKET_MS;
        let keep_from = start.saturating_sub(self.longest_ms() - BUCKET_MS);
        let buckets = self.groups.entry(group).or_default();
        while buckets.front().is_some_and(|(s, _)| *s < keep_from) {
            buckets.pop_front();
        }
        match buckets.back_mut() {
            // A clock step backwards folds into the newest bucket rather than reordering.
            Some((s, agg)) if *s >= start => agg.merge(delta),
            _ => {
                let mut agg = Aggregate::default();
                agg.merge(delta);
                buckets.push_back((start, agg));
            }
        }
    }

    /// `group`'s reports over the last `window_ms` at `now_ms` (the current second included).
    pub fn window(&self, group: GroupId, window_ms: u64, now_ms: u64) -> Aggregate {
        let start = now_ms - now_ms % BUCKET_MS;
        let from = start.saturating_sub(window_ms.max(BUCKET_MS) - BUCKET_MS);
        let mut out = Aggregate::default();
        if let Some(buckets) = self.groups.get(&group) {
            for (_, agg) in buckets.iter().rev().take_while(|(s, _)| *s >= from) {
                out.merge(agg);
            }
        }
        out
    }

    /// Forgets a dropped group.
    pub fn forget(&mut self, group: GroupId) {
        self.groups.remove(&group);
    }

    /// Every window of `group` as the API shows it: `{"10s": {...}, "60s": {...}}`.
    pub fn to_json(&self, group: GroupId, now_ms: u64) -> Value {
        let mut out = serde_json::Map::new();
        for &w in &self.windows_ms {
            out.insert(
                format!("{}s", w / 1000),
                window_json(&self.window(group, w, now_ms), w),
            );
        }
        Value::Object(out)
    }
}

/// Failures per minute over a window of `window_ms`.
pub fn failures_per_min(agg: &Aggregate, window_ms: u64) -> f64 {
    agg.series(Metric::Failures).sum * 60_000.0 / window_ms.max(1) as f64
}

/// One window as JSON: reports, failures per minute, and per metric count, sum, mean, max and
/// histogram (`le` upper bounds, the last `null` for the rest).
pub fn window_json(agg: &Aggregate, window_ms: u64) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("reports".into(), json!(agg.reports));
    body.insert(
        "failures_per_min".into(),
        json!(failures_per_min(agg, window_ms)),
    );
    for metric in Metric::ALL {
        let s = agg.series(metric);
        let bounds = metric.bounds();
        let histogram: Vec<Value> = s
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"le": bounds.get(i), "count": n}))
            .collect();
        body.insert(
            metric.as_str().into(),
            json!({
                "count": s.count,
                "sum": s.sum,
                "mean": s.mean(),
                "max": (s.count > 0).then_some(s.max),
                "histogram": histogram,
            }),
        );
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::proto::Telemetry;

    fn delta(failures: f64) -> Aggregate {
        let mut a = Aggregate::default();
        a.record(&Telemetry {
            failures: Some(failures),
            ..Telemetry::default()
        });
        a
    }

    #[test]
    fn windows_slide_by_whole_seconds() {
        let mut w = TelemetryWindows::new(&[10, 60]);
        let g = GroupId(3);
        w.merge(g, &delta(1.0), 100_000);
        w.merge(g, &delta(2.0), 100_999);
        w.merge(g, &delta(4.0), 105_500);
        let sum =
            |w: &TelemetryWindows, win, now| w.window(g, win, now).series(Metric::Failures).sum;
        assert_eq!(sum(&w, 10_000, 105_600), 7.0);
        assert_eq!(sum(&w, 10_000, 109_999), 7.0, "100 s bucket is the 10th");
        assert_eq!(
            sum(&w, 10_000, 110_000),
            4.0,
            "and then out of the 10 s window"
        );
        assert_eq!(sum(&w, 60_000, 159_999), 7.0);
        assert_eq!(sum(&w, 60_000, 165_000), 0.0);
        assert_eq!(w.window(GroupId(9), 10_000, 0), Aggregate::default());
        let j = w.to_json(g, 105_600);
        assert_eq!(j["10s"]["reports"], 3);
        assert_eq!(j["60s"]["failures"]["max"], 4.0);
        assert_eq!(j["10s"]["failures_per_min"], 42.0);
        w.forget(g);
        assert_eq!(sum(&w, 60_000, 105_600), 0.0);
    }

    #[test]
    fn old_buckets_are_dropped_and_a_clock_step_back_is_kept() {
        let mut w = TelemetryWindows::new(&[5]);
        let g = GroupId::GLOBAL;
        for s in 0..100u64 {
            w.merge(g, &delta(1.0), s * 1000);
        }
        assert_eq!(w.groups[&g].len(), 5, "only the longest window is kept");
        w.merge(g, &delta(1.0), 50_000);
        assert_eq!(w.window(g, 5_000, 99_000).reports, 6);
    }
}
