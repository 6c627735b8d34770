//! What the application core queues for one broadcaster socket: results frames, bounded.
//!
//! The core pushes frames; the socket's session (`api::broadcaster`) takes them. A
//! broadcaster that falls more than [`SINK_BYTES`] behind is disconnected: results are a
//! stream of snapshots, so it loses nothing by reconnecting. The sink does no I/O.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use shards::proto::Frame;

/// Most bytes waiting for one broadcaster.
pub const SINK_BYTES: usize = 1024 * 1024;

#[derive(Default)]
pub struct Sink {
    queue: RefCell<VecDeque<Frame>>,
    bytes: Cell<usize>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// Closing for shutdown: what is queued is written first, then a 1001 close frame.
    going_away: Cell<bool>,
    /// The session has ended (or never started).
    done: Cell<bool>,
    /// Who waits for `done` (shutdown).
    done_waker: RefCell<Option<Waker>>,
}

impl Sink {
    pub fn push(&self, frame: Frame) {
        if self.closed.get() {
            return;
        }
        if self.bytes.get() + frame.len() > SINK_BYTES {
            self.close();
            return;
        }
        self.bytes.set(self.bytes.get() + frame.len());
        self.queue.borrow_mut().push_back(frame);
        self.wake();
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Server shutdown: write what is queued, then close with 1001.
    pub fn close_going_away(&self) {
        self.going_away.set(true);
        self.close();
    }

    /// The session ended (or never started): nothing more will be written.
    pub fn finish(&self) {
        self.closed.set(true);
        self.done.set(true);
        if let Some(w) = self.done_waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Completes once the session has ended.
    pub async fn done(&self) {
        poll_fn(|cx| {
            if self.done.get() {
                Poll::Ready(())
            } else {
                *self.done_waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Closing for shutdown: the session writes what is queued, then a 1001 close frame.
    pub fn is_going_away(&self) -> bool {
        self.going_away.get()
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The next frame to write; `None` once closed.
    pub async fn next(&self) -> Option<Frame> {
        poll_fn(|cx| {
            if self.closed.get() && !self.going_away.get() {
                return Poll::Ready(None);
            }
            match self.queue.borrow_mut().pop_front() {
                Some(f) => {
                    self.bytes.set(self.bytes.get() - f.len());
                    Poll::Ready(Some(f))
                }
                None if self.closed.get() => Poll::Ready(None),
                None => {
                    *self.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}
