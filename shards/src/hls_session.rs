//! Per-session playlists on a shard (pure state and rendering; no sockets, no clock).
//!
//! The application core pushes each viewing session as a [`SessionCommand`]: its stream and
//! the segment URI prefix of the CDN resource chosen for it (empty: ovation itself, relative
//! URIs). A request for `/hls/{stream}/index.m3u8?session=S&exp=E&sig=H` is checked here
//! without asking the core: a bad or expired signature is 403, a session this shard was not
//! told about (or that ended) is 404, a session of another stream is 403. The playlist is
//! rendered from the stream's window in one allocation. Fetches (playlist loads, segments and
//! their bytes) are counted per session and reported upward as deltas.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use media::playlist::LivePlaylist;

use crate::hls_ads::{write_content_entry, BreakPlan};
use crate::session_sign::{SessionKey, SignError};

/// Most break plans kept per session (the oldest go first).
const MAX_BREAKS: usize = 64;

/// Longest session id accepted in a request.
pub const MAX_SESSION: usize = 64;

/// What the application core tells every shard about a viewing session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// A new session, or a change of the CDN resource its next playlist points at.
    Open {
        id: Box<str>,
        stream: Box<str>,
        /// Prefix of segment URIs: empty (relative, served here) or
        /// `{cdn base}/hls/{stream}/`.
        prefix: Box<str>,
    },
    /// The session ended: its playlist is 404 from now on.
    Ended { id: Box<str> },
    /// An ad break in the session's playlist (`hls_ads`); replaces an earlier plan of the
    /// same break.
    Break { id: Box<str>, plan: Arc<BreakPlan> },
}

/// One session's fetches since the last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchDelta {
    pub playlists: u32,
    pub segments: u32,
    pub bytes: u64,
    /// Ad segments fetched: (ad, segment index), in order.
    pub ads: Vec<(Box<str>, u16)>,
}

struct Route {
    stream: Box<str>,
    prefix: Box<str>,
    breaks: Vec<Arc<BreakPlan>>,
}

/// What a session's playlist is rendered with.
#[derive(Debug, PartialEq, Eq)]
pub struct Admitted<'a> {
    pub prefix: &'a str,
    pub breaks: &'a [Arc<BreakPlan>],
}

/// Why a session playlist request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Signature(SignError),
    #[error("no such viewing session")]
    UnknownSession,
    /// Signed moments ago by the application core: the session's route is still on its way
    /// to this shard (the `endpoint` reaches the viewer through its own shard, and a playlist
    /// request may land on another one first). 503 with `Retry-After`.
    #[error("the viewing session is being set up")]
    NotReady,
    #[error("the session belongs to another stream")]
    OtherStream,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnknownSession => 404,
            Refusal::NotReady => 503,
            Refusal::Signature(_) | Refusal::OtherStream => 403,
        }
    }
}

/// How long after signing a URL an unknown session counts as on its way to this shard.
pub const ROUTE_GRACE_S: u64 = 5;

/// Every session this shard knows, the signing key, and the counts not yet reported.
#[derive(Default)]
pub struct Sessions {
    routes: HashMap<Box<str>, Route>,
    key: Option<SessionKey>,
    /// How long a signed URL is good for (`session_url_ttl_s`): `exp` less this is when it
    /// was signed.
    ttl_s: u64,
    deltas: HashMap<Box<str>, FetchDelta>,
}

/// The session-related parameters of a query.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionQuery<'a> {
    pub session: Option<&'a str>,
    pub exp: Option<&'a str>,
    pub sig: Option<&'a str>,
}

impl<'a> SessionQuery<'a> {
    pub fn parse(query: &'a str) -> SessionQuery<'a> {
        let mut q = SessionQuery::default();
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("session=") {
                q.session = Some(v).filter(|s| is_token(s));
            } else if let Some(v) = pair.strip_prefix("exp=") {
                q.exp = Some(v);
            } else if let Some(v) = pair.strip_prefix("sig=") {
                q.sig = Some(v);
            }
        }
        q
    }
}

