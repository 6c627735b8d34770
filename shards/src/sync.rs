//! Single-threaded wake-up primitives for tasks on one executor.
//!
//! Their waiters re-create `wait` futures in loops (the accept loops once per connection), so
//! neither keeps more than one waker per waiting task.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A one-shot notification: once `notify` is called, `wait` is ready forever. It keeps one
/// waker per waiting task (a task's waker replaces its earlier one), so a waiter that
/// re-creates its `wait` future in a loop (each accept loop does, once per connection) never
/// accumulates wakers, and the plain and TLS accept loops are both woken.
#[derive(Default)]
pub struct Notify {
    fired: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Whether `notify` was called.
    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    pub fn notify(&self) {
        self.fired.set(true);
        for w in self.wakers.take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                Poll::Ready(())
            } else {
                let mut wakers = self.wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

/// A reusable, single-waiter signal: `wait` completes once per batch of `raise` calls.
#[derive(Default)]
pub struct Signal {
    raised: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    pub fn raise(&self) {
        if !self.raised.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// The connections that asked their shard's reactor to drive them (by slot), and the signal
/// that wakes the reactor. A connection appears at most once until it is driven (its
/// `queued` flag); a slot may name a connection that ended meanwhile, which the reactor skips.
#[derive(Default)]
pub struct Wakeups {
    slots: RefCell<Vec<u32>>,
    pub signal: Signal,
}

impl Wakeups {
    pub fn push(&self, slot: u32) {
        self.slots.borrow_mut().push(slot);
        self.signal.raise();
    }

    /// Moves every waiting slot into `into`.
    pub fn take(&self, into: &mut Vec<u32>) {
        into.append(&mut self.slots.borrow_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn notify_stays_fired() {
        let n = Notify::default();
        assert_eq!(block_on(poll_once(n.wait())), None);
        n.notify();
        block_on(n.wait());
        block_on(n.wait());
    }

    #[test]
    fn signal_is_consumed_per_batch() {
        let s = Signal::default();
        assert_eq!(block_on(poll_once(s.wait())), None);
        s.raise();
        s.raise();
        assert_eq!(block_on(poll_once(s.wait())), Some(()));
        assert_eq!(
            block_on(poll_once(s.wait())),
            None,
            "two raises, one wake-up"
        );
    }

    #[test]
    fn waiting_in_a_loop_keeps_one_waker() {
        let n = Notify::default();
        for _ in 0..1000 {
            assert_eq!(block_on(poll_once(n.wait())), None);
        }
        assert_eq!(n.wakers.borrow().len(), 1);
    }

    #[test]
    fn two_waiting_tasks_are_both_woken() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Wake};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let n = Notify::default();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        for count in [&a, &b] {
            let waker = Waker::from(count.clone());
            let mut fut = std::pin::pin!(n.wait());
            assert!(fut
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        n.notify();
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
    }
}
