//! The application core: one executor beside the shards that knows every viewer.
//!
//! It mirrors the shards' profiles (from [`ShardEvent`]s), keeps groups (the global group, one
//! audience group per stream and per open poll, and custom predicate groups), answers the
//! viewer requests that need global knowledge (`watch`), runs polls, and reaches a group with
//! one [`ShardCommand::Cast`] per shard. It holds no viewer sockets: each shard fans out from
//! its own bitmaps.
//!
//! This module is composition and event dispatch; each concern has its own module and state:
//! [`mirror`] (profiles, resume; its viewers in a [`by_viewer`] table), [`groups`] (groups, cast backpressure), [`streams`],
//! [`polls`] (registry, lifecycle, merged counts), [`telemetry`] (sliding windows of the
//! shards' per-group telemetry deltas), [`player_config`], [`remediation`] (pure rules) and
//! [`remediation_apply`] (their effects), [`audits`], [`store`] (durable state, written
//! on its own thread), [`live`] (stream keys, publishes, segmenting, what goes live and ends),
//! [`messages`] (every frame the core sends viewers), and [`edges`] (the other edges of a
//! cluster and the bus to them; `cluster.rs` and `cluster_votes.rs` apply what they say),
//! [`relays`] (streams across edges; [`relay_ops`] relays a stream from its origin edge).
//!
//! The core never reads the clock: every method that needs time takes `now_ms` (Unix
//! milliseconds) from its caller, and shard commands go out through [`Downlink`] queues, so
//! tests drive it in memory (see `tests.rs`).

pub mod ad_ops;
pub mod ads;
pub mod audits;
pub mod by_viewer;
pub mod distribution;
pub mod downlink;
pub mod edges;
pub mod groups;
pub mod live;
pub mod media_state;
pub mod messages;
pub mod mirror;
pub mod player_config;
pub mod polls;
pub mod random;
pub mod rebroadcast;
pub mod recording_runner;
pub mod recordings;
pub mod relay_ops;
pub mod relays;
pub mod remediation;
pub mod remediation_apply;
pub mod session_ops;
pub mod sessions;
pub mod sink;
pub mod store;
pub mod streams;
pub mod telemetry;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use shards::profile::{Predicate, Profile, ViewerId};
use shards::proto::{
    Admission, Frame, GroupId, ProfileUpdate, Request, ShardCommand, ShardEvent, ViewerRef,
};
use shards::sync::Signal;
use shards::ShardStats;

use crate::config::Config;
use downlink::Downlink;
use mirror::{Claim, DepartedLimits, Mirror};
use sink::Sink;
use store::{Restored, Store};

pub use audits::Audit;
pub use groups::{Group, GroupError, GroupKind, StoredGroup};
pub use media_state::IngestStats;
pub use messages::text_frame;
pub use mirror::Viewer;
pub use polls::{Poll, PollError, PollRequest, PollState};
pub use streams::{PublishError, PublishTurn, Stream, StreamError, StreamState};

pub use media_state::{Rebroadcast, RebroadcastError};
/// The wall clock in Unix milliseconds, for the executor glue and API handlers that drive the
/// core. The core itself never calls it.
pub use random::random_hex;
pub use recordings::{Recording, RecordingError};
pub use relays::{OriginRefusal, Relay, RelayStats};
pub use shards::clock::unix_ms;

/// Resume bookkeeping for `/api/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeStats {
    pub departed: usize,
    pub departed_bytes: usize,
    /// Departed viewers dropped by `resume_max_departed` or `resume_max_bytes`.
    pub dropped: u64,
}

/// Durability bookkeeping for `/api/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Open polls whose counts changed since their last checkpoint.
    pub unsaved_polls: usize,
    /// Writes queued to the store thread and not yet committed.
    pub queued_writes: u64,
    pub failed_writes: u64,
}

