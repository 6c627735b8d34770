//! One shard: everything that runs on one pinned glommio executor.
//!
//! Tasks on a shard: the accept loop on the shard's own `SO_REUSEPORT` listener, one handshake
//! task per new connection (it ends once the connection is upgraded), one [`Driver`] per
//! viewer, the command loop (application core -> shard), the uplink (shard -> application
//! core) and the keepalive sweeper. They share the [`Shard`] through an `Rc`: no locks, one
//! thread.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use netstack::http::{self, HandshakeError};
use netstack::ws::{self, close_code, OpCode};

use crate::bitset::Bitset;
use crate::config::ShardConfig;
use crate::conn::{self, Conn, Driver, State};
use crate::polls::Polls;
use crate::profile::{profile_hash, Predicate, Profile, ViewerId};
use crate::proto::{
    Admission, Frame, GroupId, ProfileUpdate, Request, ShardCommand, ShardEvent, Slot, ViewerRef,
};
use crate::stats::ShardStats;
use crate::sync::{Notify, Signal};

/// The shard clock counts ticks of 100 ms from the shard's start.
pub(crate) const TICKS_PER_SEC: u32 = 10;
/// Size of the one read buffer all of a shard's connections share.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Members written per fan-out step before the shard checks whether to yield.
const FANOUT_CHUNK: usize = 256;
/// Most queued casts written to each member together, and their byte bound.
const CAST_BATCH: usize = 32;
const CAST_BATCH_BYTES: usize = 256 * 1024;

/// What a shard needs from the process that starts it. Everything here is `Send`; the shard
/// turns it into thread-local state inside its executor.
pub struct ShardSpec {
    pub index: usize,
    /// This shard's listener of the reuseport group (non-blocking, listening).
    pub listener: std::net::TcpListener,
    pub config: Arc<ShardConfig>,
    pub stats: Arc<ShardStats>,
    pub events: SharedSender<ShardEvent>,
    pub commands: SharedReceiver<ShardCommand>,
    /// Open viewer connections over all shards, shared by every shard of the process.
    pub open_total: Arc<AtomicUsize>,
}

struct Group {
    predicate: Arc<Predicate>,
    members: Bitset,
}

pub(crate) struct Shard {
    pub index: u16,
    pub config: Arc<ShardConfig>,
    pub stats: Arc<ShardStats>,
    open_total: Arc<AtomicUsize>,
    /// The read buffer every connection of this shard reads into, one at a time.
    pub scratch: RefCell<Box<[u8]>>,
    conns: RefCell<slab::Slab<Rc<Conn>>>,
    groups: RefCell<BTreeMap<GroupId, Group>>,
    outbox: RefCell<VecDeque<ShardEvent>>,
    uplink_waker: RefCell<Option<Waker>>,
    /// Set at the end of a drain: the uplink sends what is queued, then ends.
    uplink_last: Cell<bool>,
    next_viewer: Cell<u64>,
    epoch: Instant,
    stop_accepting: Notify,
    /// Fired when the last connection leaves during shutdown.
    drained: Notify,
    draining: Cell<bool>,
    ping_frame: Frame,
    polls: RefCell<Polls>,
    /// Raised by a counted vote: the tally reporter sleeps until there is something to report.
    tallies_dirty: Signal,
}

impl Shard {
    fn new(
        index: usize,
        config: Arc<ShardConfig>,
        stats: Arc<ShardStats>,
        open_total: Arc<AtomicUsize>,
    ) -> Shard {
        let mut ping = Vec::new();
        ws::encode_frame(OpCode::Ping, b"", &mut ping);
        let mut groups = BTreeMap::new();
        groups.insert(
            GroupId::GLOBAL,
            Group {
                predicate: Arc::new(Predicate::default()),
                members: Bitset::new(),
            },
        );
        Shard {
            index: index as u16,
            config,
            stats,
            open_total,
            scratch: RefCell::new(vec![0u8; SCRATCH_BYTES].into_boxed_slice()),
            conns: RefCell::new(slab::Slab::new()),
            groups: RefCell::new(groups),
            outbox: RefCell::new(VecDeque::new()),
            uplink_waker: RefCell::new(None),
            uplink_last: Cell::new(false),
            next_viewer: Cell::new(ViewerId::first_of_shard(index)),
            epoch: Instant::now(),
            stop_accepting: Notify::default(),
            drained: Notify::default(),
            draining: Cell::new(false),
            ping_frame: ping.into(),
            polls: RefCell::new(Polls::default()),
            tallies_dirty: Signal::default(),
        }
    }

