//! One viewer connection after its handshake: its state, its send queue, and the step the
//! shard's reactor runs when the socket is ready ([`Conn::drive`]): read, write, close.
//!
//! Memory matters here (millions of idle viewers per large server), so an idle connection
//! holds: this struct (its socket is a bare descriptor), its profile, and an empty send queue
//! and decoder (no heap). No task and no runtime socket object: the shard's reactor
//! (`crate::reactor`) watches every open socket from one io_uring of its own and drives the
//! connection when the kernel says it is readable, or when the connection asks for it
//! ([`Wakeups`]). Reads go into the shard's one scratch buffer, and only when the socket is
//! readable, so no read buffer waits on an idle socket.
//!
//! The connection turns bytes into parsed [`ViewerMessage`]s and hands them to its caller;
//! it refuses what is not a message itself (protocol errors, rate limit, binary frames,
//! messages while resuming) and knows nothing of the shard: what it needs from it (counters,
//! settings, the time) comes in as an [`Env`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use netstack::tls::TlsSession;
use netstack::ws::{self, close_code, Decoder};
use protocol::ViewerMessage;
use smallvec::SmallVec;

use crate::config::ShardConfig;
use crate::frames;
use crate::identity::Identity;
use crate::polls::ViewerVotes;
use crate::profile::{Profile, ViewerId};
use crate::proto::{Frame, Slot, ViewerRef};
use crate::stats::ShardStats;
use crate::sync::Wakeups;

mod receive;

/// What a connection needs from its shard for one call: counters, settings, and the time.
pub(crate) struct Env<'a> {
    pub stats: &'a ShardStats,
    pub config: &'a ShardConfig,
    /// The shard clock, in ticks.
    pub now: u32,
    /// `config.close_timeout` in ticks.
    pub close_ticks: u32,
    /// Where a connection asks its shard's reactor to drive it.
    pub wakeups: &'a Wakeups,
}

/// What one [`Conn::drive`] left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drive {
    /// The connection is over: take it out of the table.
    Done,
    /// Waiting for input (always watched), and for room to write when `want_write`.
    Wait { want_write: bool },
    /// The read budget is spent with input left: drive it again after the others.
    Again,
}

/// Reads per drive before the reactor moves on to other connections.
const READ_BUDGET: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// Our close frame is queued. The connection ends once it is written and the peer has
    /// answered (or sent EOF), or at `deadline` (shard ticks) whatever happens.
    Closing {
        deadline: u32,
        peer_closed: bool,
        write_shut: bool,
    },
    /// Drop the socket at the next poll, with no more bytes.
    Abort,
    /// Finished: out of the shard's table.
    Done,
}

/// Frames waiting for the socket. Exists only while something waits (`Conn::out` is `None`
/// otherwise), so an idle viewer holds one null pointer for it.
#[derive(Default)]
struct OutQueue {
    frames: VecDeque<Frame>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
    /// Bytes queued and not yet written.
    bytes: usize,
}

pub(crate) struct Conn {
    pub slot: Slot,
    /// Told apart from earlier connections in the same slot: the reactor's tokens carry it.
    pub serial: u32,
    /// The socket, closed on drop (the reactor stopped watching it in `Shard::finish`).
    fd: OwnedFd,
    decoder: RefCell<Decoder>,
    /// `None` when nothing waits to be written (no heap while idle).
    out: RefCell<Option<Box<OutQueue>>>,
    /// In the reactor's wake-up list, not yet driven.
    pub queued: Cell<bool>,
    /// The reactor watches the socket for room to write.
    pub write_watched: Cell<bool>,
    pub state: Cell<State>,
    /// Shard tick of the last frame received.
    pub last_rx: Cell<u32>,
    /// Shard tick our keepalive ping went out, 0 when none is outstanding.
    pub ping_sent: Cell<u32>,
    /// (tick second, messages in it): the per-viewer message rate limit.
    rate: Cell<(u32, u32)>,
    pub profile: RefCell<Profile>,
    /// This viewer's current vote in each poll it voted in.
    pub votes: Cell<ViewerVotes>,
    /// Waiting for the answer to its resume claim: no welcome, no group, messages refused.
    pub pending: Cell<bool>,
    /// What only some viewers have, boxed together (`None`, 8 bytes, for an anonymous viewer
    /// on the plain port): the TLS session on the TLS port (frames are encrypted into records
    /// as they are queued, received bytes decrypted before the decoder), and who the viewer's
    /// token says it is.
    extra: Option<Box<Extra>>,
}

