//! An MPEG-TS (ISO/IEC 13818-1) muxer for one H.264 and one AAC elementary stream.
//!
//! Output is whole 188-byte packets: PAT and PMT, then PES packets with PTS/DTS on a 90 kHz
//! clock, a PCR on the video PID, continuity counters per PID, and adaptation-field stuffing
//! to fill the last packet of each PES.

use crate::flv::{AacConfig, AvcConfig};

/// Size of a transport stream packet.
pub const PACKET: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 stream (also carries the PCR).
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC stream.
pub const AUDIO_PID: u16 = 0x101;
const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
const PTS_MASK: u64 = (1 << 33) - 1;

/// Converts an AVC sample (length-prefixed NALUs) to Annex B: an access unit delimiter first,
/// then SPS and PPS before a keyframe, then each NALU behind a start code.
pub fn annex_b(config: &AvcConfig, nalus: &[&[u8]], keyframe: bool, out: &mut Vec<u8>) {
    const START: [u8; 4] = [0, 0, 0, 1];
    out.extend_from_slice(&START);
    out.extend_from_slice(&[0x09, 0xF0]);
    if keyframe {
        for set in config.sps.iter().chain(&config.pps) {
            out.extend_from_slice(&START);
            out.extend_from_slice(set);
        }
    }
    for nalu in nalus {
        // The sample's own delimiters would duplicate ours.
        if nalu.first().is_some_and(|b| b & 0x1F == 9) {
            continue;
        }
        out.extend_from_slice(&START);
        out.extend_from_slice(nalu);
    }
}

/// Wraps one raw AAC frame in an ADTS header.
pub fn adts(config: &AacConfig, frame: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&config.adts_header(frame.len()));
    out.extend_from_slice(frame);
}

/// The muxer: tables and PES packets, continuity counters kept across calls.
#[derive(Debug, Default)]
pub struct TsMuxer {
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

impl TsMuxer {
    /// A muxer with every continuity counter at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a PAT and a PMT (each segment starts with them).
    pub fn write_tables(&mut self, out: &mut Vec<u8>) {
        // PAT: program 1 -> PMT PID.
        let mut pat = vec![0x00, 0xB0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&(0xE000 | PMT_PID).to_be_bytes());
        finish_section(&mut pat);
        write_section(0, &pat, &mut self.cc_pat, out);

        // PMT: PCR on the video PID, H.264 and AAC ADTS streams.
        let mut pmt = vec![0x02, 0xB0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
        pmt.extend_from_slice(&(0xE000 | VIDEO_PID).to_be_bytes());
        pmt.extend_from_slice(&[0xF0, 0x00]);
        for (stream_type, pid) in [
            (STREAM_TYPE_H264, VIDEO_PID),
            (STREAM_TYPE_AAC_ADTS, AUDIO_PID),
        ] {
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xE000 | pid).to_be_bytes());
            pmt.extend_from_slice(&[0xF0, 0x00]);
        }
        finish_section(&mut pmt);
        write_section(PMT_PID, &pmt, &mut self.cc_pmt, out);
    }

    /// Writes one video access unit (Annex B) with its 90 kHz PTS and DTS. The PCR goes
    /// into the first packet, `pcr` ticks of 90 kHz (at or before the DTS).
    pub fn write_video(
        &mut self,
        pts: u64,
        dts: u64,
        pcr: u64,
        keyframe: bool,
        es: &[u8],
        out: &mut Vec<u8>,
    ) {
        let header = pes_header(0xE0, pts, Some(dts), es.len(), true);
        let first = FirstPacket {
            pcr: Some(pcr),
            random_access: keyframe,
        };
        write_pes(VIDEO_PID, &header, es, first, &mut self.cc_video, out);
    }

    /// Writes one audio PES (one or more ADTS frames) with its 90 kHz PTS.
    pub fn write_audio(&mut self, pts: u64, es: &[u8], out: &mut Vec<u8>) {
        let header = pes_header(0xC0, pts, None, es.len(), false);
        let first = FirstPacket {
            pcr: None,
            random_access: false,
        };
        write_pes(AUDIO_PID, &header, es, first, &mut self.cc_audio, out);
    }
}

struct FirstPacket {
    pcr: Option<u64>,
    random_access: bool,
}

fn pes_header(stream_id: u8, pts: u64, dts: Option<u64>, es_len: usize, video: bool) -> Vec<u8> {
    let dts = dts.filter(|&d| d != pts);
    let optional_len = if dts.is_some() { 10 } else { 5 };
    let mut h = vec![0, 0, 1, stream_id];
    let pes_len = 3 + optional_len + es_len;
    // Video PES may leave the length 0 (unbounded); audio always fits.
    let field = if video || pes_len > 0xFFFF {
        0
    } else {
        pes_len as u16
    };
    h.extend_from_slice(&field.to_be_bytes());
    h.push(0x80); // marker bits
    h.push(if dts.is_some() { 0xC0 } else { 0x80 });
    h.push(optional_len as u8);
    push_timestamp(&mut h, if dts.is_some() { 0x3 } else { 0x2 }, pts);
    if let Some(dts) = dts {
        push_timestamp(&mut h, 0x1, dts);
    }
    h
}

