//! The application core's side of one shard's command channel.
//!
//! Handlers run synchronously inside a borrow of the application state, so they cannot await a
//! full channel. A command pushed while nothing waits goes straight into the lock-free channel
//! (`try_send`), so the shard is woken before the handler's caller (an API answer, say) does
//! anything else. Otherwise it waits in this local queue, which one task per shard moves into
//! the channel, awaiting when the shard is behind. Order per shard is kept: nothing passes a
//! queued command or the one the task is sending.
//!
//! [`Downlink::heads_up`] tells a sleeping shard that a command is likely coming (see
//! `wake_shards_ahead`), so that waking its thread, tens of microseconds on an idle CPU,
//! overlaps the core's handling of the request instead of following it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::ConnectedSender;
use glommio::{GlommioError, ResourceType};
use shards::proto::ShardCommand;

#[derive(Default)]
pub struct Downlink {
    queue: RefCell<VecDeque<ShardCommand>>,
    waker: RefCell<Option<Waker>>,
    /// The channel, once the task has connected it.
    channel: RefCell<Option<Rc<ConnectedSender<ShardCommand>>>>,
    /// The task holds a command it is sending (the channel was full).
    sending: Cell<bool>,
    /// The CPU the shard's thread is pinned to, once the task has connected the channel.
    cpu: Cell<Option<usize>>,
}

