use std::sync::Arc;

use super::*;

fn seg(sequence: u64, duration_ms: u64, discontinuity: bool) -> Segment {
    Segment {
        sequence,
        duration_ms,
        start_wall_ms: 1_764_510_000_000 + sequence * 2000,
        discontinuity,
        starts_with_keyframe: true,
        data: Arc::from(vec![0x47u8; 188]),
    }
}

#[test]
fn renders_a_live_window() {
    let mut p = LivePlaylist::new(3, 2);
    let uris = UriTemplate::new("/hls/{stream}/{session}/{seq}.ts").unwrap();
    for i in 0..5 {
        let gone = p.push(seg(i, 2000 + i * 10, i == 3));
        assert_eq!(gone.map(|s| s.sequence), i.checked_sub(3));
    }
    let text = p.render(&uris, &[("stream", "s1"), ("session", "abc")]);
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:3\n#EXT-X-MEDIA-SEQUENCE:2\n\
         #EXT-X-PROGRAM-DATE-TIME:2025-11-30T13:40:04.000Z\n#EXTINF:2.020,\n/hls/s1/abc/2.ts\n\
         #EXT-X-DISCONTINUITY\n\
         #EXT-X-PROGRAM-DATE-TIME:2025-11-30T13:40:06.000Z\n#EXTINF:2.030,\n/hls/s1/abc/3.ts\n\
         #EXT-X-PROGRAM-DATE-TIME:2025-11-30T13:40:08.000Z\n#EXTINF:2.040,\n/hls/s1/abc/4.ts\n"
    );
    assert!(p.segment(1).is_none(), "left the window");
    assert_eq!(p.segment(4).map(|s| s.sequence), Some(4));
    assert!(p.segment(5).is_none());

    // The discontinuity leaves the window: counted in the header from then on.
    p.push(seg(5, 2000, false));
    assert!(!p.render(&uris, &[]).contains("DISCONTINUITY-SEQUENCE"));
    p.push(seg(6, 2000, false));
    let text = p.render(&uris, &[]);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
    assert!(!text.contains("ENDLIST"));

    p.end();
    assert!(p.render(&uris, &[]).ends_with("#EXT-X-ENDLIST\n"));
    assert!(p.is_ended());
}

#[test]
fn target_duration_covers_every_extinf_and_never_shrinks() {
    let mut p = LivePlaylist::new(2, 2);
    let uris = UriTemplate::new("{seq}.ts").unwrap();
    p.push(seg(0, 2000, false));
    assert!(p.render(&uris, &[]).contains("#EXT-X-TARGETDURATION:2\n"));
    p.push(seg(1, 4001, false));
    assert!(p.render(&uris, &[]).contains("#EXT-X-TARGETDURATION:5\n"));
    // The long segment leaves the window; the target duration stays.
    p.push(seg(2, 2000, false));
    p.push(seg(3, 2000, false));
    assert!(p.render(&uris, &[]).contains("#EXT-X-TARGETDURATION:5\n"));

    // An edited playlist (say, with an inserted longer entry) is still consistent.
    let mut edited = p.snapshot(&uris, &[]);
    edited.entries.push(Entry {
        uri: "ad.ts".into(),
        duration_ms: 7_500,
        program_date_time_ms: None,
        discontinuity: true,
    });
    assert_eq!(edited.effective_target_duration(), 8);
    assert!(edited
        .render()
        .contains("#EXT-X-DISCONTINUITY\n#EXTINF:7.500,\nad.ts\n"));
}

#[test]
fn uri_templates() {
    assert_eq!(UriTemplate::new("seg.ts"), Err(TemplateError::NoSequence));
    assert_eq!(UriTemplate::new("a{seq"), Err(TemplateError::Malformed(1)));
    assert_eq!(
        UriTemplate::new("{seq}/{}"),
        Err(TemplateError::Malformed(6))
    );
    let t = UriTemplate::new("{seq}-{x}-{seq}").unwrap();
    assert_eq!(t.render(7, &[]), "7--7");
    assert_eq!(t.render(7, &[("x", "y")]), "7-y-7");
    let t = UriTemplate::new("https://cdn.example/{session}/{seq}.ts?t=1").unwrap();
    assert_eq!(
        t.render(12, &[("session", "s-9")]),
        "https://cdn.example/s-9/12.ts?t=1"
    );
}

#[test]
fn iso8601_dates() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso8601(1_764_510_000_000), "2025-11-30T13:40:00.000Z");
    assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
}

#[test]
fn segments_are_found_across_a_gap_in_sequence_numbers() {
    // A relaying edge can miss a segment that left its origin's window.
    let mut p = LivePlaylist::new(4, 2);
    for n in [3, 4, 7, 8] {
        p.push(seg(n, 2000, n == 7));
    }
    assert_eq!(p.segment(7).map(|s| s.sequence), Some(7));
    assert_eq!(p.segment(8).map(|s| s.sequence), Some(8));
    assert!(p.segment(5).is_none() && p.segment(2).is_none() && p.segment(9).is_none());
}
