//! The ad library, programs and beacons (pure; `app::ad_ops` drives it).
//!
//! An [`Ad`] is an HLS asset: MPEG-TS segments with durations, uploaded through the API or
//! taken from a recording. A stream's [`Program`] holds media selectors (a predicate over the
//! viewer profile, the same as group predicates, and the ads that fill a break for matching
//! viewers), a default for everyone else and a slate for what is left over. A break gives
//! each session a [`BreakPlan`] built by [`plan`]. Beacons (impression, start, quartiles,
//! complete) are counted per ad and per session from the ad segments each session fetches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Value};
use shards::hls_ads::{AdEntry, AdSegment, BreakPlan};
use shards::profile::{Predicate, Profile};

/// Most segments in one ad.
pub const MAX_AD_SEGMENTS: usize = 500;

/// The beacon events, in order.
pub const EVENTS: [&str; 6] = [
    "impression",
    "start",
    "first_quartile",
    "midpoint",
    "third_quartile",
    "complete",
];

/// One ad asset.
#[derive(Clone, Debug)]
pub struct Ad {
    pub id: String,
    pub segments: Arc<[AdSegment]>,
    /// `upload` or `recording:{stream}/{id}`.
    pub source: String,
    pub created_ms: u64,
}

impl Ad {
    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| u64::from(s.duration_ms)).sum()
    }

    /// The beacon events segment `index` fires: its own start point and each quartile point
    /// that falls within it (the last segment completes).
    pub fn events_of(&self, index: u16) -> Vec<usize> {
        let total = self.duration_ms();
        let mut start = 0u64;
        let mut events = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            let end = start + u64::from(s.duration_ms);
            if i == usize::from(index) {
                if i == 0 {
                    events.extend([0, 1]);
                }
                for (q, event) in [(1, 2), (2, 3), (3, 4)] {
                    let point = total * q / 4;
                    if start <= point && point < end {
                        events.push(event);
                    }
                }
                if i + 1 == self.segments.len() {
                    events.push(5);
                }
                return events;
            }
            start = end;
        }
        events
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "duration_ms": self.duration_ms(),
            "segments": self.segments.iter().map(|s| s.duration_ms).collect::<Vec<_>>(),
            "bytes": self.segments.iter().map(|s| s.data.len()).sum::<usize>(),
            "source": self.source,
            "created_ms": self.created_ms,
        })
    }
}

/// One media selector: viewers matching `predicate` get `ads`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selector {
    pub predicate: Predicate,
    pub ads: Vec<String>,
}

/// A stream's program (stored with the stream in this serde form).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Program {
    pub selectors: Vec<Selector>,
    pub default: Vec<String>,
    pub slate: Option<String>,
    /// An external ad decision server asked first (the selectors are the fallback).
    #[serde(default)]
    pub vast: Option<VastSpec>,
}

/// An external ad decision server speaking VAST.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VastSpec {
    /// `http://IP:PORT/path` (the session's profile is added to the query).
    pub url: String,
    /// How long a break waits for its answer before the selectors' ads stay.
    pub timeout_ms: u64,
}

/// One question to the ad decision server, for one session of one break.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VastRequest {
    pub break_id: u32,
    pub session: String,
    /// The whole URL, query included.
    pub url: String,
    pub timeout_ms: u64,
}

/// `%XX` for everything but unreserved characters (RFC 3986).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Program {
    /// The ads of the first selector the profile matches, else the default.
    pub fn ads_for(&self, profile: &Profile) -> &[String] {
        self.selectors
            .iter()
            .find(|s| s.predicate.matches(profile))
            .map_or(&self.default, |s| &s.ads)
    }

    /// Every ad the program names.
    pub fn ads(&self) -> impl Iterator<Item = &String> {
        self.selectors
            .iter()
            .flat_map(|s| s.ads.iter())
            .chain(self.default.iter())
            .chain(self.slate.iter())
    }
}

