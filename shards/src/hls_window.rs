//! The HLS a shard serves, as pure state and answers: each stream's live window (kept from
//! the application core's [`MediaCommand`]s) and the HTTP answer to one request for a
//! playlist or segment. No sockets and no clock: the connection task is in `hls`.
//!
//! URLs: `/hls/{stream}/index.m3u8` (the live playlist) and `/hls/{stream}/{seq}.ts` (a
//! segment). A playlist request naming a viewing session (`?session=S&exp=E&sig=H`, the
//! signed `endpoint` URL) is checked and rendered per session by [`crate::hls_session`];
//! without a session it is the stream's public playlist (403 when `require_session`).
//! Statuses: 200; 403 for a bad or expired signature; 404 for an unknown stream, session or
//! a segment outside the window; 503 (`Retry-After`) while a stream is offline or has no
//! segment yet; 405 for a method other than GET, HEAD or OPTIONS (204, the CORS preflight).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Write as _;
use std::sync::Arc;

use media::playlist::{LivePlaylist, UriTemplate};

use crate::hls_ads::{self, AdSegment};
use crate::hls_cache::PlaylistCache;
use crate::hls_session::{self, Refusal, SessionQuery, Sessions};
use crate::proto::MediaCommand;
use crate::session_sign::SessionKey;

/// Path prefix of everything served here.
pub const PREFIX: &str = "/hls/";

/// Whether the request line at the start of `buf` (once complete) targets [`PREFIX`]: such a
/// connection is served as HLS, not upgraded.
pub fn is_media_request(buf: &[u8]) -> bool {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let mut parts = buf[..end].split(|&b| b == b' ');
    let _method = parts.next();
    parts
        .next()
        .is_some_and(|target| target.starts_with(PREFIX.as_bytes()))
}

/// A stream's state as the shard knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offline,
    Live,
    Ended,
}

struct Window {
    state: State,
    playlist: LivePlaylist,
    /// The playlist rendered since the last change (invalidated by every command).
    rendered: PlaylistCache,
    /// Sealed in-memory files of the segments in the window that have one, by sequence,
    /// oldest first.
    files: VecDeque<(u64, Arc<File>)>,
}

/// Every stream's window on this shard.
pub struct Windows {
    streams: HashMap<Box<str>, Window>,
    window: usize,
    target_secs: u64,
    /// Segment URIs of the public playlist, relative to it: `{seq}.ts`.
    uris_no_session: UriTemplate,
    /// The viewing sessions this shard serves playlists for.
    pub sessions: Sessions,
    /// The ad library's assets (`/hls/_ads/{ad}/{n}.ts`).
    ads: HashMap<Box<str>, Arc<[AdSegment]>>,
    /// Refuse playlist requests that name no session (403).
    require_session: bool,
}

/// One answer: the head (status line and headers) and the body, which for a segment is its
/// shared buffer (written from the `Arc`, never copied).
pub struct Answer {
    pub status: u16,
    pub head: Vec<u8>,
    pub body: Body,
}

/// An answer's body.
pub enum Body {
    Empty,
    Text(Vec<u8>),
    /// A segment's shared bytes, and the same bytes in a read-only file when it has one.
    Segment(Arc<[u8]>, Option<Arc<File>>),
}

impl Body {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Text(t) => t,
            Body::Segment(s, _) => s,
        }
    }
}

impl Windows {
    pub fn new(window: usize, target_secs: u64) -> Windows {
        Windows {
            streams: HashMap::new(),
            window,
            target_secs,
            // A literal template with `{seq}`: it parses.
            uris_no_session: UriTemplate::new("{seq}.ts")
                .unwrap_or_else(|_| unreachable!("literal template")),
            sessions: Sessions::default(),
            ads: HashMap::new(),
            require_session: false,
        }
    }

    /// Checks session playlists with `key`; `require_session` refuses the public playlist.
    pub fn with_sessions(
        mut self,
        key: Option<SessionKey>,
        ttl_s: u64,
        require_session: bool,
    ) -> Windows {
        self.sessions = Sessions::new(key, ttl_s);
        self.require_session = require_session;
        self
    }