    /// The shard clock, in ticks.
    pub fn now(&self) -> u32 {
        let ms = self.epoch.elapsed().as_millis() as u64;
        (ms / (1000 / TICKS_PER_SEC as u64)).min(u32::MAX as u64) as u32
    }

    pub fn close_ticks(&self) -> u32 {
        ticks(self.config.close_timeout)
    }

    fn emit(&self, event: ShardEvent) {
        self.outbox.borrow_mut().push_back(event);
        if let Some(w) = self.uplink_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Forwards a viewer message to the application core.
    pub fn request(&self, conn: &Conn, request: Request) {
        self.emit(conn::event_for(conn, self, request));
    }

    /// Re-evaluates every group for `conn` and mirrors its profile to the application core.
    pub fn profile_changed(&self, conn: &Conn) {
        self.regroup(conn);
        self.emit(ShardEvent::Changed {
            at: conn.at(self),
            profile: Box::new(conn.profile.borrow().clone()),
        });
    }

    fn regroup(&self, conn: &Conn) {
        if conn.pending.get() {
            return;
        }
        let profile = conn.profile.borrow();
        for group in self.groups.borrow_mut().values_mut() {
            if group.predicate.matches(&profile) {
                group.members.insert(conn.slot);
            } else {
                group.members.remove(conn.slot);
            }
        }
    }

    /// Takes a connection out of the table and every group, and tells the application core.
    pub fn finish(&self, conn: &Conn) {
        if conn.state.get() == State::Done {
            return;
        }
        conn.state.set(State::Done);
        for group in self.groups.borrow_mut().values_mut() {
            group.members.remove(conn.slot);
        }
        let removed = {
            let mut conns = self.conns.borrow_mut();
            let ours = conns
                .get(conn.slot as usize)
                .is_some_and(|c| std::ptr::eq(&**c, conn));
            ours.then(|| conns.remove(conn.slot as usize))
        };
        if removed.is_some() {
            ShardStats::sub(&self.stats.connections, 1);
            self.open_total.fetch_sub(1, Ordering::Relaxed);
            self.emit(ShardEvent::Left {
                at: conn.at(self),
                votes: conn.votes.take(),
            });
        }
        if self.draining.get() && self.conns.borrow().is_empty() {
            self.drained.notify();
        }
    }

    fn conn(&self, at: ViewerRef) -> Option<Rc<Conn>> {
        let conns = self.conns.borrow();
        let conn = conns.get(at.slot as usize)?;
        (conn.viewer.get() == at.viewer).then(|| conn.clone())
    }

    /// A viewer's vote: checked against the poll and its audience bitmap, counted into this
    /// shard's tally (moving the viewer's earlier choice), and acknowledged.
    pub fn vote(&self, conn: &Conn, poll: &str, choice: i64) {
        let checked = self.polls.borrow().check(poll, choice);
        let (seq, audience) = match checked {
            Ok(ok) => ok,
            Err(e) => return conn.send_error(self, e.code(), e.message()),
        };
        let member = self
            .groups
            .borrow()
            .get(&audience)
            .is_some_and(|g| g.members.contains(conn.slot));
        if !member {
            let e = crate::polls::VoteError::NotInAudience;
            return conn.send_error(self, e.code(), e.message());
        }
        let choice = choice as u8; // checked: 0 <= choice < choices <= u8::MAX
        self.polls
            .borrow_mut()
            .count(seq, conn.vote_for(seq), choice);
        conn.set_vote(seq, choice);
        self.tallies_dirty.raise();
        let ack = serde_json::json!({"type": "voted", "poll": poll, "choice": choice});
        conn.send_json(self, &ack.to_string());
    }

    /// The application core's answer to a resume claim.
    fn admit(&self, to: ViewerRef, admission: Admission) {
        let Some(conn) = self.conn(to).filter(|c| c.pending.get()) else {
            // Gone before the answer: hand the identity back so its votes are not lost.
            if let Some(restore) = admission.restore {
                self.emit(ShardEvent::Left {
                    at: ViewerRef {
                        viewer: admission.viewer,
                        ..to
                    },
                    votes: restore.votes,
                });
            }
            return;
        };
        let resumed = admission.restore.is_some();
        conn.viewer.set(admission.viewer);
        {
            let mut p = conn.profile.borrow_mut();
            p.viewer = admission.viewer;
            if let Some(r) = admission.restore {
                p.stream = r.stream;
                p.tags = r.tags;
                p.app_version = r.app_version.or(p.app_version.take());
                p.hardware = r.hardware.or(p.hardware.take());
                if p.region.is_none() {
                    p.region = r.region;
                }
                *conn.votes.borrow_mut() = r.votes;
            }
        }
        conn.pending.set(false);
        let welcome = welcome_json(self, admission.viewer, &admission.resume, resumed);
        conn.send_json(self, &welcome);
        self.profile_changed(&conn);
    }

    /// Writes `frames` to every member of `group`, a chunk of members at a time, yielding
    /// between chunks when other tasks wait, so a cast to a million viewers does not freeze the
    /// shard. Several frames (casts that queued up) go to each member in one `sendmsg`.
    async fn fan_out(&self, group: GroupId, frames: &[Frame]) {
        ShardStats::add(&self.stats.casts, frames.len() as u64);
        let mut next: Slot = 0;
        let mut chunk: Vec<Rc<Conn>> = Vec::with_capacity(FANOUT_CHUNK);
        loop {
            {
                let groups = self.groups.borrow();
                let Some(g) = groups.get(&group) else { return };
                let conns = self.conns.borrow();
                for slot in g.members.iter_from(next).take(FANOUT_CHUNK) {
                    if let Some(c) = conns.get(slot as usize) {
                        chunk.push(c.clone());
                    }
                    next = slot + 1;
                }
            }
            if chunk.is_empty() {
                return;
            }
            for conn in chunk.drain(..) {
                conn.send_batch(self, frames);
            }
            glommio::yield_if_needed().await;
        }
    }

    fn apply(&self, to: ViewerRef, update: ProfileUpdate) {
        let Some(conn) = self.conn(to) else { return };
        {
            let mut p = conn.profile.borrow_mut();
            match update {
                ProfileUpdate::Stream(stream) => p.stream = stream,
                ProfileUpdate::Tags(tags) => p.tags = tags,
            }
        }
        self.profile_changed(&conn);
    }

    fn define_group(&self, id: GroupId, predicate: Arc<Predicate>) {
        let mut members = Bitset::new();
        for (slot, conn) in self.conns.borrow().iter() {
            if conn.is_open() && !conn.pending.get() && predicate.matches(&conn.profile.borrow()) {
                members.insert(slot as Slot);
            }
        }
        self.groups
            .borrow_mut()
            .insert(id, Group { predicate, members });
    }

    /// Keepalive and close deadlines: pings silent viewers, drops those that do not answer
    /// and those that do not finish closing in time.
    fn sweep(&self) {
        let now = self.now();
        let ping_after = ticks(self.config.ping_interval);
        let pong_within = ticks(self.config.pong_timeout);
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        for conn in conns {
            match conn.state.get() {
                State::Open => {
                    let sent = conn.ping_sent.get();
                    if sent != 0 && now.wrapping_sub(sent) >= pong_within {
                        ShardStats::add(&self.stats.closed_timeout, 1);
                        conn.abort();
                    } else if sent == 0 && now.wrapping_sub(conn.last_rx.get()) >= ping_after {
                        conn.ping_sent.set(now.max(1));
                        conn.send(self, &self.ping_frame);
                    }
                }
                State::Closing { deadline, .. } if now >= deadline => {
                    ShardStats::add(&self.stats.closed_timeout, 1);
                    conn.abort();
                }
                _ => {}
            }
        }
    }

    fn mint_viewer(&self) -> ViewerId {
        let id = self.next_viewer.get();
        self.next_viewer.set(id + 1);
        ViewerId(id)
    }
}

fn ticks(d: Duration) -> u32 {
    let t = d.as_millis() as u64 * TICKS_PER_SEC as u64 / 1000;
    t.clamp(1, u32::MAX as u64) as u32
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random 128-bit token in hex: lets a viewer resume its identity after a reconnect.
fn resume_token() -> Box<str> {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // getrandom(2) does not fail on Linux >= 3.17 once the pool is seeded; if it ever
        // does, a token that matches nothing only disables resuming for this viewer.
        return "".into();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

/// Runs a shard until the application core tells it to shut down (or goes away).
pub async fn run(spec: ShardSpec) {
    let shard = Rc::new(Shard::new(
        spec.index,
        spec.config,
        spec.stats,
        spec.open_total,
    ));
    let listener: TcpListener = netstack::sys::from_owned_fd(spec.listener);
    let events = spec.events.connect().await;
    let commands = spec.commands.connect().await;

    // Held, not detached: dropping a glommio task handle cancels the task, so these end with
    // `run` and the uplink's channel end is dropped, which tells the application core.
    let uplink = glommio::spawn_local(uplink(shard.clone(), events));
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener));
    let sweeper = glommio::spawn_local(sweeper(shard.clone()));
    let tallies = glommio::spawn_local(report_tallies(shard.clone()));

    let mut grace = None;
    let mut next: Option<ShardCommand> = None;
    loop {
        let command = match next.take() {
            Some(c) => c,
            None => match commands.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        match command {
            ShardCommand::DefineGroup { id, predicate } => shard.define_group(id, predicate),
            ShardCommand::DropGroup { id } => {
                if id != GroupId::GLOBAL {
                    shard.groups.borrow_mut().remove(&id);
                }
            }
            ShardCommand::Cast { group, frame } => {
                // Casts to the same group already queued behind this one go out together:
                // under a burst each member gets one sendmsg for all of them instead of one
                // send each. With nothing queued this is a batch of one, so a lone cast is
                // not delayed.
                let mut frames = vec![frame];
                let mut bytes = frames[0].len();
                while frames.len() < CAST_BATCH && bytes < CAST_BATCH_BYTES {
                    match future::poll_once(commands.recv()).await {
                        Some(Some(ShardCommand::Cast { group: g, frame })) if g == group => {
                            bytes += frame.len();
                            frames.push(frame);
                        }
                        Some(Some(other)) => {
                            next = Some(other);
                            break;
                        }
                        Some(None) | None => break,
                    }
                }
                shard.fan_out(group, &frames).await;
                for _ in &frames {
                    shard.emit(ShardEvent::CastDone { group });
                }
            }
            ShardCommand::Send { to, frame } => {
                if let Some(conn) = shard.conn(to) {
                    conn.send(&shard, &frame);
                }
            }
            ShardCommand::Update { to, update } => shard.apply(to, update),
            ShardCommand::OpenPoll {
                id,
                seq,
                choices,
                audience,
            } => shard.polls.borrow_mut().open(id, seq, choices, audience),
            ShardCommand::ClosePoll { seq } => {
                let tally = shard.polls.borrow_mut().close(seq);
                if let Some(tally) = tally {
                    shard.emit(ShardEvent::PollTally {
                        seq,
                        shard: shard.index,
                        tally,
                        closed: true,
                    });
                }
            }
            ShardCommand::DropPoll { seq } => {
                shard.polls.borrow_mut().retire(seq);
                for (_, c) in shard.conns.borrow().iter() {
                    c.votes.borrow_mut().retain(|(s, _)| *s != seq);
                }
            }
            ShardCommand::Admit { to, admission } => shard.admit(to, admission),
            ShardCommand::Evict { to } => {
                if let Some(conn) = shard.conn(to) {
                    conn.abort();
                }
            }
            ShardCommand::Audit { audit } => {
                let profiles = shard
                    .conns
                    .borrow()
                    .iter()
                    .filter(|(_, c)| !c.pending.get())
                    .map(|(_, c)| (c.at(&shard), profile_hash(&c.profile.borrow())))
                    .collect();
                shard.emit(ShardEvent::Audit {
                    audit,
                    shard: shard.index,
                    profiles,
                });
            }
            ShardCommand::Shutdown { grace: g } => {
                grace = Some(g);
                break;
            }
        }
    }
    drain(&shard, grace.unwrap_or(Duration::ZERO)).await;
    drop((sweeper, tallies, acceptor));
    // Let the uplink deliver what is queued (final poll tallies above all), bounded in time.
    shard.uplink_last.set(true);
    if let Some(w) = shard.uplink_waker.borrow_mut().take() {
        w.wake();
    }
    future::or(uplink, sleep(Duration::from_secs(2))).await;
}

/// Stops accepting, closes every viewer with 1001, and waits for them up to `grace`.
async fn drain(shard: &Rc<Shard>, grace: Duration) {
    shard.draining.set(true);
    shard.stop_accepting.notify();
    let conns: Vec<Rc<Conn>> = shard
        .conns
        .borrow()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    let n = conns.len() as u64;
    for conn in &conns {
        conn.close(shard, close_code::GOING_AWAY, "server shutting down");
    }
    drop(conns);
    ShardStats::add(&shard.stats.closed_shutdown, n);
    if !shard.conns.borrow().is_empty() {
        future::or(shard.drained.wait(), sleep(grace)).await;
    }
    let left: Vec<Rc<Conn>> = shard
        .conns
        .borrow()
        .iter()
        .map(|(_, c)| c.clone())
        .collect();
    for conn in left {
        conn.abort();
        shard.finish(&conn);
    }
    tracing::info!(shard = shard.index, closed = n, "shard drained");
}

async fn sweeper(shard: Rc<Shard>) {
    let c = &shard.config;
    let tick = c.ping_interval.min(c.pong_timeout).min(c.close_timeout) / 4;
    let tick = tick.clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        sleep(tick).await;
        shard.sweep();
    }
}

/// Reports changed poll tallies, at most once per `tally_interval`: a vote storm becomes a
/// few tally messages per second per shard, and a shard without votes never wakes for it.
async fn report_tallies(shard: Rc<Shard>) {
    loop {
        shard.tallies_dirty.wait().await;
        sleep(shard.config.tally_interval).await;
        let dirty = shard.polls.borrow_mut().take_dirty();
        for (seq, tally) in dirty {
            shard.emit(ShardEvent::PollTally {
                seq,
                shard: shard.index,
                tally,
                closed: false,
            });
        }
    }
}

/// The `welcome` message.
fn welcome_json(shard: &Shard, viewer: ViewerId, resume: &str, resumed: bool) -> String {
    serde_json::json!({
        "type": "welcome",
        "viewer": viewer.to_string(),
        "resume": resume,
        "resumed": resumed,
        "shard": shard.index,
        "ping_interval_s": shard.config.ping_interval.as_secs(),
    })
    .to_string()
}

async fn uplink(
    shard: Rc<Shard>,
    events: glommio::channels::shared_channel::ConnectedSender<ShardEvent>,
) {
    loop {
        let next = poll_fn(|cx| match shard.outbox.borrow_mut().pop_front() {
            Some(e) => Poll::Ready(Some(e)),
            None if shard.uplink_last.get() => Poll::Ready(None),
            None => {
                *shard.uplink_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let Some(next) = next else {
            return; // drained: everything queued (final tallies, Left events) went up
        };
        if events.send(next).await.is_err() {
            return; // the application core is gone: the process is stopping
        }
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut warned_at: Option<Instant> = None;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.stop_accepting.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                ShardStats::add(&shard.stats.accepted, 1);
                glommio::spawn_local(handshake(shard.clone(), stream)).detach();
            }
            Some(Err(e)) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning, and say so now and then.
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(shard = shard.index, error = %e, "accept failed");
                    warned_at = Some(Instant::now());
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Why a handshake ended without a viewer.
enum Refusal {
    /// Answer with this HTTP response and close.
    Respond(Vec<u8>),
    /// The peer went away, or was too slow.
    Gone,
}

impl From<HandshakeError> for Refusal {
    fn from(err: HandshakeError) -> Refusal {
        Refusal::Respond(err.response())
    }
}

/// 503 with Retry-After: the shard is full or shutting down.
fn unavailable(why: &str) -> Refusal {
    Refusal::Respond(http::response(
        503,
        "Service Unavailable",
        &[("Connection", "close"), ("Retry-After", "5")],
        "text/plain; charset=utf-8",
        format!("{why}\n").as_bytes(),
    ))
}

async fn read_request(
    shard: &Shard,
    stream: &mut TcpStream,
) -> Result<(http::UpgradeRequest, Vec<u8>), Refusal> {
    let max = shard.config.max_header_bytes;
    let mut buf = vec![0u8; 1024.min(max + 1)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            if buf.len() > max {
                return Err(HandshakeError::HeadersTooLarge.into());
            }
            buf.resize((buf.len() * 2).min(max + 1), 0);
        }
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|_| Refusal::Gone)?;
        if n == 0 {
            return Err(Refusal::Gone);
        }
        len += n;
        match http::parse_upgrade(&buf[..len], max) {
            Ok(Some(req)) => {
                let rest = buf[req.header_len..len].to_vec();
                return Ok((req, rest));
            }
            Ok(None) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn handshake(shard: Rc<Shard>, mut stream: TcpStream) {
    let peer: SocketAddr = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let timeout = shard.config.handshake_timeout;
    let outcome = future::or(
        async {
            let (req, rest) = read_request(&shard, &mut stream).await?;
            if req.path != shard.config.path {
                return Err(HandshakeError::NotFound.into());
            }
            if shard.draining.get() {
                return Err(unavailable("server is shutting down"));
            }
            // Reserve a place now: handshakes finishing at once on several shards cannot
            // overshoot the cap.
            let before = shard.open_total.fetch_add(1, Ordering::Relaxed);
            if before >= shard.config.max_connections {
                shard.open_total.fetch_sub(1, Ordering::Relaxed);
                return Err(unavailable("server is full"));
            }
            Ok((req, rest))
        },
        async {
            sleep(timeout).await;
            Err(Refusal::Gone)
        },
    )
    .await;
    let (req, mut rest) = match outcome {
        Ok(ok) => ok,
        Err(Refusal::Gone) => {
            ShardStats::add(&shard.stats.handshake_aborted, 1);
            return;
        }
        Err(Refusal::Respond(response)) => {
            ShardStats::add(&shard.stats.handshake_rejected, 1);
            let _ = future::or(
                async {
                    let _ = stream.write_all(&response).await;
                    let _ = stream.close().await;
                },
                sleep(timeout),
            )
            .await;
            return;
        }
    };

    let viewer = shard.mint_viewer();
    let query = http::parse_query(&req.query);
    let profile = Profile::from_handshake(
        viewer,
        peer,
        req.user_agent.as_deref(),
        req.accept_language.as_deref(),
        &query,
        unix_ms(),
    );
    let resume = resume_token();
    // A viewer presenting a resume token waits for the application core before its welcome.
    let claim: Option<Box<str>> = query
        .iter()
        .find(|(k, _)| k == "resume")
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(Into::into);
    let mut head = http::switching_protocols(&req.key);
    if claim.is_none() {
        let welcome = welcome_json(&shard, viewer, &resume, false);
        ws::encode_frame(OpCode::Text, welcome.as_bytes(), &mut head);
    }
    let written = future::or(async { stream.write_all(&head).await.is_ok() }, async {
        sleep(timeout).await;
        false
    })
    .await;
    if !written {
        ShardStats::add(&shard.stats.handshake_aborted, 1);
        shard.open_total.fetch_sub(1, Ordering::Relaxed);
        return;
    }

    let conn = {
        let mut conns = shard.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let conn = Rc::new(Conn::new(
            entry.key() as Slot,
            stream,
            shard.config.limits,
            profile,
            shard.now(),
        ));
        entry.insert(conn.clone());
        conn
    };
    conn.pending.set(claim.is_some());
    ShardStats::add(&shard.stats.connections, 1);
    shard.regroup(&conn);
    shard.emit(ShardEvent::Joined {
        at: conn.at(&shard),
        resume,
        profile: Box::new(conn.profile.borrow().clone()),
        claim,
    });
    if !rest.is_empty() {
        // Frames the client pipelined behind its upgrade request.
        conn.on_bytes(&shard, &mut rest);
    }
    glommio::spawn_local(Driver { conn, shard }).detach();
}
