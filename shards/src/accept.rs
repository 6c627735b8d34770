//! The shard's front door: the accept loop on its `SO_REUSEPORT` listener, the admission of
//! each new connection (seats, per-address limits, refusals), and the inline answer of a
//! plain WebSocket upgrade whose request is already there.
//!
//! Accepting: the listener is non-blocking and watched by the shard's reactor (a one-shot poll
//! on its ring, armed whenever the loop waits); each wake-up drains the backlog with
//! `accept4`, which also gives the peer's address. While connects stream in, the loop leaves
//! the poll unarmed and drains every [`ACCEPT_GATHER`] instead, so a storm costs one wake-up
//! per millisecond rather than one per connect. A plain connection is then read at once
//! (`recv` with `MSG_DONTWAIT`): when its whole upgrade request is there (the usual case: the
//! request follows the connect within the same round trip) it is checked and answered
//! inline, the 101 and the welcome sent with one non-blocking `send`, and the socket joins
//! the shard's reactor. No task, no runtime socket, no timer and no duplicate descriptor.
//! Every other connection (the request not all there yet, TLS, HLS and the viewer page,
//! refusals, a 101 the socket could not take at once) goes to a handshake task with a glommio
//! stream (`crate::handshake`), which keeps the handshake timeout.
//!
//! Storm scheduling (`shard_sched = "storms"`, the default): the plain accept loop puts its
//! shard's thread under `SCHED_BATCH` while a connect storm lasts ([`crate::storm`]), so a
//! shard woken by the storm's connects waits for the task on its CPU (often the client) to
//! finish its slice instead of preempting it, and takes more in each round; the thread goes
//! back under `SCHED_OTHER` 500 ms after the storm, so segment and cast wake-ups keep
//! preempting as before.
//!
//! Stealing: each shard also watches the next shard's plain listener ([`steal_loop`]) and
//! takes the connects that wait there while that shard has not tried its backlog for
//! [`STEAL_AFTER`] (its CPU held by another task, or a long round), so a starved shard's
//! connects are served on the next CPU instead of waiting for it.
//!
//! Descriptors: every viewer socket (handshaking or open) holds a seat counted against
//! `max_connections` over all shards, taken at accept. A socket accepted over the cap is
//! still answered (HTTP 503 `server is full`) while this shard has fewer than
//! [`REFUSALS_PER_SHARD`] such answers in progress; beyond that it is closed at once. So the
//! viewer side never holds more than `max_connections + REFUSALS_PER_SHARD x shards`
//! descriptors, and the descriptor reserve the default cap leaves (see `src/limits.rs`) keeps
//! the API, the store and the 503 answers working when viewers fill every seat. Should the
//! process run out of descriptors anyway (a configured cap above the limit), each shard's
//! spare descriptor lets it accept and close waiting connections instead of leaving them
//! hanging.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use netstack::http;
use netstack::tls::{ServerConfig, TlsSession};

use crate::handshake::{self, Checked, Refusal, Request, Seat, Start};
use crate::limits::Admit;
use crate::proxy;
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::storm::StormSched;
use crate::sync::Signal;
use crate::tls::Wire;

/// Most sockets one shard answers with 503 at once once the cap is reached (each holds a
/// descriptor from the reserve until its answer is written).
pub const REFUSALS_PER_SHARD: usize = 8;
/// At most one log line per this interval for each kind of accept trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long connects that stream in wait in the backlog to be taken together (see
/// `accept_loop`): at most this much more to a handshake during a storm, none otherwise.
const ACCEPT_GATHER: Duration = Duration::from_millis(1);
/// How long connects may wait in a shard's backlog while the shard does not look at it before
/// its neighbour takes them (see [`steal_loop`]). A shard that keeps up looks at least every
/// [`ACCEPT_GATHER`] during a storm.
const STEAL_AFTER: Duration = Duration::from_millis(2);
/// Linux `EMFILE` and `ENFILE`: the process's or the system's descriptors are used up.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// One descriptor held back (`/dev/null`) for the worst case: when something other than the
/// viewers has used up the reserve and `accept` fails with EMFILE, the shard gives this one
/// up, accepts the waiting connection and closes it at once, so clients see their
/// connection closed instead of waiting in the backlog for an answer that never comes.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Gives the spare descriptor up to accept and close one waiting connection; true when
    /// one was closed. Takes the descriptor back afterwards (when one is free again).
    fn shed(&mut self, listener: &OwnedFd) -> bool {
        if self.0.take().is_none() {
            *self = Spare::open();
            return false;
        }
        let shed = netstack::sys::accept::accept_nonblocking(listener.as_raw_fd()).is_ok();
        *self = Spare::open();
        shed
    }
}

