//! HLS media playlists (RFC 8216), live with a sliding window.
//!
//! Two layers, so later work can rewrite playlists per viewer session (ad breaks, CDN hosts):
//! - [`MediaPlaylist`] is a plain value (header fields plus [`Entry`]s) with a renderer;
//!   anything can build or edit one.
//! - [`LivePlaylist`] holds the last N [`Segment`]s of a stream, keeps the media and
//!   discontinuity sequence numbers, and snapshots itself into a `MediaPlaylist` with URIs
//!   from a [`UriTemplate`].

use std::collections::VecDeque;
use std::fmt::Write as _;

use thiserror::Error;

use crate::segmenter::Segment;

/// One segment line group in a media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Segment URI, as written.
    pub uri: String,
    /// Duration in milliseconds (rendered with 3 decimals of seconds).
    pub duration_ms: u64,
    /// `#EXT-X-PROGRAM-DATE-TIME`, milliseconds since the Unix epoch.
    pub program_date_time_ms: Option<u64>,
    /// `#EXT-X-DISCONTINUITY` before this entry.
    pub discontinuity: bool,
}

/// A media playlist as a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// Lower bound for `#EXT-X-TARGETDURATION` in seconds; rendering raises it to cover
    /// every entry.
    pub target_duration: u64,
    /// `#EXT-X-MEDIA-SEQUENCE`: sequence number of the first entry.
    pub media_sequence: u64,
    /// `#EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities that left the window (omitted at 0).
    pub discontinuity_sequence: u64,
    /// The segments, oldest first.
    pub entries: Vec<Entry>,
    /// `#EXT-X-ENDLIST`: the stream ended.
    pub ended: bool,
}

impl MediaPlaylist {
    /// `#EXT-X-TARGETDURATION`: the lower bound raised to the ceiling of the longest entry,
    /// so no EXTINF, rounded, exceeds it (RFC 8216 section 4.3.3.1).
    pub fn effective_target_duration(&self) -> u64 {
        let longest = self
            .entries
            .iter()
            .map(|e| e.duration_ms)
            .max()
            .unwrap_or(0);
        self.target_duration.max(longest.div_ceil(1000)).max(1)
    }

    /// The playlist text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(128 + self.entries.len() * 96);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        // `write!` into a String cannot fail.
        let _ = writeln!(
            out,
            "#EXT-X-TARGETDURATION:{}",
            self.effective_target_duration()
        );
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        for entry in &self.entries {
            if entry.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(ms) = entry.program_date_time_ms {
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(ms));
            }
            let _ = writeln!(
                out,
                "#EXTINF:{}.{:03},\n{}",
                entry.duration_ms / 1000,
                entry.duration_ms % 1000,
                entry.uri
            );
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// A template that has no `{seq}`, or a brace that does not close.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// Without `{seq}` every segment would have the same URI.
    #[error("segment URI template lacks {{seq}}")]
    NoSequence,
    /// An unclosed or empty placeholder.
    #[error("segment URI template has a malformed placeholder at byte {0}")]
    Malformed(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Sequence,
    Var(String),
}

/// Segment URIs from a caller-given template: `{seq}` is the media sequence number, any
/// other `{name}` is filled from the variables given at render time (e.g. a session id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    parts: Vec<Part>,
}

impl UriTemplate {
    /// Parses a template such as `/hls/{stream}/{session}/{seq}.ts` or `seg-{seq}.ts`.
    pub fn new(template: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or(TemplateError::Malformed(offset + open))?;
            let name = &rest[open + 1..open + close];
            if name.is_empty() || name.contains('{') {
                return Err(TemplateError::Malformed(offset + open));
            }
            parts.push(if name == "seq" {
                Part::Sequence
            } else {
                Part::Var(name.to_owned())
            });
            offset += open + close + 1;
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts.contains(&Part::Sequence) {
            return Err(TemplateError::NoSequence);
        }
        Ok(UriTemplate { parts })
    }