/// A session id as it may be copied into URIs: 1-64 of `[A-Za-z0-9_-]`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SESSION
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Sessions {
    pub fn new(key: Option<SessionKey>, ttl_s: u64) -> Sessions {
        Sessions {
            key,
            ttl_s,
            ..Sessions::default()
        }
    }

    pub fn apply(&mut self, command: SessionCommand) {
        match command {
            SessionCommand::Open { id, stream, prefix } => match self.routes.get_mut(&id) {
                Some(r) => r.prefix = prefix,
                None => {
                    let breaks = Vec::new();
                    self.routes.insert(
                        id,
                        Route {
                            stream,
                            prefix,
                            breaks,
                        },
                    );
                }
            },
            SessionCommand::Break { id, plan } => {
                if let Some(r) = self.routes.get_mut(&id) {
                    // A plan with the same break id replaces the first (an ad decision
                    // server's answer replacing the selectors' fallback).
                    r.breaks.retain(|b| b.id != plan.id);
                    // A plan without ads leaves the content in place.
                    if !plan.entries.is_empty() {
                        r.breaks.push(plan);
                    }
                    r.breaks.sort_by_key(|b| b.start_seq);
                    if r.breaks.len() > MAX_BREAKS {
                        r.breaks.remove(0);
                    }
                }
            }
            SessionCommand::Ended { id } => {
                self.routes.remove(&id);
            }
        }
    }

    /// Sessions known here.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Checks a playlist request for `stream` naming a session; on success the playlist is
    /// counted for the session and its URI prefix returned.
    pub fn admit(
        &mut self,
        stream: &str,
        q: &SessionQuery<'_>,
        now_s: u64,
    ) -> Result<Admitted<'_>, Refusal> {
        let session = q.session.ok_or(Refusal::Signature(SignError::Missing))?;
        if let Some(key) = &self.key {
            key.verify(session, stream, q.exp, q.sig, now_s)
                .map_err(Refusal::Signature)?;
        }
        let Some(route) = self.routes.get(session) else {
            // A valid signature made in the last ROUTE_GRACE_S seconds: the route is on its
            // way (503, the player retries); older: the session ended or never was (404).
            let signed_s = q
                .exp
                .and_then(|e| e.parse::<u64>().ok())
                .map(|exp| exp.saturating_sub(self.ttl_s));
            let fresh = self.key.is_some()
                && signed_s.is_some_and(|t| t <= now_s && now_s < t + ROUTE_GRACE_S);
            return Err(if fresh {
                Refusal::NotReady
            } else {
                Refusal::UnknownSession
            });
        };
        if *route.stream != *stream {
            return Err(Refusal::OtherStream);
        }
        bump(&mut self.deltas, session).playlists += 1;
        Ok(Admitted {
            prefix: &route.prefix,
            breaks: &route.breaks,
        })
    }

    /// Segment `index` of ad `ad` was served to a request naming `session`: counted (for the
    /// session's beacons) when the session is known.
    pub fn ad_served(&mut self, session: &str, ad: &str, index: u16, bytes: usize) -> bool {
        if !self.routes.contains_key(session) {
            return false;
        }
        let d = bump(&mut self.deltas, session);
        d.bytes += bytes as u64;
        d.ads.push((ad.into(), index));
        true
    }

    /// A segment of `stream` (`bytes` long) was served to a request naming `session`:
    /// counted when the session is known and watches that stream.
    pub fn segment_served(&mut self, stream: &str, session: &str, bytes: usize) -> bool {
        match self.routes.get(session) {
            Some(r) if *r.stream == *stream => {
                let d = bump(&mut self.deltas, session);
                d.segments += 1;
                d.bytes += bytes as u64;
                true
            }
            _ => false,
        }
    }

    /// Whether fetches wait to be reported.
    pub fn has_deltas(&self) -> bool {
        !self.deltas.is_empty()
    }

    /// The fetches counted since the last call.
    pub fn take_deltas(&mut self) -> Vec<(Box<str>, FetchDelta)> {
        self.deltas.drain().collect()
    }
}

fn bump<'m>(deltas: &'m mut HashMap<Box<str>, FetchDelta>, session: &str) -> &'m mut FetchDelta {
    if !deltas.contains_key(session) {
        deltas.insert(session.into(), FetchDelta::default());
    }
    deltas
        .get_mut(session)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

