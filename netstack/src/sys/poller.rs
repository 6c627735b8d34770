//! Readiness of many sockets from one io_uring of the caller's own: a multishot
//! `IORING_OP_POLL_ADD` per socket for reads (armed once for the socket's life), a one-shot
//! one for writes while a send waits for room. Owned by one thread (a shard) and driven by it.
//!
//! This is what lets an idle viewer own nothing in user space but its own state: the kernel
//! keeps the armed poll (its request and wait-queue entry, kernel memory), there is no task,
//! no runtime source object and no buffer per socket, and a completion names the socket by
//! the caller's 64-bit token. Submissions are queued and go to the kernel together in one
//! `io_uring_enter` ([`Poller::submit`]), so arming the polls of a connect storm costs no
//! syscall per connection.
//!
//! The ring's own descriptor is readable while completions wait in it ([`Poller::fd`]), so
//! the caller's event loop can wait on it beside everything else.
//!
//! The ring is created with `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (Linux
//! 5.19; older kernels get a plain ring). Without it, a socket that becomes readable while
//! the owning thread runs (another CPU's send) interrupts that thread's CPU with an IPI so
//! the thread posts the completion at once: in a connect storm that was nearly every
//! rescheduling IPI of the machine. With it, the thread posts the completion at its next
//! entry into the kernel. A thread asleep anywhere (in its runtime's ring, waiting on this
//! ring's descriptor) is still woken at once, and posts it on the way. When the flag says
//! completions wait, [`Poller::reap`] reports more and [`Poller::submit`] enters the kernel
//! to post them.
//!
//! Ordering makes descriptor reuse safe: a poll holds a reference to its file, not to the
//! number, and [`Poller::unwatch`] removes by token. If a socket is closed and its number
//! reused between queueing its `watch` and the submit, the stale poll is armed on the new
//! file under the old token, and the `unwatch` queued behind it (in the same submission, in
//! order) removes it again; completions under an old token are the caller's to ignore
//! (tokens carry a generation).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// The token of requests whose completions mean nothing (failed removals).
const IGNORED: u64 = u64::MAX;

/// One completion: the token its watch was given, what the kernel reported, and whether the
/// watch is still armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    /// The poll mask (`libc::POLLIN`, ...), or a negative errno when the watch failed.
    pub result: i32,
    /// The (multishot) watch stays armed: more events will come under this token.
    pub armed: bool,
}

/// A ring that watches sockets for readiness.
pub struct Poller {
    ring: IoUring,
    /// Entries queued and not yet submitted.
    queued: usize,
}