/// Logs at most once per [`LOG_EVERY`].
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// The accept loop's log throttles.
#[derive(Default)]
struct Throttles {
    failed: Throttle,
    full: Throttle,
    dropped: Throttle,
}

/// When a shard last tried to accept from its own listener, read by the neighbour that may
/// take the connections waiting there ([`steal_loop`]): [`crate::clock::process_us`].
#[derive(Debug, Default)]
pub struct Drained(AtomicU64);

impl Drained {
    fn mark(&self) {
        self.0.store(crate::clock::process_us(), Ordering::Relaxed);
    }

    /// Time since the shard last tried its backlog.
    fn age(&self) -> Duration {
        let since = crate::clock::process_us().saturating_sub(self.0.load(Ordering::Relaxed));
        Duration::from_micros(since)
    }
}

/// A neighbour shard's plain listener (a duplicate descriptor of the same socket) and the
/// record of when that shard last tried it.
pub struct Neighbour {
    pub listener: OwnedFd,
    pub drained: Arc<Drained>,
}

/// A shard's part in accept stealing: the record of when it last tried its own backlog (for
/// the shard that may take from it) and the neighbour it may take from.
pub type Stealing = (Arc<Drained>, Neighbour);

/// For each shard of `listeners` (one per shard, in shard order), with `stealing` and more
/// than one shard: the record of when it last tried its backlog, and its neighbour (the next
/// shard), whose waiting connections it may take. Otherwise nothing for any shard: with no
/// one to read it, no shard keeps the record.
pub fn accept_neighbours(
    listeners: &[std::net::TcpListener],
    stealing: bool,
) -> io::Result<Vec<Option<Stealing>>> {
    if !stealing || listeners.len() < 2 {
        return Ok(listeners.iter().map(|_| None).collect());
    }
    let drained: Vec<Arc<Drained>> = listeners.iter().map(|_| Arc::default()).collect();
    let mut out = Vec::with_capacity(listeners.len());
    for index in 0..listeners.len() {
        let next = (index + 1) % listeners.len();
        let neighbour = Neighbour {
            listener: listeners[next].try_clone()?.into(),
            drained: drained[next].clone(),
        };
        out.push(Some((drained[index].clone(), neighbour)));
    }
    Ok(out)
}

/// Stops the reactor's watch of a listener when its accept loop ends (or is dropped).
struct Watch<'a>(&'a Shard, u64);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.0.reactor.unwatch_listener(self.1);
    }
}

