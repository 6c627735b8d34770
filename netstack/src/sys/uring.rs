//! The zero-copy sender: a small io_uring of its own that sends with `IORING_OP_SEND_ZC`
//! (glommio does not expose the op). Owned by one thread (a shard) and driven by it.
//!
//! Each send is issued with `MSG_DONTWAIT`, so the kernel completes its first CQE (the byte
//! count, or `EAGAIN` when the socket's send buffer is full) during `io_uring_enter`: the
//! caller never blocks and no send stays pending in the kernel. The kernel may still read
//! the buffer's pages after that CQE, until its notification CQE (`IORING_CQE_F_NOTIF`); so
//! every send holds a clone of its `Arc<[u8]>` in a slot until that notification is reaped
//! ([`ZcSender::reap`]). Dropping the sender waits (bounded) for outstanding notifications
//! before the ring and the buffers go, and closes the ring's descriptor.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring, Probe};

/// Submission queue entries of a sender's ring.
const RING_ENTRIES: u32 = 64;
/// How long dropping a sender waits for outstanding notifications.
const DRAIN: Duration = Duration::from_secs(2);

/// A ring that sends with `IORING_OP_SEND_ZC`, and the buffers the kernel may still read.
pub struct ZcSender {
    ring: IoUring,
    /// Slot `i` holds the buffer of the send with `user_data == i` until its last CQE.
    slots: Vec<Option<Arc<[u8]>>>,
    free: Vec<usize>,
    in_flight: usize,
}

/// Why a zero-copy send is not possible here.
#[derive(Debug, thiserror::Error)]
pub enum ZcError {
    /// The ring could not be created (`io_uring_setup`, e.g. locked-memory limits).
    #[error("io_uring setup: {0}")]
    Setup(io::Error),
    /// The kernel lacks `IORING_OP_SEND_ZC` (before 6.0).
    #[error("the kernel does not support IORING_OP_SEND_ZC")]
    Unsupported,
}

impl ZcSender {
    /// A sender, if the kernel offers `IORING_OP_SEND_ZC`.
    pub fn new() -> Result<ZcSender, ZcError> {
        let ring = IoUring::new(RING_ENTRIES).map_err(ZcError::Setup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(ZcError::Setup)?;
        if !probe.is_supported(opcode::SendZc::CODE) {
            return Err(ZcError::Unsupported);
        }
        Ok(ZcSender {
            ring,
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
        })
    }

    /// Sends whose buffer the kernel may still read (their notification is not reaped).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// One zero-copy send of `buf[offset..]` on the socket `fd`, without waiting: the bytes
    /// the kernel took (`ErrorKind::WouldBlock` when the send buffer is full). `buf` stays
    /// referenced until the kernel's notification is reaped.
    pub fn send(&mut self, fd: RawFd, buf: &Arc<[u8]>, offset: usize) -> io::Result<usize> {
        self.reap();
        let rest = buf.get(offset..).unwrap_or(&[]);
        if rest.is_empty() {
            return Ok(0);
        }
        let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
        let slot = self.take_slot(buf.clone());
        let entry = opcode::SendZc::new(types::Fd(fd), rest.as_ptr(), len)
            .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            .build()
            .user_data(slot as u64);
        // SAFETY: the entry points at `len` bytes of `buf`, an `Arc` whose clone sits in
        // `slots[slot]` until the kernel posts this send's last CQE (the notification, or the
        // result when it carries no IORING_CQE_F_MORE): the memory outlives every kernel
        // access. `slots` is only shrunk by `reap`, which frees a slot on that last CQE, and
        // `Drop` keeps the slots until the ring's descriptor is closed. `fd` is resolved by
        // the kernel during the submit below, while the caller holds the socket open.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Full queue: submit what is queued, then try once more.
            self.ring.submit()?;
            // SAFETY: as above; the same entry and slot.
            if unsafe { self.ring.submission().push(&entry) }.is_err() {
                self.release(slot);
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
        }
        self.in_flight += 1;
        let mut waited = false;
        loop {
            if waited {
                self.ring.submit_and_wait(1)?;
            } else {
                self.ring.submit()?;
            }
            if let Some(res) = self.reap_until(slot) {
                return if res >= 0 {
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
            }
            // With MSG_DONTWAIT the result is posted during the submit; wait for it if not.
            waited = true;
        }
    }

    /// Reaps completions: frees the buffers whose sends the kernel is done with.
    pub fn reap(&mut self) {
        let _ = self.reap_until(usize::MAX);
    }

    /// Reaps every completion; returns the result of `want`'s first CQE if one was seen.
    fn reap_until(&mut self, want: usize) -> Option<i32> {
        let mut found = None;
        let done: Vec<(usize, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result(), c.flags()))
            .collect();
        for (slot, res, flags) in done {
            if cqueue::notif(flags) {
                self.release(slot);
                continue;
            }
            if slot == want {
                found = Some(res);
            }
            if !cqueue::more(flags) {
                // No notification follows: the kernel is done with the buffer.
                self.release(slot);
            }
        }
        found
    }

    fn take_slot(&mut self, buf: Arc<[u8]>) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(buf);
                i
            }
            None => {
                self.slots.push(Some(buf));
                self.slots.len() - 1
            }
        }
    }

    fn release(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if s.take().is_some() {
                self.free.push(slot);
                self.in_flight = self.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Drop for ZcSender {
    fn drop(&mut self) {
        let deadline = Instant::now() + DRAIN;
        while self.in_flight > 0 && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
        if self.in_flight > 0 {
            // The kernel still holds pages of these buffers: keep them (leak) rather than
            // free memory it may read. Only reached if notifications never come.
            std::mem::forget(std::mem::take(&mut self.slots));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn sends_bytes_exactly_and_releases_every_buffer() {
        let Ok(mut zc) = ZcSender::new() else {
            eprintln!("no SEND_ZC here: skipped");
            return;
        };
        let (a, mut b) = pair();
        let data: Arc<[u8]> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 100_000];
            b.read_exact(&mut got).unwrap();
            got
        });
        let mut off = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while off < data.len() {
            match zc.send(a.as_raw_fd(), &data, off) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "stuck sending");
                    std::thread::yield_now();
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(reader.join().unwrap(), &data[..]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while zc.in_flight() > 0 {
            assert!(Instant::now() < deadline, "notifications never came");
            zc.reap();
            std::thread::yield_now();
        }
        assert_eq!(Arc::strong_count(&data), 1);
    }
}
