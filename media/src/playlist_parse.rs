//! Reading a media playlist back: the text [`crate::playlist::MediaPlaylist::render`] writes
//! (another edge's live window), parsed into the same value, so an edge pulling a stream
//! from its origin keeps the origin's sequence numbers, durations, wall times and
//! discontinuities.
//!
//! The parser takes text from the network: it never panics, refuses what would make the
//! window wrong (a missing header, an `#EXTINF` without a URI, a duration out of range, too
//! many entries) and ignores tags it does not know (RFC 8216 section 4.1).

use thiserror::Error;

use crate::playlist::{Entry, MediaPlaylist};

/// Most entries accepted (a live window is far smaller: `hls_window` is at most 100).
pub const MAX_ENTRIES: usize = 1000;
/// Longest segment duration accepted (milliseconds).
pub const MAX_DURATION_MS: u64 = 600_000;

/// Why a playlist was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The first line is not `#EXTM3U`.
    #[error("not an M3U playlist")]
    NotM3u,
    /// A tag's value is not what RFC 8216 allows (line number from 1).
    #[error("line {line}: malformed {tag}")]
    Malformed { line: usize, tag: &'static str },
    /// A URI line without `#EXTINF`, or an `#EXTINF` without a URI.
    #[error("line {0}: a segment needs #EXTINF and a URI")]
    Unpaired(usize),
    /// More than [`MAX_ENTRIES`] segments.
    #[error("more than {MAX_ENTRIES} segments")]
    TooMany,
    /// No `#EXT-X-TARGETDURATION` (required).
    #[error("no #EXT-X-TARGETDURATION")]
    NoTarget,
}

/// Parses a media playlist.
pub fn parse(text: &str) -> Result<MediaPlaylist, ParseError> {
    let mut lines = text.lines().map(str::trim).enumerate();
    if lines.next().map(|(_, l)| l) != Some("#EXTM3U") {
        return Err(ParseError::NotM3u);
    }
    let mut out = MediaPlaylist {
        target_duration: 0,
        media_sequence: 0,
        discontinuity_sequence: 0,
        entries: Vec::new(),
        ended: false,
    };
    let mut target = None;
    // (duration, discontinuity, wall time) of the `#EXTINF` waiting for its URI.
    let mut pending: Option<u64> = None;
    let (mut discontinuity, mut wall) = (false, None);
    for (i, line) in lines {
        let n = i + 1;
        let bad = |tag| ParseError::Malformed { line: n, tag };
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(number(v).ok_or(bad("#EXT-X-TARGETDURATION"))?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            out.media_sequence = number(v).ok_or(bad("#EXT-X-MEDIA-SEQUENCE"))?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            out.discontinuity_sequence = number(v).ok_or(bad("#EXT-X-DISCONTINUITY-SEQUENCE"))?;
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            out.ended = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            wall = Some(parse_iso8601(v).ok_or(bad("#EXT-X-PROGRAM-DATE-TIME"))?);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            if pending.is_some() {
                return Err(ParseError::Unpaired(n));
            }
            let secs = v.split(',').next().unwrap_or_default();
            pending = Some(duration_ms(secs).ok_or(bad("#EXTINF"))?);
        } else if line.is_empty() || line.starts_with('#') {
            // A comment or a tag this edge does not use.
        } else {
            let duration_ms = pending.take().ok_or(ParseError::Unpaired(n))?;
            if out.entries.len() == MAX_ENTRIES {
                return Err(ParseError::TooMany);
            }
            out.entries.push(Entry {
                uri: line.to_owned(),
                duration_ms,
                program_date_time_ms: wall.take(),
                discontinuity: std::mem::take(&mut discontinuity),
            });
        }
    }
    if pending.is_some() {
        return Err(ParseError::Unpaired(text.lines().count()));
    }
    out.target_duration = target.ok_or(ParseError::NoTarget)?;
    Ok(out)
}

/// A decimal integer that fits a `u64`.
fn number(v: &str) -> Option<u64> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
}

/// `S` or `S.fff` seconds as milliseconds (rounded to the millisecond), within
/// [`MAX_DURATION_MS`].
fn duration_ms(v: &str) -> Option<u64> {
    let (whole, frac) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
    let secs = number(whole)?;
    let frac = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
            return None;
        }
        let digits: String = frac.chars().chain("000".chars()).take(4).collect();
        // Four digits: milliseconds and one more to round on.
        let n: u64 = digits.parse().ok()?;
        (n + 5) / 10
    };
    let ms = secs.checked_mul(1000)?.checked_add(frac)?;
    (ms <= MAX_DURATION_MS).then_some(ms)
}

