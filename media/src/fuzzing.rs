//! Fuzz harnesses shared by the cargo-fuzz targets (`media/fuzz/`) and a deterministic
//! unit test that runs them over pseudo-random and mutated inputs on stable Rust.
//!
//! Each harness takes arbitrary bytes, must never panic, and asserts the invariants that
//! hold for any input.

use crate::amf0::{self, Amf0Value};
use crate::flv::{self, AudioTag, VideoTag};
use crate::playlist::{LivePlaylist, UriTemplate};
use crate::playlist_parse;
use crate::rtmp::chunk::{self, ChunkEncoder};
use crate::rtmp::handshake::PACKET;
use crate::rtmp::{Event, Limits, ServerSession, SessionConfig};
use crate::segmenter::{Segmenter, SegmenterConfig};
use crate::MediaKind;

/// A simple handshake plus connect, createStream and publish: the bytes that get a session
/// to the point where it carries media.
pub fn publish_prelude() -> Vec<u8> {
    let mut wire = vec![3];
    wire.extend_from_slice(&[0u8; 2 * PACKET]);
    let mut enc = ChunkEncoder::default();
    let mut command = |stream_id: u32, values: &[Amf0Value], wire: &mut Vec<u8>| {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(v, &mut body);
        }
        enc.write(3, 0, chunk::COMMAND_AMF0, stream_id, &body, wire);
    };
    let s = |v: &str| Amf0Value::String(v.into());
    let app = Amf0Value::Object(vec![("app".into(), s("live"))]);
    command(0, &[s("connect"), Amf0Value::Number(1.0), app], &mut wire);
    command(
        0,
        &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        &mut wire,
    );
    command(
        1,
        &[
            s("publish"),
            Amf0Value::Number(3.0),
            Amf0Value::Null,
            s("key"),
        ],
        &mut wire,
    );
    wire
}

#[derive(Debug)]
struct Outcome {
    events: Vec<Event>,
    output: Vec<u8>,
    error: Option<String>,
}

fn run_session(limits: Limits, prelude: bool, data: &[u8], cuts: &[u8]) -> Outcome {
    let mut session = ServerSession::new(SessionConfig {
        limits,
        ..SessionConfig::default()
    });
    let mut events = Vec::new();
    if prelude {
        session
            .handle_input(&publish_prelude())
            .expect("the prelude is valid");
        while let Some(e) = session.poll_event() {
            events.push(e);
        }
        assert!(session.accept_publish(), "the prelude requests a publish");
    }
    let mut error = None;
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts
            .get(i % cuts.len().max(1))
            .map_or(rest.len(), |&c| usize::from(c) + 1);
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        i += 1;
        if let Err(e) = session.handle_input(piece) {
            error = Some(e.to_string());
            break;
        }
        let bound = limits.max_buffered + limits.max_chunk_size as usize + 18 + 1 + PACKET;
        assert!(
            session.buffered() <= bound,
            "{} > {bound}",
            session.buffered()
        );
        while let Some(e) = session.poll_event() {
            if let Event::Media { data, .. } = &e {
                assert!(!data.is_empty() && data.len() <= limits.max_message_len as usize);
            }
            events.push(e);
        }
    }
    while let Some(e) = session.poll_event() {
        events.push(e);
    }
    session.close();
    let output = session.take_output();
    Outcome {
        events,
        output,
        error,
    }
}

/// The RTMP session harness. Byte 0 picks the limits and whether a valid publish prelude
/// comes first (so the fuzzer reaches media handling), byte 1 how many cut lengths follow;
/// the rest is fed whole and cut into pieces, and both runs must agree.
pub fn rtmp_session(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let Some((&ncuts, rest)) = rest.split_first() else {
        return;
    };
    let (cuts, data) = rest.split_at(usize::from(ncuts % 16).min(rest.len()));
    let limits = if mode & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_chunk_size: 512,
            max_message_len: 2048,
            max_chunk_streams: 4,
            max_buffered: 4096,
            max_amf_depth: 4,
            max_streams: 2,
        }
    };
    let prelude = mode & 2 != 0;
    let whole = run_session(limits, prelude, data, &[]);
    let cut = run_session(limits, prelude, data, cuts);
    // Events and errors do not depend on how the bytes were cut. (The output may: an
    // Acknowledgement reports the byte count at the read that crossed the window.) After an
    // error the events may differ in how many came before it was noticed.
    assert_eq!(whole.error, cut.error);
    if whole.error.is_none() {
        assert_eq!(whole.events, cut.events);
    }
    if prelude {
        assert!(!whole.output.is_empty() && !cut.output.is_empty());
    }
}