/// The break plan of one session: `ads` in order while they fit `duration_ms`, then the
/// slate's segments (repeated) until the break is filled.
pub fn plan(
    id: u32,
    (start_seq, content_count, duration_ms): (u64, u64, u64),
    ads: &[&Ad],
    slate: Option<&Ad>,
) -> BreakPlan {
    let mut entries = Vec::new();
    let mut total = 0u64;
    let push_ad = |ad: &Ad, entries: &mut Vec<AdEntry>, from: usize, total: &mut u64| {
        for (i, s) in ad.segments.iter().enumerate().skip(from) {
            entries.push(AdEntry {
                ad: ad.id.as_str().into(),
                index: i as u16,
                duration_ms: s.duration_ms,
                first_of_ad: i == from,
            });
            *total += u64::from(s.duration_ms);
        }
    };
    for ad in ads {
        if total + ad.duration_ms() <= duration_ms {
            push_ad(ad, &mut entries, 0, &mut total);
        }
    }
    if let Some(slate) = slate.filter(|s| !s.segments.is_empty()) {
        // The shortfall, segment by segment (the last may run a little over).
        let mut i = 0usize;
        let mut first = true;
        while total < duration_ms && entries.len() < 1000 {
            let s = &slate.segments[i];
            entries.push(AdEntry {
                ad: slate.id.as_str().into(),
                index: i as u16,
                duration_ms: s.duration_ms,
                first_of_ad: first,
            });
            first = false;
            total += u64::from(s.duration_ms);
            i = (i + 1) % slate.segments.len();
            if i == 0 {
                first = true;
            }
        }
    }
    BreakPlan {
        id,
        start_seq,
        content_count,
        duration_ms,
        entries,
    }
}

/// A break's beacon counts per ad.
#[derive(Clone, Debug, Default)]
pub struct BreakBeacons {
    pub id: u32,
    pub stream: String,
    pub started_ms: u64,
    pub start_seq: u64,
    pub content_count: u64,
    pub duration_ms: u64,
    pub sessions: usize,
    pub counts: BTreeMap<String, [u64; 6]>,
    /// With an ad decision server: sessions it answered, and those left on the selectors.
    pub vast: Option<(u64, u64)>,
    /// Changed since last pushed to the broadcasters.
    pub dirty: bool,
}

impl BreakBeacons {
    pub fn to_json(&self) -> Value {
        let ads: serde_json::Map<String, Value> = self
            .counts
            .iter()
            .map(|(ad, n)| {
                let counts: serde_json::Map<String, Value> = EVENTS
                    .iter()
                    .zip(n)
                    .map(|(e, n)| (e.to_string(), json!(n)))
                    .collect();
                (ad.clone(), Value::Object(counts))
            })
            .collect();
        let mut out = json!({
            "id": self.id,
            "stream": self.stream,
            "started_ms": self.started_ms,
            "start_sequence": self.start_seq,
            "duration_ms": self.duration_ms,
            "sessions": self.sessions,
            "beacons": ads,
        });
        if let Some((answered, fallback)) = self.vast {
            out["vast"] = json!({"answered": answered, "fallback": fallback});
        }
        out
    }
}

/// Per session: its breaks (id, the ads planned) and the beacons already counted.
#[derive(Default)]
pub struct SessionAds {
    pub breaks: Vec<(u32, Vec<Box<str>>)>,
    fired: HashSet<(u32, Box<str>, usize)>,
}

impl SessionAds {
    /// Events newly fired by a fetch of `ad` segment `index`: (break, event) pairs, each
    /// counted at most once per session, break and ad.
    pub fn fetched(&mut self, ad: &Ad, index: u16) -> Vec<(u32, usize)> {
        let Some(brk) = self
            .breaks
            .iter()
            .rev()
            .find(|(_, ads)| ads.iter().any(|a| **a == *ad.id))
            .map(|(id, _)| *id)
        else {
            return Vec::new();
        };
        ad.events_of(index)
            .into_iter()
            .filter(|&e| self.fired.insert((brk, ad.id.as_str().into(), e)))
            .map(|e| (brk, e))
            .collect()
    }

