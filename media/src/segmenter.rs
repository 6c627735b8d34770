//! Cuts a published stream into MPEG-TS segments at keyframes.
//!
//! Rules (see docs/media.md):
//! - A segment starts at a video keyframe and is cut at the first keyframe at or after the
//!   target duration. Audio and video before the first keyframe are dropped.
//! - A segment that reaches `max_segment_ms` or `max_segment_bytes` with no keyframe in sight
//!   is cut anyway, so memory stays bounded whatever the publisher sends.
//! - Timestamps map onto one continuous output timeline: RTMP's 32-bit wrap is followed, and a
//!   jump of more than `max_jump_ms` either way is absorbed (the timeline carries on from the
//!   last sample) instead of leaving a hole or going backwards.
//! - [`Segmenter::restart`] marks a publisher reconnect: the current segment is closed and the
//!   next one carries the discontinuity flag.
//! - Wall time is an input: each segment's start wall time is the wall time given with the
//!   first sample after a (re)start plus media time since then.

use std::sync::Arc;

use thiserror::Error;

use crate::flv::{self, AacConfig, AudioTag, AvcConfig, FlvError, VideoTag};
use crate::ts::{self, TsMuxer};
use crate::MediaKind;

/// 90 kHz ticks between the PCR and the DTS (700 ms, as ffmpeg's muxer delay).
const MUX_DELAY_90K: u64 = 63_000;
/// Where the output timeline starts, so early audio slightly before the first video sample
/// never maps below zero.
const TIMELINE_START_MS: u64 = 10_000;

/// Segmenter settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Cut at the first keyframe at or after this much media time (milliseconds).
    pub target_duration_ms: u64,
    /// Cut without a keyframe once a segment is this long (milliseconds).
    pub max_segment_ms: u64,
    /// Cut without a keyframe once a segment holds this many bytes.
    pub max_segment_bytes: usize,
    /// A timestamp step larger than this (either way) is a jump and is absorbed.
    pub max_jump_ms: u64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            target_duration_ms: 2_000,
            max_segment_ms: 20_000,
            max_segment_bytes: 64 * 1024 * 1024,
            max_jump_ms: 10_000,
        }
    }
}

/// One finished segment: immutable bytes shared by everyone who serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Media sequence number, from 0, never reused by one segmenter.
    pub sequence: u64,
    /// Media duration in milliseconds.
    pub duration_ms: u64,
    /// Wall time of the first sample, milliseconds since the Unix epoch.
    pub start_wall_ms: u64,
    /// The first segment after a publisher reconnect (or a codec restart).
    pub discontinuity: bool,
    /// Whether the segment starts at a keyframe (false only for a forced cut).
    pub starts_with_keyframe: bool,
    /// MPEG-TS bytes, whole 188-byte packets.
    pub data: Arc<[u8]>,
}

impl Segment {
    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.duration_ms as f64 / 1000.0
    }
}

/// Why a sample was not used. The segmenter stays usable after any of them.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SegmenterError {
    /// The tag body could not be parsed, or names a codec other than AVC/AAC.
    #[error(transparent)]
    Flv(#[from] FlvError),
    /// Video NALUs before any AVC sequence header.
    #[error("video before its AVC sequence header")]
    VideoBeforeSequenceHeader,
    /// Raw AAC before any AAC sequence header.
    #[error("audio before its AAC sequence header")]
    AudioBeforeSequenceHeader,
}

impl SegmenterError {
    /// Whether the publisher should be refused (an unsupported codec will not get better).
    pub fn is_unsupported_codec(&self) -> bool {
        matches!(
            self,
            SegmenterError::Flv(
                FlvError::UnsupportedVideoCodec { .. } | FlvError::UnsupportedAudioCodec { .. }
            )
        )
    }
}

#[derive(Debug)]
struct Building {
    buf: Vec<u8>,
    start_ms: u64,
    discontinuity: bool,
    keyframe: bool,
}

/// Maps RTMP timestamps onto a continuous millisecond timeline.
#[derive(Debug)]
struct Timeline {
    last_raw: Option<u32>,
    last_out: u64,
    jumps: u64,
}

