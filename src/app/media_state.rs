//! The application core's media state: each stream's segmenter (which outlives its
//! publishers, so a returning publisher continues the same playlist) and the ingest counters.
//! `app::live` drives it.

use std::collections::{HashMap, HashSet};

use media::segmenter::Segmenter;

/// Ingest counters for `/api/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Publishes refused for a key that matches no stream.
    pub refused_key: u64,
    /// Publishes refused because the stream already had a publisher.
    pub refused_busy: u64,
    /// Publishers closed for an unsupported codec.
    pub refused_codec: u64,
    /// RTMP connections closed for a protocol error or a timeout.
    pub closed_bad: u64,
    /// Audio/video samples dropped (before a sequence header, malformed).
    pub dropped_samples: u64,
    /// Segments produced.
    pub segments: u64,
    /// Bytes of segments produced.
    pub segment_bytes: u64,
}

/// A rebroadcast the player task is to play: the turn it holds and the recording's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebroadcast {
    pub turn: super::streams::PublishTurn,
    pub recording: String,
    pub dir: std::path::PathBuf,
}

/// Why a rebroadcast was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebroadcastError {
    /// No such stream.
    #[error("no stream \"{0}\"")]
    NoStream(String),
    /// No such finished recording of the stream.
    #[error("no finished recording \"{0}\" of this stream")]
    NoRecording(String),
    /// A publisher or another rebroadcast holds the stream.
    #[error("stream \"{0}\" is live (a publisher or a rebroadcast holds it)")]
    Busy(String),
}

/// Media state of the application core.
#[derive(Default)]
pub struct Live {
    pub(super) segmenters: HashMap<String, Segmenter>,
    pub stats: IngestStats,
    /// Wall time each stream's latest segment was completed (for the delay benchmark).
    pub(super) last_segment: HashMap<String, (u64, u64)>,
    /// Streams played out from a recording now (not recorded again).
    pub(super) rebroadcasting: HashSet<String>,
    /// Rebroadcasts started by the API and not yet taken by their player task.
    pub(super) pending_rebroadcasts: Vec<Rebroadcast>,
    /// Raised when a rebroadcast is queued.
    pub(super) rebroadcast_queued: std::rc::Rc<shards::sync::Signal>,
    /// Sealed in-memory segment files could not be made (logged once; shards send from
    /// the shared buffers instead).
    pub(super) segment_files_failed: bool,
    /// Unlinked segment files in the data directory could not be made (its file system
    /// lacks `O_TMPFILE`; logged once): sealed in-memory files instead.
    pub(super) disk_segment_files_failed: bool,
}
