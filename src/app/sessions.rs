//! Viewing sessions (pure state; `app::session_ops` drives it): one per viewer and stream,
//! created by `watch`, moved by the fetches the shards report and by the clock.
//!
//! States: `created` (endpoint sent) -> `playing` (a segment was fetched) -> `stalled` (no
//! segment for `session_stall_targets` target durations; a fetch makes it `playing` again)
//! -> `ended` (the viewer watched another stream, disconnected past the resume window, or
//! fetched nothing for `session_end_s`). Ended sessions are kept, bounded, for the API.
//!
//! Also here: the weighted, region-aware choice of a CDN resource for a new session.

use std::collections::{HashMap, VecDeque};

use shards::hls_session::FetchDelta;
use shards::profile::ViewerId;

use crate::config::CdnSpec;

/// Ended sessions kept for `GET /api/sessions/{id}`; the oldest are forgotten first.
pub const ENDED_KEPT: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    Created,
    Playing,
    Stalled,
    Ended,
}

impl SessionState {
    pub const ALL: [SessionState; 4] = [
        SessionState::Created,
        SessionState::Playing,
        SessionState::Stalled,
        SessionState::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Created => "created",
            SessionState::Playing => "playing",
            SessionState::Stalled => "stalled",
            SessionState::Ended => "ended",
        }
    }
}

/// One viewing session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub viewer: ViewerId,
    pub stream: String,
    pub state: SessionState,
    pub created_ms: u64,
    /// Last playlist or segment fetch.
    pub last_fetch_ms: Option<u64>,
    /// Last segment fetch.
    pub last_segment_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    /// Why it ended: `left` (watched another stream), `disconnected`, `idle`.
    pub end_reason: Option<&'static str>,
    /// When its viewer's connection closed (it may resume).
    pub departed_ms: Option<u64>,
    pub playlists: u64,
    pub segments: u64,
    pub bytes: u64,
    /// The CDN resource picked at creation (weights, region).
    pub assigned_cdn: String,
    /// The CDN resource its playlists point at now (a group's CDN wins over the pick).
    pub cdn: String,
}

/// Why a group's CDN could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdnError {
    #[error("no group \"{0}\"")]
    NoGroup(String),
    #[error("no CDN \"{0}\" is configured (see [[cdns]]; \"ovation\" is ovation itself)")]
    NoCdn(String),
}

/// When sessions stall and end, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub stall_ms: u64,
    pub end_ms: u64,
    pub resume_ms: u64,
}

/// Every session: those not ended by id and by viewer, ended ones bounded.
#[derive(Default)]
pub struct Sessions {
    all: HashMap<String, Session>,
    by_viewer: HashMap<ViewerId, String>,
    ended: VecDeque<String>,
    /// Ended sessions forgotten (past `ENDED_KEPT`) whose other state the caller drops.
    evicted: Vec<String>,
}

impl Sessions {
    /// A new session for `viewer` on `stream` (the caller ended its previous one).
    pub fn open(&mut self, id: String, viewer: ViewerId, stream: &str, cdn: &str, now_ms: u64) {
        let session = Session {
            id: id.clone(),
            viewer,
            stream: stream.to_owned(),
            state: SessionState::Created,
            created_ms: now_ms,
            last_fetch_ms: None,
            last_segment_ms: None,
            ended_ms: None,
            end_reason: None,
            departed_ms: None,
            playlists: 0,
            segments: 0,
            bytes: 0,
            assigned_cdn: cdn.to_owned(),
            cdn: cdn.to_owned(),
        };
        self.by_viewer.insert(viewer, id.clone());
        self.all.insert(id, session);
    }

