//! The directory of recordings: which recordings exist (oldest first), which one each live
//! stream is writing, their sizes and durations, what retention removes, and the records the
//! store keeps. Pure state: `app::recording_runner` drives it and tells the recorder thread
//! (`crate::recorder`) what to write and remove.
//!
//! A recording starts with a publish and ends with it. Retention (`recording_max_bytes`,
//! `recording_max_age_s`, 0 for no limit) removes the oldest finished recordings; one still
//! being written is never pruned.

use serde_json::{json, Value};

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
    /// The recorder's ticket for the job that writes `#EXT-X-ENDLIST` (0: none pending in this
    /// run). Until it is done the API shows the recording as not ended yet.
    pub end_ticket: u64,
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

    /// A stored record back (None when its names are missing or unsafe as paths).
    pub fn from_record(r: &Value) -> Option<Recording> {
        let text = |k: &str| r[k].as_str().filter(|s| safe_name(s)).map(str::to_owned);
        Some(Recording {
            id: text("id")?,
            stream: text("stream")?,
            started_ms: r["started_ms"].as_u64().unwrap_or(0),
            duration_ms: r["duration_ms"].as_u64().unwrap_or(0),
            bytes: r["bytes"].as_u64().unwrap_or(0),
            segments: r["segments"].as_u64().unwrap_or(0),
            ended: r["ended"].as_bool().unwrap_or(false),
            end_ticket: 0,
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
            end_ticket: 0,
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
