//! The directory of recordings: which recordings exist (per stream, oldest first), which one
//! each live stream is writing, their sizes and durations, retention, and the records the
//! store keeps. The files are the recorder thread's (`crate::recorder`); this module tells it
//! what to write and remove.
//!
//! A recording starts with a publish and ends with it. Retention (`recording_max_bytes`,
//! `recording_max_age_s`, 0 for no limit) removes the oldest finished recordings; one still
//! being written is never pruned.

use media::segmenter::Segment;
use serde_json::{json, Value};

use super::{random_hex, App};
use crate::recorder::{self, Job, Recorder};

/// One recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub stream: String,
    pub started_ms: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    pub segments: u64,
    pub ended: bool,
}

impl Recording {
    /// The store key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.stream, self.id)
    }

    /// The stored record.
    pub fn record(&self) -> Value {
        json!({
            "id": self.id,
            "stream": self.stream,
            "started_ms": self.started_ms,
            "duration_ms": self.duration_ms,
            "bytes": self.bytes,
            "segments": self.segments,
            "ended": self.ended,
        })
    }

    fn from_record(r: &Value) -> Option<Recording> {
        let text = |k: &str| r[k].as_str().filter(|s| safe_name(s)).map(str::to_owned);
        Some(Recording {
            id: text("id")?,
            stream: text("stream")?,
            started_ms: r["started_ms"].as_u64().unwrap_or(0),
            duration_ms: r["duration_ms"].as_u64().unwrap_or(0),
            bytes: r["bytes"].as_u64().unwrap_or(0),
            segments: r["segments"].as_u64().unwrap_or(0),
            ended: r["ended"].as_bool().unwrap_or(false),
        })
    }
}

/// Whether `name` is safe as one path component (stream ids and recording ids).
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a recording operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    /// No such stream or recording.
    #[error("no recording \"{0}\"")]
    NotFound(String),
    /// The recording is still being written.
    #[error("recording \"{0}\" is still being written")]
    Active(String),
}

/// Every recording, oldest first, and the one each stream is writing.
#[derive(Debug, Default)]
pub struct Recordings {
    all: Vec<Recording>,
}

impl Recordings {
    pub fn iter(&self) -> impl Iterator<Item = &Recording> {
        self.all.iter()
    }

    pub fn of<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a Recording> + 'a {
        self.all.iter().filter(move |r| r.stream == stream)
    }

    pub fn get(&self, stream: &str, id: &str) -> Option<&Recording> {
        self.all.iter().find(|r| r.stream == stream && r.id == id)
    }

    /// The recording `stream` is writing.
    pub fn active_mut(&mut self, stream: &str) -> Option<&mut Recording> {
        self.all.iter_mut().find(|r| r.stream == stream && !r.ended)
    }

    pub fn push(&mut self, r: Recording) {
        self.all.push(r);
        self.all.sort_by_key(|r| r.started_ms);
    }

    pub fn remove(&mut self, stream: &str, id: &str) -> Option<Recording> {
        let at = self
            .all
            .iter()
            .position(|r| r.stream == stream && r.id == id)?;
        Some(self.all.remove(at))
    }

    /// The finished recordings to remove, oldest first, so that what is left is within
    /// `max_bytes` in total (0: no limit) and none started before `now_ms - max_age_ms`
    /// (0: no limit).
    pub fn over_retention(&self, max_bytes: u64, max_age_ms: u64, now_ms: u64) -> Vec<Recording> {
        let mut total: u64 = self.all.iter().map(|r| r.bytes).sum();
        let mut out = Vec::new();
        for r in self.all.iter().filter(|r| r.ended) {
            let too_old = max_age_ms > 0 && r.started_ms.saturating_add(max_age_ms) < now_ms;
            let too_big = max_bytes > 0 && total > max_bytes;
            if too_old || too_big {
                total -= r.bytes;
                out.push(r.clone());
            }
        }
        out
    }
}

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
        recorder.send(Job::End {
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
    pub fn delete_recording(&mut self, stream: &str, id: &str) -> Result<(), RecordingError> {
        match self.recordings.get(stream, id) {
            None => return Err(RecordingError::NotFound(id.to_owned())),
            Some(r) if !r.ended => return Err(RecordingError::Active(id.to_owned())),
            Some(_) => {}
        }
        let Some(r) = self.recordings.remove(stream, id) else {
            return Err(RecordingError::NotFound(id.to_owned()));
        };
        if let Some(recorder) = &self.recorder {
            recorder.send(Job::Delete {
                dir: recorder.dir(&r.stream, &r.id),
            });
        }
        if let Some(store) = &self.store {
            store.delete_recording(&r.key());
        }
        Ok(())
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
            "ended": r.ended,
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
            if !r.ended {
                if let Some(dir) = self.recording_dir(&r.stream, &r.id) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, started_ms: u64, bytes: u64, ended: bool) -> Recording {
        Recording {
            id: id.into(),
            stream: "s".into(),
            started_ms,
            duration_ms: 1000,
            bytes,
            segments: 1,
            ended,
        }
    }

    #[test]
    fn retention_prunes_the_oldest_finished_first() {
        let mut r = Recordings::default();
        r.push(rec("b", 20, 100, true));
        r.push(rec("a", 10, 100, true));
        r.push(rec("c", 30, 100, true));
        r.push(rec("live", 40, 500, false));
        let ids = |v: Vec<Recording>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert!(r.over_retention(0, 0, 1000).is_empty(), "no limits");
        assert_eq!(ids(r.over_retention(700, 0, 1000)), ["a"]);
        assert_eq!(ids(r.over_retention(550, 0, 1000)), ["a", "b", "c"]);
        assert_eq!(
            ids(r.over_retention(1, 0, 1000)),
            ["a", "b", "c"],
            "the active recording stays"
        );
        assert_eq!(ids(r.over_retention(0, 975, 1000)), ["a", "b"], "by age");
        assert_eq!(r.of("s").next().map(|r| r.id.as_str()), Some("a"));
        assert!(r.active_mut("s").is_some_and(|r| r.id == "live"));
        assert!(r.remove("s", "a").is_some() && r.remove("s", "a").is_none());
    }

    #[test]
    fn records_round_trip_and_unsafe_names_are_refused() {
        let r = rec("x-1", 5, 7, false);
        assert_eq!(Recording::from_record(&r.record()), Some(r));
        assert_eq!(
            Recording::from_record(&json!({"id": "..", "stream": "s"})),
            None
        );
        assert_eq!(
            Recording::from_record(&json!({"id": "a/b", "stream": "s"})),
            None
        );
        assert!(safe_name("s.1_a-b") && !safe_name(".hidden") && !safe_name(""));
    }
}