/// Accepts viewers on `listener`; with `tls`, each connection runs a TLS handshake (with the
/// certificate current at that moment) before its HTTP upgrade.
pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    listener: OwnedFd,
    tls: Option<Arc<ServerConfig>>,
    drained: Option<Arc<Drained>>,
    storms: bool,
) {
    let ready = Rc::new(Signal::default());
    let watch = loop {
        let watched = netstack::sys::set_nonblocking(listener.as_raw_fd()).and_then(|()| {
            shard
                .reactor
                .watch_listener(listener.as_raw_fd(), ready.clone())
        });
        match watched {
            Ok(token) => break Watch(&shard, token),
            Err(e) => {
                tracing::warn!(shard = shard.index, error = %e, "cannot watch the listener");
                sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut throttles = Throttles::default();
    let mut spare = Spare::open();
    // Connections accepted since the backlog was last empty, and whether the loop gathers.
    let mut accepted = 0usize;
    let mut gathering = false;
    // When the loop last began to wait for the listener's poll.
    let mut waited = Instant::now();
    let mut storm = StormSched::new(storms, shard.index);
    loop {
        if shard.stop_accepting.fired() {
            return;
        }
        if let Some(drained) = &drained {
            drained.mark();
        }
        match netstack::sys::accept::accept_nonblocking(listener.as_raw_fd()) {
            Ok((socket, peer)) => {
                ShardStats::add(&shard.stats.accepted, 1);
                accepted += 1;
                if let Some(peer) = peer {
                    admit(&shard, socket, peer, &tls, &mut throttles);
                }
                // A long backlog is drained in turns with the shard's other tasks.
                glommio::yield_if_needed().await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Connects streaming in (this drain found some, and the poll had fired within
                // ACCEPT_GATHER, or the loop was gathering already): leave the poll unarmed
                // and let them gather in the backlog for ACCEPT_GATHER, so a stream of
                // connects costs a wake-up per period instead of one each. A lone connect
                // after a quiet spell is taken at once; a period that brings none ends it.
                gathering = accepted > 0 && (gathering || waited.elapsed() < ACCEPT_GATHER);
                if accepted > 0 {
                    storm.connects(gathering);
                }
                accepted = 0;
                if gathering {
                    if until_stopped(&shard, sleep(ACCEPT_GATHER)).await {
                        return;
                    }
                    continue;
                }
                if !shard.reactor.arm_listener(watch.1) {
                    sleep(Duration::from_millis(10)).await;
                    continue;
                }
                waited = Instant::now();
                let quiet = storm.lingers();
                let woken = async {
                    ready.wait().await;
                    true
                };
                let storm_over = async {
                    match quiet {
                        Some(left) => sleep(left).await,
                        None => future::pending().await,
                    }
                    false
                };
                match until_stopped_with(&shard, future::or(woken, storm_over)).await {
                    None => return,
                    Some(true) => {}
                    // No connect for STORM_LINGER: the storm is over. The poll stays armed.
                    Some(false) => {
                        storm.over();
                        if until_stopped(&shard, ready.wait()).await {
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning, and say so now and then.
                if throttles.failed.ready() {
                    tracing::warn!(shard = shard.index, error = %e, "accept failed");
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                if out_of_fds && spare.shed(&listener) {
                    ShardStats::add(&shard.stats.refused_unanswered, 1);
                    continue;
                }
                sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Takes the connections that wait in a neighbour shard's backlog while that shard does not
/// look at it: a shard pinned to a CPU that another task holds (under `SCHED_BATCH` it waits
/// for that task's slice to end) or busy with a long round. The listener is watched like the
/// shard's own; when a connect is waiting, the loop lets [`STEAL_AFTER`] pass, and takes the
/// backlog only if the neighbour has not tried it meanwhile. A neighbour that keeps up costs
/// one wake-up per [`STEAL_AFTER`] at most, and no connection moves. A connection taken here
/// is this shard's from then on, as if its packets had come in on this shard's CPU.
pub(crate) async fn steal_loop(shard: Rc<Shard>, neighbour: Neighbour) {
    let fd = neighbour.listener.as_raw_fd();
    let ready = Rc::new(Signal::default());
    let watch = match netstack::sys::set_nonblocking(fd)
        .and_then(|()| shard.reactor.watch_listener(fd, ready.clone()))
    {
        Ok(token) => Watch(&shard, token),
        Err(e) => {
            tracing::warn!(shard = shard.index, error = %e, "cannot watch the neighbour's listener; not taking its connections");
            return;
        }
    };
    let mut throttles = Throttles::default();
    loop {
        if !shard.reactor.arm_listener(watch.1) {
            if until_stopped(&shard, sleep(Duration::from_millis(10))).await {
                return;
            }
            continue;
        }
        if until_stopped(&shard, ready.wait()).await {
            return;
        }
        // Connects wait in the neighbour's backlog. Take them while the neighbour leaves them.
        loop {
            if until_stopped(&shard, sleep(STEAL_AFTER)).await {
                return;
            }
            if neighbour.drained.age() < STEAL_AFTER {
                break;
            }
            let mut took = 0usize;
            loop {
                match netstack::sys::accept::accept_nonblocking(fd) {
                    Ok((socket, peer)) => {
                        ShardStats::add(&shard.stats.accepted, 1);
                        ShardStats::add(&shard.stats.accepted_from_neighbour, 1);
                        took += 1;
                        if let Some(peer) = peer {
                            admit(&shard, socket, peer, &None, &mut throttles);
                        }
                        glommio::yield_if_needed().await;
                    }
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock && throttles.failed.ready() {
                            tracing::warn!(shard = shard.index, error = %e, "accept from the neighbour's listener failed");
                        }
                        break;
                    }
                }
            }
            if took == 0 {
                break;
            }
        }
    }
}

/// Waits for `what`, or until the shard stops accepting: true when it stopped.
async fn until_stopped(shard: &Shard, what: impl std::future::Future<Output = ()>) -> bool {
    until_stopped_with(shard, what).await.is_none()
}

/// Waits for `what`, or until the shard stops accepting: `None` when it stopped.
async fn until_stopped_with<T>(
    shard: &Shard,
    what: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(what.await) }, async {
        shard.stop_accepting.wait().await;
        None
    })
    .await
}

/// Takes a seat (or a refusal place) for a new connection and starts its handshake.
fn admit(
    shard: &Rc<Shard>,
    socket: OwnedFd,
    peer: SocketAddr,
    tls: &Option<Arc<ServerConfig>>,
    throttles: &mut Throttles,
) {
    // Per-address limits first: a refused address takes no viewer seat.
    let (mut address, answer) = match check_address(shard, peer.ip()) {
        Ok(address) => (address, None),
        Err(answer) => (None, Some(answer)),
    };
    let viewer = answer.is_none() && {
        let held = shard.open_total.fetch_add(1, Ordering::Relaxed);
        if held >= shard.config.max_connections {
            shard.open_total.fetch_sub(1, Ordering::Relaxed);
            if let (Some(ip), Some(limits)) = (address.take(), &shard.config.addresses) {
                limits.release(ip);
            }
        }
        held < shard.config.max_connections
    };
    if !viewer {
        if shard.refusing.get() >= REFUSALS_PER_SHARD {
            ShardStats::add(&shard.stats.refused_unanswered, 1);
            if throttles.dropped.ready() {
                tracing::warn!(
                    shard = shard.index,
                    "refused connections arrive faster than their answers go out; closing the excess unanswered"
                );
            }
            return; // drops (closes) the socket
        }
        shard.refusing.set(shard.refusing.get() + 1);
        if answer.is_none() && throttles.full.ready() {
            tracing::info!(
                shard = shard.index,
                max_connections = shard.config.max_connections,
                "viewer connections at max_connections: answering 503"
            );
        }
    }
    let seat = Seat {
        shard: shard.clone(),
        viewer,
        held: true,
        address,
        answer,
    };
    let (wire, socket, seat, start) = match tls {
        None => {
            let proxied = proxy::is_trusted(&shard.config.trusted_proxies, peer.ip());
            let request = Request::new(shard.config.max_header_bytes, proxied);
            match inline(shard, socket, peer, request, seat) {
                None => return,
                Some((socket, seat, start)) => (Wire::plain(), socket, seat, start),
            }
        }
        // Over the cap a TLS connection is closed before its handshake: a refusal should
        // cost little, and a full handshake to say 503 does not.
        Some(_) if !viewer => {
            ShardStats::add(&shard.stats.refused_unanswered, 1);
            return;
        }
        Some(config) => match TlsSession::new(config.clone()) {
            Ok(session) => {
                let request = Request::new(shard.config.max_header_bytes, false);
                (Wire::tls(session), socket, seat, Start::Read(request))
            }
            Err(_) => return,
        },
    };
    let stream: TcpStream = netstack::sys::from_owned_fd(socket);
    glommio::spawn_local(handshake::handshake(
        shard.clone(),
        stream,
        wire,
        seat,
        peer,
        start,
    ))
    .detach();
}

/// Reads what has arrived of a plain connection's first request and, if it is a complete
/// upgrade that passes the checks, answers it and joins the viewer: `None`, nothing is left
/// to do (also when the peer went away). Otherwise the socket, its seat and how far it got,
/// for the handshake task.
fn inline(
    shard: &Rc<Shard>,
    socket: OwnedFd,
    peer: SocketAddr,
    mut request: Request,
    mut seat: Seat,
) -> Option<(OwnedFd, Seat, Start)> {
    let fd = socket.as_raw_fd();
    let space = match request.space() {
        Ok(space) => space,
        Err(refusal) => return Some((socket, seat, Start::Checked(Err(refusal)))),
    };
    let n = match netstack::sys::recv_nonblocking(fd, space) {
        Ok(n) if n > 0 => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Some((socket, seat, Start::Read(request)));
        }
        _ => {
            ShardStats::add(&shard.stats.handshake_aborted, 1);
            return None;
        }
    };
    let (incoming, source) = match request.advance(n) {
        Ok(Some(done)) => done,
        Ok(None) => return Some((socket, seat, Start::Read(request))),
        Err(refusal) => return Some((socket, seat, Start::Checked(Err(refusal)))),
    };
    let (req, rest, identity, source) = match handshake::check(shard, &mut seat, incoming, source) {
        Ok(Checked::Upgrade(req, rest, identity, source)) => (req, rest, identity, source),
        other => return Some((socket, seat, Start::Checked(other))),
    };
    let upgrade = handshake::prepare(shard, &req, identity, peer, source);
    let sent = match netstack::sys::send_nonblocking(fd, &upgrade.head) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => {
            ShardStats::add(&shard.stats.handshake_aborted, 1);
            return None;
        }
    };
    if sent == upgrade.head.len() {
        handshake::join(shard, upgrade, socket, None, rest, seat);
    } else {
        let task = finish_write(shard.clone(), socket, upgrade, sent, rest, seat);
        glommio::spawn_local(task).detach();
    }
    None
}

/// The per-address verdict on a new connection: `Ok(Some(ip))` holds a place for `ip` (given
/// back when the seat or the viewer ends), `Ok(None)` when no limit is on, `Err` the answer.
fn check_address(shard: &Shard, ip: IpAddr) -> Result<Option<IpAddr>, Refusal> {
    let Some(limits) = shard.config.addresses.as_ref().filter(|l| l.active()) else {
        return Ok(None);
    };
    match limits.admit(ip, Instant::now()) {
        Admit::Yes => Ok(Some(ip)),
        Admit::Capped => {
            ShardStats::add(&shard.stats.refused_address_cap, 1);
            Err(Refusal::Respond(http::response(
                503,
                "Service Unavailable",
                &[("Connection", "close"), ("Retry-After", "10")],
                "text/plain; charset=utf-8",
                b"too many connections from your address\n",
            )))
        }
        Admit::Limited { retry_after_s } => {
            ShardStats::add(&shard.stats.refused_rate_limited, 1);
            let retry = retry_after_s.to_string();
            Err(Refusal::Respond(http::response(
                429,
                "Too Many Requests",
                &[("Connection", "close"), ("Retry-After", retry.as_str())],
                "text/plain; charset=utf-8",
                b"too many connection attempts from your address; slow down\n",
            )))
        }
    }
}

/// Writes what the socket did not take of an inline 101 through glommio (bounded by the
/// handshake timeout), then joins the viewer. Rare: a new socket's send buffer is empty.
async fn finish_write(
    shard: Rc<Shard>,
    socket: OwnedFd,
    upgrade: handshake::Upgrade,
    sent: usize,
    rest: Vec<u8>,
    seat: Seat,
) {
    let written = match netstack::sys::dup_cloexec(socket.as_raw_fd()) {
        Ok(writer) => {
            let mut stream: TcpStream = netstack::sys::from_owned_fd(writer);
            future::or(
                async { stream.write_all(&upgrade.head[sent..]).await.is_ok() },
                async {
                    sleep(shard.config.handshake_timeout).await;
                    false
                },
            )
            .await
        }
        Err(_) => false,
    };
    if written {
        handshake::join(&shard, upgrade, socket, None, rest, seat);
    } else {
        ShardStats::add(&shard.stats.handshake_aborted, 1);
    }
}
