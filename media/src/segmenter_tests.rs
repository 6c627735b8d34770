use super::*;
use crate::ts::tests::{parse_pes, Demux};
use crate::ts::{AUDIO_PID, VIDEO_PID};

const WALL: u64 = 1_764_500_000_000;

fn avc_header() -> Vec<u8> {
    let mut body = vec![
        0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1, 0, 3, 0x67, 0x42, 0xC0,
    ];
    body.extend_from_slice(&[1, 0, 2, 0x68, 0xCE]);
    body
}

fn frame(keyframe: bool, n: u8) -> Vec<u8> {
    let nal = if keyframe { 0x65 } else { 0x41 };
    vec![
        if keyframe { 0x17 } else { 0x27 },
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        3,
        nal,
        n,
        n,
    ]
}

const AAC_HEADER: [u8; 4] = [0xAF, 0, 0x12, 0x10];
const AAC_FRAME: [u8; 5] = [0xAF, 1, 0x21, 0x10, 0x05];

/// Feeds `secs` of 25 fps video (keyframe every `gop` frames) and 44.1 kHz audio starting at
/// RTMP time `t0`; returns the segments closed on the way.
fn feed(s: &mut Segmenter, t0: u32, secs: u32, gop: u32) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut push = |s: &mut Segmenter, kind, ts: u32, body: &[u8]| {
        let wall = WALL + u64::from(ts.wrapping_sub(t0));
        if let Some(seg) = s.push(kind, ts, body, wall).unwrap() {
            out.push(seg);
        }
    };
    push(s, MediaKind::Video, t0, &avc_header());
    push(s, MediaKind::Audio, t0, &AAC_HEADER);
    let frames = secs * 25;
    let mut audio_ms = 0u32;
    for i in 0..frames {
        let video_ms = i * 40;
        while audio_ms <= video_ms {
            push(s, MediaKind::Audio, t0.wrapping_add(audio_ms), &AAC_FRAME);
            audio_ms += 23;
        }
        let key = i % gop == 0;
        push(
            s,
            MediaKind::Video,
            t0.wrapping_add(video_ms),
            &frame(key, i as u8),
        );
    }
    out
}

#[test]
fn cuts_at_the_first_keyframe_after_the_target() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    // Keyframe every 30 frames (1.2 s): cuts at 2.4 s, 4.8 s, 7.2 s.
    let mut segs = feed(&mut s, 0, 9, 30);
    segs.extend(s.finish());
    let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations, vec![2400, 2400, 2400, 1800]);
    let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(segs[0].start_wall_ms, WALL);
    assert_eq!(segs[1].start_wall_ms, WALL + 2400);
    assert!(segs
        .iter()
        .all(|s| s.starts_with_keyframe && !s.discontinuity));
    assert!(s.finish().is_none());

    // Each segment is a standalone TS: tables, a keyframe first, audio and video PES.
    for seg in &segs {
        let mut demux = Demux::default();
        demux.feed(&seg.data);
        let video = &demux.units[&VIDEO_PID];
        let first = parse_pes(&video[0]).2;
        // AUD, SPS, PPS, IDR.
        assert_eq!(&first[..6], &[0, 0, 0, 1, 0x09, 0xF0]);
        assert_eq!(&first[6..11], &[0, 0, 0, 1, 0x67]);
        assert_eq!(video.len() as u64, seg.duration_ms / 40);
        let audio = &demux.units[&AUDIO_PID];
        let (_, _, adts) = parse_pes(&audio[0]);
        assert_eq!(&adts[..2], &[0xFF, 0xF1]);
        assert_eq!(&adts[7..], &AAC_FRAME[2..]);
    }
}

#[test]
fn first_segment_waits_for_a_keyframe() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    s.push(MediaKind::Video, 0, &avc_header(), WALL).unwrap();
    for i in 1..5 {
        assert_eq!(
            s.push(MediaKind::Video, i * 40, &frame(false, 0), WALL)
                .unwrap(),
            None
        );
    }
    feed(&mut s, 200, 1, 25);
    let seg = s.finish().unwrap();
    assert_eq!(seg.duration_ms, 1000);
}