/// `YYYY-MM-DDTHH:MM:SS(.fff)Z` (the form [`crate::playlist::iso8601`] writes) as
/// milliseconds since the Unix epoch; `None` for anything else or a time before 1970.
pub fn parse_iso8601(v: &str) -> Option<u64> {
    let v = v.trim().strip_suffix('Z')?;
    let (date, time) = v.split_once('T')?;
    let mut d = date.splitn(3, '-').map(number);
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(number);
    let (h, m, s) = (t.next()??, t.next()??, t.next()??);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || h > 23
        || m > 59
        || s > 60
    {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else if frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()) {
        let digits: String = frac.chars().chain("00".chars()).take(3).collect();
        digits.parse::<u64>().ok()?
    } else {
        return None;
    };
    // Days since 1970-01-01 from the civil date (H. Hinnant's algorithm).
    let (y, mo) = (year as i64 - i64::from(month <= 2), month as i64);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400 + h * 3600 + m * 60 + s) * 1000) + ms)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::playlist::{iso8601, LivePlaylist, UriTemplate};
    use crate::segmenter::Segment;

    #[test]
    fn a_rendered_window_parses_back_to_the_same_value() {
        let mut live = LivePlaylist::new(3, 2);
        for n in 0..6u64 {
            live.push(Segment {
                sequence: n,
                duration_ms: 1_000 + n * 7,
                start_wall_ms: 1_764_510_000_123 + n * 1000,
                discontinuity: n == 2 || n == 4,
                starts_with_keyframe: true,
                data: Arc::from(vec![0x47u8; 188]),
            });
        }
        live.end();
        let uris = UriTemplate::new("{seq}.ts").unwrap();
        let value = live.snapshot(&uris, &[]);
        let parsed = parse(&value.render()).unwrap();
        assert_eq!(parsed.media_sequence, 3);
        assert_eq!(parsed.discontinuity_sequence, 1);
        assert!(parsed.ended);
        assert_eq!(parsed.entries, value.entries);
        assert_eq!(parsed.target_duration, value.effective_target_duration());
    }

    #[test]
    fn wall_times_round_trip() {
        for ms in [0, 951_782_400_000, 1_764_510_000_123, 4_102_444_799_999] {
            assert_eq!(parse_iso8601(&iso8601(ms)), Some(ms), "{}", iso8601(ms));
        }
        assert_eq!(
            parse_iso8601("2025-11-30T12:00:00Z"),
            Some(1_764_504_000_000)
        );
        for bad in [
            "",
            "Z",
            "2025-13-01T00:00:00Z",
            "2025-01-01T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2025-01-01T00:00:00",
            "2025-01-01T00:00:00.x1Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    #[test]
    fn hostile_playlists_are_refused_not_panicked_on() {
        let ok = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-FOO:bar\n#EXTINF:1.5,\n7.ts\n";
        let p = parse(ok).unwrap();
        assert_eq!((p.media_sequence, p.entries[0].duration_ms), (7, 1500));
        for (bad, why) in [
            ("", ParseError::NotM3u),
            ("#EXT-X-TARGETDURATION:2\n", ParseError::NotM3u),
            ("#EXTM3U\n#EXTINF:1,\n0.ts\n", ParseError::NoTarget),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n0.ts\n",
                ParseError::Unpaired(3),
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n",
                ParseError::Unpaired(3),
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n#EXTINF:1,\n",
                ParseError::Unpaired(4),
            ),
        ] {
            assert_eq!(parse(bad), Err(why), "{bad:?}");
        }
        for bad in [
            "#EXTM3U\n#EXT-X-TARGETDURATION:x\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:-1\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:99999999999999999999\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:nan,\n0.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:601,\n0.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:-1,\n0.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let many = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n{}",
            "#EXTINF:1,\nx.ts\n".repeat(MAX_ENTRIES + 1)
        );
        assert_eq!(parse(&many), Err(ParseError::TooMany));
        // Arbitrary bytes: an answer, never a panic.
        let alphabet = "#EXTM3U-X:INF,.0123456789\nZT/ts";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..5_000 {
            let text: String = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet.as_bytes()[(x % alphabet.len() as u64) as usize] as char
                })
                .collect();
            let _ = parse(&format!("#EXTM3U\n{text}"));
        }
    }
}
