//! The media sender: how a segment body leaves a shard. Live segments are shared `Arc`
//! buffers; a body at or above `zerocopy_threshold` goes out with `IORING_OP_SEND_ZC` from
//! that buffer (no userspace copy, and none per viewer), through the shard's own
//! [`ZcSender`] ring; smaller bodies, and everything when zero-copy is off or the kernel
//! lacks the op, go through glommio's ordinary send. When the socket's send buffer is full
//! a chunk goes through glommio's send (which waits for room), then zero-copy resumes.
//!
//! The kernel holds each zero-copy buffer until its notification; [`reaper`] reaps them on a
//! timer while any are outstanding, so buffers return promptly even when no send follows.

use std::cell::RefCell;
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
use crate::stats::ShardStats;

/// Bytes written through glommio's send when the socket is full, before zero-copy resumes.
const FALLBACK_CHUNK: usize = 64 * 1024;

/// One shard's sender.
pub struct Sender {
    zc: RefCell<Option<ZcSender>>,
    threshold: usize,
    /// `hls_bytes_zerocopy` and `hls_bytes_plain` are counted here.
    stats: Arc<ShardStats>,
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
            stats,
        }
    }

    /// Whether zero-copy sends are in use.
    pub fn zero_copy(&self) -> bool {
        self.zc.borrow().is_some()
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

    /// Writes `body` (after its head was written), bounded by `limit` per write.
    pub async fn write_body(
        &self,
        stream: &mut TcpStream,
        body: &Arc<[u8]>,
        limit: Duration,
    ) -> bool {
        let zero_copy = body.len() >= self.threshold && self.zero_copy();
        let mut off = 0;
        while off < body.len() {
            if zero_copy {
                let fd = stream.as_raw_fd();
                let sent = self
                    .zc
                    .borrow_mut()
                    .as_mut()
                    .map(|zc| zc.send(fd, body, off));
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
            // Plain send: all of it, or (socket full) a chunk, which waits for room.
            let end = if zero_copy {
                (off + FALLBACK_CHUNK).min(body.len())
            } else {
                body.len()
            };
            let chunk = &body[off..end];
            let wrote = future::or(async { stream.write_all(chunk).await.is_ok() }, async {
                sleep(limit).await;
                false
            })
            .await;
            if !wrote {
                return false;
            }
            ShardStats::add(&self.stats.hls_bytes_plain, chunk.len() as u64);
            off = end;
        }
        true
    }
}

/// Reaps a shard's zero-copy notifications while any are outstanding (every millisecond),
/// idling at a slow tick otherwise. Runs for the shard's life.
pub async fn reaper(sender: Rc<Sender>) {
    if !sender.zero_copy() {
        return;
    }
    loop {
        let busy = sender.in_flight() > 0;
        sleep(if busy {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        })
        .await;
        sender.reap();
    }
}