    /// The beacons this session fired, per break and ad.
    pub fn to_json(&self) -> Value {
        let mut out: BTreeMap<String, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
        for (brk, ad, e) in &self.fired {
            out.entry(brk.to_string())
                .or_default()
                .entry(ad.to_string())
                .or_default()
                .push(EVENTS[*e]);
        }
        for ads in out.values_mut() {
            for events in ads.values_mut() {
                events.sort_by_key(|e| EVENTS.iter().position(|x| x == e));
            }
        }
        json!(out)
    }
}

/// Why an ad, a program or a break was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdError {
    #[error("no stream \"{0}\"")]
    NoStream(String),
    #[error("no ad \"{0}\" in the library")]
    NoAd(String),
    #[error("an ad \"{0}\" exists already")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("stream \"{0}\" is not live")]
    NotLive(String),
    #[error("the ad could not be stored or read: {0}")]
    Io(String),
}

/// The ad side of the application core.
#[derive(Default)]
pub struct AdState {
    pub library: HashMap<String, Ad>,
    pub programs: HashMap<String, Program>,
    pub breaks: Vec<BreakBeacons>,
    pub sessions: HashMap<String, SessionAds>,
    pub next_break: u32,
    /// Questions for ad decision servers not yet taken by the VAST task.
    pub vast_pending: Vec<VastRequest>,
    /// Raised when one is queued.
    pub vast_queued: std::rc::Rc<shards::sync::Signal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(id: &str, durations: &[u32]) -> Ad {
        Ad {
            id: id.into(),
            segments: durations
                .iter()
                .map(|&d| AdSegment {
                    duration_ms: d,
                    data: vec![0x47; 188].into(),
                })
                .collect(),
            source: "upload".into(),
            created_ms: 0,
        }
    }

    #[test]
    fn quartiles_map_to_segments() {
        let a = ad("a", &[1000, 1000, 1000, 1000]);
        assert_eq!(a.events_of(0), vec![0, 1]);
        assert_eq!(a.events_of(1), vec![2]);
        assert_eq!(a.events_of(2), vec![3]);
        assert_eq!(a.events_of(3), vec![4, 5]);
        assert!(a.events_of(4).is_empty());
        let one = ad("one", &[3000]);
        assert_eq!(one.events_of(0), vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn plans_fill_with_ads_then_slate() {
        let (a, b, slate) = (
            ad("a", &[1000, 1000]),
            ad("b", &[3000]),
            ad("slate", &[500, 500]),
        );
        let p = plan(1, (10, 3, 6000), &[&a, &b, &a], Some(&slate));
        let got: Vec<(String, u16, bool)> = p
            .entries
            .iter()
            .map(|e| (e.ad.to_string(), e.index, e.first_of_ad))
            .collect();
        let want = [
            ("a", 0, true),
            ("a", 1, false),
            ("b", 0, true),
            ("slate", 0, true),
            ("slate", 1, false),
        ];
        let want: Vec<(String, u16, bool)> = want
            .iter()
            .map(|(a, i, f)| (a.to_string(), *i, *f))
            .collect();
        assert_eq!(
            got, want,
            "a third ad (2 s) does not fit 1 s left: the slate fills it"
        );
        let p = plan(1, (10, 3, 0), &[&a], None);
        assert!(p.entries.is_empty());
    }

    #[test]
    fn beacons_fire_once_per_session_break_and_ad() {
        let a = ad("a", &[1000, 1000, 1000, 1000]);
        let mut s = SessionAds::default();
        assert!(
            s.fetched(&a, 0).is_empty(),
            "not in a break of this session"
        );
        s.breaks.push((7, vec!["a".into()]));
        assert_eq!(s.fetched(&a, 0), vec![(7, 0), (7, 1)]);
        assert!(s.fetched(&a, 0).is_empty(), "a refetch counts nothing");
        assert_eq!(s.fetched(&a, 3), vec![(7, 4), (7, 5)]);
        assert_eq!(
            s.to_json(),
            json!({"7": {"a": ["impression", "start", "third_quartile", "complete"]}})
        );
    }
}
