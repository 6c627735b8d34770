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
    pub(super) pending_rebroadcasts: Vec<super::rebroadcast::Rebroadcast>,
    /// Raised when a rebroadcast is queued.
    pub(super) rebroadcast_queued: std::rc::Rc<shards::sync::Signal>,
}
