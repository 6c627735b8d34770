//! FLV tag bodies as RTMP carries them: AVC (H.264) video and AAC audio.
//!
//! Other codecs are refused with an error that names them, so the operator's log says why a
//! publisher was turned away.

use thiserror::Error;

/// Why a tag body could not be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FlvError {
    /// An empty tag body.
    #[error("empty {0} tag")]
    Empty(&'static str),
    /// A video codec other than AVC.
    #[error("unsupported video codec {name} (FLV codec id {id})")]
    UnsupportedVideoCodec {
        /// FLV codec id (or the enhanced-RTMP packet type for FourCC tags).
        id: u8,
        /// Human-readable name.
        name: String,
    },
    /// An audio codec other than AAC.
    #[error("unsupported audio codec {name} (FLV sound format {id})")]
    UnsupportedAudioCodec {
        /// FLV sound format.
        id: u8,
        /// Human-readable name.
        name: &'static str,
    },
    /// A tag body shorter than its headers.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// An AVCPacketType other than 0, 1, 2.
    #[error("unknown AVC packet type {0}")]
    AvcPacketType(u8),
    /// An AACPacketType other than 0, 1.
    #[error("unknown AAC packet type {0}")]
    AacPacketType(u8),
    /// An AVCDecoderConfigurationRecord that cannot be used.
    #[error("bad AVCDecoderConfigurationRecord: {0}")]
    BadAvcConfig(&'static str),
    /// An AudioSpecificConfig that cannot be carried in ADTS.
    #[error("bad AudioSpecificConfig: {0}")]
    BadAacConfig(&'static str),
    /// A NALU length prefix running past the end of the tag.
    #[error("NALU length {len} runs past the end of the tag")]
    NaluOverrun {
        /// Claimed length.
        len: usize,
    },
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// AVCProfileIndication.
    pub profile: u8,
    /// profile_compatibility.
    pub compatibility: u8,
    /// AVCLevelIndication.
    pub level: u8,
    /// Bytes in each NALU length prefix (1, 2 or 4).
    pub nalu_length_size: u8,
    /// Sequence parameter sets.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets.
    pub pps: Vec<Vec<u8>>,
}

/// An AudioSpecificConfig (ISO/IEC 14496-3), the part ADTS can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC LC).
    pub object_type: u8,
    /// Sampling frequency index (0 to 12).
    pub sampling_index: u8,
    /// Channel configuration (1 to 7).
    pub channels: u8,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl AacConfig {
    /// Samples per second (0 for an index outside the table, which the parser never yields).
    pub fn sample_rate(&self) -> u32 {
        SAMPLE_RATES
            .get(usize::from(self.sampling_index))
            .copied()
            .unwrap_or(0)
    }

    /// The 7-byte ADTS header for a raw frame of `payload_len` bytes (no CRC).
    pub fn adts_header(&self, payload_len: usize) -> [u8; 7] {
        // Frame length is 13 bits; callers keep frames far below that (AAC frames are < 6 KiB).
        let len = (payload_len + 7).min(0x1FFF);
        // Masks keep a hand-built config from overflowing its bit fields.
        let profile = self.object_type.saturating_sub(1) & 3;
        [
            0xFF,
            0xF1, // MPEG-4, layer 0, no CRC
            (profile << 6) | ((self.sampling_index & 0x0F) << 2) | ((self.channels >> 2) & 1),
            ((self.channels & 3) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            (((len & 7) as u8) << 5) | 0x1F,
            0xFC,
        ]
    }
}

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVCPacketType 0.
    SequenceHeader(AvcConfig),
    /// AVCPacketType 1: length-prefixed NALUs.
    Nalus {
        /// FrameType 1 (keyframe).
        keyframe: bool,
        /// Composition time offset in milliseconds (PTS - DTS).
        composition_time: i32,
        /// The NALUs, still length-prefixed; see [`split_nalus`].
        data: &'a [u8],
    },
    /// AVCPacketType 2.
    EndOfSequence,
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AACPacketType 0.
    SequenceHeader(AacConfig),
    /// AACPacketType 1: one raw AAC frame.
    Raw(&'a [u8]),
}

/// Parses a video tag body.
pub fn parse_video(body: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let &b0 = body.first().ok_or(FlvError::Empty("video"))?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: a FourCC names the codec.
        let fourcc = body
            .get(1..5)
            .ok_or(FlvError::Truncated("enhanced video header"))?;
        let name = match fourcc {
            b"hvc1" => "HEVC".to_owned(),
            b"av01" => "AV1".to_owned(),
            b"vp09" => "VP9".to_owned(),
            other => format!("FourCC {}", String::from_utf8_lossy(other)),
        };
        return Err(FlvError::UnsupportedVideoCodec {
            id: b0 & 0x0F,
            name,
        });
    }
    let codec = b0 & 0x0F;
    if codec != 7 {
        let name = match codec {
            1 => "JPEG",
            2 => "Sorenson H.263",
            3 => "Screen video",
            4 => "On2 VP6",
            5 => "On2 VP6 with alpha",
            6 => "Screen video v2",
            12 => "HEVC",
            13 => "AV1",
            _ => "unknown",
        };
        return Err(FlvError::UnsupportedVideoCodec {
            id: codec,
            name: name.to_owned(),
        });
    }
    let keyframe = b0 >> 4 == 1;
    let header = body
        .get(1..5)
        .ok_or(FlvError::Truncated("AVC video header"))?;
    // Composition time: signed 24-bit.
    let cts = i32::from_be_bytes([header[1], header[2], header[3], 0]) >> 8;
    match header[0] {
        0 => Ok(VideoTag::SequenceHeader(parse_avc_config(&body[5..])?)),
        1 => Ok(VideoTag::Nalus {
            keyframe,
            composition_time: cts,
            data: &body[5..],
        }),
        2 => Ok(VideoTag::EndOfSequence),
        other => Err(FlvError::AvcPacketType(other)),
    }
}

/// Parses an AVCDecoderConfigurationRecord.
pub fn parse_avc_config(rec: &[u8]) -> Result<AvcConfig, FlvError> {
    let head = rec.get(..6).ok_or(FlvError::BadAvcConfig("truncated"))?;
    if head[0] != 1 {
        return Err(FlvError::BadAvcConfig("configurationVersion is not 1"));
    }
    let nalu_length_size = (head[4] & 3) + 1;
    if nalu_length_size == 3 {
        return Err(FlvError::BadAvcConfig("NALU length size 3"));
    }
    let mut at = 6;
    let sps = parameter_sets(rec, &mut at, usize::from(head[5] & 0x1F))?;
    let pps_count = rec
        .get(at)
        .copied()
        .ok_or(FlvError::BadAvcConfig("missing PPS count"))?;
    at += 1;
    let pps = parameter_sets(rec, &mut at, usize::from(pps_count))?;
    if sps.is_empty() || pps.is_empty() {
        return Err(FlvError::BadAvcConfig("no SPS or no PPS"));
    }
    Ok(AvcConfig {
        profile: head[1],
        compatibility: head[2],
        level: head[3],
        nalu_length_size,
        sps,
        pps,
    })
}

fn parameter_sets(rec: &[u8], at: &mut usize, count: usize) -> Result<Vec<Vec<u8>>, FlvError> {
    let mut out = Vec::new();
    for _ in 0..count {
        let len = rec
            .get(*at..*at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or(FlvError::BadAvcConfig("truncated parameter set"))?;
        let set = rec
            .get(*at + 2..*at + 2 + len)
            .ok_or(FlvError::BadAvcConfig("truncated parameter set"))?;
        out.push(set.to_vec());
        *at += 2 + len;
    }
    Ok(out)
}

/// Splits length-prefixed NALUs (an AVC sample) into NALU bodies.
pub fn split_nalus(data: &[u8], length_size: u8) -> Result<Vec<&[u8]>, FlvError> {
    let size = usize::from(length_size);
    let mut nalus = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let prefix = data
            .get(at..at + size)
            .ok_or(FlvError::Truncated("NALU length prefix"))?;
        let len = prefix
            .iter()
            .fold(0usize, |n, &b| (n << 8) | usize::from(b));
        at += size;
        let nalu = data
            .get(at..at.saturating_add(len))
            .ok_or(FlvError::NaluOverrun { len })?;
        if !nalu.is_empty() {
            nalus.push(nalu);
        }
        at += len;
    }
    Ok(nalus)
}

/// Parses an audio tag body.
pub fn parse_audio(body: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let &b0 = body.first().ok_or(FlvError::Empty("audio"))?;
    let format = b0 >> 4;
    if format != 10 {
        let name = match format {
            0 => "Linear PCM (platform endian)",
            1 => "ADPCM",
            2 => "MP3",
            3 => "Linear PCM (little endian)",
            4 => "Nellymoser 16 kHz",
            5 => "Nellymoser 8 kHz",
            6 => "Nellymoser",
            7 => "G.711 A-law",
            8 => "G.711 mu-law",
            9 => "reserved",
            11 => "Speex",
            14 => "MP3 8 kHz",
            15 => "device-specific",
            _ => "unknown",
        };
        return Err(FlvError::UnsupportedAudioCodec { id: format, name });
    }
    match body.get(1) {
        Some(0) => Ok(AudioTag::SequenceHeader(parse_aac_config(&body[2..])?)),
        Some(1) => Ok(AudioTag::Raw(&body[2..])),
        Some(&other) => Err(FlvError::AacPacketType(other)),
        None => Err(FlvError::Truncated("AAC packet type")),
    }
}

/// Parses an AudioSpecificConfig into what an ADTS header needs.
pub fn parse_aac_config(asc: &[u8]) -> Result<AacConfig, FlvError> {
    let b = asc.get(..2).ok_or(FlvError::BadAacConfig("truncated"))?;
    let object_type = b[0] >> 3;
    let sampling_index = ((b[0] & 7) << 1) | (b[1] >> 7);
    let channels = (b[1] >> 3) & 0x0F;
    if !(1..=4).contains(&object_type) {
        // ADTS has two bits of profile: Main, LC, SSR, LTP. HE-AAC signals itself as LC there,
        // but its config here would need the extension parsed; refuse it by name.
        return Err(FlvError::BadAacConfig(
            "object type not expressible in ADTS (only AAC Main, LC, SSR, LTP)",
        ));
    }
    if sampling_index > 12 {
        return Err(FlvError::BadAacConfig(
            "explicit or reserved sampling frequency",
        ));
    }
    if !(1..=7).contains(&channels) {
        return Err(FlvError::BadAacConfig(
            "channel configuration outside 1..=7",
        ));
    }
    Ok(AacConfig {
        object_type,
        sampling_index,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An avcC record as x264 writes it for a 320x240 stream (SPS/PPS shortened).
    pub(crate) fn avcc() -> Vec<u8> {
        let sps = [0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x41, 0x41];
        let pps = [0x68, 0xCE, 0x3C, 0x80];
        let mut rec = vec![1, 0x42, 0xC0, 0x0D, 0xFF, 0xE1, 0, sps.len() as u8];
        rec.extend_from_slice(&sps);
        rec.extend_from_slice(&[1, 0, pps.len() as u8]);
        rec.extend_from_slice(&pps);
        rec
    }

    #[test]
    fn avc_sequence_header_and_nalus() {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend(avcc());
        let VideoTag::SequenceHeader(cfg) = parse_video(&body).unwrap() else {
            panic!("not a sequence header")
        };
        assert_eq!(cfg.nalu_length_size, 4);
        assert_eq!(
            cfg.sps,
            vec![vec![0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x41, 0x41]]
        );
        assert_eq!(cfg.pps, vec![vec![0x68, 0xCE, 0x3C, 0x80]]);

        let body = [
            0x27, 1, 0xFF, 0xFF, 0xD8, 0, 0, 0, 2, 0x41, 0x9A, 0, 0, 0, 1, 0x01,
        ];
        let tag = parse_video(&body).unwrap();
        let VideoTag::Nalus {
            keyframe,
            composition_time,
            data,
        } = tag
        else {
            panic!("not NALUs")
        };
        assert!(!keyframe);
        assert_eq!(composition_time, -40);
        assert_eq!(
            split_nalus(data, 4).unwrap(),
            vec![&[0x41, 0x9A][..], &[0x01]]
        );
        assert_eq!(
            parse_video(&[0x17, 2, 0, 0, 0]).unwrap(),
            VideoTag::EndOfSequence
        );
    }

    #[test]
    fn unsupported_codecs_are_named() {
        let err = parse_video(&[0x1C, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            err,
            FlvError::UnsupportedVideoCodec {
                id: 12,
                name: "HEVC".into()
            }
        );
        assert!(err.to_string().contains("HEVC"));
        let err = parse_video(&[0x90, b'h', b'v', b'c', b'1']).unwrap_err();
        assert!(err.to_string().contains("HEVC"), "{err}");
        let err = parse_video(&[0x14, 0]).unwrap_err();
        assert!(err.to_string().contains("VP6"), "{err}");
        let err = parse_audio(&[0x2F, 0]).unwrap_err();
        assert_eq!(err, FlvError::UnsupportedAudioCodec { id: 2, name: "MP3" });
    }

    #[test]
    fn aac_config_and_adts_header() {
        // AAC LC, 44.1 kHz, stereo: 0x12 0x10.
        let AudioTag::SequenceHeader(cfg) = parse_audio(&[0xAF, 0, 0x12, 0x10]).unwrap() else {
            panic!("not a sequence header")
        };
        assert_eq!(
            cfg,
            AacConfig {
                object_type: 2,
                sampling_index: 4,
                channels: 2
            }
        );
        assert_eq!(cfg.sample_rate(), 44100);
        // ffmpeg writes this header for a 371-byte LC stereo 44.1 kHz frame (378 with header).
        assert_eq!(
            cfg.adts_header(371),
            [0xFF, 0xF1, 0x50, 0x80, 0x2F, 0x5F, 0xFC]
        );
        assert_eq!(
            parse_audio(&[0xAF, 1, 9, 9]).unwrap(),
            AudioTag::Raw(&[9, 9])
        );
        // HE-AAC (5) and 8 channels are refused.
        assert!(parse_aac_config(&[0x2A, 0x10]).is_err());
        assert!(parse_aac_config(&[0x12, 0x00]).is_err());
    }

    #[test]
    fn truncations_and_garbage_are_errors() {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend(avcc());
        for cut in 0..body.len() {
            assert!(parse_video(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            parse_video(&[0x17, 9, 0, 0, 0]),
            Err(FlvError::AvcPacketType(9))
        );
        assert_eq!(parse_audio(&[]), Err(FlvError::Empty("audio")));
        assert_eq!(
            parse_audio(&[0xAF]),
            Err(FlvError::Truncated("AAC packet type"))
        );
        assert_eq!(
            split_nalus(&[0, 0, 0, 9, 1], 4),
            Err(FlvError::NaluOverrun { len: 9 })
        );
        assert_eq!(
            split_nalus(&[0xFF, 0xFF, 0xFF, 0xFF], 4),
            Err(FlvError::NaluOverrun { len: 0xFFFF_FFFF })
        );
        assert!(split_nalus(&[0, 0], 4).is_err());
        // avcC with NALU length size 3.
        let mut rec = avcc();
        rec[4] = 0xFE;
        assert!(parse_avc_config(&rec).is_err());
    }
}
