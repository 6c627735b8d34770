//! One shard's state and command handling: the connection table beside the pure [`Core`]
//! (groups, polls), the outbox to the application core, the shard's answers to viewer
//! messages, fan-out, keepalive and drain.
//!
//! Every method takes the time it needs (`now`, in ticks) from its caller; only the tasks
//! read the clock. The accept loop and handshake are in `accept`, the task that serves every
//! open connection from the shard's own io_uring in `serve` (with `crate::reactor`), the wiring of the tasks in
//! `runtime`. They share the [`Shard`] through an `Rc`:
//! no locks, one thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use futures_lite::future;
use glommio::timer::sleep;
use netstack::ws::{self, close_code, OpCode};
use protocol::{ServerMessage, ViewerMessage, MAX_COUNTER};

use crate::clock::{ticks, Ticks};
use crate::config::ShardConfig;
use crate::conn::{Conn, Env, Link};
use crate::frames;
use crate::hls_window::Windows;
use crate::logic::Core;
use crate::logic::{keepalive, Keepalive};
use crate::profile::{profile_hash, Predicate, Profile, ViewerId};
use crate::proto::{
    Frame, GroupId, ProfileUpdate, Request, ShardCommand, ShardEvent, Slot, ViewerRef,
};
use crate::stats::ShardStats;
use crate::sync::{Notify, Signal};

/// Size of the one read buffer all of a shard's connections share.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Members written per fan-out step before the shard checks whether to yield.
const FANOUT_CHUNK: usize = 256;

mod delivery;
mod serve;
mod uplink;

pub(crate) struct Shard {
    pub index: u16,
    pub config: Arc<ShardConfig>,
    pub stats: Arc<ShardStats>,
    /// Viewer sockets held over all shards (handshaking or open): the `max_connections` cap.
    pub open_total: Arc<AtomicUsize>,
    /// Sockets of this shard being refused (503) because the cap was reached.
    pub refusing: Cell<usize>,
    /// The read buffer every connection of this shard reads into, one at a time.
    pub scratch: RefCell<Box<[u8]>>,
    conns: RefCell<slab::Slab<Rc<Conn>>>,
    core: RefCell<Core>,
    outbox: RefCell<VecDeque<ShardEvent>>,
    /// The outbox holds an event the application core should see at once
    /// ([`Shard::urgent`]).
    outbox_urgent: Cell<bool>,
    uplink_waker: RefCell<Option<Waker>>,
    /// Set at the end of a drain: the uplink sends what is queued, then ends.
    uplink_last: Cell<bool>,
    /// Counter of the next viewer id (see `ViewerId::compose`).
    next_viewer: Cell<u32>,
    /// Makes each viewer's resume token (keyed once per shard: no syscall per connection).
    tokens: crate::proto::resume::Minter,
    clock: Ticks,
    pub stop_accepting: Notify,
    /// Fired when the last connection leaves during shutdown.
    drained: Notify,
    pub draining: Cell<bool>,
    ping_frame: Frame,
    /// Raised by a counted vote or a telemetry report: the reporter sleeps until there is
    /// something to report.
    tallies_dirty: Signal,
    /// The HLS windows this shard serves.
    pub hls: RefCell<Windows>,
    /// Viewers that reported buffering since the last report (sessions to stall).
    buffering: RefCell<Vec<ViewerRef>>,
    /// How segment bodies are sent (zero-copy or plain).
    pub sender: Rc<crate::sender::Sender>,
    /// Recorded files this shard served lately (open segments, playlists' bytes).
    pub files: crate::hls_file_cache::FileCache<crate::hls_files::OpenFile>,
    /// Watches and drives the open connections (`reactor`).
    pub reactor: crate::reactor::Reactor,
}