/// All state of the application core. Single-threaded: the executor's tasks share it through
/// `Rc<RefCell<App>>` and never hold a borrow across an await.
pub struct App {
    config: Arc<Config>,
    shard_stats: Vec<Arc<ShardStats>>,
    downlinks: Vec<Rc<Downlink>>,
    mirror: Mirror,
    groups: groups::Groups,
    streams: streams::Streams,
    polls: polls::Polls,
    audits: audits::Audits,
    /// Broadcasters following a stream's results over WebSocket.
    broadcasters: Vec<(String, Rc<Sink>)>,
    store: Option<Store>,
    last_checkpoint_ms: u64,
    /// Raised when a poll opens: the ticker runs at the results interval only while one is.
    poll_opened: Rc<Signal>,
    /// Raised when a poll's final count completes or a cast is written (shutdown waits on it).
    progress: Rc<Signal>,
    /// API answers waiting for casts to be written ([`App::casts_written`]).
    cast_waiters: Vec<std::task::Waker>,
    live: media_state::Live,
    /// Bound addresses: the viewer port (`{listen}` in `media_url`) and RTMP ingest.
    viewer_addr: SocketAddr,
    rtmp_addr: SocketAddr,
    /// Telemetry per group over sliding windows, from the shards' deltas.
    telemetry: telemetry::TelemetryWindows,
    /// Player configuration per stream and the schedule of upcoming broadcasts.
    player: player_config::PlayerConfigs,
    /// Remediation rules, what they changed, their events.
    remediation: remediation::Remediations,
    /// The directory of recordings, and the thread that writes their files (None: off).
    recordings: recordings::Recordings,
    recorder: Option<crate::recorder::Recorder>,
    /// The other edges of the cluster and the bus to them (none for a single edge).
    edges: edges::Edges,
    /// Viewing sessions (`session_ops`).
    sessions: sessions::Sessions,
    /// The latest time the core was given (for the few paths called without one).
    clock_ms: u64,
    /// The ad library, programs, breaks and beacons (`ad_ops`).
    ads: ads::AdState,
    /// Distribution rules per stream (who may watch at all).
    distribution: std::collections::HashMap<String, distribution::Distribution>,
    /// Streams across edges: origins elsewhere, relays here, windows served to other edges
    /// (`relay_ops`).
    relays: relays::Relays,
}

impl App {
    pub fn new(
        config: Arc<Config>,
        shard_stats: Vec<Arc<ShardStats>>,
        downlinks: Vec<Rc<Downlink>>,
        now_ms: u64,
    ) -> App {
        App {
            shard_stats,
            downlinks,
            mirror: Mirror::default(),
            groups: groups::Groups::new(now_ms),
            streams: streams::Streams::default(),
            polls: polls::Polls::default(),
            audits: audits::Audits::default(),
            broadcasters: Vec::new(),
            store: None,
            last_checkpoint_ms: now_ms,
            poll_opened: Rc::default(),
            progress: Rc::default(),
            cast_waiters: Vec::new(),
            live: media_state::Live::default(),
            viewer_addr: config.listen,
            rtmp_addr: config.rtmp_listen,
            telemetry: telemetry::TelemetryWindows::new(&config.telemetry_windows_s),
            player: player_config::PlayerConfigs::default(),
            remediation: remediation::Remediations::default(),
            recordings: recordings::Recordings::default(),
            recorder: None,
            edges: edges::Edges::single(
                &config.edge_id,
                config.cluster_announce_ms,
                config.cluster_final_wait_ms,
            ),
            sessions: sessions::Sessions::default(),
            clock_ms: now_ms,
            distribution: Default::default(),
            ads: ads::AdState::default(),
            relays: relays::Relays::default(),
            config,
        }
    }

    /// The addresses the listeners were bound to (they differ from the settings for port 0).
    pub fn set_addresses(&mut self, viewer: SocketAddr, rtmp: SocketAddr) {
        self.viewer_addr = viewer;
        self.rtmp_addr = rtmp;
    }

