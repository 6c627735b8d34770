//! The media sender: how a segment body leaves a shard. Live segments are shared `Arc`
//! buffers, and with `zerocopy = auto` also files made once by the application core (an
//! unlinked file in the data directory, or a sealed memfd): [`Sender::write_segment_file`] sends those with `sendfile(2)` (no copy
//! through user space, on loopback too). Without a file, a body at or above
//! `zerocopy_threshold` goes out with `IORING_OP_SEND_ZC` from
//! that buffer (no userspace copy, and none per viewer), through the shard's own
//! [`ZcSender`] ring; smaller bodies, and everything when zero-copy is off or the kernel
//! lacks the op, go through glommio's ordinary send. When the socket's send buffer is full
//! the next byte goes through glommio's send, which waits for room (it polls for `POLLOUT`),
//! then zero-copy resumes: waiting copies one byte, not a chunk.
//!
//! The kernel holds each zero-copy buffer until its notification; [`reaper`] reaps them on a
//! timer while any are outstanding, so buffers return promptly even when no send follows.
//!
//! Recorded segments are files: unless zero-copy is off, [`Sender::write_file`] hands them to
//! the kernel with `sendfile(2)` (page cache to socket, no copy through user space) on the
//! socket checked non-blocking once per connection ([`Sender::file_socket`]); when the socket is full, the next byte is read and written
//! through glommio's send (which waits for room), then `sendfile` resumes. Where `sendfile` is
//! refused for the file (a file system without it), the shard falls back to reads and plain
//! sends for good.

use std::cell::{Cell, RefCell};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use netstack::sys::uring::ZcSender;

use crate::config::ZeroCopy;
use crate::hls_files::OpenFile;
use crate::stats::ShardStats;

/// Bytes read and written per step when a recorded file goes out without `sendfile`.
const PLAIN_FILE_CHUNK: u64 = 256 * 1024;

/// One shard's sender.
pub struct Sender {
    zc: RefCell<Option<ZcSender>>,
    threshold: usize,
    /// Whether recorded segments go out with `sendfile` (zero-copy not off, and not refused).
    files: Cell<bool>,
    /// `hls_bytes_zerocopy`, `hls_bytes_sendfile` and `hls_bytes_plain` are counted here.
    stats: Arc<ShardStats>,
    /// Raised by a zero-copy send: the reaper sleeps until there is something to reap.
    sent: crate::sync::Signal,
}

impl Sender {
    /// A sender in `mode`: `Auto` uses zero-copy when the kernel offers it, `On` too but
    /// logs a warning when it does not, `Off` never does.
    pub fn new(mode: ZeroCopy, threshold: usize, stats: Arc<ShardStats>) -> Sender {
        let zc = match mode {
            ZeroCopy::Off => None,
            ZeroCopy::Auto | ZeroCopy::On => match ZcSender::new() {
                Ok(zc) => Some(zc),
                Err(e) => {
                    if mode == ZeroCopy::On {
                        tracing::warn!(error = %e, "zerocopy = on, but zero-copy sends are unavailable: plain sends");
                    } else {
                        tracing::info!(error = %e, "zero-copy sends unavailable: plain sends");
                    }
                    None
                }
            },
        };
        Sender {
            zc: RefCell::new(zc),
            threshold,
            files: Cell::new(mode != ZeroCopy::Off),
            stats,
            sent: crate::sync::Signal::default(),
        }
    }

    /// Whether zero-copy sends are in use.
    pub fn zero_copy(&self) -> bool {
        self.zc.borrow().is_some()
    }

    /// Whether recorded segments go out with `sendfile` ([`Sender::write_file`]).
    pub fn file_sends(&self) -> bool {
        self.files.get()
    }