impl Timeline {
    fn map(&mut self, raw: u32, max_jump_ms: u64) -> u64 {
        let out = match self.last_raw {
            None => self.last_out,
            Some(last) => {
                // Signed distance, following the 2^32 wrap.
                let delta = i64::from(raw.wrapping_sub(last) as i32);
                if delta.unsigned_abs() > max_jump_ms {
                    self.jumps += 1;
                    self.last_out
                } else {
                    self.last_out.saturating_add_signed(delta)
                }
            }
        };
        self.last_raw = Some(raw);
        self.last_out = out;
        out
    }
}

/// Turns FLV audio/video tag bodies into MPEG-TS segments.
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    avc: Option<AvcConfig>,
    aac: Option<AacConfig>,
    mux: TsMuxer,
    current: Option<Building>,
    next_sequence: u64,
    timeline: Timeline,
    /// (output ms, wall ms) of the first sample after the last (re)start.
    anchor: Option<(u64, u64)>,
    discontinuity: bool,
    last_video_ms: Option<u64>,
    frame_ms: u64,
    end_ms: u64,
    es: Vec<u8>,
}

impl Segmenter {
    /// A segmenter waiting for sequence headers and a first keyframe.
    pub fn new(config: SegmenterConfig) -> Self {
        Segmenter {
            config,
            avc: None,
            aac: None,
            mux: TsMuxer::new(),
            current: None,
            next_sequence: 0,
            timeline: Timeline {
                last_raw: None,
                last_out: TIMELINE_START_MS,
                jumps: 0,
            },
            anchor: None,
            discontinuity: false,
            last_video_ms: None,
            frame_ms: 0,
            end_ms: TIMELINE_START_MS,
            es: Vec::new(),
        }
    }

    /// Timestamp jumps absorbed so far.
    pub fn timestamp_jumps(&self) -> u64 {
        self.timeline.jumps
    }

    /// Feeds one FLV tag body with its RTMP timestamp and the caller's wall clock
    /// (milliseconds since the Unix epoch). Returns a segment when this sample closed one.
    pub fn push(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        body: &[u8],
        wall_ms: u64,
    ) -> Result<Option<Segment>, SegmenterError> {
        match kind {
            MediaKind::Video => self.push_video(timestamp, body, wall_ms),
            MediaKind::Audio => self.push_audio(timestamp, body, wall_ms),
        }
    }

    fn push_video(
        &mut self,
        timestamp: u32,
        body: &[u8],
        wall_ms: u64,
    ) -> Result<Option<Segment>, SegmenterError> {
        let (keyframe, cts, data) = match flv::parse_video(body)? {
            VideoTag::SequenceHeader(config) => {
                self.avc = Some(config);
                return Ok(None);
            }
            VideoTag::EndOfSequence => return Ok(None),
            VideoTag::Nalus {
                keyframe,
                composition_time,
                data,
            } => (keyframe, composition_time, data),
        };
        let length_size = self
            .avc
            .as_ref()
            .ok_or(SegmenterError::VideoBeforeSequenceHeader)?
            .nalu_length_size;
        let nalus = flv::split_nalus(data, length_size)?;
        let dts_ms = self.map(timestamp, wall_ms);
        if let Some(last) = self.last_video_ms {
            if dts_ms > last {
                self.frame_ms = dts_ms - last;
            }
        }
        self.last_video_ms = Some(dts_ms);
        let finished = self.maybe_cut(dts_ms, keyframe);
        let (Some(building), Some(config)) = (self.current.as_mut(), self.avc.as_ref()) else {
            return Ok(finished);
        };
        self.es.clear();
        ts::annex_b(config, &nalus, keyframe, &mut self.es);
        let dts = dts_ms * 90 + MUX_DELAY_90K;
        let pts = dts.saturating_add_signed(i64::from(cts) * 90);
        self.mux
            .write_video(pts, dts, dts_ms * 90, keyframe, &self.es, &mut building.buf);
        self.end_ms = self.end_ms.max(dts_ms + self.frame_ms);
        Ok(finished)
    }