    /// Completes once every shard has written the casts to `group` sent so far. The API
    /// answers `POST /api/polls` after it: each shard handles `OpenPoll` before the poll's
    /// cast, so by then every shard counts votes for the poll.
    pub fn casts_written(
        app: &std::cell::RefCell<App>,
        group: GroupId,
    ) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut app = app.borrow_mut();
            if app.groups.cast_in_flight(group) {
                app.cast_waiters.push(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }

    /// Takes the store and what it held: custom groups come back. (The shards learn the ids
    /// of stored polls from their configuration, before the first viewer connects, so a late
    /// vote for one gets `poll_closed` rather than `unknown_poll`.)
    pub fn restore(&mut self, store: Store, restored: &Restored, now_ms: u64) {
        self.restore_streams(&restored.streams);
        for record in &restored.groups {
            match serde_json::from_value::<StoredGroup>(record.clone()) {
                Ok(g) => {
                    self.groups.reserve_custom_key(&g.key);
                    self.define_group(g.key, g.name, GroupKind::Custom, g.predicate, g.created_ms);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a stored group"),
            }
        }
        for (key, value) in &restored.settings {
            if let (Some(stream), serde_json::Value::Object(settings)) =
                (key.strip_prefix("player/"), value)
            {
                self.player.set(stream, settings.clone());
            }
        }
        let limits = self.departed_limits();
        let mut back = 0usize;
        for (id, bytes) in &restored.departed {
            match mirror::Departed::from_bytes(bytes) {
                Some(d) if now_ms.saturating_sub(d.left_ms()) <= limits.window_ms => {
                    self.mirror.restore_departed(ViewerId(*id), d, limits);
                    back += 1;
                }
                Some(_) => {}
                None => tracing::warn!(viewer = id, "skipping an unreadable departed viewer"),
            }
        }
        if back > 0 {
            tracing::info!(viewers = back, "viewers of the last run may resume");
        }
        self.store = Some(store);
        self.restore_recordings(&restored.recordings, now_ms);
        self.restore_ads();
        self.last_checkpoint_ms = now_ms;
    }

    // ---- commands out ----

    fn command(&self, shard: u16, command: ShardCommand) {
        if let Some(d) = self.downlinks.get(shard as usize) {
            d.push(command);
        }
    }

    /// The core began to read a request that may command the shards: wake those asleep on
    /// other CPUs now (`wake_shards_ahead`, [`Downlink::heads_up`]).
    pub fn wake_shards_ahead(&self) {
        if !self.config.wake_shards_ahead {
            return;
        }
        let here = netstack::sys::current_cpu();
        for d in &self.downlinks {
            d.heads_up(here);
        }
    }

    fn broadcast(&self, mut make: impl FnMut() -> ShardCommand) {
        for d in &self.downlinks {
            d.push(make());
        }
    }

    /// Casts `frame` to `group` on every shard, counting it in flight until every shard has
    /// written it.
    fn cast_frame(&mut self, group: GroupId, frame: Frame) {
        self.groups.cast_sent(group, self.downlinks.len());
        self.broadcast(|| ShardCommand::Cast {
            group,
            frame: frame.clone(),
        });
    }

    fn send_to(&self, at: ViewerRef, frame: Frame) {
        self.command(at.shard, ShardCommand::Send { to: at, frame });
    }

    fn define_group(
        &mut self,
        key: String,
        name: String,
        kind: GroupKind,
        p: Predicate,
        now_ms: u64,
    ) -> GroupId {
        let g = self
            .groups
            .add(key, name, kind, p, now_ms, self.mirror.viewers());
        let (id, predicate) = (g.id, g.predicate.clone());
        self.broadcast(|| ShardCommand::DefineGroup {
            id,
            predicate: predicate.clone(),
        });
        id
    }

    // ---- events ----

    pub fn on_event(&mut self, event: ShardEvent, now_ms: u64) {
        self.clock_ms = now_ms;
        match event {
            ShardEvent::Joined {
                at,
                resume,
                profile,
                claim,
            } => match claim {
                None => self.join(at, resume, *profile),
                Some(token) => self.claim(at, resume, *profile, &token),
            },
            ShardEvent::Changed { at, profile } => {
                if let Some((old, new)) = self.mirror.change(at, *profile) {
                    self.groups.recount(&old, &new);
                }
            }
            ShardEvent::Left { at, votes, reports } => self.leave(at, votes, reports, now_ms),
            ShardEvent::Request { at, request } => match request {
                Request::Watch { stream } => self.watch(at, &stream, now_ms),
                Request::PersonVote {
                    sub,
                    seq,
                    choice,
                    durable,
                } => self.person_vote(at, sub, seq, choice, durable),
                Request::DurableVote { poll, choice, .. } => self.durable_vote(at, &poll, choice),
            },
            ShardEvent::Telemetry { deltas, .. } => {
                for (group, second, delta) in &deltas {
                    // A delta for a group dropped meanwhile is of no use.
                    if self.groups.get(*group).is_some() {
                        self.telemetry.merge(*group, *second, delta, now_ms);
                    }
                }
            }
            ShardEvent::Audit {
                audit,
                shard,
                profiles,
            } => self.audits.report(audit, shard, &profiles, &self.mirror),
            ShardEvent::PollTally {
                seq,
                shard,
                tally,
                breakdown,
                closed,
            } => {
                let done = self
                    .polls
                    .by_seq(seq)
                    .is_some_and(|p| p.take_tally(shard as usize, tally, breakdown, closed));
                if done {
                    if let Some(id) = self.polls.by_seq(seq).map(|p| p.id.clone()) {
                        self.local_final(&id, now_ms);
                    }
                }
            }
            ShardEvent::SessionFetches { fetches, .. } => self.session_fetches(&fetches, now_ms),
            ShardEvent::Buffering { viewers } => {
                for at in viewers {
                    self.sessions.buffering(at.viewer);
                }
            }
            ShardEvent::CastDone { group } => {
                self.groups.cast_done(group);
                if !self.groups.cast_in_flight(group) {
                    self.progress.raise();
                    for waker in self.cast_waiters.drain(..) {
                        waker.wake();
                    }
                }
            }
        }
    }

    fn join(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile) {
        self.sessions.returned(at.viewer);
        self.groups.count(&profile, 1);
        if let Some(old) = self.mirror.join(at, resume, profile) {
            self.groups.count(&old, -1);
        }
    }

    /// A new connection presents a resume token. Its welcome waits for our answer.
    fn claim(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile, token: &str) {
        match self.mirror.claim(at, profile, token) {
            Claim::New { profile } => {
                // In a cluster the token may be another edge's: its stored record decides.
                if !self.cluster_claim(at, &resume, &profile, token) {
                    self.admit_new(at, resume, profile);
                }
            }
            Claim::Resumed {
                x,
                departed,
                profile,
            } => self.resume_into(at, x, departed, profile),
            // The old connection is still open (its loss not yet noticed): drop it, and
            // resume once its `Left` brings back its votes.
            Claim::EvictFirst { old } => self.command(old.shard, ShardCommand::Evict { to: old }),
        }
    }

    /// Admits a connection as a new viewer.
    fn admit_new(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile) {
        let admission = Admission {
            viewer: at.viewer,
            resume: resume.clone(),
            restore: None,
        };
        self.command(at.shard, ShardCommand::Admit { to: at, admission });
        self.join(at, resume, profile);
    }

    /// Gives identity `x` and its departed state to the waiting connection `provisional`.
    fn resume_into(
        &mut self,
        provisional: ViewerRef,
        x: ViewerId,
        dep: mirror::Departed,
        profile: Profile,
    ) {
        let restore = dep.restore();
        let profile = mirror::resumed_profile(profile, x, &restore);
        let resume = self.mirror.token(x, dep.nonce());
        self.command(
            provisional.shard,
            ShardCommand::Admit {
                to: provisional,
                admission: Admission {
                    viewer: x,
                    resume: resume.clone(),
                    restore: Some(Box::new(restore)),
                },
            },
        );
        let at = ViewerRef {
            viewer: x,
            ..provisional
        };
        self.join(at, resume, profile);
        if let Some(v) = self.mirror.viewer(x) {
            self.offer_poll_for(at, &v.profile);
        }
    }

    fn leave(
        &mut self,
        at: ViewerRef,
        votes: Vec<shards::proto::Vote>,
        reports: shards::proto::LatestReports,
        now_ms: u64,
    ) {
        let limits = self.departed_limits();
        let left = self.mirror.leave(at, votes, &reports, now_ms, limits);
        let Some((profile, waiting)) = left else {
            return;
        };
        self.groups.count(&profile, -1);
        self.sessions.departed(at.viewer, now_ms);
        if let Some(w) = waiting {
            self.resume_into(w.at, at.viewer, w.departed, w.profile);
        }
    }

    fn departed_limits(&self) -> DepartedLimits {
        DepartedLimits {
            window_ms: self.config.resume_window_s.saturating_mul(1000),
            max_count: self.config.resume_max_departed,
            max_bytes: self.config.resume_max_bytes,
        }
    }

    /// A viewer asks for a stream (FIG. 4): a registered stream the viewer is entitled to
    /// (its distribution rules) moves the viewer into its audience group and answers with its
    /// session's media endpoint, preceded by its state when it is not live (the viewer is
    /// pushed `live` and a freshly signed endpoint when it goes live).
    fn watch(&mut self, at: ViewerRef, stream: &str, now_ms: u64) {
        let Some(state) = self.streams.get(stream).map(|s| s.state) else {
            let message = format!("no stream {stream:?} is live");
            return self.send_to(at, messages::error("unknown_stream", &message));
        };
        if let Err(message) = self.entitled(at, stream, now_ms) {
            return self.send_to(at, messages::error("not_entitled", &message));
        }
        if state != StreamState::Live {
            self.send_to(at, messages::stream_state(stream, state.into()));
        }
        let (session, url) = self.open_session(at, stream, now_ms);
        self.send_to(at, messages::endpoint(stream, &url, &session));
        if self.player.has_any(stream, now_ms) {
            self.send_to(at, self.config_frame(stream, now_ms));
        }
        // Remediation overlays of the groups the viewer is in (`config` for stream "*").
        if let Some(v) = self.mirror.at(at) {
            let mut profile = v.profile.clone();
            profile.stream = Some(stream.into());
            for overlay in self.overlays_for(&profile) {
                let version = self.player.version();
                self.send_to(at, messages::config("*", version, overlay));
            }
        }
        self.command(
            at.shard,
            ShardCommand::Update {
                to: at,
                update: ProfileUpdate::Stream(Some(stream.into())),
            },
        );
        // A late joiner gets the stream's open poll at once, if it is in the audience.
        if let Some(v) = self.mirror.at(at) {
            let mut profile = v.profile.clone();
            profile.stream = Some(stream.into());
            self.offer_poll_for(at, &profile);
        }
    }

    /// Sends the open poll of the profile's stream, if the viewer is in its audience.
    fn offer_poll_for(&self, at: ViewerRef, profile: &Profile) {
        let Some(stream) = profile.stream.as_deref() else {
            return;
        };
        for poll in self.polls.open_on(stream) {
            let in_audience = self
                .groups
                .get(poll.audience)
                .is_some_and(|g| g.predicate.matches(profile));
            if in_audience {
                self.send_to(at, poll.poll_frame());
            }
        }
    }
}

mod cluster;
mod cluster_votes;
mod operator;
mod poll_runner;

#[cfg(test)]
mod test_bus;
#[cfg(test)]
mod tests;