    /// Readies a plain connection's socket for `sendfile` once, when the connection starts:
    /// makes sure it is `O_NONBLOCK`. Sockets from the shard's accept loop already are
    /// (`accept4` with `SOCK_NONBLOCK`), so this is one `F_GETFL` per connection, not per
    /// response; glommio's own reads and writes pass `MSG_DONTWAIT` and are unaffected. True
    /// when file sends are on and the socket is non-blocking: only then may
    /// [`Sender::write_file`] and [`Sender::write_segment_file`] be called for it (a
    /// blocking `sendfile` would stall the shard).
    pub fn file_socket(&self, stream: &TcpStream) -> bool {
        if !self.files.get() {
            return false;
        }
        match netstack::sys::set_nonblocking(stream.as_raw_fd()) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "a socket refused O_NONBLOCK: plain sends");
                false
            }
        }
    }

    /// Sends whose buffers the kernel still holds.
    pub fn in_flight(&self) -> usize {
        self.zc.borrow().as_ref().map_or(0, ZcSender::in_flight)
    }

    /// Reaps zero-copy notifications.
    pub fn reap(&self) {
        if let Some(zc) = self.zc.borrow_mut().as_mut() {
            zc.reap();
        }
    }

    /// Writes a live segment's `head` and `body`, bounded by `limit` per wait. Plain: both in
    /// one `sendmsg` while the socket takes them; zero-copy: the head with `MSG_MORE`, so it
    /// leaves with the body's first bytes.
    pub async fn write_segment(
        &self,
        stream: &mut TcpStream,
        head: &[u8],
        body: &Arc<[u8]>,
        limit: Duration,
    ) -> bool {
        // `write_head` corks the head (`MSG_MORE`): only when body bytes follow.
        let zero_copy = body.len() >= self.threshold.max(1) && self.zero_copy();
        if zero_copy {
            return write_head(stream, head, limit).await
                && self.write_body(stream, body, 0, limit).await;
        }
        let fd = stream.as_raw_fd();
        let iov = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
        let sent = match netstack::sys::send_vectored_nonblocking(fd, &iov) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return false,
        };
        if sent < head.len() {
            return write_all(stream, &head[sent..], limit).await
                && self.write_body(stream, body, 0, limit).await;
        }
        let off = sent - head.len();
        ShardStats::add(&self.stats.hls_bytes_plain, off as u64);
        self.write_body(stream, body, off, limit).await
    }

    /// Writes `body[off..]` (after its head was written), bounded by `limit` per write.
    pub async fn write_body(
        &self,
        stream: &mut TcpStream,
        body: &Arc<[u8]>,
        mut off: usize,
        limit: Duration,
    ) -> bool {
        let zero_copy = body.len() >= self.threshold && self.zero_copy();
        while off < body.len() {
            if zero_copy {
                let fd = stream.as_raw_fd();
                let sent = self
                    .zc
                    .borrow_mut()
                    .as_mut()
                    .map(|zc| zc.send(fd, body, off));
                self.sent.raise();
                match sent {
                    Some(Ok(n)) if n > 0 => {
                        off += n;
                        ShardStats::add(&self.stats.hls_bytes_zerocopy, n as u64);
                        continue;
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {}
                    Some(Err(_)) => return false,
                }
            }
            // Plain send: all of it, or (socket full) one byte, which waits for room (glommio
            // polls for POLLOUT) before zero-copy resumes.
            let end = if zero_copy { off + 1 } else { body.len() };
            let chunk = &body[off..end];
            if !write_all(stream, chunk, limit).await {
                return false;
            }
            ShardStats::add(&self.stats.hls_bytes_plain, chunk.len() as u64);
            off = end;
        }
        true
    }
}