/// The FLV/segmenter harness: tag bodies parsed on their own and fed through the segmenter
/// and a playlist. Input: a stream of `[kind, len_hi, len_lo, ts_delta, body...]` records.
pub fn flv_tags(input: &[u8]) {
    let config = SegmenterConfig {
        target_duration_ms: 100,
        max_segment_ms: 1_000,
        max_segment_bytes: 64 * 1024,
        max_jump_ms: 1_000,
    };
    let mut segmenter = Segmenter::new(config);
    let mut playlist = LivePlaylist::new(3, 1);
    let uris = UriTemplate::new("{s}/{seq}.ts").expect("valid template");
    let mut timestamp = 0u32;
    let mut rest = input;
    let check = |seg: crate::segmenter::Segment, playlist: &mut LivePlaylist| {
        assert_eq!(seg.data.len() % 188, 0);
        assert!(seg.data.chunks(188).all(|p| p[0] == 0x47));
        playlist.push(seg);
        let text = playlist.render(&uris, &[("s", "x")]);
        assert!(text.starts_with("#EXTM3U\n"));
    };
    while let [kind, hi, lo, delta, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (body, tail) = tail.split_at(len);
        rest = tail;
        timestamp = timestamp.wrapping_add(u32::from(*delta) * (1 + u32::from(*kind >> 4)));
        let media = if kind & 1 == 0 {
            check_video(body);
            MediaKind::Video
        } else {
            check_audio(body);
            MediaKind::Audio
        };
        if kind & 2 != 0 {
            if let Some(seg) = segmenter.restart() {
                check(seg, &mut playlist);
            }
        }
        if let Ok(Some(seg)) = segmenter.push(media, timestamp, body, 1_000_000) {
            check(seg, &mut playlist);
        }
    }
    if let Some(seg) = segmenter.finish() {
        check(seg, &mut playlist);
    }
    playlist.end();
}

/// Fuzzes the media playlist reader (`playlist_parse`, another edge's window): any bytes,
/// as text. It never panics; what it accepts stays within its limits, and rendering what
/// it read and reading that again gives the same playlist.
pub fn playlist_text(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let Ok(p) = playlist_parse::parse(&text) else {
        return;
    };
    assert!(p.entries.len() <= playlist_parse::MAX_ENTRIES);
    assert!(p
        .entries
        .iter()
        .all(|e| e.duration_ms <= playlist_parse::MAX_DURATION_MS && !e.uri.is_empty()));
    let again = playlist_parse::parse(&p.render()).expect("a rendered playlist reads back");
    assert_eq!(again.entries, p.entries);
    assert_eq!(
        (
            again.media_sequence,
            again.discontinuity_sequence,
            again.ended
        ),
        (p.media_sequence, p.discontinuity_sequence, p.ended)
    );
    assert_eq!(
        again.effective_target_duration(),
        p.effective_target_duration()
    );
}

fn check_video(body: &[u8]) {
    match flv::parse_video(body) {
        Ok(VideoTag::SequenceHeader(c)) => {
            assert!(matches!(c.nalu_length_size, 1 | 2 | 4));
            assert!(!c.sps.is_empty() && !c.pps.is_empty());
        }
        Ok(VideoTag::Nalus { data, .. }) => {
            for size in [1, 2, 4] {
                if let Ok(nalus) = flv::split_nalus(data, size) {
                    let total: usize = nalus.iter().map(|n| n.len() + usize::from(size)).sum();
                    assert!(total <= data.len());
                }
            }
        }
        Ok(VideoTag::EndOfSequence) | Err(_) => {}
    }
}

