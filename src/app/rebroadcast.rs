//! Rebroadcast: a recording played out as a live stream in real time. It takes the stream's
//! publish turn exactly as a publisher does (so a publisher and a rebroadcast never hold a
//! stream together), and its segments go to the shards through the same path as a live
//! publisher's, so the audience gets the same `live`/`ended` messages, the same HLS URLs,
//! and polls and messages work unchanged. The segments are read and paced by the player task
//! (`crate::rebroadcast`); the core only decides and numbers.

use std::sync::Arc;

use media::segmenter::{Segment, Segmenter, SegmenterConfig};

use super::media_state::{Rebroadcast, RebroadcastError};
use super::streams::{PublishError, PublishTurn};
use super::App;

impl App {
    /// Starts playing recording `recording` of `stream` out as live: the stream goes live now
    /// and the player task is woken to release the segments.
    pub fn start_rebroadcast(
        &mut self,
        stream: &str,
        recording: &str,
    ) -> Result<Rebroadcast, RebroadcastError> {
        if self.stream(stream).is_none() {
            return Err(RebroadcastError::NoStream(stream.to_owned()));
        }
        let dir = match self.recordings.get(stream, recording) {
            Some(r) if r.ended && r.segments > 0 => self.recording_dir(stream, recording),
            _ => None,
        }
        .ok_or_else(|| RebroadcastError::NoRecording(recording.to_owned()))?;
        let turn = match self.streams.begin_rebroadcast(stream) {
            Ok(t) => t,
            Err(PublishError::Busy(s)) => return Err(RebroadcastError::Busy(s)),
            Err(PublishError::UnknownKey) => {
                return Err(RebroadcastError::NoStream(stream.to_owned()))
            }
        };
        let config = SegmenterConfig {
            target_duration_ms: self.config.hls_segment_ms,
            ..SegmenterConfig::default()
        };
        self.live
            .segmenters
            .entry(stream.to_owned())
            .or_insert_with(|| Segmenter::new(config));
        self.live.rebroadcasting.insert(stream.to_owned());
        self.announce_live(stream);
        tracing::info!(stream, recording, "rebroadcast live");
        let rb = Rebroadcast {
            turn,
            recording: recording.to_owned(),
            dir,
        };
        self.live.pending_rebroadcasts.push(rb.clone());
        self.live.rebroadcast_queued.raise();
        Ok(rb)
    }

    /// Rebroadcasts queued for the player task.
    pub fn take_rebroadcasts(&mut self) -> Vec<Rebroadcast> {
        std::mem::take(&mut self.live.pending_rebroadcasts)
    }

    /// Raised when a rebroadcast is queued.
    pub fn rebroadcast_queued(&self) -> std::rc::Rc<shards::sync::Signal> {
        self.live.rebroadcast_queued.clone()
    }

    /// One recorded segment of rebroadcast `turn` goes out as the stream's next live segment.
    /// False when the turn no longer holds the stream (the player stops).
    pub fn rebroadcast_segment(
        &mut self,
        turn: &PublishTurn,
        duration_ms: u64,
        discontinuity: bool,
        data: Arc<[u8]>,
        now_ms: u64,
    ) -> bool {
        if self.streams.get(&turn.stream).map(|s| s.publish) != Some(turn.turn)
            || !self.live.rebroadcasting.contains(&turn.stream)
        {
            return false;
        }
        let Some(seg) = self.live.segmenters.get_mut(&turn.stream) else {
            return false;
        };
        let sequence = seg.take_sequence();
        let segment = Segment {
            sequence,
            duration_ms: duration_ms.max(1),
            start_wall_ms: now_ms,
            discontinuity: discontinuity && sequence > 0,
            starts_with_keyframe: true,
            data,
        };
        self.segment_out(&turn.stream.clone(), segment, now_ms);
        true
    }
}
