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
//! The task waits for the ring through glommio: the ring's descriptor is readable while
//! completions wait, and glommio's stream type arms a readiness poll on its descriptor when it
//! is made, so a stream made from a duplicate of the ring's descriptor completes a read (with
//! `ENOTSOCK`: it is no socket) exactly when the ring has completions. That read is the whole
//! use of the stream; a new one is made for the next wait (`doorbell_rang`). The test
//! `the_doorbell_rings_when_the_ring_has_completions` pins that behaviour of glommio.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use futures_lite::AsyncRead;
use glommio::net::TcpStream;
use netstack::sys::poller::{Event, Poller};

use crate::conn::Conn;
use crate::proto::Slot;
use crate::sync::Wakeups;

/// Submission entries of a shard's ring: a burst of joins beyond this is submitted in steps.
const SQ_ENTRIES: u32 = 1024;
/// Completion entries; more are kept by the kernel until reaped.
const CQ_ENTRIES: u32 = 8192;
/// Completions handled per turn before the task lets others run.
pub(crate) const BATCH: usize = 512;
/// The token bit of a write watch (the serial keeps it clear).
const WRITE: u64 = 1 << 63;

/// The ring and the wake-ups of one shard's open connections.
pub(crate) struct Reactor {
    poller: RefCell<Poller>,
    pub wakeups: Wakeups,
    serial: Cell<u32>,
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poller: RefCell::new(Poller::new(SQ_ENTRIES, CQ_ENTRIES)?),
            wakeups: Wakeups::default(),
            serial: Cell::new(0),
        })
    }

    /// The serial of the next connection (31 bits, wrapping).
    pub fn next_serial(&self) -> u32 {
        let serial = self.serial.get().wrapping_add(1) & 0x7fff_ffff;
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

/// A glommio stream on a duplicate of the ring's descriptor: its read completes once the
/// ring has completions (see the module doc).
pub(crate) fn doorbell(reactor: &Reactor) -> io::Result<TcpStream> {
    let fd = netstack::sys::dup_cloexec(reactor.poller.borrow().fd())?;
    Ok(netstack::sys::from_owned_fd(fd))
}

/// Waits until the doorbell's descriptor is readable.
pub(crate) async fn doorbell_rang(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    poll_fn(|cx| match Pin::new(&mut *stream).poll_read(cx, &mut byte) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(_) => Poll::Ready(()),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

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
                let mut bell = doorbell(&reactor).unwrap();
                // Nothing yet: the doorbell stays silent.
                let silent = future::or(
                    async {
                        doorbell_rang(&mut bell).await;
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
                        doorbell_rang(&mut bell).await;
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
