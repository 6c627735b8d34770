//! `App`'s recording side: a live publish's segments go to its recording (the recorder
//! thread writes the files), recordings end with their publish, retention prunes, the API
//! lists and deletes them, and interrupted ones are closed at startup. The state lives in
//! `app::recordings`.

use media::segmenter::Segment;
use serde_json::{json, Value};

use super::recordings::{safe_name, Recording, RecordingError};
use super::{random_hex, App};
use crate::recorder::{self, Job, Recorder};

impl App {
    /// Starts recording `stream` at its first segment, when recording is on.
    fn start_recording(&mut self, stream: &str, now_ms: u64) {
        if self.recorder.is_none() || !safe_name(stream) {
            return;
        }
        let r = Recording {
            id: format!("{now_ms}-{}", random_hex(3)),
            stream: stream.to_owned(),
            started_ms: now_ms,
            duration_ms: 0,
            bytes: 0,
            segments: 0,
            ended: false,
            end_ticket: 0,
        };
        self.store_recording(&r);
        self.recordings.push(r);
    }

    /// A segment of `stream`'s publish goes to its recording (the first starts one).
    pub(super) fn record_segment(&mut self, stream: &str, segment: &Segment) {
        if self.live.rebroadcasting.contains(stream) {
            return;
        }
        if self.recordings.active_mut(stream).is_none() {
            self.start_recording(stream, segment.start_wall_ms);
        }
        let Some(recorder) = &self.recorder else {
            return;
        };
        let Some(r) = self.recordings.active_mut(stream) else {
            return;
        };
        recorder.send(Job::Segment {
            dir: recorder.dir(&r.stream, &r.id),
            index: r.segments,
            duration_ms: segment.duration_ms,
            discontinuity: segment.discontinuity,
            data: segment.data.clone(),
        });
        r.segments += 1;
        r.duration_ms += segment.duration_ms;
        r.bytes += segment.data.len() as u64;
        let r = r.clone();
        self.store_recording(&r);
    }

    /// The recording of `stream` ends (its publish ended); old ones are pruned.
    pub(super) fn end_recording(&mut self, stream: &str, now_ms: u64) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let Some(r) = self.recordings.active_mut(stream) else {
            return;
        };
        r.ended = true;
        r.end_ticket = recorder.send(Job::End {
            dir: recorder.dir(&r.stream, &r.id),
        });
        let r = r.clone();
        if r.segments == 0 {
            // Nothing was recorded: no recording to keep.
            let _ = self.delete_recording(&r.stream, &r.id);
        } else {
            self.store_recording(&r);
        }
        self.prune_recordings(now_ms);
    }

    /// Removes the finished recordings over the retention limits.
    pub fn prune_recordings(&mut self, now_ms: u64) {
        let max_bytes = self.config.recording_max_bytes;
        let max_age_ms = self.config.recording_max_age_s.saturating_mul(1000);
        for r in self
            .recordings
            .over_retention(max_bytes, max_age_ms, now_ms)
        {
            tracing::info!(stream = %r.stream, recording = %r.id, bytes = r.bytes, "recording pruned by retention");
            let _ = self.delete_recording(&r.stream, &r.id);
        }
    }

    /// Removes a finished recording and its files.
    /// Deletes a finished recording: gone from the list and the store at once; its files go
    /// on the recorder thread, whose job ticket comes back (for [`App::recorder_finished`]).
    pub fn delete_recording(
        &mut self,
        stream: &str,
        id: &str,
    ) -> Result<Option<u64>, RecordingError> {
        match self.recordings.get(stream, id) {
            None => return Err(RecordingError::NotFound(id.to_owned())),
            Some(r) if !r.ended => return Err(RecordingError::Active(id.to_owned())),
            Some(_) => {}
        }
        let Some(r) = self.recordings.remove(stream, id) else {
            return Err(RecordingError::NotFound(id.to_owned()));
        };
        let ticket = self.recorder.as_ref().map(|recorder| {
            recorder.send(Job::Delete {
                dir: recorder.dir(&r.stream, &r.id),
            })
        });
        if let Some(store) = &self.store {
            store.delete_recording(&r.key());
        }
        Ok(ticket)
    }

    /// Whether the recorder has carried out the job with `ticket` (and all before it).
    pub fn recorder_finished(&self, ticket: u64) -> bool {
        self.recorder.as_ref().is_none_or(|r| r.finished(ticket))
    }

    /// A stream's recordings, oldest first.
    pub fn recordings_of<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a Recording> {
        self.recordings.of(stream)
    }

    /// One recording.
    pub fn recording(&self, stream: &str, id: &str) -> Option<&Recording> {
        self.recordings.get(stream, id)
    }

    /// Where a recording's files are (None when recording is off).
    pub fn recording_dir(&self, stream: &str, id: &str) -> Option<std::path::PathBuf> {
        self.recorder.as_ref().map(|r| r.dir(stream, id))
    }

    /// A recording as the API lists it.
    pub fn recording_json(&self, r: &Recording) -> Value {
        json!({
            "id": r.id,
            "started_ms": r.started_ms,
            "duration_s": r.duration_ms as f64 / 1000.0,
            "bytes": r.bytes,
            "segments": r.segments,
            // Ended once its playlist says so: the recorder thread writes `#EXT-X-ENDLIST`
            // a moment after the publish ends.
            "ended": r.ended && self.recorder.as_ref().is_none_or(|rec| rec.finished(r.end_ticket)),
            "playlist_url": format!(
                "http://{}/hls/{}/rec/{}/{}",
                self.viewer_addr, r.stream, r.id, recorder::PLAYLIST
            ),
        })
    }

    fn store_recording(&self, r: &Recording) {
        if let Some(store) = &self.store {
            store.put_recording(&r.key(), &r.record());
        }
    }

    /// Takes the recorder thread (recording on).
    pub fn set_recorder(&mut self, recorder: Recorder) {
        self.recorder = Some(recorder);
    }

    /// Recordings from the store at startup. One the last run left open (a crash) is closed
    /// at its last complete segment, its size and duration taken from its files.
    pub(super) fn restore_recordings(&mut self, records: &[Value], now_ms: u64) {
        let target = self.config.hls_segment_ms.div_ceil(1000);
        for record in records {
            let Some(mut r) = Recording::from_record(record) else {
                tracing::warn!(%record, "skipping an unreadable stored recording");
                continue;
            };
            let unfinished = |dir: &std::path::Path| {
                std::fs::read_to_string(dir.join(recorder::PLAYLIST))
                    .is_ok_and(|t| !t.contains("#EXT-X-ENDLIST"))
            };
            let dir = self.recording_dir(&r.stream, &r.id);
            if r.ended && dir.as_deref().is_some_and(unfinished) {
                // Stored as ended, but the process died before the playlist was ended.
                r.ended = false;
            }
            if !r.ended {
                if let Some(dir) = dir {
                    match recorder::finalize_interrupted(&dir, target) {
                        Ok(c) => {
                            (r.duration_ms, r.bytes, r.segments) =
                                (c.duration_ms, c.bytes, c.segments);
                            tracing::info!(stream = %r.stream, recording = %r.id, segments = c.segments, "an interrupted recording was closed at its last complete segment");
                        }
                        Err(e) => tracing::warn!(error = %e, "closing an interrupted recording"),
                    }
                }
                r.ended = true;
                self.store_recording(&r);
            }
            self.recordings.push(r);
        }
        self.prune_recordings(now_ms);
    }
}
