//! The shard's reactor: the io_uring of the shard's own (`netstack::sys::poller`) from which
//! one task (`Shard::serve_connections`, in `shard::serve`) serves every open viewer
//! connection of the shard.
//!
//! Each open socket is watched for input by one multishot poll, armed when the viewer joins
//! and removed when it leaves, and for room to write by a one-shot poll only while frames wait
//! in its queue. So an idle viewer owns no task, no runtime socket object and no buffer: its
//! `Conn` and the kernel's armed poll are all there is. A completion names the connection by
//! a token (slot and serial), and the reactor drives it: reads until the socket is drained
//! (into the shard's one scratch buffer), writes what is queued, runs the close handshake.
//! Connections that need driving for another reason (a send found the socket full, a close,
//! an abort) ask through [`Wakeups`].
//!
//! Plain HLS keep-alive connections keep their task, but wait for their next request here
//! too ([`Reactor::register`]): a multishot poll armed once per connection wakes the task,
//! which reads with a direct `recv`. So a request costs no glommio poll, no cancellation and
//! no timer; the shard's sweeper ends connections idle past a limit ([`Reactor::expire`]).
//!
//! The shard's listeners are watched on the same ring ([`Reactor::watch_listener`]): a one-shot
//! poll per listener, armed by its accept loop whenever it waits ([`Reactor::arm_listener`]),
//! whose completion raises the loop's [`Signal`]; the loop then drains the backlog with
//! non-blocking `accept4` calls, so a burst of connects costs one wake-up and no io_uring
//! accept per connection. One-shot, so that while connects stream in the loop can leave the
//! poll unarmed and let them gather in the backlog (see `crate::accept`).
//!
//! The task waits for the ring through glommio: the ring's descriptor is readable while
//! completions wait, so one readiness poll on glommio's own ring (`glommio::io::ReadyWatch`,
//! glommio change 9 in `vendor/glommio/OVATION.md`) wakes the task exactly when the ring has
//! completions ([`doorbell`]). A wait costs that poll and no system call of its own. The test
//! `the_doorbell_rings_when_the_ring_has_completions` pins that behaviour.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use netstack::sys::poller::{Event, Poller};

use crate::conn::Conn;
use crate::proto::Slot;
use crate::sync::{Signal, Wakeups};

/// Submission entries of a shard's ring: a burst of joins beyond this is submitted in steps.
const SQ_ENTRIES: u32 = 1024;
/// Completion entries; more are kept by the kernel until reaped.
const CQ_ENTRIES: u32 = 8192;
/// Completions handled per turn before the task lets others run.
pub(crate) const BATCH: usize = 512;
/// The token bit of a write watch (the serial keeps it clear).
const WRITE: u64 = 1 << 63;
/// The token bit of a task's watch ([`Reactor::register`]; the serial keeps it clear).
const TASK: u64 = 1 << 62;
/// The token of the first listener watch; listener `i` has `LISTENER + i`. Both high bits
/// are set, which no connection's or task's token has (`on_listener` is asked first).
const LISTENER: u64 = u64::MAX - 16;
/// Most listeners one shard watches (plain and TLS need two).
const MAX_LISTENERS: usize = 8;

/// A watched listener: its descriptor, its accept loop's signal, and its poll's state.
type Listener = (RawFd, Rc<Signal>, Arm);

/// The state of a listener's one-shot poll.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arm {
    /// Armed: its completion will raise the signal.
    Armed,
    /// Spent by a readiness completion: the accept loop arms the next.
    Spent,
    /// Ended by an error: the accept loop backs off once before arming again, as arming at
    /// once could fail again at once.
    Failed,
}

/// The ring and the wake-ups of one shard's open connections.
pub(crate) struct Reactor {
    poller: RefCell<Poller>,
    pub wakeups: Wakeups,
    serial: Cell<u32>,
    tasks: RefCell<slab::Slab<Waiter>>,
    /// The watched listeners by token offset: descriptor, the accept loop's signal, and the
    /// state of its one-shot poll (the accept loop arms the next one).
    listeners: RefCell<Vec<Option<Listener>>>,
}