fn check_audio(body: &[u8]) {
    if let Ok(AudioTag::SequenceHeader(c)) = flv::parse_audio(body) {
        let h = c.adts_header(100);
        assert_eq!(&h[..2], &[0xFF, 0xF1]);
        assert!(c.sample_rate() >= 7350);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }

        fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
            let mut v = seed.to_vec();
            for _ in 0..1 + self.next() % 6 {
                if v.is_empty() {
                    break;
                }
                let i = self.next() as usize % v.len();
                match self.next() % 4 {
                    0 => v[i] = self.next() as u8,
                    1 => v[i] ^= 1 << (self.next() % 8),
                    2 => {
                        let end = (i + 1 + self.next() as usize % 16).min(v.len());
                        v.drain(i..end);
                    }
                    _ => {
                        let n = 1 + self.next() as usize % 8;
                        let extra = self.bytes(n);
                        v.splice(i..i, extra);
                    }
                }
            }
            v
        }
    }

    /// Chunked media after a prelude: a valid session input to mutate.
    fn session_seed() -> Vec<u8> {
        let mut enc = ChunkEncoder::default();
        let mut wire = vec![2, 5, 3, 40, 7, 1, 9];
        // Prelude already consumed one header per csid: use fresh chunk streams.
        enc.write(4, 0, chunk::AUDIO, 1, &[0xAF, 0, 0x12, 0x10], &mut wire);
        enc.write(
            6,
            0,
            chunk::VIDEO,
            1,
            &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65],
            &mut wire,
        );
        enc.write(
            6,
            40,
            chunk::VIDEO,
            1,
            &[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41],
            &mut wire,
        );
        let mut body = Vec::new();
        for v in [
            Amf0Value::String("FCUnpublish".into()),
            Amf0Value::Number(4.0),
            Amf0Value::Null,
        ] {
            amf0::encode(&v, &mut body);
        }
        enc.write(3, 0, chunk::COMMAND_AMF0, 0, &body, &mut wire);
        wire
    }

    fn flv_seed() -> Vec<u8> {
        let mut seed = Vec::new();
        let mut tag = |kind: u8, delta: u8, body: &[u8]| {
            seed.extend_from_slice(&[kind, 0, body.len() as u8, delta]);
            seed.extend_from_slice(body);
        };
        let avcc = [
            0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68,
        ];
        tag(0, 0, &avcc);
        tag(1, 0, &[0xAF, 0, 0x12, 0x10]);
        for i in 0..12 {
            let key = if i % 4 == 0 { 0x17 } else { 0x27 };
            tag(0, 40, &[key, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, i]);
            tag(1, 0, &[0xAF, 1, 0x21, i]);
        }
        seed
    }

    #[test]
    fn session_harness_over_random_and_mutated_inputs() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let seed = session_seed();
        for i in 0..3000 {
            let input = if i % 3 == 0 {
                let n = rng.next() as usize % 300;
                rng.bytes(n)
            } else {
                let mut input = rng.mutate(&seed);
                if let Some(mode) = input.first_mut() {
                    *mode |= 2;
                }
                input
            };
            rtmp_session(&input);
        }
        // The seed itself runs clean through the prelude and media, so mutations of it
        // exercise media handling, not just the handshake.
        rtmp_session(&seed);
        let outcome = run_session(Limits::default(), true, &seed[7..], &[]);
        assert_eq!(outcome.error, None);
        let media = outcome
            .events
            .iter()
            .filter(|e| matches!(e, Event::Media { .. }))
            .count();
        assert_eq!(media, 3);
        assert!(matches!(
            outcome.events.last(),
            Some(Event::Unpublished { .. })
        ));
    }

    #[test]
    fn flv_harness_over_random_and_mutated_inputs() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let seed = flv_seed();
        for i in 0..3000 {
            let input = if i % 3 == 0 {
                let n = rng.next() as usize % 400;
                rng.bytes(n)
            } else {
                rng.mutate(&seed)
            };
            flv_tags(&input);
        }
        flv_tags(&seed);
    }

    #[test]
    fn playlist_harness_over_random_and_mutated_inputs() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let seed = b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXT-X-PROGRAM-DATE-TIME:2026-11-30T13:32:09.441Z\n#EXTINF:2.000,\n7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.015,\n8.ts\n#EXT-X-ENDLIST\n";
        for i in 0..3000 {
            let input = if i % 3 == 0 {
                let n = rng.next() as usize % 300;
                rng.bytes(n)
            } else {
                rng.mutate(seed)
            };
            playlist_text(&input);
        }
        playlist_text(seed);
        assert!(playlist_parse::parse(std::str::from_utf8(seed).unwrap()).is_ok());
    }
}