impl Poller {
    /// A ring with `sq` submission and `cq` completion entries. Completions beyond `cq` are
    /// kept by the kernel (`IORING_FEAT_NODROP`) and flushed by [`Poller::reap`].
    pub fn new(sq: u32, cq: u32) -> io::Result<Poller> {
        let ring = match IoUring::builder()
            .setup_cqsize(cq.max(sq))
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(sq)
        {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                IoUring::builder().setup_cqsize(cq.max(sq)).build(sq)?
            }
            ring => ring?,
        };
        if !ring.params().is_feature_nodrop() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without IORING_FEAT_NODROP (Linux < 5.5)",
            ));
        }
        Ok(Poller { ring, queued: 0 })
    }

    /// The ring's descriptor: readable while completions wait.
    pub fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Entries queued for the next [`Poller::submit`].
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Watches `fd` for input, a hang-up or an error until [`Poller::unwatch`] (multishot:
    /// one arming for the socket's life, events as they come, edge-style: read until
    /// `WouldBlock` after each). A socket already readable completes at once.
    pub fn watch_read(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let entry = opcode::PollAdd::new(types::Fd(fd), mask)
            .multi(true)
            .build()
            .user_data(token);
        self.push(entry)
    }

    /// Watches `fd` once for input (or an error, or a hang-up): one completion, then nothing
    /// until armed again. A socket already readable completes at once.
    pub fn watch_read_once(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let entry = opcode::PollAdd::new(types::Fd(fd), mask)
            .build()
            .user_data(token);
        self.push(entry)
    }

    /// Watches `fd` once for room to write (or an error, or a hang-up).
    pub fn watch_write(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(token);
        self.push(entry)
    }

    /// Removes the watch with `token`: after the next submit it reports nothing more and no
    /// longer holds its socket's file. A removal that finds nothing is silent.
    pub fn unwatch(&mut self, token: u64) -> io::Result<()> {
        let entry = opcode::PollRemove::new(token)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(IGNORED);
        self.push(entry)
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: poll entries point at no memory of ours (a descriptor number, a mask and,
        // for removals, a token), so nothing the kernel reads can dangle. A descriptor closed
        // before the submit makes the request fail (EBADF) or, if its number was reused,
        // arms a poll that the removal queued behind it takes down (see the module doc).
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.submit()?;
            // SAFETY: as above; the queue was just emptied by the submit.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
        }
        self.queued += 1;
        Ok(())
    }

    /// Hands every queued entry to the kernel (one `io_uring_enter`; none when nothing is
    /// queued and no completion waits in the kernel, in its overflow list or to be posted).
    pub fn submit(&mut self) -> io::Result<()> {
        let waiting = {
            let sq = self.ring.submission();
            sq.cq_overflow() || sq.taskrun()
        };
        if self.queued == 0 && !waiting {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EBUSY: completions must be reaped before more can be submitted.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.queued = self.ring.submission().len();
        Ok(())
    }

    /// Moves up to `max` completions into `out`; true when more may wait (the queue was
    /// not emptied, or the kernel holds overflowed completions or ones not yet posted: call
    /// again after a submit).
    pub fn reap(&mut self, out: &mut Vec<Event>, max: usize) -> bool {
        let mut cq = self.ring.completion();
        let mut taken = 0;
        for c in &mut cq {
            if c.user_data() == IGNORED {
                continue;
            }
            out.push(Event {
                token: c.user_data(),
                result: c.result(),
                armed: cqueue::more(c.flags()),
            });
            taken += 1;
            if taken == max {
                break;
            }
        }
        let left = !cq.is_empty();
        drop(cq);
        let sq = self.ring.submission();
        left || sq.cq_overflow() || sq.taskrun()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Submits and reaps until `want` events came (bounded).
    fn events(p: &mut Poller, want: usize) -> Vec<Event> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < want {
            p.submit().unwrap();
            p.reap(&mut out, usize::MAX);
            assert!(Instant::now() < deadline, "events never came: {out:?}");
            std::thread::yield_now();
        }
        out
    }

    fn pollable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the call; a zero timeout never blocks.
        unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
    }

    #[test]
    fn a_read_watch_reports_every_arrival_and_stays_armed() {
        let mut p = Poller::new(8, 16).unwrap();
        let (mut a, b) = pair();
        p.watch_read(b.as_raw_fd(), 7).unwrap();
        p.submit().unwrap();
        let mut out = Vec::new();
        p.reap(&mut out, usize::MAX);
        assert!(out.is_empty(), "nothing to read yet: {out:?}");
        a.write_all(b"x").unwrap();
        let ev = events(&mut p, 1);
        assert_eq!(ev[0].token, 7);
        assert!(ev[0].result & libc::POLLIN as i32 != 0);
        assert!(ev[0].armed);
        // Edge-style: the next arrival is a new event although the first byte is unread.
        a.write_all(b"y").unwrap();
        let ev = events(&mut p, 1);
        assert_eq!(ev[0].token, 7);
        // A hang-up is reported too.
        drop(a);
        let ev = events(&mut p, 1);
        assert!(ev[0].result & libc::POLLRDHUP as i32 != 0, "{ev:?}");
    }

    #[test]
    fn the_ring_descriptor_is_readable_while_completions_wait() {
        let mut p = Poller::new(8, 16).unwrap();
        let (mut a, b) = pair();
        p.watch_read(b.as_raw_fd(), 1).unwrap();
        p.submit().unwrap();
        assert!(!pollable(p.fd()));
        a.write_all(b"x").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pollable(p.fd()) {
            assert!(Instant::now() < deadline, "the ring never became readable");
            std::thread::yield_now();
        }
        let mut out = Vec::new();
        p.reap(&mut out, usize::MAX);
        assert_eq!(out.len(), 1);
        assert!(!pollable(p.fd()), "reaped: nothing waits");
    }

    #[test]
    fn unwatch_releases_the_socket() {
        let mut p = Poller::new(8, 16).unwrap();
        let (mut a, b) = pair();
        p.watch_read(b.as_raw_fd(), 3).unwrap();
        p.submit().unwrap();
        // Closing our descriptor alone does not close the socket: the armed poll holds it.
        drop(b);
        p.unwatch(3).unwrap();
        p.submit().unwrap();
        // Once removed, the peer sees the close (EOF).
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(std::io::Read::read(&mut a, &mut buf).unwrap(), 0);
        let mut out = Vec::new();
        p.reap(&mut out, usize::MAX);
        assert!(out.iter().all(|e| !e.armed), "{out:?}");
    }

    #[test]
    fn a_one_shot_read_watch_fires_once_and_at_once_when_armed_on_waiting_input() {
        let mut p = Poller::new(8, 16).unwrap();
        let (mut a, b) = pair();
        p.watch_read_once(b.as_raw_fd(), 5).unwrap();
        a.write_all(b"x").unwrap();
        let ev = events(&mut p, 1);
        assert_eq!(ev[0].token, 5);
        assert!(ev[0].result & libc::POLLIN as i32 != 0);
        assert!(!ev[0].armed, "one-shot");
        // Spent: more input reports nothing until it is armed again.
        a.write_all(b"y").unwrap();
        let (sent, waited) = (Instant::now(), Duration::from_millis(50));
        let mut out = Vec::new();
        while sent.elapsed() < waited {
            p.submit().unwrap();
            p.reap(&mut out, usize::MAX);
        }
        assert!(out.is_empty(), "nothing after the one shot: {out:?}");
        // Armed again while the bytes still wait: it completes at once.
        p.watch_read_once(b.as_raw_fd(), 6).unwrap();
        let ev = events(&mut p, 1);
        assert_eq!(ev[0].token, 6);
        assert!(!ev[0].armed);
    }

    #[test]
    fn a_write_watch_fires_once_when_there_is_room() {
        let mut p = Poller::new(8, 16).unwrap();
        let (a, _b) = pair();
        p.watch_write(a.as_raw_fd(), 9).unwrap();
        let ev = events(&mut p, 1);
        assert_eq!(ev[0].token, 9);
        assert!(ev[0].result & libc::POLLOUT as i32 != 0);
        assert!(!ev[0].armed, "one-shot");
    }

    #[test]
    fn completions_beyond_the_queue_are_kept_and_reaped() {
        // 64 sockets readable at once into a 16-entry completion queue.
        let mut p = Poller::new(8, 16).unwrap();
        let pairs: Vec<(TcpStream, TcpStream)> = (0..64).map(|_| pair()).collect();
        for (i, (_, b)) in pairs.iter().enumerate() {
            p.watch_read(b.as_raw_fd(), i as u64).unwrap();
        }
        p.submit().unwrap();
        for (a, _) in &pairs {
            (&*a).write_all(b"x").unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 64 {
            let mut out = Vec::new();
            p.submit().unwrap();
            p.reap(&mut out, 5);
            seen.extend(out.iter().map(|e| e.token));
            assert!(
                Instant::now() < deadline,
                "lost completions: {}",
                seen.len()
            );
        }
    }
}