/// A task waiting for input on a socket the reactor watches (a plain HLS connection).
struct Waiter {
    fd: RawFd,
    serial: u32,
    waker: Option<Waker>,
    /// Input arrived (or the peer hung up) since the task last looked.
    readable: bool,
    /// The socket can no longer be watched: the task's next wait fails.
    failed: bool,
    /// The tick of the task's last request ([`Reactor::touch`]), for [`Reactor::expire`].
    last: u32,
    /// Idle past the limit: the task's next wait fails.
    expired: bool,
}

/// A socket the reactor watches for a task; give it back with [`Reactor::deregister`].
pub(crate) struct TaskWatch {
    index: u32,
    serial: u32,
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poller: RefCell::new(Poller::new(SQ_ENTRIES, CQ_ENTRIES)?),
            wakeups: Wakeups::default(),
            serial: Cell::new(0),
            tasks: RefCell::new(slab::Slab::new()),
            listeners: RefCell::new(Vec::new()),
        })
    }

    /// The serial of the next connection or task watch (30 bits, wrapping).
    pub fn next_serial(&self) -> u32 {
        let serial = self.serial.get().wrapping_add(1) & 0x3fff_ffff;
        self.serial.set(serial);
        serial
    }

    /// Starts watching a joined connection's socket for input.
    pub fn watch(&self, conn: &Conn) -> io::Result<()> {
        self.poller
            .borrow_mut()
            .watch_read(conn.fd(), token(conn))?;
        self.wakeups.signal.raise(); // the task submits it at its next turn
        Ok(())
    }

    /// Stops watching a leaving connection's socket, so the socket is released when the
    /// connection drops its descriptor.
    pub fn unwatch(&self, conn: &Conn) {
        let mut poller = self.poller.borrow_mut();
        let mut removed = poller.unwatch(token(conn));
        if conn.write_watched.replace(false) {
            removed = removed.and(poller.unwatch(token(conn) | WRITE));
        }
        if let Err(e) = removed {
            // Only a ring that refuses submissions gets here; the socket then stays open
            // until the shard ends.
            tracing::warn!(error = %e, "could not stop watching a socket");
        }
        self.wakeups.signal.raise();
    }
}

impl Reactor {
    /// Watches the listening socket `fd` for waiting connections until
    /// [`Reactor::unwatch_listener`] with the returned token: `ready` is raised once when one
    /// is there (at once if some wait already); [`Reactor::arm_listener`] asks for the next.
    pub fn watch_listener(&self, fd: RawFd, ready: Rc<Signal>) -> io::Result<u64> {
        let mut listeners = self.listeners.borrow_mut();
        let index = match listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None if listeners.len() < MAX_LISTENERS => {
                listeners.push(None);
                listeners.len() - 1
            }
            None => return Err(io::Error::other("too many listeners on one shard")),
        };
        let token = LISTENER + index as u64;
        self.poller.borrow_mut().watch_read_once(fd, token)?;
        listeners[index] = Some((fd, ready, Arm::Armed));
        self.wakeups.signal.raise(); // the task submits it at its next turn
        Ok(token)
    }

    /// Stops watching a listener (before its descriptor is closed: an armed poll would keep
    /// the socket listening). Submits at once, as the serving task may be gone.
    pub fn unwatch_listener(&self, token: u64) {
        if let Some(entry) = self
            .listeners
            .borrow_mut()
            .get_mut((token - LISTENER) as usize)
        {
            *entry = None;
        }
        let mut poller = self.poller.borrow_mut();
        if let Err(e) = poller.unwatch(token).and_then(|()| poller.submit()) {
            tracing::warn!(error = %e, "could not stop watching a listener");
        }
    }

    /// Handles a completion if it is a listener's: raises its accept loop's signal (the
    /// one-shot poll is spent; the loop arms the next). False for a connection's completion.
    pub fn on_listener(&self, event: &Event) -> bool {
        if !(LISTENER..LISTENER + MAX_LISTENERS as u64).contains(&event.token) {
            return false;
        }
        let mut listeners = self.listeners.borrow_mut();
        if let Some(Some((_, ready, arm))) = listeners.get_mut((event.token - LISTENER) as usize) {
            // A failed poll raises the signal too: the loop drains what is there, then
            // backs off before arming again (`arm_listener`).
            *arm = if event.result < 0 {
                Arm::Failed
            } else {
                Arm::Spent
            };
            ready.raise();
        }
        true // or unwatched meanwhile
    }

    /// Arms a listener's poll unless one is armed; false when the last one failed or this
    /// arming did (the caller should back off briefly, as the failure may repeat, and ask
    /// again).
    pub fn arm_listener(&self, token: u64) -> bool {
        let mut listeners = self.listeners.borrow_mut();
        let Some(Some((fd, _, arm))) = listeners.get_mut((token - LISTENER) as usize) else {
            return true; // not watched: nothing to arm
        };
        match *arm {
            Arm::Armed => true,
            Arm::Failed => {
                *arm = Arm::Spent; // armed at the next ask, after the back-off
                false
            }
            Arm::Spent => {
                if self
                    .poller
                    .borrow_mut()
                    .watch_read_once(*fd, token)
                    .is_err()
                {
                    return false;
                }
                *arm = Arm::Armed;
                self.wakeups.signal.raise(); // the task submits it at its next turn
                true
            }
        }
    }

    /// Watches a connection's socket once for room to write.
    pub fn watch_write(&self, conn: &Conn) -> io::Result<()> {
        let token = token(conn) | WRITE;
        self.poller.borrow_mut().watch_write(conn.fd(), token)
    }

    /// Hands what is queued to the kernel.
    pub fn submit(&self) -> io::Result<()> {
        self.poller.borrow_mut().submit()
    }

    /// Moves up to [`BATCH`] completions into `out`; true when more may wait.
    pub fn reap(&self, out: &mut Vec<Event>) -> bool {
        self.poller.borrow_mut().reap(out, BATCH)
    }
}

