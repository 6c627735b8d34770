//! Streams across edges, the state: which streams are live on another edge (their origin),
//! which ones this edge relays now, the relays waiting for the relay task, and the origin
//! windows this edge serves to the others (each stream's last segments, the same shared
//! buffers the shards hold). `app::relay_ops` drives it; `crate::relay` pulls.
//!
//! Owns no sockets and no clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use media::playlist::LivePlaylist;
use shards::sync::Signal;

use super::streams::PublishTurn;

/// A stream live on another edge, as the bus said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The origin edge's id.
    pub edge: String,
    /// Its operator API, where the stream is pulled from.
    pub api: SocketAddr,
    /// The origin said this publish ended (or its playlist did, or the relay gave up on an
    /// origin the bus still hears): final for this publish, a repeat of its `Live` does not
    /// revive it.
    pub ended: bool,
    /// The origin went silent on the bus: a relay that cannot reach it ends at once; the
    /// origin heard again (same publish) revives it.
    pub lost: bool,
    /// The origin's id of the publish live there: a relay of an older publish that ends
    /// (the publisher came back meanwhile) is started again.
    pub publish: u64,
}

/// A relay the relay task is to run: the publish turn it holds on this edge, where it
/// pulls from, and the last sequence number this edge already has of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub turn: PublishTurn,
    pub origin: SocketAddr,
    pub after: Option<u64>,
    /// The origin's publish the relay started on.
    pub publish: u64,
}

/// Relay counters for `/api/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Relays started on this edge.
    pub started: u64,
    /// Segments pulled from origins and served here.
    pub segments: u64,
    /// Bytes of those segments.
    pub bytes: u64,
    /// Playlists pulled from origins.
    pub playlists: u64,
    /// Pulls that failed (unreachable origin, bad answer, malformed playlist or segment).
    pub failures: u64,
    /// Segments that left the origin's window before this edge could pull them.
    pub missed: u64,
    /// Segments this edge served to other edges as their origin.
    pub served_segments: u64,
    /// Bytes of those.
    pub served_bytes: u64,
}

/// Streams across edges.
#[derive(Default)]
pub struct Relays {
    /// Streams whose origin is another edge, by stream id.
    pub(super) remote: HashMap<String, Origin>,
    /// Streams this edge relays now: stream id -> the turn the relay holds.
    pub(super) active: HashMap<String, u64>,
    /// Relays started and not yet taken by the relay task.
    pub(super) pending: Vec<Relay>,
    /// Raised when a relay is queued.
    pub(super) queued: Rc<Signal>,
    /// The last segments of each stream this edge has, served to the edges pulling it.
    pub(super) windows: HashMap<String, LivePlaylist>,
    /// The publish id of each stream this edge is the origin of (the last one).
    pub(super) publishes: HashMap<String, u64>,
    /// This edge's bound API address (announced to the others, who pull from it).
    pub(super) api_addr: Option<SocketAddr>,
    pub stats: RelayStats,
}

/// Why the origin route has nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    /// No such stream, or it never had a segment on this edge.
    Unknown,
    /// The stream has no segment in its window yet.
    NoSegment,
}