    pub fn get(&self, id: &str) -> Option<&Session> {
        self.all.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Session> {
        self.all.get_mut(id)
    }

    /// The viewer's session that has not ended.
    pub fn current(&self, viewer: ViewerId) -> Option<&Session> {
        self.by_viewer.get(&viewer).and_then(|id| self.all.get(id))
    }

    /// Sessions not ended.
    pub fn active(&self) -> impl Iterator<Item = &Session> {
        self.by_viewer.values().filter_map(|id| self.all.get(id))
    }

    /// Counts the fetches a shard reported; `true` when the state changed.
    pub fn fetched(&mut self, id: &str, d: &FetchDelta, now_ms: u64) -> bool {
        let Some(s) = self.all.get_mut(id) else {
            return false;
        };
        s.playlists += u64::from(d.playlists);
        s.segments += u64::from(d.segments);
        s.bytes += d.bytes;
        if s.state == SessionState::Ended {
            return false;
        }
        s.last_fetch_ms = Some(now_ms);
        if d.segments > 0 {
            s.last_segment_ms = Some(now_ms);
            if s.state != SessionState::Playing {
                s.state = SessionState::Playing;
                return true;
            }
        }
        false
    }

    /// The viewer's telemetry says it is buffering: its playing session is `stalled` (its
    /// next segment fetch makes it `playing` again).
    pub fn buffering(&mut self, viewer: ViewerId) {
        if let Some(s) = self
            .by_viewer
            .get(&viewer)
            .and_then(|id| self.all.get_mut(id))
        {
            if s.state == SessionState::Playing {
                s.state = SessionState::Stalled;
            }
        }
    }

    /// The viewer's connection closed / came back.
    pub fn departed(&mut self, viewer: ViewerId, now_ms: u64) {
        if let Some(s) = self
            .by_viewer
            .get(&viewer)
            .and_then(|id| self.all.get_mut(id))
        {
            s.departed_ms = Some(now_ms);
        }
    }

    pub fn returned(&mut self, viewer: ViewerId) {
        if let Some(s) = self
            .by_viewer
            .get(&viewer)
            .and_then(|id| self.all.get_mut(id))
        {
            s.departed_ms = None;
        }
    }

    /// Ends the viewer's current session; returns its id.
    pub fn end_viewer(
        &mut self,
        viewer: ViewerId,
        reason: &'static str,
        now_ms: u64,
    ) -> Option<String> {
        let id = self.by_viewer.get(&viewer)?.clone();
        self.end(&id, reason, now_ms).then_some(id)
    }

    /// Ends a session; `false` when it was unknown or already ended.
    pub fn end(&mut self, id: &str, reason: &'static str, now_ms: u64) -> bool {
        let Some(s) = self.all.get_mut(id) else {
            return false;
        };
        if s.state == SessionState::Ended {
            return false;
        }
        s.state = SessionState::Ended;
        s.ended_ms = Some(now_ms);
        s.end_reason = Some(reason);
        if self.by_viewer.get(&s.viewer).map(String::as_str) == Some(id) {
            self.by_viewer.remove(&s.viewer);
        }
        self.ended.push_back(id.to_owned());
        while self.ended.len() > ENDED_KEPT {
            if let Some(old) = self.ended.pop_front() {
                self.all.remove(&old);
                self.evicted.push(old);
            }
        }
        true
    }

    /// Stalls and ends by the clock; returns the ids that ended.
    pub fn tick(&mut self, now_ms: u64, t: Timing) -> Vec<String> {
        let mut ending = Vec::new();
        for id in self.by_viewer.values() {
            let Some(s) = self.all.get_mut(id) else {
                continue;
            };
            let last = s.last_fetch_ms.unwrap_or(s.created_ms);
            if s.departed_ms
                .is_some_and(|d| now_ms.saturating_sub(d) > t.resume_ms)
            {
                ending.push((id.clone(), "disconnected"));
            } else if now_ms.saturating_sub(last) > t.end_ms {
                ending.push((id.clone(), "idle"));
            } else if s.state == SessionState::Playing
                && s.last_segment_ms
                    .is_some_and(|l| now_ms.saturating_sub(l) > t.stall_ms)
            {
                s.state = SessionState::Stalled;
            }
        }
        ending
            .into_iter()
            .filter(|(id, reason)| self.end(id, reason, now_ms))
            .map(|(id, _)| id)
            .collect()
    }

    /// The sessions forgotten since the last call.
    pub fn take_evicted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.evicted)
    }

    /// Sessions of `stream` by state (`SessionState::ALL` order), ended ones still kept
    /// included.
    pub fn counts(&self, stream: &str) -> [u64; 4] {
        let mut n = [0u64; 4];
        for s in self.all.values().filter(|s| s.stream == stream) {
            n[s.state as usize] += 1;
        }
        n
    }
}

