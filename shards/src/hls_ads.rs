//! Ad breaks in per-session playlists (pure): the ad assets a shard serves and the rendering
//! of a session's playlist with its break plans spliced in place of content.
//!
//! A [`BreakPlan`] replaces the content segments `start_seq .. start_seq + content_count` of
//! one session's playlist with its ad entries. Entry `j` of `m` is shown in the slot of
//! content segment `start_seq + j * n / m`, so the ads appear as the content they replace is
//! produced and slide out with it. Sequence numbers stay stable across reloads: an ad entry's
//! media sequence is `start_seq + j` plus what earlier breaks added, content after a break is
//! shifted by `m - n`. `EXT-X-DISCONTINUITY` marks content->ad, ad->ad and ad->content;
//! `EXT-X-CUE-OUT:DURATION=` opens a break and `EXT-X-CUE-IN` closes it; the discontinuities
//! that slid out are counted in `EXT-X-DISCONTINUITY-SEQUENCE`.
//!
//! Ad segment URIs: `/hls/_ads/{ad}/{n}.ts?session={session}` (absolute path: the CDN prefix
//! of a session applies to content only), answered from the shard's [`AdSegment`]s.

use std::fmt::Write as _;
use std::sync::Arc;

use media::playlist::{write_iso8601, LivePlaylist};
use media::segmenter::Segment;

/// Path prefix of ad segments.
pub const ADS_PREFIX: &str = "/hls/_ads/";

/// One segment of an ad asset (MPEG-TS, shared by every shard and session).
#[derive(Debug, Clone)]
pub struct AdSegment {
    pub duration_ms: u32,
    pub data: Arc<[u8]>,
}

/// One entry of a break plan: segment `index` of ad `ad`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdEntry {
    pub ad: Box<str>,
    pub index: u16,
    pub duration_ms: u32,
    /// The first segment of an ad (a discontinuity before it).
    pub first_of_ad: bool,
}

/// One session's ads for one break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakPlan {
    pub id: u32,
    pub start_seq: u64,
    pub content_count: u64,
    pub duration_ms: u64,
    pub entries: Vec<AdEntry>,
}

impl BreakPlan {
    fn end_seq(&self) -> u64 {
        self.start_seq + self.content_count
    }

    /// The content slot (0-based) entry `j` is shown in.
    fn slot(&self, j: usize) -> u64 {
        let m = self.entries.len().max(1) as u64;
        j as u64 * self.content_count / m
    }

    /// Media sequence added after the break.
    fn shift(&self) -> i64 {
        self.entries.len() as i64 - self.content_count as i64
    }
}

/// Parses `/hls/_ads/{ad}/{n}.ts`.
pub fn ad_path(path: &str) -> Option<(&str, u16)> {
    let (ad, file) = path.strip_prefix(ADS_PREFIX)?.split_once('/')?;
    let n = file.strip_suffix(".ts")?;
    if n.is_empty() || n.len() > 5 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((ad, n.parse().ok()?))
}

/// One content segment's lines in a session playlist: its wall time, duration and URI
/// `{prefix}{seq}.ts?session={session}` (discontinuity and cue tags are the caller's).
pub(crate) fn write_content_entry(out: &mut String, s: &Segment, prefix: &str, session: &str) {
    out.push_str("#EXT-X-PROGRAM-DATE-TIME:");
    write_iso8601(out, s.start_wall_ms);
    let _ = write!(
        out,
        "\n#EXTINF:{}.{:03},\n{prefix}{}.ts?session={session}\n",
        s.duration_ms / 1000,
        s.duration_ms % 1000,
        s.sequence
    );
}