    /// The URI of segment `sequence`; a variable missing from `vars` renders empty.
    pub fn render(&self, sequence: u64, vars: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Sequence => {
                    let _ = write!(out, "{sequence}");
                }
                Part::Var(name) => {
                    if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
                        out.push_str(v);
                    }
                }
            }
        }
        out
    }
}

/// The live window of one stream's segments.
#[derive(Debug, Clone)]
pub struct LivePlaylist {
    window: usize,
    segments: VecDeque<Segment>,
    discontinuity_sequence: u64,
    target_duration: u64,
    ended: bool,
}

impl LivePlaylist {
    /// A window of `window` segments (at least 1; RFC 8216 asks live playlists for at least
    /// three target durations, so 6 segments of 2 s is the usual choice) and an initial
    /// target duration in seconds.
    pub fn new(window: usize, target_duration_secs: u64) -> Self {
        LivePlaylist {
            window: window.max(1),
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            target_duration: target_duration_secs.max(1),
            ended: false,
        }
    }

    /// Adds a segment; returns the one that left the window, if any. Adding reopens an
    /// ended playlist (a publisher came back).
    pub fn push(&mut self, segment: Segment) -> Option<Segment> {
        // The target duration never shrinks: RFC 8216 forbids changing it, so it only
        // grows when a longer segment would otherwise break the rule.
        self.target_duration = self.target_duration.max(segment.duration_ms.div_ceil(1000));
        self.ended = false;
        self.segments.push_back(segment);
        if self.segments.len() > self.window {
            let gone = self.segments.pop_front()?;
            // Only a discontinuity tag that left with its segment is counted (RFC 8216
            // section 6.2.1); one on the new first segment is still rendered.
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
            return Some(gone);
        }
        None
    }

    /// Marks the stream ended (`#EXT-X-ENDLIST`).
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// The stream is live again before its next segment (a publisher came back): the
    /// playlist no longer says it ended.
    pub fn reopen(&mut self) {
        self.ended = false;
    }

    /// Whether the stream ended.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The segment with this sequence number, while it is in the window. Sequence numbers
    /// rise but need not be contiguous (an edge relaying another edge's stream may have
    /// missed a segment that left the origin's window), so this is a binary search.
    pub fn segment(&self, sequence: u64) -> Option<&Segment> {
        let index = self
            .segments
            .binary_search_by_key(&sequence, |s| s.sequence)
            .ok()?;
        self.segments.get(index)
    }

    /// `#EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities that left the window.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// The target duration in seconds (never shrinks).
    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// Segments in the window, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The playlist as a value, URIs from the template and `vars`.
    pub fn snapshot(&self, uris: &UriTemplate, vars: &[(&str, &str)]) -> MediaPlaylist {
        MediaPlaylist {
            target_duration: self.target_duration,
            media_sequence: self.segments.front().map_or(0, |s| s.sequence),
            discontinuity_sequence: self.discontinuity_sequence,
            entries: self
                .segments
                .iter()
                .map(|s| Entry {
                    uri: uris.render(s.sequence, vars),
                    duration_ms: s.duration_ms,
                    program_date_time_ms: Some(s.start_wall_ms),
                    discontinuity: s.discontinuity,
                })
                .collect(),
            ended: self.ended,
        }
    }

    /// Shorthand for `snapshot(..).render()`.
    pub fn render(&self, uris: &UriTemplate, vars: &[(&str, &str)]) -> String {
        self.snapshot(uris, vars).render()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn iso8601(unix_ms: u64) -> String {
    let mut out = String::with_capacity(24);
    write_iso8601(&mut out, unix_ms);
    out
}

/// [`iso8601`] appended to `out` (no allocation of its own).
pub fn write_iso8601(out: &mut String, unix_ms: u64) {
    let secs = unix_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    );
}

#[cfg(test)]
#[path = "playlist_tests.rs"]
mod tests;