/// The CDN resource for a new session: among the CDNs with a weight, those listing the
/// viewer's region, else those without a region list; weighted by `pick` (a random number).
/// `None`: ovation itself (no CDN fits, or none is configured).
pub fn choose_cdn<'a>(cdns: &'a [CdnSpec], region: Option<&str>, pick: u64) -> Option<&'a CdnSpec> {
    let near: Vec<&CdnSpec> = cdns
        .iter()
        .filter(|c| c.weight > 0)
        .filter(|c| region.is_some_and(|r| c.regions.iter().any(|x| x.eq_ignore_ascii_case(r))))
        .collect();
    let pool = if near.is_empty() {
        cdns.iter()
            .filter(|c| c.weight > 0 && c.regions.is_empty())
            .collect()
    } else {
        near
    };
    let total: u64 = pool.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut at = pick % total;
    for c in pool {
        if at < u64::from(c.weight) {
            return Some(c);
        }
        at -= u64::from(c.weight);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cdn(name: &str, weight: u32, regions: &[&str]) -> CdnSpec {
        CdnSpec {
            name: name.into(),
            base: format!("http://{name}.example"),
            weight,
            regions: regions.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn cdn_choice_follows_region_then_weights() {
        let cdns = [
            cdn("a", 3, &[]),
            cdn("b", 1, &[]),
            cdn("eu", 1, &["EU"]),
            cdn("z", 0, &[]),
        ];
        let names = |region: Option<&str>| -> Vec<String> {
            (0..8)
                .map(|p| choose_cdn(&cdns, region, p).unwrap().name.clone())
                .collect()
        };
        assert_eq!(names(None), ["a", "a", "a", "b", "a", "a", "a", "b"]);
        assert_eq!(names(Some("eu")), vec!["eu"; 8]);
        assert_eq!(names(Some("US")), names(None));
        assert!(choose_cdn(&[], None, 5).is_none());
        assert!(choose_cdn(&[cdn("z", 0, &[])], None, 5).is_none());
        assert!(choose_cdn(&[cdn("eu", 1, &["EU"])], Some("US"), 5).is_none());
    }

    #[test]
    fn a_session_plays_stalls_recovers_and_ends() {
        let v = ViewerId(7);
        let t = Timing {
            stall_ms: 6_000,
            end_ms: 60_000,
            resume_ms: 300_000,
        };
        let mut s = Sessions::default();
        s.open("s1".into(), v, "main", "ovation", 0);
        assert_eq!(s.counts("main"), [1, 0, 0, 0]);
        let playlist = FetchDelta {
            playlists: 1,
            ..FetchDelta::default()
        };
        assert!(
            !s.fetched("s1", &playlist, 1_000),
            "a playlist alone is not playing"
        );
        let seg = FetchDelta {
            playlists: 0,
            segments: 2,
            bytes: 376,
            ads: vec![],
        };
        assert!(s.fetched("s1", &seg, 2_000));
        assert_eq!(s.get("s1").unwrap().state, SessionState::Playing);
        assert!(s.tick(8_000, t).is_empty());
        assert_eq!(s.get("s1").unwrap().state, SessionState::Playing);
        assert!(s.tick(8_001, t).is_empty());
        assert_eq!(s.get("s1").unwrap().state, SessionState::Stalled);
        assert!(s.fetched("s1", &seg, 9_000), "playing again");
        s.buffering(v);
        assert_eq!(
            s.get("s1").unwrap().state,
            SessionState::Stalled,
            "telemetry"
        );
        assert!(s.fetched("s1", &seg, 9_000), "playing again");
        assert_eq!(s.counts("main"), [0, 1, 0, 0]);
        assert_eq!(s.tick(69_001, t), vec!["s1".to_owned()]);
        let ended = s.get("s1").unwrap();
        assert_eq!(
            (ended.state, ended.end_reason),
            (SessionState::Ended, Some("idle"))
        );
        assert_eq!((ended.segments, ended.bytes, ended.playlists), (6, 1128, 1));
        assert!(s.current(v).is_none());

        s.open("s2".into(), v, "main", "ovation", 70_000);
        s.departed(v, 71_000);
        s.fetched("s2", &seg, 72_000);
        assert!(
            s.tick(100_000, t).is_empty(),
            "the player still fetches within resume"
        );
        s.returned(v);
        s.departed(v, 110_000);
        let t2 = Timing {
            resume_ms: 1_000,
            ..t
        };
        assert_eq!(s.tick(111_001, t2), vec!["s2".to_owned()]);
        assert_eq!(s.get("s2").unwrap().end_reason, Some("disconnected"));
        assert!(!s.end("s2", "left", 0), "already ended");
        assert_eq!(s.counts("main"), [0, 0, 0, 2]);
    }

    #[test]
    fn ended_sessions_are_bounded() {
        let mut s = Sessions::default();
        for n in 0..(ENDED_KEPT + 5) {
            let id = format!("s{n}");
            s.open(id.clone(), ViewerId(n as u64), "x", "ovation", 0);
            assert!(s.end(&id, "left", 1));
        }
        assert!(s.get("s0").is_none());
        assert_eq!(
            s.take_evicted(),
            (0..5).map(|n| format!("s{n}")).collect::<Vec<_>>()
        );
        assert!(s.take_evicted().is_empty());
        assert!(s.get(&format!("s{}", ENDED_KEPT + 4)).is_some());
        assert_eq!(s.counts("x")[3], ENDED_KEPT as u64);
    }
}
