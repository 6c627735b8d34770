//! The application core's side of one shard's command channel.
//!
//! Handlers run synchronously inside a borrow of the application state, so they cannot await a
//! full channel. They push into this local queue; one task per shard moves the queue into the
//! lock-free channel, awaiting when the shard is behind. Order per shard is kept.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::ConnectedSender;
use shards::proto::ShardCommand;

#[derive(Default)]
pub struct Downlink {
    queue: RefCell<VecDeque<ShardCommand>>,
    waker: RefCell<Option<Waker>>,
}

impl Downlink {
    pub fn push(&self, command: ShardCommand) {
        self.queue.borrow_mut().push_back(command);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Commands waiting to go down.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Takes every queued command (in-memory tests read what the core sent this way).
    pub fn take_all(&self) -> Vec<ShardCommand> {
        self.queue.borrow_mut().drain(..).collect()
    }

    /// Moves queued commands into the channel until the shard hangs up.
    pub async fn run(&self, sender: ConnectedSender<ShardCommand>) {
        loop {
            let next = poll_fn(|cx| match self.queue.borrow_mut().pop_front() {
                Some(c) => Poll::Ready(c),
                None => {
                    *self.waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let last = matches!(next, ShardCommand::Shutdown { .. });
            if sender.send(next).await.is_err() || last {
                return;
            }
        }
    }
}