#[test]
fn reconnect_flags_a_discontinuity_and_the_timeline_continues() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    let mut segs = feed(&mut s, 0, 4, 25);
    segs.extend(s.restart());
    // The new publisher starts again at 0 with new sequence headers.
    segs.extend(feed(&mut s, 0, 4, 25));
    segs.extend(s.finish());
    let flags: Vec<bool> = segs.iter().map(|s| s.discontinuity).collect();
    assert_eq!(flags, vec![false, false, true, false]);
    let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);

    // PTS keeps going up across the reconnect.
    let first_pts = |seg: &Segment| {
        let mut demux = Demux::default();
        demux.feed(&seg.data);
        parse_pes(&demux.units[&VIDEO_PID][0]).0
    };
    assert!(first_pts(&segs[2]) > first_pts(&segs[1]));
    assert_eq!(
        first_pts(&segs[2]) - first_pts(&segs[1]),
        u64::from(2000u32 * 90)
    );
}

#[test]
fn timestamp_wrap_and_jumps_keep_the_timeline_continuous() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    // Starts 1 s before the 32-bit wrap.
    let mut segs = feed(&mut s, u32::MAX - 999, 4, 25);
    segs.extend(s.finish());
    let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations, vec![2000, 2000]);
    assert_eq!(s.timestamp_jumps(), 0);

    // A publisher that jumps an hour ahead mid-stream.
    let mut s = Segmenter::new(SegmenterConfig::default());
    let mut segs = feed(&mut s, 0, 3, 25);
    segs.extend(feed(&mut s, 3_600_000, 3, 25));
    segs.extend(s.finish());
    assert_eq!(s.timestamp_jumps(), 1);
    assert!(segs.iter().all(|seg| seg.duration_ms <= 3000), "{segs:?}");
}

#[test]
fn samples_before_sequence_headers_and_foreign_codecs_are_typed_errors() {
    let mut s = Segmenter::new(SegmenterConfig::default());
    assert_eq!(
        s.push(MediaKind::Video, 0, &frame(true, 0), WALL),
        Err(SegmenterError::VideoBeforeSequenceHeader)
    );
    assert_eq!(
        s.push(MediaKind::Audio, 0, &AAC_FRAME, WALL),
        Err(SegmenterError::AudioBeforeSequenceHeader)
    );
    let err = s
        .push(MediaKind::Video, 0, &[0x1C, 0, 0, 0, 0], WALL)
        .unwrap_err();
    assert!(err.is_unsupported_codec());
    assert!(err.to_string().contains("HEVC"));
    assert!(!SegmenterError::VideoBeforeSequenceHeader.is_unsupported_codec());
    // Still usable afterwards.
    feed(&mut s, 0, 1, 25);
    assert!(s.finish().is_some());
}

#[test]
fn a_stream_without_keyframes_is_cut_at_the_bounds() {
    let config = SegmenterConfig {
        max_segment_ms: 5_000,
        ..SegmenterConfig::default()
    };
    let mut s = Segmenter::new(config);
    // One keyframe, then only delta frames for 12 s.
    let segs = feed(&mut s, 0, 12, 10_000);
    let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations, vec![5000, 5000]);
    assert!(segs[0].starts_with_keyframe);
    assert!(!segs[1].starts_with_keyframe);

    let config = SegmenterConfig {
        max_segment_bytes: 20_000,
        ..SegmenterConfig::default()
    };
    let mut s = Segmenter::new(config);
    let segs = feed(&mut s, 0, 12, 10_000);
    assert!(segs.len() > 3);
    assert!(segs.iter().all(|seg| seg.data.len() < 20_000 + 2 * 188 * 4));
}