struct Extra {
    tls: Option<RefCell<TlsSession>>,
    identity: Option<Identity>,
}

/// What a handshake hands to its connection: the socket, the TLS session on the TLS port, and
/// the viewer's identity when it presented a valid token.
pub(crate) struct Link {
    pub socket: OwnedFd,
    pub tls: Option<Box<TlsSession>>,
    pub identity: Option<Box<Identity>>,
}

impl Conn {
    pub fn new(
        (slot, serial): (Slot, u32),
        Link {
            socket,
            tls,
            identity,
        }: Link,
        limits: ws::Limits,
        profile: Profile,
        now: u32,
    ) -> Conn {
        Conn {
            slot,
            serial,
            fd: socket,
            decoder: RefCell::new(Decoder::new(limits)),
            out: RefCell::new(None),
            queued: Cell::new(false),
            write_watched: Cell::new(false),
            state: Cell::new(State::Open),
            last_rx: Cell::new(now),
            ping_sent: Cell::new(0),
            rate: Cell::new((0, 0)),
            profile: RefCell::new(profile),
            votes: Cell::new(ViewerVotes::default()),
            pending: Cell::new(false),
            extra: (tls.is_some() || identity.is_some()).then(|| {
                Box::new(Extra {
                    tls: tls.map(|session| RefCell::new(*session)),
                    identity: identity.map(|id| *id),
                })
            }),
        }
    }