    fn push_audio(
        &mut self,
        timestamp: u32,
        body: &[u8],
        wall_ms: u64,
    ) -> Result<Option<Segment>, SegmenterError> {
        let frame = match flv::parse_audio(body)? {
            AudioTag::SequenceHeader(config) => {
                self.aac = Some(config);
                return Ok(None);
            }
            AudioTag::Raw(frame) => frame,
        };
        let config = self.aac.ok_or(SegmenterError::AudioBeforeSequenceHeader)?;
        let pts_ms = self.map(timestamp, wall_ms);
        let finished = self.maybe_cut(pts_ms, false);
        let Some(building) = self.current.as_mut() else {
            return Ok(finished);
        };
        self.es.clear();
        ts::adts(&config, frame, &mut self.es);
        self.mux
            .write_audio(pts_ms * 90 + MUX_DELAY_90K, &self.es, &mut building.buf);
        // An AAC frame holds 1024 samples.
        let frame_ms = 1024 * 1000 / u64::from(config.sample_rate().max(1));
        self.end_ms = self.end_ms.max(pts_ms + frame_ms);
        Ok(finished)
    }

    fn map(&mut self, timestamp: u32, wall_ms: u64) -> u64 {
        let out = self.timeline.map(timestamp, self.config.max_jump_ms);
        if self.anchor.is_none() {
            self.anchor = Some((out, wall_ms));
        }
        out
    }

    /// Closes the current segment if this sample starts the next one, and opens one.
    fn maybe_cut(&mut self, at_ms: u64, keyframe: bool) -> Option<Segment> {
        let mut finished = None;
        if let Some(building) = &self.current {
            let elapsed = at_ms.saturating_sub(building.start_ms);
            let due = keyframe && elapsed >= self.config.target_duration_ms;
            let forced = elapsed >= self.config.max_segment_ms
                || building.buf.len() >= self.config.max_segment_bytes;
            if due || forced {
                finished = self.close(at_ms);
            }
        }
        if self.current.is_none() && (keyframe || finished.is_some()) {
            let mut buf = Vec::with_capacity(256 * 1024);
            self.mux.write_tables(&mut buf);
            self.current = Some(Building {
                buf,
                start_ms: at_ms,
                discontinuity: std::mem::take(&mut self.discontinuity),
                keyframe,
            });
        }
        finished
    }

    fn close(&mut self, end_ms: u64) -> Option<Segment> {
        let building = self.current.take()?;
        let (anchor_out, anchor_wall) = self.anchor.unwrap_or((building.start_ms, 0));
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        Some(Segment {
            sequence,
            duration_ms: end_ms.saturating_sub(building.start_ms).max(1),
            start_wall_ms: anchor_wall + building.start_ms.saturating_sub(anchor_out),
            discontinuity: building.discontinuity,
            starts_with_keyframe: building.keyframe,
            data: building.buf.into(),
        })
    }

    /// Closes the segment in progress (the publish ended). Its duration runs to the end of
    /// its last sample.
    pub fn finish(&mut self) -> Option<Segment> {
        let end = self.end_ms;
        self.close(end)
    }

    /// Takes the next media sequence number for a segment made elsewhere (a recording played
    /// out again as live), so the stream's playlist keeps counting up; the next segment this
    /// segmenter makes is flagged as a discontinuity.
    pub fn take_sequence(&mut self) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.discontinuity = true;
        sequence
    }

    /// A publisher reconnected (or restarted its encoder): closes the segment in progress,
    /// forgets codec configuration and timestamps, and flags the next segment as a
    /// discontinuity. The output timeline carries on where it stopped.
    pub fn restart(&mut self) -> Option<Segment> {
        let finished = self.finish();
        self.avc = None;
        self.aac = None;
        self.timeline.last_raw = None;
        self.timeline.last_out = self.end_ms;
        self.last_video_ms = None;
        self.anchor = None;
        // Only a stream that produced something has anything to be discontinuous with.
        self.discontinuity = self.next_sequence > 0;
        finished
    }
}

#[cfg(test)]
#[path = "segmenter_tests.rs"]
mod tests;