impl Downlink {
    pub fn push(&self, command: ShardCommand) {
        // `Shutdown` always takes the queue: the task ends after sending it.
        let direct = !matches!(command, ShardCommand::Shutdown { .. })
            && !self.sending.get()
            && self.queue.borrow().is_empty();
        let command = match self.channel.borrow().as_ref().filter(|_| direct) {
            Some(channel) => match channel.try_send(command) {
                Ok(()) => return,
                Err(GlommioError::WouldBlock(ResourceType::Channel(c))) => c,
                // The shard is gone (its task ends the same way): nothing reads this.
                Err(_) => return,
            },
            None => command,
        };
        self.queue.borrow_mut().push_back(command);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Sends [`ShardCommand::HeadsUp`] if the shard is asleep, nothing waits to go down, and
    /// the shard's CPU is not `here` (the core's): a shard woken on the core's own CPU would
    /// take that CPU from the core until its hold ran out. A hint: a shard that wakes or
    /// falls asleep meanwhile costs one needless heads-up or misses one.
    pub fn heads_up(&self, here: Option<usize>) {
        if here.is_some() && here == self.cpu.get() {
            return;
        }
        if self.sending.get() || !self.queue.borrow().is_empty() {
            return;
        }
        if let Some(channel) = self.channel.borrow().as_ref() {
            if channel.peer_asleep() {
                // Full or closed: the shard has work, or is gone.
                let _ = channel.try_send(ShardCommand::HeadsUp);
            }
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

    /// Moves queued commands into the channel until the shard hangs up. `cpu` is where the
    /// shard's thread is pinned ([`Downlink::heads_up`]).
    pub async fn run(&self, sender: ConnectedSender<ShardCommand>, cpu: Option<usize>) {
        let sender = Rc::new(sender);
        *self.channel.borrow_mut() = Some(sender.clone());
        self.cpu.set(cpu);
        let _unset = Unset(self);
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
            self.sending.set(true);
            let sent = sender.send(next).await;
            self.sending.set(false);
            if sent.is_err() || last {
                return;
            }
        }
    }
}

/// Forgets the channel when the task ends (or is dropped): later commands stay queued.
struct Unset<'a>(&'a Downlink);

impl Drop for Unset<'_> {
    fn drop(&mut self) {
        self.0.sending.set(false);
        *self.0.channel.borrow_mut() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::channels::shared_channel;
    use glommio::LocalExecutorBuilder;
    use shards::proto::GroupId;
    use std::sync::Arc;

    fn cast(n: u32) -> ShardCommand {
        ShardCommand::Cast {
            group: GroupId(n),
            frame: Arc::from(&[][..]),
        }
    }

    /// A heads-up goes only to a shard that sleeps, on another CPU than the caller's: not
    /// while the shard runs, not when the caller is on the shard's CPU.
    #[test]
    fn heads_ups_go_only_to_sleeping_shards_on_other_cpus() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        const SHARD_CPU: usize = 7;
        let (tx, rx) = shared_channel::new_bounded::<ShardCommand>(4);
        let spinning = Arc::new(AtomicBool::new(false));
        let go = Arc::new(AtomicBool::new(false));
        let (spinning_shard, go_shard) = (spinning.clone(), go.clone());
        let shard = LocalExecutorBuilder::default()
            .name("heads-up-shard")
            .spawn(move || async move {
                let rx = rx.connect().await;
                // Awake: this task runs without ever letting the executor sleep until told.
                spinning_shard.store(true, Ordering::Release);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !go_shard.load(Ordering::Acquire) {
                    assert!(Instant::now() < deadline, "the core never said go");
                    glommio::executor().yield_task_queue_now().await;
                }
                let mut got = Vec::new();
                while let Some(command) = rx.recv().await {
                    match command {
                        ShardCommand::HeadsUp => got.push("heads-up"),
                        ShardCommand::Cast { .. } => got.push("cast"),
                        ShardCommand::Shutdown { .. } => break,
                        _ => got.push("other"),
                    }
                }
                got
            })
            .unwrap();
        let core = LocalExecutorBuilder::default()
            .name("heads-up-core")
            .spawn(move || async move {
                let downlink = Rc::new(Downlink::default());
                let tx = tx.connect().await;
                let task = {
                    let downlink = downlink.clone();
                    glommio::spawn_local(async move { downlink.run(tx, Some(SHARD_CPU)).await })
                };
                let asleep = |d: &Downlink| d.channel.borrow().as_ref().unwrap().peer_asleep();
                let deadline = Instant::now() + Duration::from_secs(10);
                while !spinning.load(Ordering::Acquire) || downlink.channel.borrow().is_none() {
                    assert!(Instant::now() < deadline, "the shard never ran");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                assert!(!asleep(&downlink));
                // Awake: nothing is sent.
                downlink.heads_up(Some(0));
                go.store(true, Ordering::Release);
                while !asleep(&downlink) {
                    assert!(Instant::now() < deadline, "the shard never slept");
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                // Asleep, but on the caller's own CPU: nothing is sent. A message sent would
                // have lowered the flag (its notification) already.
                downlink.heads_up(Some(SHARD_CPU));
                assert!(asleep(&downlink), "a heads-up went to the caller's own CPU");
                // Asleep, on another CPU: sent.
                downlink.heads_up(Some(0));
                downlink.push(cast(1));
                downlink.push(ShardCommand::Shutdown {
                    grace: Duration::ZERO,
                });
                task.await;
            })
            .unwrap();
        core.join().unwrap();
        assert_eq!(shard.join().unwrap(), ["heads-up", "cast"]);
    }

    /// Pushes 200 commands in bursts through a channel of 4, some straight in, some through the
    /// queue while the shard side is slow, and a `Shutdown` last: they arrive in order, and
    /// the task ends after the `Shutdown`.
    #[test]
    fn commands_arrive_in_order_whichever_way_they_go() {
        const N: u32 = 200;
        let (tx, rx) = shared_channel::new_bounded::<ShardCommand>(4);
        // The shard side reads nothing until the first burst of 10 is pushed: 4 of it fill
        // the channel, the rest must queue.
        let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let go_shard = go.clone();
        let shard = LocalExecutorBuilder::default()
            .name("downlink-shard")
            .spawn(move || async move {
                let rx = rx.connect().await;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while !go_shard.load(std::sync::atomic::Ordering::Acquire) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the core never pushed"
                    );
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                let mut got = Vec::new();
                while let Some(command) = rx.recv().await {
                    match command {
                        ShardCommand::Cast { group, .. } => got.push(group.0),
                        ShardCommand::Shutdown { .. } => break,
                        _ => {}
                    }
                    if got.len() % 7 == 0 {
                        // Fall behind now and then so the core's side has to queue.
                        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    }
                }
                got
            })
            .unwrap();
        let core = LocalExecutorBuilder::default()
            .name("downlink-core")
            .spawn(move || async move {
                let downlink = Rc::new(Downlink::default());
                let tx = tx.connect().await;
                let task = {
                    let downlink = downlink.clone();
                    glommio::spawn_local(async move { downlink.run(tx, None).await })
                };
                futures_lite::future::yield_now().await; // the task connects the channel
                let mut direct = 0;
                for n in 0..N {
                    let before = downlink.len();
                    downlink.push(cast(n));
                    if downlink.len() == before && before == 0 {
                        direct += 1;
                    }
                    if n == 9 {
                        go.store(true, std::sync::atomic::Ordering::Release);
                    }
                    if n % 10 == 9 {
                        glommio::timer::sleep(std::time::Duration::from_micros(300)).await;
                    }
                }
                downlink.push(ShardCommand::Shutdown {
                    grace: std::time::Duration::ZERO,
                });
                task.await;
                assert!(downlink.channel.borrow().is_none(), "the channel is let go");
                direct
            })
            .unwrap();
        let direct = core.join().unwrap();
        let got = shard.join().unwrap();
        assert_eq!(got, (0..N).collect::<Vec<_>>());
        assert!(direct > 0, "some commands went straight into the channel");
        assert!(direct < N, "some commands waited in the queue");
    }
}
