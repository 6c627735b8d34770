//! Telemetry aggregated at the edge: each shard folds its viewers' reports into one partial
//! [`Aggregate`] per (group, second) and reports the deltas, coalesced, to the application
//! core (as poll tallies are), which merges them into one-second buckets read as sliding
//! windows. A report costs the shard one update per group the viewer is in; the application
//! core's cost does not grow with viewers.
//!
//! Distinct reporting viewers ("latest-report buckets"): the bucket of second `s` of group `g`
//! carries [`Aggregate::viewers`], the number of viewers whose latest report counted in `g`
//! fell in second `s`, so a window's distinct reporting viewers are the sum over its buckets,
//! exactly. The shard keeps, per viewer that has reported (viewers that never report keep
//! nothing), the second of its latest report in each group ([`LatestReports`]); a report at
//! second `t` in group `g` whose previous one there was at `t' != t` sends -1 for `(g, t')`
//! and +1 for `(g, t)`. The record travels with a departing viewer to the application core and
//! back to the shard it resumes on, so a resumed viewer is still counted once.
//!
//! Pure: no clock, no I/O. Values a peer sends are checked here: a number that is not finite,
//! is negative or is over its metric's [`Metric::limit`] is not counted (the rest of that
//! report still is).

use std::collections::{BTreeMap, HashMap};

use protocol::Telemetry;

/// Buckets of every metric's histogram: seven upper bounds and one overflow bucket.
pub const BUCKETS: usize = 8;

/// The numbers a report may carry, in a fixed order ([`Metric::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    BitrateKbps,
    BufferingMs,
    BufferingRatio,
    DroppedFrames,
    RttMs,
    Failures,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::BitrateKbps,
        Metric::BufferingMs,
        Metric::BufferingRatio,
        Metric::DroppedFrames,
        Metric::RttMs,
        Metric::Failures,
    ];

    /// The field name in the protocol and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::BitrateKbps => "bitrate_kbps",
            Metric::BufferingMs => "buffering_ms",
            Metric::BufferingRatio => "buffering_ratio",
            Metric::DroppedFrames => "dropped_frames",
            Metric::RttMs => "rtt_ms",
            Metric::Failures => "failures",
        }
    }

    /// Inclusive upper bounds of the first seven histogram buckets; the eighth takes the rest.
    pub fn bounds(self) -> [f64; BUCKETS - 1] {
        match self {
            Metric::BitrateKbps => [500.0, 1000.0, 2000.0, 3000.0, 4500.0, 6000.0, 8000.0],
            Metric::BufferingMs => [0.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0],
            Metric::BufferingRatio => [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
            Metric::DroppedFrames => [0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 100.0],
            Metric::RttMs => [25.0, 50.0, 100.0, 150.0, 250.0, 500.0, 1000.0],
            Metric::Failures => [0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0],
        }
    }

    /// Largest value counted: sums stay finite and one player cannot swamp a group.
    pub fn limit(self) -> f64 {
        match self {
            Metric::BufferingRatio => 1.0,
            Metric::Failures => 1_000.0,
            _ => 10_000_000.0,
        }
    }

    /// This metric's value in a report, if present and countable.
    pub fn value(self, t: &Telemetry) -> Option<f64> {
        let v = match self {
            Metric::BitrateKbps => t.bitrate_kbps,
            Metric::BufferingMs => t.buffering_ms,
            Metric::BufferingRatio => t.buffering_ratio,
            Metric::DroppedFrames => t.dropped_frames,
            Metric::RttMs => t.rtt_ms,
            Metric::Failures => t.failures,
        }?;
        (v.is_finite() && (0.0..=self.limit()).contains(&v)).then_some(v)
    }

    /// The histogram bucket of `x`.
    pub fn bucket(self, x: f64) -> usize {
        self.bounds()
            .iter()
            .position(|&b| x <= b)
            .unwrap_or(BUCKETS - 1)
    }
}

/// Count, sum, maximum and histogram of one metric.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Series {
    pub count: u64,
    pub sum: f64,
    /// Meaningless while `count` is 0.
    pub max: f64,
    pub buckets: [u64; BUCKETS],
}

impl Series {
    fn add(&mut self, metric: Metric, x: f64) {
        self.max = if self.count == 0 { x } else { self.max.max(x) };
        self.count += 1;
        self.sum += x;
        self.buckets[metric.bucket(x)] += 1;
    }

    pub fn merge(&mut self, o: &Series) {
        if o.count == 0 {
            return;
        }
        self.max = if self.count == 0 {
            o.max
        } else {
            self.max.max(o.max)
        };
        self.count += o.count;
        self.sum += o.sum;
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
    }