/// Where the bytes of a file being sent with `sendfile` can also be had, for the byte that
/// waits for room and for the plain path where `sendfile` is refused.
enum Fallback<'a> {
    /// A recorded segment: read from its file.
    Disk(&'a OpenFile),
    /// A live segment: its shared buffer holds the same bytes as its file.
    Memory(&'a [u8]),
}

impl Sender {
    /// Writes the body of a recorded segment from its open file (after its head was written):
    /// exactly `file.len` bytes, with `sendfile` while the socket takes them (a socket
    /// [`Sender::file_socket`] readied). Each wait for
    /// room is bounded by `limit`. False when the connection cannot go on (the peer left, a
    /// wait timed out, or the file was cut short).
    pub async fn write_file(
        &self,
        stream: &mut TcpStream,
        file: &OpenFile,
        limit: Duration,
    ) -> bool {
        let fd = file.fd();
        self.send_file(stream, fd, file.len, Fallback::Disk(file), limit)
            .await
    }

    /// Writes a live segment's `head` and body from `file`, the read-only file holding the
    /// same bytes as `body` (`netstack::sys::unlinked_file_in` or `sealed_memfd`): the head with `MSG_MORE`,
    /// the body with `sendfile`, so no byte is copied through user space per viewer (a socket
    /// [`Sender::file_socket`] readied).
    pub async fn write_segment_file(
        &self,
        stream: &mut TcpStream,
        head: &[u8],
        body: &Arc<[u8]>,
        file: &std::fs::File,
        limit: Duration,
    ) -> bool {
        if body.is_empty() {
            return write_all(stream, head, limit).await;
        }
        let len = body.len() as u64;
        write_head(stream, head, limit).await
            && self
                .send_file(stream, file.as_raw_fd(), len, Fallback::Memory(body), limit)
                .await
    }

    /// Sends bytes `[0, len)` of the file `fd` with `sendfile` on the socket made
    /// non-blocking by [`Sender::file_socket`]; when the socket is full, the next byte goes through glommio's send, which
    /// waits for room (bounded by `limit`), then `sendfile` resumes.
    async fn send_file(
        &self,
        stream: &mut TcpStream,
        fd: std::os::fd::RawFd,
        len: u64,
        fallback: Fallback<'_>,
        limit: Duration,
    ) -> bool {
        let sock = stream.as_raw_fd();
        let mut off = 0u64;
        while off < len {
            if !self.files.get() {
                return self.write_plain(stream, &fallback, off, len, limit).await;
            }
            let rest = usize::try_from(len - off).unwrap_or(usize::MAX);
            match netstack::sys::sendfile_nonblocking(sock, fd, &mut off, rest) {
                Ok(0) => return false, // the file is shorter than promised
                Ok(n) => ShardStats::add(&self.stats.hls_bytes_sendfile, n as u64),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Full: wait for room by writing the next byte through glommio's send
                    // (which polls for POLLOUT), then `sendfile` resumes. One byte, not a
                    // chunk: the rest still leaves from the page cache, uncopied.
                    if !self
                        .write_plain(stream, &fallback, off, off + 1, limit)
                        .await
                    {
                        return false;
                    }
                    off += 1;
                }
                Err(e) if unsupported(&e) => {
                    tracing::info!(error = %e, "sendfile refused: plain sends");
                    self.files.set(false);
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// The plain path: bytes `[off, end)` through glommio's send (a file's in chunks read
    /// from it), each wait bounded by `limit`.
    async fn write_plain(
        &self,
        stream: &mut TcpStream,
        fallback: &Fallback<'_>,
        mut off: u64,
        end: u64,
        limit: Duration,
    ) -> bool {
        while off < end {
            let to = (off + PLAIN_FILE_CHUNK).min(end);
            let wrote = match fallback {
                Fallback::Disk(file) => {
                    let want = (to - off) as usize;
                    match file.read_at(off, want).await {
                        Ok(chunk) if chunk.len() == want => write_all(stream, &chunk, limit).await,
                        _ => false,
                    }
                }
                Fallback::Memory(bytes) => match bytes.get(off as usize..to as usize) {
                    Some(chunk) => write_all(stream, chunk, limit).await,
                    None => false,
                },
            };
            if !wrote {
                return false;
            }
            ShardStats::add(&self.stats.hls_bytes_plain, to - off);
            off = to;
        }
        true
    }
}

/// Writes a response head whose body (at least one byte) follows by another path: with
/// `MSG_MORE` while the socket takes it (the head leaves with the body's first bytes), the
/// rest through glommio. The body's last send, made without the flag, pushes both.
pub async fn write_head(stream: &mut TcpStream, head: &[u8], limit: Duration) -> bool {
    let sent = match netstack::sys::send_more_nonblocking(stream.as_raw_fd(), head) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    sent == head.len() || write_all(stream, &head[sent..], limit).await
}

/// glommio's `write_all` (which waits for room), bounded by `limit`.
async fn write_all(stream: &mut TcpStream, data: &[u8], limit: Duration) -> bool {
    future::or(async { stream.write_all(data).await.is_ok() }, async {
        sleep(limit).await;
        false
    })
    .await
}

/// Errors that say `sendfile` cannot serve this file or socket at all (as opposed to a
/// connection that failed).
fn unsupported(e: &std::io::Error) -> bool {
    // EINVAL (a file without splice support), ENOSYS and EOPNOTSUPP.
    matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported)
}

/// Reaps a shard's zero-copy notifications while any are outstanding (every millisecond),
/// and sleeps without a timer otherwise (until the next zero-copy send): an idle shard never
/// wakes for it. Runs for the shard's life.
pub async fn reaper(sender: Rc<Sender>) {
    if !sender.zero_copy() {
        return;
    }
    loop {
        if sender.in_flight() == 0 {
            sender.sent.wait().await;
        }
        sleep(Duration::from_millis(1)).await;
        sender.reap();
    }
}