    /// The window of `stream` (made if new), its rendered playlist forgotten: every caller
    /// changes it.
    fn window(&mut self, stream: Box<str>) -> &mut Window {
        let (window, target) = (self.window, self.target_secs);
        let w = self.streams.entry(stream).or_insert_with(|| Window {
            state: State::Offline,
            playlist: LivePlaylist::new(window, target),
            rendered: PlaylistCache::default(),
            files: VecDeque::new(),
        });
        w.rendered.invalidate();
        w
    }

    /// Applies one command from the application core.
    pub fn apply(&mut self, command: MediaCommand) {
        match command {
            MediaCommand::Registered { stream } => {
                self.window(stream);
            }
            MediaCommand::Live { stream } => self.window(stream).state = State::Live,
            MediaCommand::Segment {
                stream,
                segment,
                file,
            } => {
                let w = self.window(stream);
                let sequence = segment.sequence;
                w.playlist.push(segment);
                if let Some(file) = file {
                    w.files.push_back((sequence, file));
                }
                // Files leave with their segments (a request holding one keeps it open).
                let oldest = w.playlist.segments().next().map(|s| s.sequence);
                while w
                    .files
                    .front()
                    .is_some_and(|(n, _)| oldest.is_none_or(|o| *n < o))
                {
                    w.files.pop_front();
                }
            }
            MediaCommand::Ended { stream } => {
                let w = self.window(stream);
                w.state = State::Ended;
                w.playlist.end();
            }
            MediaCommand::Session(command) => self.sessions.apply(command),
            MediaCommand::Ad { id, segments } => {
                self.ads.insert(id, segments);
            }
            MediaCommand::AdRemoved { id } => {
                self.ads.remove(&id);
            }
        }
    }

    /// Segments held for `stream` (for tests and counters).
    pub fn segments(&self, stream: &str) -> usize {
        self.streams
            .get(stream)
            .map_or(0, |w| w.playlist.segments().count())
    }

    /// The answer to `method path?query` at `now_s` (Unix seconds, for signature expiry);
    /// `keep_alive` goes into the `Connection` header.
    pub fn answer(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        keep_alive: bool,
        now_s: u64,
    ) -> Answer {
        let head_only = method == "HEAD";
        let (status, kind, body) = match method {
            "GET" | "HEAD" => self.resource(path, query, now_s),
            "OPTIONS" => (204, Kind::Preflight, Body::Empty),
            _ => (
                405,
                Kind::Error,
                text("only GET, HEAD and OPTIONS are served here"),
            ),
        };
        let mut head = Vec::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {status} {}\r\nConnection: {}\r\nAccess-Control-Allow-Origin: *\r\n",
            reason(status),
            if keep_alive { "keep-alive" } else { "close" }
        );
        let half_target = (self.target_secs / 2).max(1);
        match kind {
            Kind::Playlist => {
                let _ = write!(
                    head,
                    "Content-Type: application/vnd.apple.mpegurl\r\nCache-Control: max-age={half_target}\r\n"
                );
            }
            Kind::Segment => head.extend_from_slice(
                b"Content-Type: video/mp2t\r\nCache-Control: public, max-age=31536000, immutable\r\n",
            ),
            Kind::Preflight => head.extend_from_slice(
                b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: *\r\nAccess-Control-Max-Age: 86400\r\n",
            ),
            Kind::Unavailable => {
                let _ = write!(
                    head,
                    "Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\nRetry-After: {}\r\n",
                    self.target_secs.max(1)
                );
            }
            Kind::Error => head.extend_from_slice(
                b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n",
            ),
        }
        if status == 405 {
            head.extend_from_slice(b"Allow: GET, HEAD, OPTIONS\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n\r\n", body.as_bytes().len());
        Answer {
            status,
            head,
            body: if head_only { Body::Empty } else { body },
        }
    }