    /// `sum / count`, or `None` without values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Every metric over a set of reports: mergeable, so shards, seconds and windows add up.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Aggregate {
    /// Reports folded in (each counts once, whatever fields it carried).
    pub reports: u64,
    /// Net change of the viewers whose latest report in the group fell in this second (see
    /// the module doc); summed over a window's seconds, the distinct viewers who reported in
    /// it. Signed: a delta moves viewers out of earlier seconds.
    pub viewers: i64,
    /// Indexed like [`Metric::ALL`].
    pub series: [Series; 6],
}

impl Aggregate {
    pub fn record(&mut self, t: &Telemetry) {
        self.reports += 1;
        for (series, metric) in self.series.iter_mut().zip(Metric::ALL) {
            if let Some(x) = metric.value(t) {
                series.add(metric, x);
            }
        }
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.reports += o.reports;
        self.viewers += o.viewers;
        for (a, b) in self.series.iter_mut().zip(&o.series) {
            a.merge(b);
        }
    }

    pub fn series(&self, metric: Metric) -> &Series {
        &self.series[metric as usize]
    }
}

/// Where a viewer's latest reports were counted: (group, Unix second of its latest report in
/// that group), one entry per group it has reported in.
pub type LatestReports<G> = Vec<(G, u32)>;

/// A shard's partial aggregates since its last report, per (group, Unix second of the
/// reports), and the [`LatestReports`] of each viewer that has reported, by its slot (`G`: the
/// group id type, `proto::GroupId` on a shard).
#[derive(Debug)]
pub struct Partials<G> {
    by_group: BTreeMap<(G, u32), Aggregate>,
    latest: HashMap<u32, LatestReports<G>>,
}

impl<G> Default for Partials<G> {
    fn default() -> Self {
        Partials {
            by_group: BTreeMap::new(),
            latest: HashMap::new(),
        }
    }
}

impl<G: Ord + Copy> Partials<G> {
    /// Folds one report of the viewer in `slot`, made at Unix second `second`, into every
    /// group in `groups` (the viewer's groups now), and moves the viewer's latest report in
    /// each of them to `second`.
    pub fn record(
        &mut self,
        slot: u32,
        groups: impl IntoIterator<Item = G>,
        second: u32,
        t: &Telemetry,
    ) {
        let mut groups = groups.into_iter().peekable();
        if groups.peek().is_none() {
            return; // in no group (a connection waiting for its resume): nothing to count
        }
        let latest = self.latest.entry(slot).or_default();
        for g in groups {
            // (+1 in this second, the earlier second it moves out of)
            let (joins, leaves) = match latest.iter_mut().find(|(lg, _)| *lg == g) {
                Some((_, s)) if *s == second => (0, None),
                Some((_, s)) => (1, Some(std::mem::replace(s, second))),
                None => {
                    latest.push((g, second));
                    (1, None)
                }
            };
            let here = self.by_group.entry((g, second)).or_default();
            here.record(t);
            here.viewers += joins;
            if let Some(earlier) = leaves {
                self.by_group.entry((g, earlier)).or_default().viewers -= 1;
            }
        }
    }

    /// The viewer in `slot` is gone: its latest reports, to carry to where it may resume.
    pub fn leave(&mut self, slot: u32) -> LatestReports<G> {
        self.latest.remove(&slot).unwrap_or_default()
    }

