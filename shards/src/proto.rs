//! The typed messages on the lock-free channels between the shards and the application core.
//!
//! Each shard has one channel in each direction (glommio `shared_channel`s: single producer,
//! single consumer, lock-free rings between two executors). Shards send [`ShardEvent`]s up;
//! the application core sends [`ShardCommand`]s down. A broadcast is one [`ShardCommand::Cast`]
//! per shard carrying a [`Frame`] encoded once for all shards and all receivers.

use std::sync::Arc;
use std::time::Duration;

use crate::profile::{Predicate, Profile, Sym, ViewerId};

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
    /// The viewer's connection is gone; `votes` are its votes and `reports` where its latest
    /// telemetry reports were counted, kept for a resume.
    Left {
        at: ViewerRef,
        votes: Vec<Vote>,
        reports: LatestReports,
    },
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
    /// This shard's telemetry since its last report, folded per group and Unix second of
    /// the reports (coalesced, like `PollTally`): the application core merges each delta into
    /// that second's bucket of its windows.
    Telemetry {
        shard: u16,
        deltas: Vec<(GroupId, u32, crate::telemetry::Aggregate)>,
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
    /// core (not in the shard's tally). `durable`: not answered yet; the application core
    /// answers `voted` once the person's vote is stored.
    PersonVote {
        sub: Box<str>,
        seq: PollSeq,
        choice: u8,
        durable: bool,
    },
    /// An anonymous vote already counted in the shard's tally, not yet answered: with
    /// `durable_votes` the application core answers `voted` once the vote is stored.
    DurableVote {
        poll: Box<str>,
        seq: PollSeq,
        choice: u8,
    },
}

impl Request {
    /// [`Request::PersonVote`].
    pub fn person_vote(sub: Box<str>, seq: PollSeq, choice: u8, durable: bool) -> Request {
        Request::PersonVote {
            sub,
            seq,
            choice,
            durable,
        }
    }
}

/// Connection-quality telemetry from a player (the protocol's type). Absent numbers are `None`.
pub use protocol::Telemetry;

/// Where a viewer's latest telemetry reports were counted: (group, Unix second of its latest
/// report in that group). See [`crate::telemetry`].
pub type LatestReports = crate::telemetry::LatestReports<GroupId>;

/// A change the application core makes to a profile it does not own.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileUpdate {
    /// The viewer watches this stream now (a validated `watch`), or none.
    Stream(Option<Sym>),
    /// Replace the viewer's tags.
    Tags(Vec<Box<str>>),
}

/// What a resumed viewer gets back: its groups (through the profile fields that decide them),
/// its votes (already counted where they were cast) and where its latest telemetry reports
/// were counted (so it counts once among a window's reporting viewers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restore {
    pub stream: Option<Sym>,
    pub tags: Vec<Box<str>>,
    pub app_version: Option<Sym>,
    pub hardware: Option<Sym>,
    pub region: Option<Sym>,
    pub votes: Vec<Vote>,
    pub reports: LatestReports,
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
    /// A heads-up: a command is likely on its way (the application core has begun to read an
    /// operator's request). The shard polls its channel instead of sleeping until the next
    /// command comes or a short hold passes, so waking its thread overlaps the core's work.
    HeadsUp,
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
        /// The same bytes in a read-only file (`netstack::sys::unlinked_file_in` in the data
        /// directory, else `netstack::sys::sealed_memfd`), made once by the application core, for the `sendfile` path; `None` when zero-copy is
        /// not `auto` or the file could not be made.
        file: Option<Arc<std::fs::File>>,
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

/// Resume tokens: `<viewer id><nonce>` in 32 lowercase hex digits. The nonce is a keyed hash
/// of the viewer id only the minting shard can compute, so a token cannot be guessed from
/// the id, and the application core checks a token with the 8-byte nonce it keeps per viewer
/// (no token string or token index per viewer).
pub mod resume {
    use crate::profile::ViewerId;

    /// The token of `viewer` with `nonce`.
    pub fn mint(viewer: ViewerId, nonce: u64) -> Box<str> {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&viewer.0.to_be_bytes());
        bytes[8..].copy_from_slice(&nonce.to_be_bytes());
        protocol::hex(&bytes).into()
    }

    /// The viewer id and nonce of a token [`mint`] made; `None` for any other string.
    pub fn parse(token: &str) -> Option<(ViewerId, u64)> {
        if token.len() != 32
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let id = u64::from_str_radix(&token[..16], 16).ok()?;
        let nonce = u64::from_str_radix(&token[16..], 16).ok()?;
        Some((ViewerId(id), nonce))
    }

    /// A keyed pseudo-random function of the viewer id (SipHash-2-4 under a random key).
    #[derive(Debug, Clone, Copy)]
    pub struct Minter {
        k0: u64,
        k1: u64,
    }

    impl Minter {
        /// A minter under a key from the OS's random source (the standard library's
        /// per-process random hash keys when that fails).
        pub fn random() -> Minter {
            let mut key = [0u8; 16];
            if getrandom::getrandom(&mut key).is_err() {
                use std::hash::{BuildHasher, Hasher};
                let state = std::collections::hash_map::RandomState::new();
                for (i, chunk) in key.chunks_mut(8).enumerate() {
                    let mut h = state.build_hasher();
                    h.write_usize(i);
                    chunk.copy_from_slice(&h.finish().to_le_bytes());
                }
            }
            let (a, b) = key.split_at(8);
            Minter {
                k0: u64::from_le_bytes(a.try_into().unwrap_or_default()),
                k1: u64::from_le_bytes(b.try_into().unwrap_or_default()),
            }
        }

        /// The token of `viewer`.
        pub fn token(&self, viewer: ViewerId) -> Box<str> {
            use std::hash::Hasher;
            #[allow(deprecated)] // SipHash-2-4 keyed: a PRF, which is what a nonce needs.
            let mut h = std::hash::SipHasher::new_with_keys(self.k0, self.k1);
            h.write_u64(viewer.0);
            mint(viewer, h.finish())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tokens_round_trip_and_differ_per_key() {
            let v = ViewerId::compose(1, 2, 3);
            let (a, b) = (Minter::random(), Minter::random());
            let t = a.token(v);
            assert_eq!(t.len(), 32);
            let (id, nonce) = parse(&t).unwrap();
            assert_eq!(id, v);
            assert_eq!(mint(id, nonce), t);
            assert_eq!(a.token(v), t, "a minter is a function of the id");
            assert_ne!(b.token(v), t);
            assert_eq!(parse("t1"), None);
            assert_eq!(parse(&"G".repeat(32)), None);
            assert_eq!(parse(&"A".repeat(32)), None, "lowercase only");
        }
    }
}
