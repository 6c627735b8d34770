//! The typed messages on the lock-free channels between the shards and the application core.
//!
//! Each shard has one channel in each direction (glommio `shared_channel`s: single producer,
//! single consumer, lock-free rings between two executors). Shards send [`ShardEvent`]s up;
//! the application core sends [`ShardCommand`]s down. A broadcast is one [`ShardCommand::Cast`]
//! per shard carrying a [`Frame`] encoded once for all shards and all receivers.

use std::sync::Arc;
use std::time::Duration;

use crate::profile::{Predicate, Profile, ViewerId};

/// A complete, encoded WebSocket frame. The same bytes go to every receiver.
pub type Frame = Arc<[u8]>;

/// Shard-local index of a connection in its shard's table.
pub type Slot = u32;

/// The application core's number for a poll, shorter than its id on every message.
pub type PollSeq = u32;

/// A viewer's vote: poll number and choice.
pub type Vote = (PollSeq, u8);

/// A shard's tally per value of a poll's breakdown field (`""`: no value).
pub type Breakdown = Vec<(Box<str>, Vec<i64>)>;

/// Identifies a group on every shard. [`GroupId::GLOBAL`] is built in: every open viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u32);

impl GroupId {
    pub const GLOBAL: GroupId = GroupId(0);
}

/// Where a viewer lives: its shard's slot plus its identity, checked by the shard so a command
/// for a viewer that left (and whose slot was reused) is dropped, never misdelivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewerRef {
    pub shard: u16,
    pub slot: Slot,
    pub viewer: ViewerId,
}

/// Shard -> application core.
#[derive(Debug)]
pub enum ShardEvent {
    /// A viewer finished its handshake; `profile` is the shard's copy at that moment.
    /// With `claim` (the `resume` token it presented) the viewer waits, without a welcome,
    /// for [`ShardCommand::Admit`].
    Joined {
        at: ViewerRef,
        resume: Box<str>,
        profile: Box<Profile>,
        claim: Option<Box<str>>,
    },
    /// The viewer's profile changed on the shard; a full snapshot, so mirrors converge.
    Changed {
        at: ViewerRef,
        profile: Box<Profile>,
    },
    /// The viewer's connection is gone; `votes` are its votes, kept for a resume.
    Left { at: ViewerRef, votes: Vec<Vote> },
    /// A `Cast` to `group` was written to every member on this shard (backpressure for
    /// snapshot-like casts such as live results).
    CastDone { group: GroupId },
    /// This shard's share of a poll's count (coalesced); `closed` on the last one.
    PollTally {
        seq: PollSeq,
        shard: u16,
        tally: Vec<i64>,
        /// The same per value of the poll's breakdown field (empty without one).
        breakdown: Breakdown,
        closed: bool,
    },
    /// This shard's telemetry since its last report, folded per group (coalesced, like
    /// `PollTally`): the application core merges the deltas into its windows.
    Telemetry {
        shard: u16,
        deltas: Vec<(GroupId, crate::telemetry::Aggregate)>,
    },
    /// A viewer message the application core answers.
    Request { at: ViewerRef, request: Request },
    /// Viewers whose telemetry said they were buffering (at least half the time since their
    /// last report) since this shard's last report: their viewing sessions are `stalled`.
    Buffering { viewers: Vec<ViewerRef> },
    /// Viewing sessions' playlist and segment fetches on this shard since its last report
    /// (coalesced, like `PollTally`).
    SessionFetches {
        shard: u16,
        fetches: Vec<(Box<str>, crate::hls_session::FetchDelta)>,
    },
    /// Answer to [`ShardCommand::Audit`]: every viewer this shard owns with its profile hash.
    Audit {
        audit: u64,
        shard: u16,
        profiles: Vec<(ViewerRef, u64)>,
    },
}