fn push_timestamp(h: &mut Vec<u8>, prefix: u8, ts: u64) {
    let ts = ts & PTS_MASK;
    h.push((prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1);
    h.extend_from_slice(&((((ts >> 15) & 0x7FFF) << 1) as u16 | 1).to_be_bytes());
    h.extend_from_slice(&((((ts & 0x7FFF) << 1) as u16) | 1).to_be_bytes());
}

fn write_pes(
    pid: u16,
    header: &[u8],
    es: &[u8],
    first: FirstPacket,
    cc: &mut u8,
    out: &mut Vec<u8>,
) {
    let mut rest_header = header;
    let mut rest = es;
    let mut start = true;
    while start || !rest_header.is_empty() || !rest.is_empty() {
        let mut adaptation: Vec<u8> = Vec::new();
        if start {
            let mut flags = 0u8;
            if first.random_access {
                flags |= 0x40;
            }
            if let Some(pcr) = first.pcr {
                flags |= 0x10;
                adaptation.push(flags);
                let base = pcr & PTS_MASK;
                adaptation.extend_from_slice(&[
                    (base >> 25) as u8,
                    (base >> 17) as u8,
                    (base >> 9) as u8,
                    (base >> 1) as u8,
                    (((base & 1) as u8) << 7) | 0x7E,
                    0,
                ]);
            } else if flags != 0 {
                adaptation.push(flags);
            }
        }
        let room = |adaptation_len: usize| {
            // 4 header bytes, plus a length byte whenever an adaptation field is present.
            PACKET
                - 4
                - if adaptation_len > 0 {
                    1 + adaptation_len
                } else {
                    0
                }
        };
        let available = rest_header.len() + rest.len();
        let mut payload_room = room(adaptation.len());
        if available < payload_room {
            // Stuff: grow the adaptation field so the payload exactly fills the packet.
            if adaptation.is_empty() {
                let stuffing = payload_room - available;
                // One byte: a zero-length field; more: flags byte then 0xFF.
                if stuffing >= 2 {
                    adaptation.push(0);
                    adaptation.extend(std::iter::repeat_n(0xFF, stuffing - 2));
                } else {
                    adaptation = Vec::new();
                }
                payload_room = available;
                write_packet(pid, start, cc, &adaptation, stuffing == 1, out);
            } else {
                adaptation.extend(std::iter::repeat_n(0xFF, payload_room - available));
                payload_room = available;
                write_packet(pid, start, cc, &adaptation, false, out);
            }
        } else {
            write_packet(pid, start, cc, &adaptation, false, out);
        }
        let from_header = payload_room.min(rest_header.len());
        out.extend_from_slice(&rest_header[..from_header]);
        rest_header = &rest_header[from_header..];
        let from_es = payload_room - from_header;
        out.extend_from_slice(&rest[..from_es]);
        rest = &rest[from_es..];
        start = false;
    }
}

/// Writes the 4-byte header and the adaptation field; the caller appends the payload.
fn write_packet(
    pid: u16,
    start: bool,
    cc: &mut u8,
    adaptation: &[u8],
    empty_adaptation: bool,
    out: &mut Vec<u8>,
) {
    let has_adaptation = !adaptation.is_empty() || empty_adaptation;
    out.push(0x47);
    out.push((u8::from(start) << 6) | ((pid >> 8) as u8 & 0x1F));
    out.push(pid as u8);
    out.push(if has_adaptation { 0x30 } else { 0x10 } | *cc);
    *cc = (*cc + 1) & 0x0F;
    if has_adaptation {
        out.push(adaptation.len() as u8);
        out.extend_from_slice(adaptation);
    }
}

fn write_section(pid: u16, section: &[u8], cc: &mut u8, out: &mut Vec<u8>) {
    out.push(0x47);
    out.push(0x40 | ((pid >> 8) as u8 & 0x1F));
    out.push(pid as u8);
    out.push(0x10 | *cc);
    *cc = (*cc + 1) & 0x0F;
    out.push(0); // pointer field
    out.extend_from_slice(section);
    let used = 5 + section.len();
    out.extend(std::iter::repeat_n(0xFF, PACKET - used));
}

/// Fills in the section length and appends the CRC.
fn finish_section(section: &mut Vec<u8>) {
    let len = section.len() - 3 + 4;
    section[1] = 0xB0 | ((len >> 8) as u8 & 0x0F);
    section[2] = len as u8;
    let crc = crc32_mpeg2(section);
    section.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32/MPEG-2: polynomial 0x04C11DB7, initial 0xFFFFFFFF, no reflection, no final xor.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
#[path = "ts_tests.rs"]
pub(crate) mod tests;
