//! Counters and latency histograms, their wire form, and merging across workers.
//!
//! Latencies are recorded in microseconds with 3 significant digits up to 60 s. Workers ship
//! their histograms to the coordinator in hdrhistogram's V2 serialization, base64-encoded, so
//! merging preserves every bucket (percentiles of the merge are exact, not averaged).

use std::collections::BTreeMap;

use anyhow::Context;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency a histogram holds; larger values are clamped to it and counted.
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// A latency histogram: 1 µs .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// A histogram plus the anomalies met while filling it.
#[derive(Clone, Debug)]
pub struct Latency {
    pub hist: Histogram<u64>,
    /// Samples whose end was before their start (clock anomaly); recorded as 0.
    pub negative: u64,
    /// Samples above [`LATENCY_MAX_US`]; recorded as the maximum.
    pub saturated: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hist: new_histogram(),
            negative: 0,
            saturated: 0,
        }
    }
}

impl Latency {
    /// Records `end_ns - start_ns` in microseconds, clamping negatives to 0 and counting them.
    pub fn record_span(&mut self, start_ns: u64, end_ns: u64) {
        match end_ns.checked_sub(start_ns) {
            Some(ns) => self.record_us(ns / 1_000),
            None => {
                self.negative += 1;
                self.record_us(0);
            }
        }
    }

    pub fn record_us(&mut self, us: u64) {
        if us > LATENCY_MAX_US {
            self.saturated += 1;
        }
        // saturating_record clamps to the histogram's highest trackable value.
        self.hist.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Latency) -> anyhow::Result<()> {
        self.hist
            .add(&other.hist)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        self.negative += other.negative;
        self.saturated += other.saturated;
        Ok(())
    }

    pub fn to_wire(&self) -> anyhow::Result<LatencyWire> {
        Ok(LatencyWire {
            hist: encode_histogram(&self.hist)?,
            negative: self.negative,
            saturated: self.saturated,
        })
    }

    pub fn from_wire(w: &LatencyWire) -> anyhow::Result<Latency> {
        Ok(Latency {
            hist: decode_histogram(&w.hist)?,
            negative: w.negative,
            saturated: w.saturated,
        })
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.hist)
    }
}

/// A [`Latency`] as it crosses the worker -> coordinator pipe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyWire {
    /// V2-serialized histogram, base64 (standard alphabet, padded).
    pub hist: String,
    pub negative: u64,
    pub saturated: u64,
}

pub fn encode_histogram(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| anyhow::anyhow!("serializing histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

pub fn decode_histogram(s: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .context("histogram is not valid base64")?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("deserializing histogram: {e:?}"))?;
    // Re-home the values in a histogram with our bounds so later merges cannot fail on range.
    let mut out = new_histogram();
    out.add(&h)
        .map_err(|e| anyhow::anyhow!("histogram out of range: {e:?}"))?;
    Ok(out)
}

/// Percentiles of one histogram, in its unit (microseconds here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// Event counters and phase timestamps of one worker (or, merged, of the whole run).
/// Timestamps are CLOCK_MONOTONIC nanoseconds, comparable across processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub attempted: u64,
    pub established: u64,
    pub failed: u64,
    pub hello_sent: u64,
    pub watch_sent: u64,
    pub endpoints: u64,
    pub telemetry_sent: u64,
    /// Group-cast `message` frames received.
    pub delivered: u64,
    /// Of those, the ones carrying a timestamp (`payload.t`) and thus timed.
    pub timed: u64,
    pub polls_received: u64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    pub results_received: u64,
    pub finals_received: u64,
    /// Final results whose counts differed from the first final seen for the same poll.
    pub finals_inconsistent: u64,
    pub closed_by_us: u64,
    pub first_attempt_ns: Option<u64>,
    pub last_established_ns: Option<u64>,
    pub first_receipt_ns: Option<u64>,
    pub last_receipt_ns: Option<u64>,
    pub first_vote_ns: Option<u64>,
    pub last_vote_ns: Option<u64>,
    pub last_ack_ns: Option<u64>,
    pub last_final_ns: Option<u64>,
    pub final_poll: Option<String>,
    pub final_counts: Option<Vec<u64>>,
    pub final_total: Option<u64>,
    /// Failures and protocol errors by kind (see README).
    pub errors: BTreeMap<String, u64>,
    /// Closes the loadgen did not ask for, by close code (`eof`, `reset` without a frame).
    pub unexpected_closes: BTreeMap<String, u64>,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.max(b)
}

impl Counters {
    pub fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn unexpected_close(&mut self, code: impl Into<String>) {
        *self.unexpected_closes.entry(code.into()).or_insert(0) += 1;
    }

