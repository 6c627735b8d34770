//! `App`'s side of viewing sessions (an `impl App` block; the state, `sessions::Sessions`, is
//! a field of `App`): a `watch` opens a session with a CDN resource and a signed playlist URL,
//! every shard learns its route ([`SessionCommand`]), the shards' fetch reports move its
//! state, the ticker stalls and ends it, and a group's CDN change re-points the next
//! playlists of its members.

use shards::hls_session::{FetchDelta, SessionCommand};
use shards::profile::{Field, Profile, ViewerId};
use shards::proto::{GroupId, MediaCommand, ShardCommand, ViewerRef};
use shards::session_sign::SessionKey;

use super::distribution::Distribution;
use super::random::random_u64;
use super::sessions::{choose_cdn, CdnError, Session, SessionState, Timing};
use super::{random_hex, App};
use crate::config::sessions::OVATION_CDN;

impl App {
    /// The signing key the shards check playlist URLs with (set at start).
    fn session_key(&self) -> SessionKey {
        let key = self.config.session_key.as_deref().unwrap_or_default();
        SessionKey::new(key.as_bytes())
    }

    /// The viewer's session on `stream` (a new one unless it has one there already) and its
    /// signed endpoint URL. A session on another stream ends (`left`).
    pub(super) fn open_session(
        &mut self,
        at: ViewerRef,
        stream: &str,
        now_ms: u64,
    ) -> (String, String) {
        let viewer = at.viewer;
        let reuse = self
            .sessions
            .current(viewer)
            .filter(|s| s.stream == stream)
            .map(|s| s.id.clone());
        let id = match reuse {
            Some(id) => id,
            None => {
                self.end_session_of(viewer, "left", now_ms);
                let id = random_hex(16);
                let region = self
                    .mirror
                    .viewer(viewer)
                    .and_then(|v| v.profile.value(Field::Region));
                let assigned = choose_cdn(&self.config.cdns, region, random_u64())
                    .map_or(OVATION_CDN, |c| c.name.as_str())
                    .to_owned();
                self.sessions
                    .open(id.clone(), viewer, stream, &assigned, now_ms);
                let cdn = self.effective_cdn(viewer, stream, &assigned);
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.cdn = cdn.clone();
                }
                self.push_session_route(&id, stream, &cdn);
                id
            }
        };
        let expires_s = now_ms / 1000 + self.config.session_url_ttl_s;
        let sig = self.session_key().sign(&id, stream, expires_s);
        let url = self
            .config
            .media_url
            .replace("{stream}", stream)
            .replace("{session}", &id)
            .replace("{exp}", &expires_s.to_string())
            .replace("{sig}", &sig)
            .replace("{listen}", &self.viewer_addr.to_string());
        (id, url)
    }

    /// Every shard learns (or re-learns) the session's stream and URI prefix.
    fn push_session_route(&self, id: &str, stream: &str, cdn: &str) {
        let prefix: Box<str> = match self.config.cdns.iter().find(|c| c.name == cdn) {
            Some(c) => format!("{}/hls/{stream}/", c.base.trim_end_matches('/')).into(),
            None => "".into(),
        };
        let (id, stream): (Box<str>, Box<str>) = (id.into(), stream.into());
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Session(SessionCommand::Open {
                id: id.clone(),
                stream: stream.clone(),
                prefix: prefix.clone(),
            }))
        });
    }

    /// The CDN a viewer's playlists use: the first group (in creation order) with a CDN set
    /// that the viewer is in, else the session's own pick.
    fn effective_cdn(&self, viewer: ViewerId, stream: &str, assigned: &str) -> String {
        let v = self.mirror.viewer(viewer);
        let Some(v) = v.filter(|_| !self.remediation.cdn.is_empty()) else {
            return assigned.to_owned();
        };
        let mut profile: Profile = v.profile.clone();
        profile.stream = Some(stream.into());
        self.groups
            .iter()
            .filter_map(|g| self.group_cdn(g.id).map(|cdn| (g, cdn)))
            .find(|(g, _)| g.predicate.matches(&profile))
            .map_or(assigned, |(_, cdn)| cdn)
            .to_owned()
    }

    /// Ends the viewer's current session, and every shard forgets it.
    pub(super) fn end_session_of(&mut self, viewer: ViewerId, reason: &'static str, now_ms: u64) {
        if let Some(id) = self.sessions.end_viewer(viewer, reason, now_ms) {
            self.forget_session(&id);
        }
    }

    fn forget_session(&mut self, id: &str) {
        // Sessions past the ended retention lose their ad bookkeeping too.
        for old in self.sessions.take_evicted() {
            self.ads.sessions.remove(&old);
        }
        let id: Box<str> = id.into();
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Session(SessionCommand::Ended {
                id: id.clone(),
            }))
        });
    }

    /// A shard's fetch counts.
    pub(super) fn session_fetches(&mut self, fetches: &[(Box<str>, FetchDelta)], now_ms: u64) {
        for (id, delta) in fetches {
            self.sessions.fetched(id, delta, now_ms);
            if !delta.ads.is_empty() {
                self.ad_fetches(id, &delta.ads);
            }
        }
    }

    /// Stalls and ends sessions by the clock (from the ticker).
    pub(super) fn tick_sessions(&mut self, now_ms: u64) {
        let target_ms = self.config.hls_segment_ms.div_ceil(1000).max(1) * 1000;
        let timing = Timing {
            stall_ms: target_ms.saturating_mul(self.config.session_stall_targets),
            end_ms: self.config.session_end_s.saturating_mul(1000),
            resume_ms: self.config.resume_window_s.saturating_mul(1000),
        };
        for id in self.sessions.tick(now_ms, timing) {
            self.forget_session(&id);
        }
    }

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// A stream's sessions by state (created, playing, stalled, ended).
    pub fn session_counts(&self, stream: &str) -> Vec<(&'static str, u64)> {
        let n = self.sessions.counts(stream);
        SessionState::ALL
            .iter()
            .zip(n)
            .map(|(s, n)| (s.as_str(), n))
            .collect()
    }

    /// Points a group's members' next playlists at `cdn` (`None`: back to each session's
    /// own pick). `"ovation"` is ovation itself.
    pub fn set_group_cdn(&mut self, key: &str, cdn: Option<String>) -> Result<GroupId, CdnError> {
        let id = self
            .groups
            .by_key(key)
            .map(|g| g.id)
            .ok_or_else(|| CdnError::NoGroup(key.to_owned()))?;
        match cdn {
            Some(name) => {
                let known = name == OVATION_CDN || self.config.cdns.iter().any(|c| c.name == name);
                if !known {
                    return Err(CdnError::NoCdn(name));
                }
                self.remediation.cdn.insert(id, name);
            }
            None => {
                self.remediation.cdn.remove(&id);
            }
        }
        self.refresh_session_cdns();
        Ok(id)
    }

    /// Re-resolves every active session's CDN after a group's CDN changed; the shards learn
    /// the sessions whose CDN is new.
    pub(super) fn refresh_session_cdns(&mut self) {
        let changes: Vec<(String, String, String)> = self
            .sessions
            .active()
            .filter_map(|s| {
                let cdn = self.effective_cdn(s.viewer, &s.stream, &s.assigned_cdn);
                (cdn != s.cdn).then(|| (s.id.clone(), s.stream.clone(), cdn))
            })
            .collect();
        for (id, stream, cdn) in changes {
            self.push_session_route(&id, &stream, &cdn);
            if let Some(s) = self.sessions.get_mut(&id) {
                s.cdn = cdn;
            }
        }
    }

    /// `Err(reason)` when the stream's distribution rules keep the viewer out.
    pub(super) fn entitled(&self, at: ViewerRef, stream: &str, now_ms: u64) -> Result<(), String> {
        let Some(rules) = self.distribution.get(stream) else {
            return Ok(());
        };
        match self.mirror.at(at) {
            Some(v) => rules.check(&v.profile, now_ms),
            None => Err("unknown viewer".into()),
        }
    }

    /// A stream's distribution rules (open when none are set).
    pub fn distribution(&self, stream: &str) -> Distribution {
        self.distribution.get(stream).cloned().unwrap_or_default()
    }

    /// Replaces a stream's distribution rules (stored with the stream); `false` for an
    /// unknown stream. Viewers already watching keep watching; the rules apply to `watch`.
    pub fn set_distribution(&mut self, stream: &str, rules: Distribution) -> bool {
        let Some(s) = self.streams.get(stream).cloned() else {
            return false;
        };
        if rules.is_open() {
            self.distribution.remove(stream);
        } else {
            self.distribution.insert(stream.to_owned(), rules);
        }
        self.store_stream(&s);
        true
    }
}