    fn resource(&mut self, path: &str, query: &str, now_s: u64) -> (u16, Kind, Body) {
        if path.starts_with(hls_ads::ADS_PREFIX) {
            let found = hls_ads::ad_path(path).and_then(|(ad, n)| {
                let seg = self.ads.get(ad)?.get(usize::from(n))?;
                Some((ad, n, seg.data.clone()))
            });
            return match found {
                Some((ad, n, data)) => {
                    if let Some(session) = SessionQuery::parse(query).session {
                        self.sessions.ad_served(session, ad, n, data.len());
                    }
                    (200, Kind::Segment, Body::Segment(data, None))
                }
                None => (404, Kind::Error, text("no such ad segment")),
            };
        }
        let Some((stream, file)) = path.strip_prefix(PREFIX).and_then(|p| p.split_once('/')) else {
            return (404, Kind::Error, text("no such media resource"));
        };
        let Some(w) = self.streams.get(stream) else {
            return (404, Kind::Error, text("no such stream"));
        };
        let live_or_ended = matches!(w.state, State::Live | State::Ended);
        if file == "index.m3u8" {
            if !live_or_ended {
                return (503, Kind::Unavailable, text("the stream is offline"));
            }
            if w.playlist.segments().next().is_none() {
                return (503, Kind::Unavailable, text("no segment yet"));
            }
            let q = SessionQuery::parse(query);
            let rendered = match q.session {
                Some(s) => match self.sessions.admit(stream, &q, now_s) {
                    Ok(a) if a.breaks.is_empty() => {
                        hls_session::render(&w.playlist, a.prefix, s).into_bytes()
                    }
                    Ok(a) => hls_ads::render(&w.playlist, a.prefix, s, a.breaks).into_bytes(),
                    Err(refusal @ Refusal::NotReady) => {
                        return (503, Kind::Unavailable, text(&refusal.to_string()))
                    }
                    Err(refusal) => {
                        return (refusal.status(), Kind::Error, text(&refusal.to_string()))
                    }
                },
                None if self.require_session => {
                    return (
                        403,
                        Kind::Error,
                        text("this playlist needs a viewing session"),
                    )
                }
                // The public playlist: rendered once per window change.
                None => w
                    .rendered
                    .without_session(|| w.playlist.render(&self.uris_no_session, &[])),
            };
            return (200, Kind::Playlist, Body::Text(rendered));
        }
        let seq = file
            .strip_suffix(".ts")
            .filter(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok());
        match seq.and_then(|n| w.playlist.segment(n)) {
            Some(seg) => {
                if let Some(session) = SessionQuery::parse(query).session {
                    self.sessions
                        .segment_served(stream, session, seg.data.len());
                }
                let file = w.files.iter().find(|(n, _)| *n == seg.sequence);
                let file = file.map(|(_, f)| f.clone());
                (200, Kind::Segment, Body::Segment(seg.data.clone(), file))
            }
            None if seq.is_some() => (404, Kind::Error, text("the segment is not in the window")),
            None => (404, Kind::Error, text("no such media resource")),
        }
    }
}

enum Kind {
    Playlist,
    Segment,
    Preflight,
    Unavailable,
    Error,
}