impl Reactor {
    /// Watches `fd` for input on behalf of the calling task, from tick `now`, until
    /// [`Reactor::deregister`]. The socket must outlive the watch.
    pub fn register(&self, fd: RawFd, now: u32) -> io::Result<TaskWatch> {
        let serial = self.next_serial();
        let index = self.tasks.borrow_mut().insert(Waiter {
            fd,
            serial,
            waker: None,
            readable: false,
            failed: false,
            last: now,
            expired: false,
        });
        let watch = TaskWatch {
            index: index as u32,
            serial,
        };
        if let Err(e) = self.poller.borrow_mut().watch_read(fd, task_token(&watch)) {
            self.tasks.borrow_mut().remove(index);
            return Err(e);
        }
        self.wakeups.signal.raise(); // the reactor's task submits it at its next turn
        Ok(watch)
    }

    /// Stops watching a task's socket (before the socket closes).
    pub fn deregister(&self, watch: TaskWatch) {
        self.tasks.borrow_mut().try_remove(watch.index as usize);
        if let Err(e) = self.poller.borrow_mut().unwatch(task_token(&watch)) {
            tracing::warn!(error = %e, "could not stop watching a socket");
        }
        self.wakeups.signal.raise();
    }

    /// Ready once input arrived since the last ready (input that arrived before the watch
    /// was armed counts: the kernel reports it at arming); an error once the watch failed or
    /// the task was idle past the limit of [`Reactor::expire`].
    pub fn poll_readable(&self, watch: &TaskWatch, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let mut tasks = self.tasks.borrow_mut();
        let Some(w) = tasks.get_mut(watch.index as usize) else {
            return Poll::Ready(Err(io::Error::other("no such watch")));
        };
        if w.failed {
            return Poll::Ready(Err(io::Error::other("the socket's watch failed")));
        }
        if w.expired {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        if w.readable {
            w.readable = false;
            return Poll::Ready(Ok(()));
        }
        if !w
            .waker
            .as_ref()
            .is_some_and(|old| old.will_wake(cx.waker()))
        {
            w.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Waits for input (see [`Reactor::poll_readable`]).
    pub async fn readable(&self, watch: &TaskWatch) -> io::Result<()> {
        poll_fn(|cx| self.poll_readable(watch, cx)).await
    }

    /// The task was active at tick `now` (its idle time starts again, and an expiry that
    /// came while it was busy elsewhere, e.g. writing a long answer, is forgotten).
    pub fn touch(&self, watch: &TaskWatch, now: u32) {
        if let Some(w) = self.tasks.borrow_mut().get_mut(watch.index as usize) {
            w.last = now;
            w.expired = false;
        }
    }

    /// Fails the next wait of every task idle for more than `limit` ticks at tick `now`, and
    /// wakes those waiting.
    pub fn expire(&self, now: u32, limit: u32) {
        let mut wake = Vec::new();
        for (_, w) in self.tasks.borrow_mut().iter_mut() {
            if !w.expired && now.saturating_sub(w.last) > limit {
                w.expired = true;
                wake.extend(w.waker.take());
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// Handles a completion if it belongs to a task's watch (false: a connection's).
    pub fn on_task_event(&self, event: &Event) -> bool {
        if event.token & TASK == 0 {
            return false;
        }
        let (index, serial) = (event.token as u32, ((event.token & !TASK) >> 32) as u32);
        let waker = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(w) = tasks.get_mut(index as usize).filter(|w| w.serial == serial) else {
                return true; // a watch given back meanwhile
            };
            w.readable = true;
            if !event.armed {
                // The kernel ended the multishot watch: arm it again after a readiness event;
                // after an error the socket cannot be watched, and the task hears so.
                let rearmed = event.result >= 0
                    && self
                        .poller
                        .borrow_mut()
                        .watch_read(w.fd, event.token)
                        .is_ok();
                w.failed |= !rearmed;
            }
            w.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

fn task_token(watch: &TaskWatch) -> u64 {
    TASK | (u64::from(watch.serial) << 32) | u64::from(watch.index)
}

/// What a completion's token names: the connection's slot and serial, and whether it is the
/// write watch.
pub(crate) fn from_token(token: u64) -> (Slot, u32, bool) {
    (
        token as u32,
        ((token & !WRITE) >> 32) as u32,
        token & WRITE != 0,
    )
}

fn token(conn: &Conn) -> u64 {
    (u64::from(conn.serial) << 32) | u64::from(conn.slot)
}

/// The ring's doorbell: a glommio readiness watch (one poll on glommio's ring) on the ring's
/// descriptor, which is readable while completions wait (see the module doc). The reactor
/// keeps the descriptor open for as long as the shard lives, which outlives the watch.
pub(crate) fn doorbell(reactor: &Reactor) -> glommio::io::ReadyWatch {
    glommio::io::ReadyWatch::new(reactor.poller.borrow().fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Reaps until the ring has a completion (bounded: empty if none came).
    fn reap_bounded(reactor: &Reactor) -> Vec<Event> {
        let mut out = Vec::new();
        for _ in 0..2000 {
            reactor.submit().unwrap();
            reactor.reap(&mut out);
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }

    /// Reaps (bounded) until the ring has a completion, and hands each to the reactor.
    fn reap_some(reactor: &Reactor) -> Vec<Event> {
        let out = reap_bounded(reactor);
        for e in &out {
            assert!(reactor.on_task_event(e), "a task's token: {e:?}");
        }
        out
    }

    #[test]
    fn a_listener_poll_fires_once_and_backs_off_after_a_failure() {
        let reactor = Reactor::new().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let ready = Rc::new(Signal::default());
        let token = reactor
            .watch_listener(l.as_raw_fd(), ready.clone())
            .unwrap();
        assert!(reactor.arm_listener(token), "armed already: nothing to do");
        let _a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let events = reap_bounded(&reactor);
        assert!(!events.is_empty(), "no completion came");
        assert!(events.iter().all(|e| reactor.on_listener(e)));
        assert!(future::block_on(future::poll_once(ready.wait())).is_some());
        // Spent: a second connect reports nothing until the loop arms the poll again.
        let _b = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        reactor.submit().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut out = Vec::new();
        reactor.reap(&mut out);
        assert!(out.is_empty(), "one-shot: {out:?}");
        // Armed again with connections waiting, it completes at once.
        assert!(reactor.arm_listener(token));
        let events = reap_bounded(&reactor);
        assert!(!events.is_empty(), "no completion came");
        assert!(events.iter().all(|e| reactor.on_listener(e)));
        // A failed poll: the next ask says "back off", the one after arms again.
        let failed = Event {
            token,
            result: -22, // EINVAL
            armed: false,
        };
        assert!(reactor.on_listener(&failed));
        assert!(
            !reactor.arm_listener(token),
            "back off once after a failure"
        );
        assert!(reactor.arm_listener(token), "then armed");
        reactor.unwatch_listener(token);
        assert!(reactor.arm_listener(token), "unwatched: nothing to arm");
    }

    #[test]
    fn a_task_watch_wakes_on_input_expires_when_idle_and_ignores_late_completions() {
        let reactor = Reactor::new().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        let watch = reactor.register(b.as_raw_fd(), 10).unwrap();
        reactor.submit().unwrap();
        // Nothing arrived: the task waits.
        assert!(reactor.poll_readable(&watch, &cx).is_pending());
        // Input wakes it once, and it is ready once.
        a.write_all(b"GET /").unwrap();
        assert!(!reap_some(&reactor).is_empty());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(matches!(
            reactor.poll_readable(&watch, &cx),
            Poll::Ready(Ok(()))
        ));
        assert!(reactor.poll_readable(&watch, &cx).is_pending());
        // The multishot watch stays armed: more input, another wake-up.
        a.write_all(b" HTTP/1.1").unwrap();
        reap_some(&reactor);
        assert!(matches!(
            reactor.poll_readable(&watch, &cx),
            Poll::Ready(Ok(()))
        ));
        // Touched at tick 20, limit 5: not idle at 25, idle at 26 (and woken to hear it).
        reactor.touch(&watch, 20);
        assert!(reactor.poll_readable(&watch, &cx).is_pending());
        reactor.expire(25, 5);
        assert!(reactor.poll_readable(&watch, &cx).is_pending());
        reactor.expire(26, 5);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::Relaxed), 3);
        match reactor.poll_readable(&watch, &cx) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
            other => panic!("{other:?}"),
        }
        // Expired while busy (not waiting), then active again: waits as usual.
        reactor.touch(&watch, 27);
        assert!(reactor.poll_readable(&watch, &cx).is_pending());
        // Given back: a completion still under its token is ignored, and a new watch in the
        // same slot is not woken by it.
        let old = task_token(&watch);
        reactor.deregister(watch);
        let again = reactor.register(b.as_raw_fd(), 30).unwrap();
        assert_ne!(task_token(&again), old, "a new serial");
        let late = Event {
            token: old,
            result: 1, // POLLIN
            armed: true,
        };
        assert!(reactor.on_task_event(&late));
        assert!(reactor.poll_readable(&again, &cx).is_pending());
        reactor.deregister(again);
        reactor.submit().unwrap();
    }

    #[test]
    fn the_doorbell_rings_when_the_ring_has_completions() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let reactor = Reactor::new().unwrap();
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
                let (b, _) = l.accept().unwrap();
                reactor
                    .poller
                    .borrow_mut()
                    .watch_read(b.as_raw_fd(), 5)
                    .unwrap();
                reactor.poller.borrow_mut().submit().unwrap();
                let mut bell = doorbell(&reactor);
                // Nothing yet: the doorbell stays silent.
                let silent = future::or(
                    async {
                        bell.readable().await.unwrap();
                        false
                    },
                    async {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        true
                    },
                )
                .await;
                assert!(silent, "rang with no completion");
                // Input arrives on another thread: the ring gets a completion, the bell rings.
                std::thread::spawn(move || a.write_all(b"x").unwrap())
                    .join()
                    .unwrap();
                let rang = future::or(
                    async {
                        bell.readable().await.unwrap();
                        true
                    },
                    async {
                        glommio::timer::sleep(Duration::from_secs(10)).await;
                        false
                    },
                )
                .await;
                assert!(rang, "the doorbell never rang");
                let mut out = Vec::new();
                reactor.poller.borrow_mut().reap(&mut out, 16);
                // The byte, and the writer's close (its thread ended).
                assert!(
                    !out.is_empty() && out.iter().all(|e| e.token == 5),
                    "{out:?}"
                );
                drop(b);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
