//! Single-threaded wake-up primitives for tasks on one executor.
//!
//! Both hold one waker slot, replaced on each poll: their waiters re-create `wait` futures in
//! loops (the accept loop once per connection), and a list of wakers would grow without bound.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// A one-shot, single-waiter notification: once `notify` is called, `wait` is ready forever.
/// One waker slot, replaced on each poll: a waiter that re-creates its `wait` future in a loop
/// (the accept loop does, once per connection) never accumulates wakers.
#[derive(Default)]
pub struct Notify {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.fired.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
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
        assert!(n.waker.borrow().is_some());
    }
}
