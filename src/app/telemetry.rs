//! Telemetry of every group over sliding windows, merged from the shards' deltas.
//!
//! Each shard folds its viewers' reports per group and second (`shards::telemetry`) and sends
//! the deltas a few times per second; here each lands in the one-second bucket of the second
//! its reports were made (the shard's clock), so a viewer's next report can take it out of
//! exactly that bucket: a window's `viewers` (the sum of its buckets' [`Aggregate::viewers`])
//! is the number of distinct viewers who reported in it. A window is the merge of its last
//! buckets: reading one costs O(window seconds), never O(viewers), and merging a delta costs
//! O(1) (a binary search among at most the longest window's buckets). Buckets older than the
//! longest window are dropped, and so is a delta for a second they covered (a viewer's earlier
//! report moving out of a bucket no window reads any more). No bucket is made in the future: a
//! delta stamped later than `now_ms` (a clock step) joins an existing bucket of its second or
//! else the current one. Must not touch: shard queues, the mirror, the store.

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
    /// Per group: (Unix second, what was reported in it), oldest first.
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

    /// Merges a shard's delta for `group` of the reports made in Unix second `second`,
    /// arriving at `now_ms`.
    pub fn merge(&mut self, group: GroupId, second: u32, delta: &Aggregate, now_ms: u64) {
        let now_s = now_ms / BUCKET_MS;
        let keep_from = now_s.saturating_sub(self.longest_ms() / BUCKET_MS - 1);
        let buckets = self.groups.entry(group).or_default();
        while buckets.front().is_some_and(|(s, _)| *s < keep_from) {
            buckets.pop_front();
        }
        let second = u64::from(second);
        if second < keep_from {
            // Older than every window: no window reads it (nor the +1 it would cancel).
            if buckets.is_empty() {
                self.groups.remove(&group);
            }
            return;
        }
        let found = buckets.binary_search_by_key(&second, |(s, _)| *s);
        let at = match found {
            Ok(i) => i,
            // Never a new bucket in the future: such a delta joins the current second.
            Err(_) if second > now_s => match buckets.binary_search_by_key(&now_s, |(s, _)| *s) {
                Ok(i) => i,
                Err(i) => {
                    buckets.insert(i, (now_s, Aggregate::default()));
                    i
                }
            },
            Err(i) => {
                buckets.insert(i, (second, Aggregate::default()));
                i
            }
        };
        buckets[at].1.merge(delta);
    }

    /// `group`'s reports over the last `window_ms` at `now_ms` (the current second included).
    pub fn window(&self, group: GroupId, window_ms: u64, now_ms: u64) -> Aggregate {
        let now_s = now_ms / BUCKET_MS;
        let from = now_s.saturating_sub(window_ms.max(BUCKET_MS) / BUCKET_MS - 1);
        let mut out = Aggregate::default();
        if let Some(buckets) = self.groups.get(&group) {
            // From the newest back (buckets after `now_ms` exist only after a clock step back).
            for (_, agg) in buckets
                .iter()
                .rev()
                .skip_while(|(s, _)| *s > now_s)
                .take_while(|(s, _)| *s >= from)
            {
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

/// Distinct viewers who reported in a window. Exact once every shard's deltas for the window
/// have arrived; until then a viewer that moved between shards may briefly count once less
/// (never negative).
pub fn viewers(agg: &Aggregate) -> u64 {
    agg.viewers.max(0) as u64
}

/// Failures per minute over a window of `window_ms`.
pub fn failures_per_min(agg: &Aggregate, window_ms: u64) -> f64 {
    agg.series(Metric::Failures).sum * 60_000.0 / window_ms.max(1) as f64
}

/// One window as JSON: reports, distinct reporting viewers, failures per minute, and per
/// metric count, sum, mean, max and histogram (`le` upper bounds, the last `null` for the rest).
pub fn window_json(agg: &Aggregate, window_ms: u64) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("reports".into(), json!(agg.reports));
    body.insert("viewers".into(), json!(viewers(agg)));
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
    use shards::telemetry::Partials;

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
        w.merge(g, 100, &delta(1.0), 100_000);
        w.merge(g, 100, &delta(2.0), 101_200);
        w.merge(g, 105, &delta(4.0), 105_500);
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
    fn deltas_land_in_their_second_never_in_the_future_nor_past_the_windows() {
        let mut w = TelemetryWindows::new(&[5]);
        let g = GroupId::GLOBAL;
        for s in 0..100u32 {
            w.merge(g, s, &delta(1.0), u64::from(s) * 1000);
        }
        assert_eq!(w.groups[&g].len(), 5, "only the longest window is kept");
        // A late delta goes to its own second; one older than every window is dropped.
        w.merge(g, 97, &delta(1.0), 99_500);
        w.merge(g, 50, &delta(1.0), 99_500);
        assert_eq!(w.window(g, 5_000, 99_000).reports, 6);
        assert_eq!(w.window(g, 1_000, 97_000).reports, 2);
        // Stamped in the future (a clock step): the current second, no new bucket.
        w.merge(g, 4_000_000_000, &delta(1.0), 99_000);
        assert_eq!(w.groups[&g].len(), 5);
        assert_eq!(w.window(g, 1_000, 99_000).reports, 2);
        // The wall clock steps back: reports made then count in windows read then; the
        // buckets of the later seconds are not read before their time.
        w.merge(g, 50, &delta(1.0), 50_000);
        assert_eq!(w.window(g, 5_000, 50_000).reports, 1);
        assert_eq!(w.window(g, 5_000, 99_000).reports, 7);
    }

    /// Reports of viewer `v` at second `s`, folded the way a shard does it.
    fn report(p: &mut Partials<GroupId>, v: u32, groups: &[GroupId], s: u32) {
        p.record(v, groups.iter().copied(), s, &Telemetry::default());
    }

    fn flush(w: &mut TelemetryWindows, p: &mut Partials<GroupId>, now_ms: u64) {
        for (g, s, d) in p.take() {
            w.merge(g, s, &d, now_ms);
        }
    }

    #[test]
    fn one_viewer_reporting_every_second_for_30_s_is_one_viewer() {
        let mut w = TelemetryWindows::new(&[10, 60]);
        let mut shard = Partials::default();
        for s in 2000..2030u32 {
            report(&mut shard, 9, &[GroupId::GLOBAL], s);
            flush(&mut w, &mut shard, u64::from(s) * 1000 + 900);
        }
        for win in [10_000, 60_000] {
            let a = w.window(GroupId::GLOBAL, win, 2_029_900);
            assert_eq!(a.reports, (win / 1000).min(30), "one report a second");
            assert_eq!(a.viewers, 1, "one viewer in the {win} ms window");
        }
    }

    #[test]
    fn a_window_counts_each_reporting_viewer_once() {
        let mut w = TelemetryWindows::new(&[10, 60]);
        let mut shard = Partials::default();
        let g = [GroupId::GLOBAL];
        // Viewers 1 and 3 report every second for 30 s; viewer 2 only in the first 5 s.
        for s in 1000..1030u32 {
            report(&mut shard, 1, &g, s);
            report(&mut shard, 3, &g, s);
            if s < 1005 {
                report(&mut shard, 2, &g, s);
            }
            flush(&mut w, &mut shard, u64::from(s) * 1000 + 500);
        }
        let at = |w: &TelemetryWindows, win, now| {
            let a = w.window(GroupId::GLOBAL, win, now);
            (a.reports, viewers(&a))
        };
        assert_eq!(at(&w, 10_000, 1_029_500), (20, 2));
        assert_eq!(at(&w, 60_000, 1_029_500), (65, 3));
        // Only viewer 1 goes on: the 10 s window has one viewer, then none once it stops.
        for s in 1030..1040u32 {
            report(&mut shard, 1, &g, s);
            flush(&mut w, &mut shard, u64::from(s) * 1000 + 500);
        }
        assert_eq!(at(&w, 10_000, 1_039_500), (10, 1));
        assert_eq!(at(&w, 10_000, 1_049_500), (0, 0), "slid out of the window");
        assert_eq!(at(&w, 60_000, 1_049_500).1, 3);
        assert_eq!(at(&w, 60_000, 1_089_500).1, 1, "viewer 1 reported at 1039");
        assert_eq!(w.to_json(GroupId::GLOBAL, 1_039_500)["10s"]["viewers"], 1);
    }

    /// xorshift64*: the same run every time.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Two shards, one of them reporting late, viewers changing groups and moving between
    /// the shards (leave, resume): every window's viewers equal a brute-force count.
    #[test]
    fn viewers_equal_a_brute_force_count_across_shards_and_resumes() {
        let mut rng = Rng(0x0014_0014);
        let mut w = TelemetryWindows::new(&[10, 60]);
        let mut shards = [Partials::default(), Partials::default()];
        let (g1, g2) = (GroupId(1), GroupId(2));
        // Per viewer: (shard, slot); slots are fresh on every move.
        let mut at: Vec<(usize, u32)> = (0..30).map(|v| (v % 2, v as u32)).collect();
        let mut next_slot = 100u32;
        let mut reported: Vec<(usize, GroupId, u64)> = Vec::new();
        for s in 5000..5300u32 {
            for (v, place) in at.iter_mut().enumerate() {
                if rng.below(30) == 0 {
                    let carried = shards[place.0].leave(place.1);
                    *place = (1 - place.0, next_slot);
                    next_slot += 1;
                    shards[place.0].restore(place.1, carried);
                }
                if rng.below(3) == 0 {
                    continue;
                }
                let mut groups = vec![GroupId::GLOBAL];
                groups.extend([g1, g2].into_iter().filter(|_| rng.below(2) == 0));
                report(&mut shards[place.0], place.1, &groups, s);
                reported.extend(groups.iter().map(|&g| (v, g, u64::from(s))));
            }
            let now = u64::from(s) * 1000 + 999;
            flush(&mut w, &mut shards[0], now);
            if s % 3 == 0 {
                flush(&mut w, &mut shards[1], now);
                for g in [GroupId::GLOBAL, g1, g2] {
                    for win in [10u64, 60] {
                        let from = u64::from(s) + 1 - win;
                        let brute: std::collections::BTreeSet<usize> = reported
                            .iter()
                            .filter(|(_, rg, rs)| *rg == g && *rs >= from)
                            .map(|(v, _, _)| *v)
                            .collect();
                        let got = w.window(g, win * 1000, now);
                        assert_eq!(got.viewers, brute.len() as i64, "{g:?} {win} s at {s}");
                    }
                }
            }
        }
    }
}