    pub fn mark(slot: &mut Option<u64>, ns: u64, earliest: bool) {
        *slot = if earliest {
            min_opt(*slot, Some(ns))
        } else {
            max_opt(*slot, Some(ns))
        };
    }

    /// Records a final result; counts it inconsistent if it disagrees with an earlier one.
    pub fn record_final(&mut self, poll: &str, counts: Vec<u64>, total: u64, at_ns: u64) {
        self.finals_received += 1;
        Counters::mark(&mut self.last_final_ns, at_ns, false);
        match (&self.final_poll, &self.final_counts) {
            (Some(p), Some(c)) if p == poll => {
                if *c != counts || self.final_total != Some(total) {
                    self.finals_inconsistent += 1;
                }
            }
            _ => {
                self.final_poll = Some(poll.to_owned());
                self.final_counts = Some(counts);
                self.final_total = Some(total);
            }
        }
    }

    pub fn merge(&mut self, o: &Counters) {
        self.attempted += o.attempted;
        self.established += o.established;
        self.failed += o.failed;
        self.hello_sent += o.hello_sent;
        self.watch_sent += o.watch_sent;
        self.endpoints += o.endpoints;
        self.telemetry_sent += o.telemetry_sent;
        self.delivered += o.delivered;
        self.timed += o.timed;
        self.polls_received += o.polls_received;
        self.votes_sent += o.votes_sent;
        self.votes_acked += o.votes_acked;
        self.results_received += o.results_received;
        self.closed_by_us += o.closed_by_us;
        self.first_attempt_ns = min_opt(self.first_attempt_ns, o.first_attempt_ns);
        self.last_established_ns = max_opt(self.last_established_ns, o.last_established_ns);
        self.first_receipt_ns = min_opt(self.first_receipt_ns, o.first_receipt_ns);
        self.last_receipt_ns = max_opt(self.last_receipt_ns, o.last_receipt_ns);
        self.first_vote_ns = min_opt(self.first_vote_ns, o.first_vote_ns);
        self.last_vote_ns = max_opt(self.last_vote_ns, o.last_vote_ns);
        self.last_ack_ns = max_opt(self.last_ack_ns, o.last_ack_ns);
        // Finals: merge as if the other worker's viewers had reported one by one.
        self.finals_inconsistent += o.finals_inconsistent;
        if let (Some(poll), Some(counts), Some(total)) =
            (&o.final_poll, &o.final_counts, o.final_total)
        {
            let others = o.finals_received;
            let at = o.last_final_ns.unwrap_or(0);
            let before = self.finals_inconsistent;
            self.record_final(poll, counts.clone(), total, at);
            let disagreed = self.finals_inconsistent > before;
            // record_final counted one receipt; the other worker saw `others` of them.
            self.finals_received += others.saturating_sub(1);
            if disagreed {
                self.finals_inconsistent += others.saturating_sub(1);
            }
        } else {
            self.finals_received += o.finals_received;
            self.last_final_ns = max_opt(self.last_final_ns, o.last_final_ns);
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &o.unexpected_closes {
            *self.unexpected_closes.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// All measurements of one worker, as sent to the coordinator when it finishes.
#[derive(Clone, Debug, Default)]
pub struct Measurements {
    pub counters: Counters,
    /// TCP connect + WebSocket upgrade + welcome, per established connection.
    pub handshake: Latency,
    /// Group-cast delivery: receipt time minus the publisher's `payload.t`.
    pub delivery: Latency,
    /// Vote sent -> `voted` received.
    pub vote_ack: Latency,
}

/// [`Measurements`] in wire form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeasurementsWire {
    pub counters: Counters,
    pub handshake: LatencyWire,
    pub delivery: LatencyWire,
    pub vote_ack: LatencyWire,
}

impl Measurements {
    pub fn to_wire(&self) -> anyhow::Result<MeasurementsWire> {
        Ok(MeasurementsWire {
            counters: self.counters.clone(),
            handshake: self.handshake.to_wire()?,
            delivery: self.delivery.to_wire()?,
            vote_ack: self.vote_ack.to_wire()?,
        })
    }

    pub fn from_wire(w: &MeasurementsWire) -> anyhow::Result<Measurements> {
        Ok(Measurements {
            counters: w.counters.clone(),
            handshake: Latency::from_wire(&w.handshake)?,
            delivery: Latency::from_wire(&w.delivery)?,
            vote_ack: Latency::from_wire(&w.vote_ack)?,
        })
    }

    pub fn merge(&mut self, o: &Measurements) -> anyhow::Result<()> {
        self.counters.merge(&o.counters);
        self.handshake.merge(&o.handshake)?;
        self.delivery.merge(&o.delivery)?;
        self.vote_ack.merge(&o.vote_ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Rng;

    #[test]
    fn span_is_recorded_in_microseconds() {
        let mut l = Latency::default();
        l.record_span(1_000_000, 3_500_000); // 2.5 ms
        let s = l.summary();
        assert_eq!(s.count, 1);
        assert!((2_499..=2_501).contains(&s.max), "{s:?}");
    }

    #[test]
    fn negative_spans_clamp_to_zero_and_are_counted() {
        let mut l = Latency::default();
        l.record_span(5_000, 1_000);
        l.record_span(1_000, 1_000);
        assert_eq!(l.negative, 1);
        assert_eq!(l.hist.len(), 2);
        assert_eq!(l.hist.max(), 0);
    }

    #[test]
    fn huge_spans_saturate_and_are_counted() {
        let mut l = Latency::default();
        l.record_us(LATENCY_MAX_US * 10);
        assert_eq!(l.saturated, 1);
        assert_eq!(l.hist.len(), 1);
        assert!(l.hist.max() >= LATENCY_MAX_US);
    }

    #[test]
    fn merge_through_wire_equals_direct_record() {
        let mut rng = Rng::new(99);
        let values: Vec<u64> = (0..30_000)
            .map(|i| match i % 3 {
                0 => rng.below(1_000),
                1 => rng.below(100_000),
                _ => rng.below(LATENCY_MAX_US),
            })
            .collect();
        let mut direct = Latency::default();
        for v in &values {
            direct.record_us(*v);
        }
        direct.record_span(10, 5);

        // Three "workers" each see a third of the samples; one also saw the anomaly.
        let mut merged = Latency::default();
        for (w, chunk) in values.chunks(10_000).enumerate() {
            let mut part = Latency::default();
            for v in chunk {
                part.record_us(*v);
            }
            if w == 2 {
                part.record_span(10, 5);
            }
            let json = serde_json::to_string(&part.to_wire().unwrap()).unwrap();
            let back: LatencyWire = serde_json::from_str(&json).unwrap();
            merged.merge(&Latency::from_wire(&back).unwrap()).unwrap();
        }
        assert_eq!(merged.hist, direct.hist);
        assert_eq!(merged.negative, 1);
        assert_eq!(merged.summary(), direct.summary());
    }

    #[test]
    fn bad_wire_histograms_are_errors_not_panics() {
        assert!(decode_histogram("not base64!").is_err());
        assert!(decode_histogram("AAAA").is_err());
        assert!(decode_histogram("").is_err());
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::default().summary(), Summary::default());
    }

    #[test]
    fn counters_merge_sums_and_takes_extremes() {
        let mut a = Counters {
            established: 3,
            first_attempt_ns: Some(100),
            last_established_ns: Some(500),
            ..Counters::default()
        };
        a.error("connect_refused");
        a.unexpected_close("1006");
        let mut b = Counters {
            established: 4,
            first_attempt_ns: Some(50),
            last_established_ns: Some(400),
            ..Counters::default()
        };
        b.error("connect_refused");
        b.error("handshake_timeout");
        a.merge(&b);
        assert_eq!(a.established, 7);
        assert_eq!(a.first_attempt_ns, Some(50));
        assert_eq!(a.last_established_ns, Some(500));
        assert_eq!(a.errors["connect_refused"], 2);
        assert_eq!(a.errors["handshake_timeout"], 1);
        assert_eq!(a.unexpected_closes["1006"], 1);
    }

    #[test]
    fn finals_merge_detects_disagreement() {
        let mut a = Counters::default();
        a.record_final("p1", vec![2, 1], 3, 10);
        a.record_final("p1", vec![2, 1], 3, 20);
        assert_eq!(a.finals_received, 2);
        assert_eq!(a.finals_inconsistent, 0);
        let mut b = Counters::default();
        b.record_final("p1", vec![2, 1], 3, 30);
        let mut c = Counters::default();
        c.record_final("p1", vec![3, 1], 4, 5);
        c.record_final("p1", vec![3, 1], 4, 6);
        let mut all = Counters::default();
        all.merge(&a);
        all.merge(&b);
        assert_eq!(all.finals_received, 3);
        assert_eq!(all.finals_inconsistent, 0);
        assert_eq!(all.last_final_ns, Some(30));
        all.merge(&c);
        assert_eq!(all.finals_received, 5);
        assert_eq!(all.finals_inconsistent, 2);
        assert_eq!(all.final_total, Some(3));
    }
}