    /// A resumed viewer in `slot` brings back where its latest reports were counted. (It has
    /// not reported here yet, being in no group until admitted; if it had, in a group counted
    /// in both places, the earlier second is taken back and the later one kept.)
    pub fn restore(&mut self, slot: u32, reports: LatestReports<G>) {
        if reports.is_empty() {
            return;
        }
        let latest = self.latest.entry(slot).or_default();
        for (g, s) in reports {
            match latest.iter_mut().find(|(lg, _)| *lg == g) {
                Some((_, here)) => {
                    self.by_group.entry((g, s.min(*here))).or_default().viewers -= 1;
                    *here = s.max(*here);
                }
                None => latest.push((g, s)),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_group.is_empty()
    }

    /// The deltas since the last call, leaving none: (group, second, delta).
    pub fn take(&mut self) -> Vec<(G, u32, Aggregate)> {
        std::mem::take(&mut self.by_group)
            .into_iter()
            .map(|((g, s), a)| (g, s, a))
            .collect()
    }

    /// Forgets a dropped group: its pending deltas and every viewer's latest report in it
    /// (O(viewers that reported on this shard), once per dropped group).
    pub fn forget(&mut self, group: G) {
        self.by_group.retain(|(g, _), _| *g != group);
        self.latest.retain(|_, latest| {
            latest.retain(|(g, _)| *g != group);
            !latest.is_empty()
        });
    }

    /// Viewers with latest reports kept.
    pub fn reporters(&self) -> usize {
        self.latest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bitrate: f64, failures: Option<f64>) -> Telemetry {
        Telemetry {
            bitrate_kbps: Some(bitrate),
            failures,
            ..Telemetry::default()
        }
    }

    #[test]
    fn values_are_checked_and_bucketed() {
        let m = Metric::BufferingRatio;
        assert_eq!(m.value(&Telemetry::default()), None);
        let r = |x| Telemetry {
            buffering_ratio: Some(x),
            ..Telemetry::default()
        };
        assert_eq!(m.value(&r(0.3)), Some(0.3));
        assert_eq!(m.value(&r(1.5)), None, "over the limit");
        assert_eq!(m.value(&r(-0.1)), None, "negative");
        assert_eq!(m.value(&r(f64::NAN)), None);
        assert_eq!(m.bucket(0.0), 0);
        assert_eq!(m.bucket(0.015), 2);
        assert_eq!(m.bucket(0.5), 6);
        assert_eq!(m.bucket(0.9), 7);
    }

    #[test]
    fn aggregates_merge_like_one_pass() {
        let reports = [t(1000.0, Some(2.0)), t(3000.0, None), t(9000.0, Some(0.0))];
        let mut whole = Aggregate::default();
        reports.iter().for_each(|r| whole.record(r));
        let (mut a, mut b) = (Aggregate::default(), Aggregate::default());
        a.record(&reports[0]);
        b.record(&reports[1]);
        b.record(&reports[2]);
        let mut merged = Aggregate::default();
        merged.merge(&b);
        merged.merge(&a);
        assert_eq!(merged, whole);
        let bitrate = whole.series(Metric::BitrateKbps);
        assert_eq!(
            (bitrate.count, bitrate.sum, bitrate.max),
            (3, 13000.0, 9000.0)
        );
        assert_eq!(bitrate.mean(), Some(13000.0 / 3.0));
        assert_eq!(bitrate.buckets, [0, 1, 0, 1, 0, 0, 0, 1]);
        let failures = whole.series(Metric::Failures);
        assert_eq!((failures.count, failures.sum, failures.max), (2, 2.0, 2.0));
        assert_eq!(whole.reports, 3);
        assert_eq!(whole.series(Metric::RttMs).mean(), None);
    }

    #[test]
    fn partials_go_to_every_group_once_and_are_taken() {
        let mut p = Partials::<u32>::default();
        p.record(1, [0, 4], 100, &t(500.0, None));
        p.record(2, [0], 100, &t(700.0, None));
        let deltas = p.take();
        assert_eq!(deltas.len(), 2);
        assert_eq!((deltas[0].0, deltas[0].1), (0, 100));
        assert_eq!((deltas[0].2.reports, deltas[0].2.viewers), (2, 2));
        assert_eq!(deltas[1].2.series(Metric::BitrateKbps).sum, 500.0);
        assert_eq!(deltas[1].2.viewers, 1);
        assert!(p.is_empty());
        p.record(1, [4], 101, &t(1.0, None));
        p.forget(4);
        assert!(p.take().is_empty());
        assert_eq!(p.leave(1), vec![(0, 100)], "group 4 is forgotten");
        p.record(3, [], 101, &t(1.0, None));
        assert_eq!(p.reporters(), 1, "a viewer in no group keeps nothing");
    }

    /// The viewers column: each (viewer, group) is +1 in the second of its latest report and
    /// nowhere else, so any window's sum is its distinct reporting viewers.
    #[test]
    fn a_viewer_counts_once_in_the_second_of_its_latest_report() {
        let mut p = Partials::<u32>::default();
        let net = |p: &mut Partials<u32>| -> Vec<(u32, u32, i64)> {
            p.take()
                .into_iter()
                .map(|(g, s, a)| (g, s, a.viewers))
                .collect()
        };
        p.record(7, [0, 1], 10, &t(1.0, None));
        p.record(7, [0, 1], 10, &t(1.0, None));
        assert_eq!(net(&mut p), vec![(0, 10, 1), (1, 10, 1)]);
        // Later, and out of group 1: it moves in group 0 only; group 1 keeps second 10.
        p.record(7, [0], 12, &t(1.0, None));
        assert_eq!(net(&mut p), vec![(0, 10, -1), (0, 12, 1)]);
        // It leaves and resumes in another slot (another shard): still the same viewer.
        let carried = p.leave(7);
        assert_eq!(carried, vec![(0, 12), (1, 10)]);
        let mut q = Partials::<u32>::default();
        q.restore(3, carried);
        q.record(3, [0, 1, 2], 15, &t(1.0, None));
        assert_eq!(
            net(&mut q),
            vec![(0, 12, -1), (0, 15, 1), (1, 10, -1), (1, 15, 1), (2, 15, 1)]
        );
        // Counted in group 2 both where it comes back and where it was: once, at the later.
        q.restore(3, vec![(2, 14)]);
        assert_eq!(net(&mut q), vec![(2, 14, -1)]);
        assert_eq!(q.leave(3), vec![(0, 15), (1, 15), (2, 15)]);
    }
}