/// The session's media playlist from the stream's window: segment URIs are
/// `{prefix}{seq}.ts?session={session}`. One allocation (the capacity is computed first).
pub fn render(playlist: &LivePlaylist, prefix: &str, session: &str) -> String {
    let count = playlist.segments().count();
    let per_entry = 64 + prefix.len() + session.len() + 40;
    let mut out = String::with_capacity(128 + count * per_entry);
    let longest = playlist
        .segments()
        .map(|s| s.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(0);
    let target = playlist.target_duration().max(longest).max(1);
    let first = playlist.segments().next().map_or(0, |s| s.sequence);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
    );
    if playlist.discontinuity_sequence() > 0 {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            playlist.discontinuity_sequence()
        );
    }
    for s in playlist.segments() {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        write_content_entry(&mut out, s, prefix, session);
    }
    if playlist.is_ended() {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::playlist::UriTemplate;
    use media::segmenter::Segment;

    fn seg(sequence: u64, discontinuity: bool) -> Segment {
        Segment {
            sequence,
            duration_ms: 2000 + sequence,
            start_wall_ms: 1_800_000_000_000 + sequence * 2000,
            discontinuity,
            starts_with_keyframe: true,
            data: vec![0x47; 188].into(),
        }
    }

    #[test]
    fn the_session_rendering_equals_the_generic_one_and_allocates_once() {
        let mut pl = LivePlaylist::new(3, 2);
        for n in 0..6 {
            pl.push(seg(n, n == 1 || n == 4));
        }
        let generic =
            UriTemplate::new("https://cdn.example/hls/main/{seq}.ts?session={s}").unwrap();
        let mine = render(&pl, "https://cdn.example/hls/main/", "abc");
        assert_eq!(mine, pl.render(&generic, &[("s", "abc")]));
        assert!(
            mine.len() <= mine.capacity() && mine.capacity() < mine.len() * 2,
            "one buffer sized up front"
        );
        pl.end();
        let relative = UriTemplate::new("{seq}.ts?session={s}").unwrap();
        assert_eq!(render(&pl, "", "x"), pl.render(&relative, &[("s", "x")]));
    }

    #[test]
    fn admission_checks_signature_then_session_then_stream() {
        let key = SessionKey::new(b"k");
        // URLs good for 60 s: one with exp 100 was signed at 40.
        let mut s = Sessions::new(Some(key.clone()), 60);
        s.apply(SessionCommand::Open {
            id: "a".into(),
            stream: "main".into(),
            prefix: "".into(),
        });
        let sig = key.sign("a", "main", 100);
        let q = |session, exp, sig| SessionQuery {
            session: Some(session),
            exp: Some(exp),
            sig: Some(sig),
        };
        assert_eq!(
            s.admit("main", &q("a", "100", &sig), 50).map(|a| a.prefix),
            Ok("")
        );
        assert_eq!(
            s.admit("main", &q("a", "100", &sig), 100).err(),
            Some(Refusal::Signature(SignError::Expired))
        );
        assert_eq!(
            s.admit("main", &q("b", "100", &sig), 50)
                .map_err(Refusal::status),
            Err(403),
            "another session's signature"
        );
        let sig_b = key.sign("b", "main", 100);
        assert_eq!(
            s.admit("main", &q("b", "100", &sig_b), 50)
                .map_err(Refusal::status),
            Err(404),
            "signed 10 s ago and unknown here: ended, or never was"
        );
        assert_eq!(
            s.admit("main", &q("b", "100", &sig_b), 40 + ROUTE_GRACE_S - 1)
                .err(),
            Some(Refusal::NotReady),
            "signed moments ago: its route is on its way to this shard"
        );
        assert_eq!(Refusal::NotReady.status(), 503);
        let sig_far = key.sign("b", "main", 10_000);
        assert_eq!(
            s.admit("main", &q("b", "10000", &sig_far), 50).err(),
            Some(Refusal::UnknownSession),
            "signed \"in the future\": not a route on its way"
        );
        // A signature made for stream "other" and a session of "main": refused.
        s.apply(SessionCommand::Open {
            id: "c".into(),
            stream: "other".into(),
            prefix: "".into(),
        });
        let sig_c = key.sign("c", "main", 100);
        assert_eq!(
            s.admit("main", &q("c", "100", &sig_c), 50),
            Err(Refusal::OtherStream)
        );
        assert!(s.segment_served("main", "a", 188));
        assert!(
            !s.segment_served("main", "c", 188),
            "not this session's stream"
        );
        assert!(!s.segment_served("main", "zz", 188));
        let deltas = s.take_deltas();
        assert_eq!(
            deltas,
            vec![(
                "a".into(),
                FetchDelta {
                    playlists: 1,
                    segments: 1,
                    bytes: 188,
                    ads: vec![],
                }
            )]
        );
        s.apply(SessionCommand::Ended { id: "a".into() });
        assert_eq!(
            s.admit("main", &q("a", "100", &sig), 50).err(),
            Some(Refusal::UnknownSession)
        );
        assert!(!s.has_deltas());
    }

    #[test]
    fn query_parameters() {
        let q = SessionQuery::parse("x=1&session=ab_c-9&exp=5&sig=ff");
        assert_eq!(q.session, Some("ab_c-9"));
        assert_eq!((q.exp, q.sig), (Some("5"), Some("ff")));
        assert_eq!(SessionQuery::parse("session=a%0d").session, None);
        assert_eq!(
            SessionQuery::parse(&format!("session={}", "a".repeat(65))).session,
            None
        );
    }
}