fn text(message: &str) -> Body {
    Body::Text(format!("{message}\n").into_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls_session::SessionCommand;
    use media::segmenter::Segment;

    fn seg(sequence: u64, discontinuity: bool) -> Segment {
        Segment {
            sequence,
            duration_ms: 2000,
            start_wall_ms: 1_800_000_000_000 + sequence * 2000,
            discontinuity,
            starts_with_keyframe: true,
            data: vec![0x47; 188 * (sequence as usize + 1)].into(),
        }
    }

    fn head(a: &Answer) -> String {
        String::from_utf8(a.head.clone()).unwrap()
    }

    fn body(a: &Answer) -> String {
        String::from_utf8_lossy(a.body.as_bytes()).into_owned()
    }

    fn windows() -> Windows {
        let mut w = Windows::new(3, 2);
        w.apply(MediaCommand::Registered { stream: "s".into() });
        w.apply(MediaCommand::Session(SessionCommand::Open {
            id: "abc".into(),
            stream: "s".into(),
            prefix: "".into(),
        }));
        w
    }

    #[test]
    fn offline_is_503_unknown_is_404() {
        let mut w = windows();
        let a = w.answer("GET", "/hls/s/index.m3u8", "session=x", true, 0);
        assert_eq!(a.status, 503);
        assert!(head(&a).contains("Retry-After: 2\r\n"), "{}", head(&a));
        assert_eq!(
            w.answer("GET", "/hls/t/index.m3u8", "", true, 0).status,
            404
        );
        assert_eq!(w.answer("GET", "/hls/s", "", true, 0).status, 404);
        assert_eq!(w.answer("GET", "/hls/", "", true, 0).status, 404);
        assert_eq!(w.answer("GET", "/hls/s/0.ts", "", true, 0).status, 404);
    }

    #[test]
    fn segment_files_travel_with_their_segments_and_leave_with_them() {
        let mut w = windows();
        w.apply(MediaCommand::Live { stream: "s".into() });
        let mut files = Vec::new();
        for n in 0..5u64 {
            let segment = seg(n, false);
            // Segment 4 has no file (its making failed): served from its buffer.
            let file = (n < 4)
                .then(|| Arc::new(netstack::sys::sealed_memfd("t", &segment.data).expect("memfd")));
            files.push(file.clone());
            w.apply(MediaCommand::Segment {
                stream: "s".into(),
                segment,
                file,
            });
        }
        let held: Vec<u64> = w.streams["s"].files.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            held,
            [2, 3],
            "files of segments gone from the window are dropped"
        );
        assert_eq!(
            Arc::strong_count(files[0].as_ref().unwrap()),
            1,
            "closed on leaving"
        );
        let a = w.answer("GET", "/hls/s/3.ts", "", true, 0);
        let Body::Segment(_, Some(file)) = &a.body else {
            panic!("segment 3 is served with its file");
        };
        assert!(Arc::ptr_eq(file, files[3].as_ref().unwrap()));
        let a = w.answer("GET", "/hls/s/4.ts", "", true, 0);
        assert!(matches!(a.body, Body::Segment(_, None)));
    }

    #[test]
    fn the_window_slides_and_segments_are_shared_not_copied() {
        let mut w = windows();
        w.apply(MediaCommand::Live { stream: "s".into() });
        assert_eq!(
            w.answer("GET", "/hls/s/index.m3u8", "", true, 0).status,
            503,
            "live without a segment yet"
        );
        for n in 0..5 {
            w.apply(MediaCommand::Segment {
                stream: "s".into(),
                segment: seg(n, n == 4),
                file: None,
            });
        }
        assert_eq!(w.segments("s"), 3);
        let a = w.answer("GET", "/hls/s/index.m3u8", "session=abc&x=1", true, 0);
        assert_eq!(a.status, 200);
        let h = head(&a);
        assert!(
            h.starts_with("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n"),
            "{h}"
        );
        assert!(h.contains("Content-Type: application/vnd.apple.mpegurl\r\n"));
        assert!(h.contains("Cache-Control: max-age=1\r\n"));
        assert!(h.contains("Access-Control-Allow-Origin: *\r\n"));
        let text = body(&a);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n"), "{text}");
        assert!(text.contains("\n2.ts?session=abc\n"), "{text}");
        let (before, after) = text.split_once("#EXT-X-DISCONTINUITY\n").expect("tag");
        assert!(before.contains("\n3.ts?session=abc\n"), "{text}");
        assert!(after.contains("\n4.ts?session=abc\n") && !after.contains("3.ts"));
        assert!(!text.contains("ENDLIST"));
        assert!(h.contains(&format!("Content-Length: {}\r\n", text.len())));

        let a = w.answer("GET", "/hls/s/3.ts", "session=abc", false, 0);
        assert_eq!(a.status, 200);
        assert!(head(&a).contains("Connection: close\r\n"));
        assert!(head(&a).contains("immutable"));
        assert!(head(&a).contains("Content-Type: video/mp2t\r\n"));
        let Body::Segment(shared, _) = &a.body else {
            panic!("a segment body is the shared buffer");
        };
        let held = w.streams["s"].playlist.segment(3).unwrap().data.clone();
        assert!(Arc::ptr_eq(shared, &held), "no copy");
        assert_eq!(
            w.answer("GET", "/hls/s/1.ts", "", true, 0).status,
            404,
            "left"
        );
        assert_eq!(w.answer("GET", "/hls/s/9.ts", "", true, 0).status, 404);
        assert_eq!(w.answer("GET", "/hls/s/x.ts", "", true, 0).status, 404);
        assert_eq!(
            w.answer("GET", "/hls/s/99999999999999999999999.ts", "", true, 0)
                .status,
            404
        );

        let h = w.answer("HEAD", "/hls/s/3.ts", "", true, 0);
        assert_eq!(h.status, 200);
        assert!(h.body.as_bytes().is_empty());
        assert!(head(&h).contains(&format!("Content-Length: {}\r\n", 188 * 4)));

        w.apply(MediaCommand::Ended { stream: "s".into() });
        let text = body(&w.answer("GET", "/hls/s/index.m3u8", "", true, 0));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert!(text.contains("\n4.ts\n"), "no session, plain URIs: {text}");
    }

    #[test]
    fn the_cached_playlist_follows_every_window_change() {
        // The public playlist is cached per window change (session playlists are rendered
        // per request: each carries its own signed route).
        let mut w = windows();
        w.apply(MediaCommand::Live { stream: "s".into() });
        let get = |w: &mut Windows| body(&w.answer("GET", "/hls/s/index.m3u8", "", true, 0));
        for n in 0..4 {
            w.apply(MediaCommand::Segment {
                stream: "s".into(),
                segment: seg(n, false),
                file: None,
            });
            for _ in 0..2 {
                let text = get(&mut w);
                assert!(text.contains(&format!("\n{n}.ts\n")), "{text}");
                assert!(!text.contains("session="), "{text}");
                let first = n.saturating_sub(2);
                assert!(text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
            }
        }
        w.apply(MediaCommand::Ended { stream: "s".into() });
        assert!(get(&mut w).ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn media_requests_are_told_from_upgrades_by_their_request_line() {
        assert!(is_media_request(b"GET /hls/s/index.m3u8 HTTP/1.1\r\n"));
        assert!(is_media_request(
            b"OPTIONS /hls/s/0.ts HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(
            !is_media_request(b"GET /hls/s/index.m3u8 HTTP/1.1"),
            "line incomplete"
        );
        assert!(!is_media_request(b"GET /v1/viewer HTTP/1.1\r\n"));
        assert!(!is_media_request(b"GET /hlsx HTTP/1.1\r\n"));
        assert!(!is_media_request(b"\n"));
        assert!(!is_media_request(b""));
    }

    /// Whatever a client puts in a method, path or query, `answer` returns a well-formed
    /// head and never panics (deterministic pseudo-random inputs).
    #[test]
    fn arbitrary_requests_get_well_formed_answers() {
        let mut w = windows();
        w.apply(MediaCommand::Live { stream: "s".into() });
        w.apply(MediaCommand::Segment {
            stream: "s".into(),
            segment: seg(0, false),
            file: None,
        });
        let alphabet = b"/hls.ts0123456789?=&%session\r\n\xff-_s_ads/";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            let mut pick = |n: usize| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % n as u64) as usize
            };
            let len = pick(24);
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[pick(alphabet.len())]).collect();
            let text = String::from_utf8_lossy(&bytes);
            let (path, query) = text.split_once('?').unwrap_or((&text, ""));
            let method = ["GET", "HEAD", "OPTIONS", "PUT", ""][pick(5)];
            let a = w.answer(method, &format!("/hls/{path}"), query, true, 0);
            let h = head(&a);
            assert!(h.starts_with("HTTP/1.1 ") && h.ends_with("\r\n\r\n"), "{h}");
            assert_eq!(h.matches("\r\n\r\n").count(), 1, "{h}");
            assert!([200, 204, 403, 404, 405, 503].contains(&a.status));
        }
    }

    #[test]
    fn required_sessions_and_ad_segments() {
        let mut w = Windows::new(3, 2).with_sessions(None, 0, true);
        w.apply(MediaCommand::Registered { stream: "s".into() });
        w.apply(MediaCommand::Live { stream: "s".into() });
        w.apply(MediaCommand::Segment {
            stream: "s".into(),
            segment: seg(0, false),
            file: None,
        });
        let a = w.answer("GET", "/hls/s/index.m3u8", "", true, 0);
        assert_eq!(a.status, 403, "hls_require_session");
        w.apply(MediaCommand::Session(SessionCommand::Open {
            id: "v".into(),
            stream: "s".into(),
            prefix: "".into(),
        }));
        assert_eq!(
            w.answer("GET", "/hls/s/index.m3u8", "session=v", true, 0)
                .status,
            200
        );
        // An empty break plan leaves the content; ad segments are served and counted.
        w.apply(MediaCommand::Session(SessionCommand::Break {
            id: "v".into(),
            plan: Arc::new(crate::hls_ads::BreakPlan {
                id: 1,
                start_seq: 0,
                content_count: 1,
                duration_ms: 2000,
                entries: vec![],
            }),
        }));
        let text = body(&w.answer("GET", "/hls/s/index.m3u8", "session=v", true, 0));
        assert!(text.contains("\n0.ts?session=v\n"), "{text}");
        assert_eq!(
            w.answer("GET", "/hls/_ads/a/0.ts", "session=v", true, 0)
                .status,
            404
        );
        w.apply(MediaCommand::Ad {
            id: "a".into(),
            segments: vec![crate::hls_ads::AdSegment {
                duration_ms: 1000,
                data: vec![0x47; 376].into(),
            }]
            .into(),
        });
        let a = w.answer("GET", "/hls/_ads/a/0.ts", "session=v", true, 0);
        assert_eq!(a.status, 200);
        assert_eq!(a.body.as_bytes().len(), 376);
        assert_eq!(w.answer("GET", "/hls/_ads/a/1.ts", "", true, 0).status, 404);
        let deltas = w.sessions.take_deltas();
        assert_eq!(deltas[0].1.ads, vec![("a".into(), 0)]);
        w.apply(MediaCommand::AdRemoved { id: "a".into() });
        assert_eq!(w.answer("GET", "/hls/_ads/a/0.ts", "", true, 0).status, 404);
    }

    #[test]
    fn preflight_methods_and_hostile_sessions() {
        let mut w = windows();
        w.apply(MediaCommand::Live { stream: "s".into() });
        w.apply(MediaCommand::Segment {
            stream: "s".into(),
            segment: seg(0, false),
            file: None,
        });
        let a = w.answer("OPTIONS", "/hls/s/index.m3u8", "", true, 0);
        assert_eq!(a.status, 204);
        assert!(head(&a).contains("Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"));
        let a = w.answer("POST", "/hls/s/index.m3u8", "", true, 0);
        assert_eq!(a.status, 405);
        assert!(head(&a).contains("Allow: GET, HEAD, OPTIONS\r\n"));
        for bad in [
            "session=a%0d%0aX",
            "session=a\nb",
            "session=",
            "session=<x>",
        ] {
            let text = body(&w.answer("GET", "/hls/s/index.m3u8", bad, true, 0));
            assert!(text.contains("\n0.ts\n"), "{bad}: {text}");
        }
        let long = format!("session={}", "a".repeat(65));
        let text = body(&w.answer("GET", "/hls/s/index.m3u8", &long, true, 0));
        assert!(text.contains("\n0.ts\n"));
    }
}