impl Shard {
    pub fn new(
        index: usize,
        config: Arc<ShardConfig>,
        stats: Arc<ShardStats>,
        open_total: Arc<AtomicUsize>,
    ) -> Shard {
        let mut ping = Vec::new();
        ws::encode_frame(OpCode::Ping, b"", &mut ping);
        let closed_polls = config.closed_polls.clone();
        let hls = RefCell::new(
            Windows::new(config.hls_window, config.hls_target_secs).with_sessions(
                config.session_key.clone(),
                config.session_url_ttl_s,
                config.hls_require_session,
            ),
        );
        let sender = Rc::new(crate::sender::Sender::new(
            config.zerocopy,
            config.zerocopy_threshold,
            stats.clone(),
        ));
        // glommio runs on io_uring: a kernel that gave the executor its rings gives this one.
        let reactor = crate::reactor::Reactor::new().expect("io_uring for the shard's reactor");
        Shard {
            reactor,
            sender,
            files: crate::hls_file_cache::FileCache::new(config.recordings_changes.clone()),
            index: index as u16,
            config,
            stats,
            open_total,
            refusing: Cell::new(0),
            scratch: RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice()),
            conns: RefCell::new(slab::Slab::new()),
            core: RefCell::new(Core::with_closed_polls(closed_polls)),
            outbox: RefCell::new(VecDeque::new()),
            outbox_urgent: Cell::new(false),
            uplink_waker: RefCell::new(None),
            uplink_last: Cell::new(false),
            next_viewer: Cell::new(1),
            tokens: crate::proto::resume::Minter::random(),
            clock: Ticks::start(),
            stop_accepting: Notify::default(),
            drained: Notify::default(),
            draining: Cell::new(false),
            ping_frame: ping.into(),
            tallies_dirty: Signal::default(),
            hls,
            buffering: RefCell::default(),
        }
    }

    /// The shard clock, in ticks (read by the tasks, passed to the logic).
    pub fn now(&self) -> u32 {
        self.clock.now()
    }

    /// What a connection needs for one call at tick `now`.
    pub fn env(&self, now: u32) -> Env<'_> {
        Env {
            stats: &self.stats,
            config: &self.config,
            now,
            close_ticks: ticks(self.config.close_timeout),
            wakeups: &self.reactor.wakeups,
        }
    }

    fn emit(&self, event: ShardEvent) {
        if Shard::urgent(&event) {
            self.outbox_urgent.set(true);
        }
        self.outbox.borrow_mut().push_back(event);
        if let Some(w) = self.uplink_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// One parsed viewer message.
    pub fn on_message(&self, conn: &Conn, message: ViewerMessage<'_>, now: u32) {
        let env = self.env(now);
        match message {
            ViewerMessage::Hello(hello) => {
                conn.profile.borrow_mut().apply_hello(&hello);
                self.profile_changed(conn);
            }
            ViewerMessage::Ping => conn.send(&env, &frames::encode(&ServerMessage::Pong)),
            ViewerMessage::Watch { stream } => match conn.identity() {
                Some(id) if !id.may_watch(&stream) => conn.send_error(
                    &env,
                    "stream_not_allowed",
                    "your token does not allow this stream",
                ),
                _ => self.request(
                    conn,
                    Request::Watch {
                        stream: stream.into(),
                    },
                ),
            },
            ViewerMessage::Vote { poll, choice } if conn.identity().is_some() => {
                // One vote per person: checked here, counted at the application core by `sub`
                // (which answers it once stored, when votes are durable).
                let checked = self.core.borrow().check_vote(conn.slot, &poll, choice);
                let durable = self.config.durable_votes;
                let reply = match (checked, conn.identity()) {
                    (Ok((seq, choice)), Some(id)) => {
                        let sub = id.sub.clone();
                        self.request(conn, Request::person_vote(sub, seq, choice, durable));
                        if durable {
                            return;
                        }
                        ServerMessage::voted(&poll, choice)
                    }
                    (Err(e), _) => ServerMessage::error(e.code(), e.message()),
                    (Ok(_), None) => return,
                };
                conn.send(&env, &frames::encode(&reply));
            }
            ViewerMessage::Vote { .. }
                if self
                    .config
                    .identity
                    .as_ref()
                    .is_some_and(|v| !v.anonymous_votes) =>
            {
                conn.send_error(&env, "identity_required", "sign in to vote");
            }
            ViewerMessage::Vote { poll, choice } => {
                let counted = {
                    let mut votes = conn.votes.take();
                    let profile = conn.profile.borrow();
                    let counted = self
                        .core
                        .borrow_mut()
                        .vote(conn.slot, &mut votes, &profile, &poll, choice);
                    conn.votes.set(votes);
                    counted
                };
                let reply = match counted {
                    Ok((seq, choice)) if self.config.durable_votes => {
                        ShardStats::add(&self.stats.votes, 1);
                        self.tallies_dirty.raise();
                        // Answered by the application core once the vote is stored.
                        let poll = poll.as_ref().into();
                        return self.request(conn, Request::DurableVote { poll, seq, choice });
                    }
                    Ok((_, choice)) => {
                        ShardStats::add(&self.stats.votes, 1);
                        self.tallies_dirty.raise();
                        ServerMessage::voted(&poll, choice)
                    }
                    Err(e) => ServerMessage::error(e.code(), e.message()),
                };
                conn.send(&env, &frames::encode(&reply));
            }
            ViewerMessage::Telemetry(t) => {
                ShardStats::add(&self.stats.telemetry_reports, 1);
                let second = crate::clock::unix_s(); // names its bucket at the core
                self.core.borrow_mut().report(conn.slot, second, &t);
                if t.buffering_ratio.is_some_and(|r| r >= 0.5) {
                    let at = conn.at(self.index);
                    let mut buffering = self.buffering.borrow_mut();
                    if !buffering.contains(&at) && buffering.len() < 65_536 {
                        buffering.push(at);
                    }
                }
                self.tallies_dirty.raise();
            }
        }
    }

    /// Forwards a viewer message to the application core.
    fn request(&self, conn: &Conn, request: Request) {
        self.emit(ShardEvent::Request {
            at: conn.at(self.index),
            request,
        });
    }

    /// Re-evaluates every group for `conn` and mirrors its profile to the application core.
    pub fn profile_changed(&self, conn: &Conn) {
        self.regroup(conn);
        self.emit(ShardEvent::Changed {
            at: conn.at(self.index),
            profile: Box::new(conn.profile.borrow().clone()),
        });
    }

    fn regroup(&self, conn: &Conn) {
        if !conn.pending.get() {
            self.core
                .borrow_mut()
                .regroup(conn.slot, &conn.profile.borrow());
        }
    }

    /// Puts a connection that finished its handshake into the table and tells the
    /// application core. With `claim` it waits for an `Admit` before its welcome.
    pub fn join(
        &self,
        link: Link,
        profile: Profile,
        resume: Box<str>,
        claim: Option<Box<str>>,
        now: u32,
    ) -> Rc<Conn> {
        let conn = {
            let mut conns = self.conns.borrow_mut();
            let entry = conns.vacant_entry();
            let conn = Rc::new(Conn::new(
                (entry.key() as Slot, self.reactor.next_serial()),
                link,
                self.config.limits,
                profile,
                now,
            ));
            entry.insert(conn.clone());
            conn
        };
        conn.pending.set(claim.is_some());
        if self.reactor.watch(&conn).is_err() {
            conn.abort(&self.env(now)); // joins and leaves at the reactor's next turn
        }
        ShardStats::add(&self.stats.connections, 1);
        self.regroup(&conn);
        self.emit(ShardEvent::Joined {
            at: conn.at(self.index),
            resume,
            profile: Box::new(conn.profile.borrow().clone()),
            claim,
        });
        conn
    }

    fn conn(&self, at: ViewerRef) -> Option<Rc<Conn>> {
        let conns = self.conns.borrow();
        let conn = conns.get(at.slot as usize)?;
        (conn.viewer() == at.viewer).then(|| conn.clone())
    }

    /// The `welcome` of a viewer of this shard.
    pub fn welcome(&self, viewer: ViewerId, resume: &str, resumed: bool) -> ServerMessage {
        ServerMessage::welcome(
            viewer,
            resume,
            resumed,
            self.index,
            self.config.ping_interval.as_secs(),
        )
    }

    fn apply(&self, to: ViewerRef, update: ProfileUpdate) {
        let Some(conn) = self.conn(to) else { return };
        {
            let mut p = conn.profile.borrow_mut();
            match update {
                ProfileUpdate::Stream(stream) => p.stream = stream,
                ProfileUpdate::Tags(tags) => p.rare.set_tags(tags),
            }
        }
        self.profile_changed(&conn);
    }

    fn define_group(&self, id: GroupId, predicate: Arc<Predicate>) {
        let conns = self.conns.borrow();
        let profiles: Vec<(Slot, std::cell::Ref<'_, Profile>)> = conns
            .iter()
            .filter(|(_, c)| c.is_open() && !c.pending.get())
            .map(|(slot, c)| (slot as Slot, c.profile.borrow()))
            .collect();
        self.core.borrow_mut().define_group(
            id,
            predicate,
            profiles.iter().map(|(slot, p)| (*slot, &**p)),
        );
    }

    /// Keepalive and close deadlines at tick `now`: pings silent viewers, drops those that do
    /// not answer and those that do not finish closing in time.
    fn sweep(&self, now: u32) {
        let env = self.env(now);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        let now_s = crate::clock::unix_ms() / 1000;
        for conn in conns {
            if conn.identity().is_some_and(|id| id.exp <= now_s) {
                ShardStats::add(&self.stats.closed_token_expired, 1);
                conn.close(&env, crate::identity::CLOSE_TOKEN_EXPIRED, "token expired");
            }
            let state = conn.state.get();
            match keepalive(
                state,
                now,
                conn.last_rx.get(),
                conn.ping_sent.get(),
                &self.config,
            ) {
                Keepalive::Nothing => {}
                Keepalive::Ping => {
                    conn.ping_sent.set(now.max(1));
                    conn.send(&env, &self.ping_frame);
                }
                Keepalive::Drop => {
                    ShardStats::add(&self.stats.closed_timeout, 1);
                    conn.abort(&env);
                }
            }
        }
    }

    /// The resume token of `viewer` (see [`crate::proto::resume`]).
    pub fn resume_token(&self, viewer: ViewerId) -> Box<str> {
        self.tokens.token(viewer)
    }

    /// A new viewer id: this shard, the configured id epoch, the next counter value.
    pub fn mint_viewer(&self) -> ViewerId {
        let counter = self.next_viewer.get();
        // After MAX_COUNTER (2^32 - 1) viewers in one epoch the counter starts over at 1.
        self.next_viewer.set(counter % MAX_COUNTER + 1);
        ViewerId::compose(self.index, self.config.id_epoch, counter)
    }

    /// Every command except `Cast` (fanned out by the runtime, which batches casts) and
    /// `Shutdown` (which ends the runtime's loop).
    pub fn handle(&self, command: ShardCommand, now: u32) {
        match command {
            ShardCommand::DefineGroup { id, predicate } => self.define_group(id, predicate),
            ShardCommand::DropGroup { id } => self.core.borrow_mut().drop_group(id),
            ShardCommand::Send { to, frame } => {
                if let Some(conn) = self.conn(to) {
                    conn.send(&self.env(now), &frame);
                }
            }
            ShardCommand::Update { to, update } => self.apply(to, update),
            ShardCommand::OpenPoll {
                id,
                seq,
                choices,
                audience,
                breakdown,
            } => self
                .core
                .borrow_mut()
                .polls
                .open(id, seq, choices, audience, breakdown),
            ShardCommand::ClosePoll { seq } => {
                let tally = self.core.borrow_mut().polls.close(seq);
                if let Some((tally, breakdown)) = tally {
                    self.emit(ShardEvent::PollTally {
                        seq,
                        shard: self.index,
                        tally,
                        breakdown,
                        closed: true,
                    });
                }
            }
            ShardCommand::DropPoll { seq } => {
                self.core.borrow_mut().polls.retire(seq);
                for (_, c) in self.conns.borrow().iter() {
                    let mut votes = c.votes.take();
                    votes.forget(seq);
                    c.votes.set(votes);
                }
            }
            ShardCommand::Admit { to, admission } => self.admit(to, admission, now),
            ShardCommand::Evict { to } => {
                if let Some(conn) = self.conn(to) {
                    conn.abort(&self.env(now));
                }
            }
            ShardCommand::Audit { audit } => {
                let profiles = self
                    .conns
                    .borrow()
                    .iter()
                    .filter(|(_, c)| !c.pending.get())
                    .map(|(_, c)| (c.at(self.index), profile_hash(&c.profile.borrow())))
                    .collect();
                self.emit(ShardEvent::Audit {
                    audit,
                    shard: self.index,
                    profiles,
                });
            }
            // The runtime batches casts and ends its loop on shutdown.
            ShardCommand::Cast { .. } => {}
            ShardCommand::Shutdown { .. } | ShardCommand::HeadsUp => {}
            ShardCommand::Media(m) => self.hls.borrow_mut().apply(m),
        }
    }

    /// Stops accepting, closes every viewer with 1001, and waits for them up to `grace`.
    pub async fn drain(&self, grace: Duration) {
        self.draining.set(true);
        self.stop_accepting.notify();
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        let n = conns.len() as u64;
        let env = self.env(self.now());
        for conn in &conns {
            conn.close(&env, close_code::GOING_AWAY, "server shutting down");
        }
        drop(conns);
        ShardStats::add(&self.stats.closed_shutdown, n);
        if !self.conns.borrow().is_empty() {
            future::or(self.drained.wait(), sleep(grace)).await;
        }
        let left: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for conn in left {
            conn.abort(&env);
            self.finish(&conn);
        }
        tracing::info!(shard = self.index, closed = n, "shard drained");
    }

    /// A cast to `group` was written to every member here.
    pub fn cast_done(&self, group: GroupId) {
        self.emit(ShardEvent::CastDone { group });
    }

    /// A viewing session fetched something: the reporter sends the counts at its next turn.
    pub fn session_fetched(&self) {
        self.tallies_dirty.raise();
    }

    /// Lets the uplink send what is queued and end.
    pub fn last_uplink(&self) {
        self.uplink_last.set(true);
        if let Some(w) = self.uplink_waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Pings silent viewers and enforces close deadlines.
pub(crate) async fn sweeper(shard: Rc<Shard>) {
    let c = &shard.config;
    let tick = c.ping_interval.min(c.pong_timeout).min(c.close_timeout) / 4;
    let tick = tick.clamp(Duration::from_millis(100), Duration::from_secs(1));
    let hls_idle = ticks(c.hls_idle_timeout);
    loop {
        sleep(tick).await;
        let now = shard.now();
        shard.sweep(now);
        shard.reactor.expire(now, hls_idle);
        shard.files.sweep(now);
    }
}

/// Reports changed poll tallies, telemetry deltas and viewing sessions' fetches, at most once
/// per `tally_interval`: a vote or report storm becomes a few messages per second per shard,
/// and a quiet shard never wakes for it.
pub(crate) async fn report_tallies(shard: Rc<Shard>) {
    loop {
        shard.tallies_dirty.wait().await;
        sleep(shard.config.tally_interval).await;
        let deltas = shard.core.borrow_mut().telemetry.take();
        if !deltas.is_empty() {
            shard.emit(ShardEvent::Telemetry {
                shard: shard.index,
                deltas,
            });
        }
        let viewers = std::mem::take(&mut *shard.buffering.borrow_mut());
        if !viewers.is_empty() {
            shard.emit(ShardEvent::Buffering { viewers });
        }
        let fetches = shard.hls.borrow_mut().sessions.take_deltas();
        if !fetches.is_empty() {
            shard.emit(ShardEvent::SessionFetches {
                shard: shard.index,
                fetches,
            });
        }
        let dirty = shard.core.borrow_mut().polls.take_dirty();
        for (seq, tally, breakdown) in dirty {
            shard.emit(ShardEvent::PollTally {
                seq,
                shard: shard.index,
                tally,
                breakdown,
                closed: false,
            });
        }
    }
}