/// Viewer messages that need the application core.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `{"type":"watch","stream":"S"}`.
    Watch { stream: Box<str> },
    /// A checked vote of an identified viewer, counted once per `sub` at the application
    /// core (not in the shard's tally).
    PersonVote {
        sub: Box<str>,
        seq: PollSeq,
        choice: u8,
    },
}

/// Connection-quality telemetry from a player (the protocol's type). Absent numbers are `None`.
pub use protocol::Telemetry;

/// A change the application core makes to a profile it does not own.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileUpdate {
    /// The viewer watches this stream now (a validated `watch`), or none.
    Stream(Option<Box<str>>),
    /// Replace the viewer's tags.
    Tags(Vec<Box<str>>),
}

/// What a resumed viewer gets back: its groups (through the profile fields that decide them)
/// and its votes (already counted where they were cast).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restore {
    pub stream: Option<Box<str>>,
    pub tags: Vec<Box<str>>,
    pub app_version: Option<Box<str>>,
    pub hardware: Option<Box<str>>,
    pub region: Option<Box<str>>,
    pub votes: Vec<Vote>,
}

/// The answer to a resume claim: the identity the viewer gets, its resume token, and, when
/// the token was recognised, the state it had (`None`: a new viewer).
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub viewer: ViewerId,
    pub resume: Box<str>,
    pub restore: Option<Box<Restore>>,
}

/// Application core -> shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Create (or replace) a group: the shard evaluates `predicate` over its own profiles.
    DefineGroup {
        id: GroupId,
        predicate: Arc<Predicate>,
    },
    /// Forget a group and free its bitmap.
    DropGroup { id: GroupId },
    /// Write `frame` to every member of `group` on this shard.
    Cast { group: GroupId, frame: Frame },
    /// Write `frame` to one viewer.
    Send { to: ViewerRef, frame: Frame },
    /// Change a profile the shard owns; the shard answers with `ShardEvent::Changed`.
    Update {
        to: ViewerRef,
        update: ProfileUpdate,
    },
    /// Start counting votes for a poll; members of `audience` may vote.
    OpenPoll {
        id: Box<str>,
        seq: PollSeq,
        choices: u8,
        audience: GroupId,
        /// Count per value of this profile field too.
        breakdown: Option<crate::profile::Field>,
    },
    /// Stop counting; the shard answers with its final `PollTally`.
    ClosePoll { seq: PollSeq },
    /// Free a closed poll's state (its id is remembered, bounded).
    DropPoll { seq: PollSeq },
    /// Answer a resume claim: the viewer gets its welcome now.
    Admit { to: ViewerRef, admission: Admission },
    /// Drop a viewer's connection at once (it resumed on a new connection).
    Evict { to: ViewerRef },
    /// List every viewer with a hash of its profile (mirror consistency check).
    Audit { audit: u64 },
    /// Stop accepting, close every viewer with 1001, and return within `grace`.
    Shutdown { grace: Duration },
    /// The state of a stream's HLS window, which every shard keeps and serves.
    Media(MediaCommand),
}

/// What the application core tells every shard about a stream's media. One message per shard;
/// a segment's bytes are one shared `Arc` buffer, never copied per shard or per viewer.
#[derive(Debug)]
pub enum MediaCommand {
    /// A registered stream: served (503) while it is offline.
    Registered { stream: Box<str> },
    /// A publisher went live on the stream.
    Live { stream: Box<str> },
    /// A finished segment joins the stream's window (the oldest may leave it).
    Segment {
        stream: Box<str>,
        segment: media::segmenter::Segment,
    },
    /// The publish ended: the playlist gets `EXT-X-ENDLIST`.
    Ended { stream: Box<str> },
    /// A viewing session's playlist route (`hls_session`).
    Session(crate::hls_session::SessionCommand),
    /// An ad asset every shard serves (`hls_ads`), shared, never copied.
    Ad {
        id: Box<str>,
        segments: Arc<[crate::hls_ads::AdSegment]>,
    },
    /// An ad left the library.
    AdRemoved { id: Box<str> },
}
