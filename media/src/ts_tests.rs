use std::collections::HashMap;

use super::*;

/// A minimal demuxer: checks packet structure and continuity, returns each PID's PES units
/// (payload bytes from one payload_unit_start to the next) and the PCRs seen.
#[derive(Default)]
pub(crate) struct Demux {
    pub units: HashMap<u16, Vec<Vec<u8>>>,
    pub pcrs: Vec<u64>,
    pub random_access: usize,
    cc: HashMap<u16, u8>,
}

impl Demux {
    pub fn feed(&mut self, ts: &[u8]) {
        assert_eq!(ts.len() % PACKET, 0, "whole packets only");
        for p in ts.chunks(PACKET) {
            assert_eq!(p[0], 0x47, "sync byte");
            let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
            let start = p[1] & 0x40 != 0;
            let afc = (p[3] >> 4) & 3;
            let cc = p[3] & 0x0F;
            if let Some(prev) = self.cc.insert(pid, cc) {
                assert_eq!(cc, (prev + 1) & 0x0F, "continuity on PID {pid:#x}");
            }
            let mut at = 4;
            if afc & 2 != 0 {
                let len = usize::from(p[4]);
                if len > 0 {
                    let flags = p[5];
                    if flags & 0x40 != 0 {
                        self.random_access += 1;
                    }
                    if flags & 0x10 != 0 {
                        let b = &p[6..12];
                        let base = (u64::from(b[0]) << 25)
                            | (u64::from(b[1]) << 17)
                            | (u64::from(b[2]) << 9)
                            | (u64::from(b[3]) << 1)
                            | u64::from(b[4] >> 7);
                        self.pcrs.push(base);
                    }
                }
                at = 5 + len;
            }
            assert!(at <= PACKET);
            let payload = &p[at..];
            let units = self.units.entry(pid).or_default();
            if start {
                units.push(Vec::new());
            }
            if let Some(unit) = units.last_mut() {
                unit.extend_from_slice(payload);
            }
        }
    }
}

/// PTS and DTS and the elementary stream of one PES unit.
pub(crate) fn parse_pes(unit: &[u8]) -> (u64, Option<u64>, &[u8]) {
    assert_eq!(&unit[..3], &[0, 0, 1]);
    let flags = unit[7];
    let header_len = usize::from(unit[8]);
    let ts = |b: &[u8]| {
        (u64::from(b[0] >> 1 & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    };
    let pts = ts(&unit[9..14]);
    let dts = (flags & 0x40 != 0).then(|| ts(&unit[14..19]));
    let es = &unit[9 + header_len..];
    let declared = usize::from(u16::from_be_bytes([unit[4], unit[5]]));
    if declared > 0 {
        assert_eq!(declared, unit.len() - 6, "PES length");
    }
    (pts, dts, es)
}

#[test]
fn crc_matches_the_mpeg2_check_value() {
    assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
}

#[test]
fn tables_are_valid_sections() {
    let mut out = Vec::new();
    let mut mux = TsMuxer::new();
    mux.write_tables(&mut out);
    assert_eq!(out.len(), 2 * PACKET);
    for (i, p) in out.chunks(PACKET).enumerate() {
        let section_len = (usize::from(p[6] & 0x0F) << 8) | usize::from(p[7]);
        let section = &p[5..8 + section_len];
        // A section whose CRC is appended has a CRC of zero over the whole.
        assert_eq!(crc32_mpeg2(section), 0, "table {i}");
    }
    // PMT lists H.264 (0x1B) and AAC ADTS (0x0F).
    let pmt = &out[PACKET..];
    assert_eq!(pmt[5 + 12], 0x1B);
    assert_eq!(pmt[5 + 17], 0x0F);
}

#[test]
fn pes_of_every_size_roundtrip_with_timestamps_and_stuffing() {
    let mut mux = TsMuxer::new();
    let mut out = Vec::new();
    let mut sent = Vec::new();
    // Sizes around packet boundaries, including ones that need 1 and 2 stuffing bytes.
    for len in (0..400).chain([1000, 65_000, 70_000]) {
        let es: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let pts = 900_000 + len as u64 * 3000;
        let dts = pts - 3000;
        mux.write_video(pts, dts, dts - 100, len % 2 == 0, &es, &mut out);
        mux.write_audio(pts, &es[..len.min(2000)], &mut out);
        sent.push((pts, dts, es));
    }
    let mut demux = Demux::default();
    demux.feed(&out);
    let video = &demux.units[&VIDEO_PID];
    let audio = &demux.units[&AUDIO_PID];
    assert_eq!(video.len(), sent.len());
    for (i, (pts, dts, es)) in sent.iter().enumerate() {
        let (vp, vd, ves) = parse_pes(&video[i]);
        assert_eq!((vp, vd, ves), (*pts, Some(*dts), &es[..]));
        let (ap, ad, aes) = parse_pes(&audio[i]);
        assert_eq!((ap, ad, aes), (*pts, None, &es[..es.len().min(2000)]));
    }
    assert_eq!(demux.pcrs.len(), sent.len());
    assert_eq!(demux.pcrs[0], sent[0].1 - 100);
    let keyframes = sent.iter().filter(|(_, _, es)| es.len() % 2 == 0).count();
    assert_eq!(demux.random_access, keyframes);
}

#[test]
fn timestamps_wrap_at_33_bits() {
    let mut mux = TsMuxer::new();
    let mut out = Vec::new();
    mux.write_audio((1 << 33) + 5, &[1, 2, 3], &mut out);
    let mut demux = Demux::default();
    demux.feed(&out);
    assert_eq!(parse_pes(&demux.units[&AUDIO_PID][0]).0, 5);
}

#[test]
fn annex_b_adds_delimiter_and_parameter_sets_on_keyframes() {
    let config = AvcConfig {
        profile: 66,
        compatibility: 0,
        level: 30,
        nalu_length_size: 4,
        sps: vec![vec![0x67, 1]],
        pps: vec![vec![0x68, 2]],
    };
    let mut key = Vec::new();
    annex_b(&config, &[&[0x09, 0x10], &[0x65, 7]], true, &mut key);
    assert_eq!(
        key,
        [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 7]
    );
    let mut delta = Vec::new();
    annex_b(&config, &[&[0x41, 7]], false, &mut delta);
    assert_eq!(delta, [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x41, 7]);
}
