//! The shard's uplink: the task that sends the outbox's events to the application core, in
//! order, gathering the mirror's bookkeeping into batches. An `impl Shard` block of the
//! parent module (`tests/module_graph.rs` lists it); it holds no state of its own.

use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::timer::sleep;

use crate::proto::ShardEvent;

use super::Shard;

impl Shard {
    /// The least time between two sends of joins, profile changes and leaves: the ones that
    /// come sooner after the last send wait in the outbox for others.
    const UPLINK_GATHER: Duration = Duration::from_millis(2);
    /// Events that end the wait however urgent they are: a storm's batch goes whole.
    const UPLINK_BATCH: usize = 256;

    /// Whether the application core should see `event` without [`Shard::UPLINK_GATHER`]'s
    /// wait: all but the mirror's bookkeeping of plain joins, profile changes and leaves. A
    /// resume claim (its viewer waits for the answer), a viewer's request, a cast's
    /// completion, tallies and reports go at once (tallies and reports are coalesced already).
    pub(super) fn urgent(event: &ShardEvent) -> bool {
        !matches!(
            event,
            ShardEvent::Joined { claim: None, .. }
                | ShardEvent::Changed { .. }
                | ShardEvent::Left { .. }
        )
    }

    /// Whether the uplink sends what is queued now rather than gather more.
    fn uplink_now(&self) -> bool {
        self.outbox_urgent.get()
            || self.uplink_last.get()
            || self.outbox.borrow().len() >= Self::UPLINK_BATCH
    }

    /// Sends the shard's events to the application core, in order, until the shard's drain
    /// has sent the last ones (`last_uplink`) or the core is gone.
    ///
    /// Each send into an idle application core's channel wakes its executor: a whole
    /// scheduling round for one event. In a connect storm that was a round per join, and the
    /// core's thread took a sixth of the server's CPU. So events that only keep the core's
    /// mirror and counts current go at once when the last send is [`Shard::UPLINK_GATHER`]
    /// old (a lone join is seen at once), and otherwise wait until it is (or for
    /// [`Shard::UPLINK_BATCH`] of them, an urgent one, or the end), then all go
    /// together: in a storm, one wake-up per shard per `UPLINK_GATHER`. Group membership is
    /// the shard's own, so the wait delays no delivery; the core's counts lag by at most that.
    pub(crate) async fn uplink(self: Rc<Self>, events: ConnectedSender<ShardEvent>) {
        let mut last_send: Option<Instant> = None;
        loop {
            let more = poll_fn(|cx| {
                if !self.outbox.borrow().is_empty() {
                    Poll::Ready(true)
                } else if self.uplink_last.get() {
                    Poll::Ready(false)
                } else {
                    *self.uplink_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !more {
                return; // drained: everything queued (final tallies, Left events) went up
            }
            let since = last_send.map_or(Self::UPLINK_GATHER, |t| t.elapsed());
            if since < Self::UPLINK_GATHER && !self.uplink_now() {
                let gathered = poll_fn(|cx| {
                    if self.uplink_now() {
                        Poll::Ready(())
                    } else {
                        *self.uplink_waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                });
                future::or(gathered, sleep(Self::UPLINK_GATHER - since)).await;
            }
            last_send = Some(Instant::now());
            self.outbox_urgent.set(false);
            loop {
                let next = self.outbox.borrow_mut().pop_front();
                let Some(next) = next else { break };
                if events.send(next).await.is_err() {
                    return; // the application core is gone: the process is stopping
                }
            }
        }
    }
}