    /// Where this viewer lives, for shard `shard`'s events.
    pub fn at(&self, shard: u16) -> ViewerRef {
        ViewerRef {
            shard,
            slot: self.slot,
            viewer: self.viewer(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.get() == State::Open
    }

    /// Who the viewer's token says it is; `None` for an anonymous viewer.
    pub fn identity(&self) -> Option<&Identity> {
        self.extra.as_ref()?.identity.as_ref()
    }

    fn tls(&self) -> Option<&RefCell<TlsSession>> {
        self.extra.as_ref()?.tls.as_ref()
    }

    /// The viewer's id (its profile's, which a resume changes).
    pub fn viewer(&self) -> ViewerId {
        self.profile.borrow().viewer
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Asks the shard's reactor to drive this connection at its next turn.
    fn wake(&self, env: &Env<'_>) {
        if !self.queued.replace(true) {
            env.wakeups.push(self.slot);
        }
    }

    /// Queues `frame` (shared, encoded once) for this viewer; see [`Conn::send_batch`].
    pub fn send(&self, env: &Env<'_>, frame: &Frame) {
        self.send_batch(env, std::slice::from_ref(frame));
    }

    /// Queues `frames` (shared, each encoded once), in order. When nothing is queued they are
    /// written straight away with one non-blocking `send`/`sendmsg`; what the socket does not
    /// take waits in the queue for the reactor. A viewer whose queue would pass the limit is
    /// closed with 1008: a slow viewer costs bounded memory and never stalls the shard.
    pub fn send_batch(&self, env: &Env<'_>, frames: &[Frame]) {
        if !self.is_open() || frames.is_empty() {
            return;
        }
        ShardStats::add(&env.stats.frames_out, frames.len() as u64);
        if let Some(session) = self.tls() {
            let mut tls = session.borrow_mut();
            // The shared plaintext is encrypted for this viewer alone. Records carry sequence
            // numbers, so the queue bound is checked before encrypting: nothing encrypted is
            // ever dropped.
            let plain: usize = frames.iter().map(|f| f.len()).sum();
            let queued = self.out.borrow().as_ref().map_or(0, |q| q.bytes);
            if queued > 0 && queued + plain > env.config.send_queue_bytes {
                drop(tls);
                ShardStats::add(&env.stats.closed_slow, 1);
                self.close(env, close_code::POLICY, "slow consumer: send queue full");
                return;
            }
            match crate::tls::seal(&mut tls, frames) {
                Ok(sealed) => {
                    drop(tls);
                    self.send_wire(env, &[sealed]);
                }
                Err(_) => {
                    drop(tls);
                    self.abort(env);
                }
            }
            return;
        }
        self.send_wire(env, frames);
    }

    /// Queues bytes exactly as they go on the wire (frames, or TLS records).
    fn send_wire(&self, env: &Env<'_>, frames: &[Frame]) {
        let mut slot = self.out.borrow_mut();
        let mut rest = frames;
        if slot.is_none() {
            let sent = if let [one] = frames {
                netstack::sys::send_nonblocking(self.fd(), one)
            } else {
                let iov: SmallVec<[IoSlice<'_>; 8]> =
                    frames.iter().map(|f| IoSlice::new(f)).collect();
                netstack::sys::send_vectored_nonblocking(self.fd(), &iov)
            };
            let mut written = match sent {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(_) => {
                    drop(slot);
                    self.abort(env);
                    return;
                }
            };
            while let Some((first, tail)) = rest.split_first() {
                if written < first.len() {
                    break;
                }
                written -= first.len();
                rest = tail;
            }
            if rest.is_empty() {
                return;
            }
            // The first unsent frame may be partly written: it goes first, whatever the bound.
            let mut queue = Box::<OutQueue>::default();
            queue.head_written = written;
            queue.bytes = rest[0].len() - written;
            queue.frames.push_back(rest[0].clone());
            *slot = Some(queue);
            rest = &rest[1..];
            drop(slot);
            self.wake(env);
            slot = self.out.borrow_mut();
        }
        let Some(out) = slot.as_mut() else {
            return; // emptied meanwhile (cannot happen on one thread; nothing to queue behind)
        };
        for frame in rest {
            if out.bytes + frame.len() > env.config.send_queue_bytes {
                drop(slot);
                ShardStats::add(&env.stats.closed_slow, 1);
                tracing::debug!(viewer = %self.viewer(), "slow consumer closed");
                self.close(env, close_code::POLICY, "slow consumer: send queue full");
                return;
            }
            out.bytes += frame.len();
            out.frames.push_back(frame.clone());
        }
    }

    /// Sends `{"type":"error",...}`; the connection stays open.
    pub fn send_error(&self, env: &Env<'_>, code: &str, message: &str) {
        self.send(env, &frames::error(code, message));
    }

    /// Starts the close handshake with `code`: queued frames that have not started are
    /// dropped (a closing viewer gets no more data), the close frame goes last.
    pub fn close(&self, env: &Env<'_>, code: u16, reason: &str) {
        if !self.is_open() {
            return;
        }
        let mut frame = Vec::with_capacity(4 + reason.len());
        ws::encode_close(code, reason, &mut frame);
        let tls = self.tls().map(|session| {
            // Queued records must all go out (each depends on the one before); then the close
            // frame and close_notify.
            crate::tls::seal_close(&mut session.borrow_mut(), &frame)
        });
        if let Some(sealed) = tls {
            match sealed {
                Ok(records) => frame = records,
                Err(_) => return self.abort(env),
            }
        }
        {
            let mut slot = self.out.borrow_mut();
            let out = slot.get_or_insert_with(Box::default);
            let keep = if self.tls().is_some() {
                out.frames.len()
            } else {
                usize::from(out.head_written > 0)
            };
            while out.frames.len() > keep {
                if let Some(f) = out.frames.pop_back() {
                    out.bytes -= f.len();
                }
            }
            out.bytes += frame.len();
            out.frames.push_back(frame.into());
        }
        self.state.set(State::Closing {
            deadline: env.now.saturating_add(env.close_ticks),
            peer_closed: false,
            write_shut: false,
        });
        self.wake(env);
    }

    /// Drops the connection at the reactor's next turn, without a close handshake.
    pub fn abort(&self, env: &Env<'_>) {
        if self.state.get() != State::Done {
            self.state.set(State::Abort);
            self.wake(env);
        }
    }

    /// Writes queued frames until the queue is empty (`Ok(true)`) or the socket is full
    /// (`Ok(false)`: wait until it is writable): as many frames as fit in one `sendmsg`.
    fn flush(&self) -> io::Result<bool> {
        let mut slot = self.out.borrow_mut();
        let Some(out) = slot.as_mut() else {
            return Ok(true);
        };
        while !out.frames.is_empty() {
            let sent = {
                let skip = out.head_written;
                let iov: SmallVec<[IoSlice<'_>; 16]> = out
                    .frames
                    .iter()
                    .take(netstack::sys::MAX_IOV)
                    .enumerate()
                    .map(|(i, f)| IoSlice::new(if i == 0 { &f[skip..] } else { f }))
                    .collect();
                netstack::sys::send_vectored_nonblocking(self.fd(), &iov)
            };
            let mut written = match sent {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            out.bytes -= written;
            while written > 0 {
                let left = out.frames[0].len() - out.head_written;
                if written >= left {
                    written -= left;
                    out.frames.pop_front();
                    out.head_written = 0;
                } else {
                    out.head_written += written;
                    written = 0;
                }
            }
        }
        // Release the queue once a burst is written: idle viewers hold none.
        *slot = None;
        Ok(true)
    }

    /// Does what the socket and the state allow now: writes what is queued, reads into
    /// `scratch` and decodes when `readable` (until the socket is drained or the read budget
    /// is spent), runs the close handshake and its deadlines' effects. Never waits: the
    /// reactor calls it again when the socket is ready or the connection is woken.
    pub fn drive(
        &self,
        env: &Env<'_>,
        scratch: &mut [u8],
        on_message: OnMessage<'_>,
        readable: bool,
    ) -> Drive {
        self.queued.set(false);
        let mut budget = READ_BUDGET;
        loop {
            if self.state.get() == State::Abort {
                return Drive::Done;
            }
            let flushed = match self.flush() {
                Ok(flushed) => flushed,
                Err(_) => return Drive::Done,
            };
            if let State::Closing {
                deadline,
                peer_closed,
                write_shut,
            } = self.state.get()
            {
                if flushed {
                    if peer_closed {
                        return Drive::Done;
                    }
                    if !write_shut {
                        // Our close frame is out: send FIN and wait for the peer's close/EOF.
                        let _ = netstack::sys::shutdown_write(self.fd());
                        self.state.set(State::Closing {
                            deadline,
                            peer_closed,
                            write_shut: true,
                        });
                    }
                }
            }
            let received = match readable {
                true => netstack::sys::recv_nonblocking(self.fd(), scratch),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
            match received {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Drive::Wait {
                        want_write: !flushed,
                    };
                }
                // EOF or reset. Anything still queued cannot be acknowledged anyway.
                Ok(0) | Err(_) => return Drive::Done,
                Ok(n) => {
                    if self.tls().is_some() {
                        if self.on_records(env, &scratch[..n], on_message).is_break() {
                            return Drive::Done;
                        }
                    } else {
                        self.on_bytes(env, &mut scratch[..n], on_message);
                    }
                    budget -= 1;
                    if budget == 0 {
                        return Drive::Again; // the next drive writes first
                    }
                }
            }
        }
    }
}

/// Where a connection hands each parsed viewer message.
pub(crate) type OnMessage<'a> = &'a mut dyn FnMut(&Conn, ViewerMessage<'_>);

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    /// Memory budget of an idle viewer's fixed state: a regression guard, since every byte
    /// here is multiplied by millions of connections (`crate::footprint` has the others).
    #[test]
    fn idle_connection_state_fits_its_budget() {
        // Issue 18: interned profile strings, the send queue and the votes boxed only while
        // in use, a bare descriptor driven by the shard's reactor (no runtime socket object,
        // no waker).
        assert!(
            size_of::<super::Conn>() <= crate::footprint::CONN_BUDGET,
            "Conn is {}",
            size_of::<super::Conn>()
        );
        assert_eq!(size_of::<Option<Box<super::OutQueue>>>(), 8);
        assert!(size_of::<netstack::ws::Decoder>() <= 64);
    }
}