/// The session playlist with `breaks` (sorted by `start_seq`, not overlapping) spliced in.
pub fn render(
    playlist: &LivePlaylist,
    prefix: &str,
    session: &str,
    breaks: &[Arc<BreakPlan>],
) -> String {
    let first = playlist.segments().next().map_or(0, |s| s.sequence);
    // What earlier breaks changed: sequence shift and discontinuities that slid out.
    let mut extra_disc = 0u64;
    for b in breaks {
        for (j, e) in b.entries.iter().enumerate() {
            if e.first_of_ad && b.start_seq + b.slot(j) < first {
                extra_disc += 1;
            }
        }
        if b.end_seq() < first {
            extra_disc += 1; // the ad->content discontinuity left with its segment
        }
    }
    let shift_before = |seq: u64| -> i64 {
        breaks
            .iter()
            .filter(|b| b.end_seq() <= seq)
            .map(|b| b.shift())
            .sum()
    };
    let count = playlist.segments().count() + breaks.iter().map(|b| b.entries.len()).sum::<usize>();
    let mut out = String::with_capacity(160 + count * (112 + prefix.len() + 2 * session.len()));
    let longest = playlist
        .segments()
        .map(|s| s.duration_ms)
        .chain(
            breaks
                .iter()
                .flat_map(|b| b.entries.iter().map(|e| u64::from(e.duration_ms))),
        )
        .max()
        .unwrap_or(0);
    let target = playlist
        .target_duration()
        .max(longest.div_ceil(1000))
        .max(1);
    // The first entry's media sequence: content, or the first ad entry shown in its slot.
    let media_sequence = {
        let inside = breaks
            .iter()
            .find(|b| b.start_seq <= first && first < b.end_seq());
        match inside {
            Some(b) => {
                let j = (0..b.entries.len())
                    .find(|&j| b.start_seq + b.slot(j) >= first)
                    .unwrap_or(b.entries.len());
                (b.start_seq + j as u64) as i64 + shift_before(b.start_seq)
            }
            None => first as i64 + shift_before(first),
        }
    };
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        media_sequence.max(0)
    );
    let disc = playlist.discontinuity_sequence() + extra_disc;
    if disc > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc}");
    }
    for s in playlist.segments() {
        if let Some(b) = breaks
            .iter()
            .find(|b| b.start_seq <= s.sequence && s.sequence < b.end_seq())
        {
            let slot = s.sequence - b.start_seq;
            for (j, e) in b
                .entries
                .iter()
                .enumerate()
                .filter(|(j, _)| b.slot(*j) == slot)
            {
                if e.first_of_ad {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                if j == 0 {
                    let _ = writeln!(
                        out,
                        "#EXT-X-CUE-OUT:DURATION={}.{:03}",
                        b.duration_ms / 1000,
                        b.duration_ms % 1000
                    );
                }
                let _ = write!(
                    out,
                    "#EXTINF:{}.{:03},\n{ADS_PREFIX}{}/{}.ts?session={session}\n",
                    e.duration_ms / 1000,
                    e.duration_ms % 1000,
                    e.ad,
                    e.index
                );
            }
            continue;
        }
        let after_break = breaks.iter().any(|b| b.end_seq() == s.sequence);
        if s.discontinuity || after_break {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if after_break {
            out.push_str("#EXT-X-CUE-IN\n");
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
    use media::segmenter::Segment;

    fn seg(sequence: u64) -> Segment {
        Segment {
            sequence,
            duration_ms: 2000,
            start_wall_ms: 1_800_000_000_000 + sequence * 2000,
            discontinuity: false,
            starts_with_keyframe: true,
            data: vec![0x47; 188].into(),
        }
    }

    fn plan(start: u64, n: u64, ads: &[(&str, u16)]) -> Arc<BreakPlan> {
        let mut entries = Vec::new();
        for (ad, segs) in ads {
            for i in 0..*segs {
                entries.push(AdEntry {
                    ad: (*ad).into(),
                    index: i,
                    duration_ms: 1000,
                    first_of_ad: i == 0,
                });
            }
        }
        Arc::new(BreakPlan {
            id: 1,
            start_seq: start,
            content_count: n,
            duration_ms: n * 2000,
            entries,
        })
    }

    /// (media sequence, discontinuity sequence, uris) of a rendering.
    fn parts(text: &str) -> (u64, u64, Vec<String>) {
        let num = |tag: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(tag))
                .map_or(0, |n| n.parse().unwrap())
        };
        let uris = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('?').next().unwrap().to_owned())
            .collect();
        (
            num("#EXT-X-MEDIA-SEQUENCE:"),
            num("#EXT-X-DISCONTINUITY-SEQUENCE:"),
            uris,
        )
    }

    #[test]
    fn a_break_replaces_content_with_stable_sequence_numbers() {
        // Content 0..=9; the break replaces 3 and 4 (4 s) with ads a (2 x 1 s) and b (2 x 1 s).
        let p = plan(3, 2, &[("a", 2), ("b", 2)]);
        let mut pl = LivePlaylist::new(4, 2);
        let mut seen: std::collections::HashMap<u64, String> = Default::default();
        let mut disc_seen: Vec<(u64, u64, usize)> = Vec::new();
        for n in 0..10 {
            pl.push(seg(n));
            let text = render(&pl, "", "s", std::slice::from_ref(&p));
            let (mut seq, disc, uris) = parts(&text);
            // Sequence numbers are stable: the same number is always the same URI.
            for uri in &uris {
                if let Some(prev) = seen.insert(seq, uri.clone()) {
                    assert_eq!(&prev, uri, "seq {seq} changed: {text}");
                }
                seq += 1;
            }
            let discs_shown = text.matches("#EXT-X-DISCONTINUITY\n").count();
            disc_seen.push((n, disc, discs_shown));
        }
        let order: Vec<&str> = (0..12).map(|s| seen[&s].as_str()).collect();
        assert_eq!(
            order,
            [
                "0.ts",
                "1.ts",
                "2.ts",
                "/hls/_ads/a/0.ts",
                "/hls/_ads/a/1.ts",
                "/hls/_ads/b/0.ts",
                "/hls/_ads/b/1.ts",
                "5.ts",
                "6.ts",
                "7.ts",
                "8.ts",
                "9.ts"
            ]
        );
        // Discontinuities: 3 in the break (content->a, a->b, b->content); each one that slid
        // out is counted in the sequence, so shown + counted never decreases.
        let totals: Vec<u64> = disc_seen.iter().map(|(_, d, s)| d + *s as u64).collect();
        assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{disc_seen:?}");
        assert_eq!(*totals.last().unwrap(), 3, "{disc_seen:?}");
        let text = render(&pl, "", "s", &[]);
        assert!(!text.contains("DISCONTINUITY"));
    }

    #[test]
    fn cue_tags_and_ad_uris() {
        let p = plan(1, 1, &[("a", 2)]);
        let mut pl = LivePlaylist::new(5, 2);
        for n in 0..3 {
            pl.push(seg(n));
        }
        let text = render(&pl, "http://cdn/hls/x/", "sid", &[p]);
        let want = "#EXT-X-DISCONTINUITY\n#EXT-X-CUE-OUT:DURATION=2.000\n#EXTINF:1.000,\n/hls/_ads/a/0.ts?session=sid\n#EXTINF:1.000,\n/hls/_ads/a/1.ts?session=sid\n#EXT-X-DISCONTINUITY\n#EXT-X-CUE-IN\n";
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("\nhttp://cdn/hls/x/2.ts?session=sid\n"),
            "{text}"
        );
        assert!(text.len() <= text.capacity());
        assert_eq!(ad_path("/hls/_ads/a/12.ts"), Some(("a", 12)));
        for bad in [
            "/hls/_ads/a/x.ts",
            "/hls/_ads/a/.ts",
            "/hls/_ads/a",
            "/hls/_ads/a/999999.ts",
        ] {
            assert_eq!(ad_path(bad), None, "{bad}");
        }
    }
}
