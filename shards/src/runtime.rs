//! Wires one shard together on its executor: spawns the accept loop, the reactor that serves
//! the open connections, the uplink, the keepalive sweeper and the tally reporter, runs the
//! command loop (batching casts, staying awake after a heads-up), and drains on shutdown.

use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::channels::shared_channel::{ConnectedReceiver, SharedReceiver, SharedSender};
use glommio::timer::sleep;

use crate::accept::{accept_loop, steal_loop, Stealing};
use crate::config::{ShardConfig, ShardSched};
use crate::proto::{ShardCommand, ShardEvent};
use crate::shard::{report_tallies, sweeper, Shard};
use crate::stats::ShardStats;

/// Most queued casts written to each member together, and their byte bound.
const CAST_BATCH: usize = 32;
const CAST_BATCH_BYTES: usize = 256 * 1024;

/// What a shard needs from the process that starts it. Everything here is `Send`; the shard
/// turns it into thread-local state inside its executor.
pub struct ShardSpec {
    pub index: usize,
    /// This shard's listener of the reuseport group (non-blocking, listening).
    pub listener: std::net::TcpListener,
    pub config: Arc<ShardConfig>,
    pub stats: Arc<ShardStats>,
    pub events: SharedSender<ShardEvent>,
    pub commands: SharedReceiver<ShardCommand>,
    /// Viewer sockets held (handshaking or open) over all shards, shared by every shard of
    /// the process: the `max_connections` cap.
    pub open_total: Arc<AtomicUsize>,
    /// This shard's listener of the TLS reuseport group, when TLS is configured, and the
    /// server configuration its handshakes use (its certificate resolver reloads).
    pub tls: Option<(std::net::TcpListener, Arc<netstack::tls::ServerConfig>)>,
    /// With accept stealing (`accept_stealing`, more than one shard): when this shard last
    /// tried its plain listener, for the shard that may take its waiting connections, and the
    /// neighbour whose waiting connections this one takes when that shard leaves them.
    pub stealing: Option<Stealing>,
    /// The scheduling policy of the shard's thread (`shard_sched`).
    pub sched: ShardSched,
}

/// How long a shard stays awake after a [`ShardCommand::HeadsUp`] for the command it
/// announces. The core's handling of a request, from its read to its first command, took
/// about 0.1 ms on an idle server on the machine of `bench/RESULTS.md` and seldom over
/// 0.4 ms; a request that sends nothing costs each woken shard this much CPU.
pub const HEADS_UP_HOLD: Duration = Duration::from_micros(500);

/// Runs a shard until the application core tells it to shut down (or goes away).
pub async fn run(spec: ShardSpec) {
    // Set here, on the executor's own thread, before any task runs.
    if spec.sched == ShardSched::Batch {
        if let Err(e) = netstack::sys::set_current_thread_batch(true) {
            tracing::warn!(shard = spec.index, error = %e, "cannot set SCHED_BATCH");
        }
    }
    let shard = Rc::new(Shard::new(
        spec.index,
        spec.config,
        spec.stats,
        spec.open_total,
    ));
    let listener = std::os::fd::OwnedFd::from(spec.listener);
    let events = spec.events.connect().await;
    let commands = spec.commands.connect().await;

    // Held, not detached: dropping a glommio task handle cancels the task, so these end with
    // `run` and the uplink's channel end is dropped, which tells the application core.
    let uplink = glommio::spawn_local(shard.clone().uplink(events));
    let (drained, neighbour) = spec.stealing.unzip();
    let storms = spec.sched == ShardSched::Storms;
    let acceptor =
        glommio::spawn_local(accept_loop(shard.clone(), listener, None, drained, storms));
    let tls_acceptor = spec.tls.map(|(listener, config)| {
        glommio::spawn_local(accept_loop(
            shard.clone(),
            listener.into(),
            Some(config),
            None,
            // TLS storms are bound by the handshakes' CPU; the plain loop alone switches.
            false,
        ))
    });
    let stealer =
        neighbour.map(|neighbour| glommio::spawn_local(steal_loop(shard.clone(), neighbour)));
    let sweeper = glommio::spawn_local(sweeper(shard.clone()));
    let tallies = glommio::spawn_local(report_tallies(shard.clone()));
    let reaper = glommio::spawn_local(crate::sender::reaper(shard.sender.clone()));
    let reactor = glommio::spawn_local(shard.clone().serve_connections());

    let mut grace = None;
    let mut next: Option<ShardCommand> = None;
    loop {
        let command = match next.take() {
            Some(c) => c,
            None => match commands.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        ShardStats::add(&shard.stats.commands, 1);
        match command {
            ShardCommand::Cast { group, frame } => {
                // Casts to the same group already queued behind this one go out together:
                // under a burst each member gets one sendmsg for all of them instead of one
                // send each. With nothing queued this is a batch of one, so a lone cast is
                // not delayed.
                let mut frames = vec![frame];
                let mut bytes = frames[0].len();
                while frames.len() < CAST_BATCH && bytes < CAST_BATCH_BYTES {
                    match future::poll_once(commands.recv()).await {
                        Some(Some(ShardCommand::Cast { group: g, frame })) if g == group => {
                            ShardStats::add(&shard.stats.commands, 1);
                            bytes += frame.len();
                            frames.push(frame);
                        }
                        Some(Some(other)) => {
                            // Counted when it is taken from `next`.
                            next = Some(other);
                            break;
                        }
                        Some(None) | None => break,
                    }
                }
                shard.fan_out(group, &frames).await;
                for _ in &frames {
                    shard.cast_done(group);
                }
            }
            ShardCommand::HeadsUp => {
                ShardStats::add(&shard.stats.heads_ups, 1);
                next = stay_awake(&commands, HEADS_UP_HOLD).await;
                if next.is_none() {
                    ShardStats::add(&shard.stats.heads_ups_unused, 1);
                }
            }
            ShardCommand::Shutdown { grace: g } => {
                grace = Some(g);
                break;
            }
            other => shard.handle(other, shard.now()),
        }
    }
    shard.drain(grace.unwrap_or(Duration::ZERO)).await;
    drop((
        sweeper,
        tallies,
        acceptor,
        tls_acceptor,
        stealer,
        reaper,
        reactor,
    ));
    // Let the uplink deliver what is queued (final poll tallies above all), bounded in time.
    shard.last_uplink();
    future::or(uplink, sleep(Duration::from_secs(2))).await;
}

/// Polls `commands` without sleeping until a command arrives (returned) or `hold` passes, or
/// the channel closes (`None` for both). Each turn lets the executor poll its I/O (the task
/// queue yields) and gives the CPU to any other runnable thread on it (`sched_yield`), so the
/// wait delays neither this shard's viewers nor a neighbour on the same CPU.
pub(crate) async fn stay_awake(
    commands: &ConnectedReceiver<ShardCommand>,
    hold: Duration,
) -> Option<ShardCommand> {
    let until = Instant::now() + hold;
    loop {
        match future::poll_once(commands.recv()).await {
            Some(command) => return command,
            None if Instant::now() >= until => return None,
            None => {
                std::thread::yield_now();
                glommio::executor().yield_task_queue_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::channels::shared_channel;
    use glommio::LocalExecutorBuilder;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// `stay_awake` returns the command that comes during its hold, and its executor does not
    /// sleep meanwhile (the sender never sees it asleep); with nothing sent it returns `None`
    /// once the hold has passed; when the channel closes, at once.
    #[test]
    fn stay_awake_returns_the_command_that_comes_or_none() {
        let (tx, rx) = shared_channel::new_bounded::<ShardCommand>(4);
        // 1: waiting for the command, 2: the short hold is over.
        let phase = Arc::new(AtomicU8::new(0));
        let phase_shard = phase.clone();
        let shard = LocalExecutorBuilder::default()
            .name("stay-awake-shard")
            .spawn(move || async move {
                let rx = rx.connect().await;
                phase_shard.store(1, Ordering::Release);
                let first = stay_awake(&rx, Duration::from_secs(10)).await;
                assert!(matches!(first, Some(ShardCommand::HeadsUp)), "{first:?}");
                let t = Instant::now();
                assert!(stay_awake(&rx, Duration::from_millis(5)).await.is_none());
                assert!(t.elapsed() >= Duration::from_millis(5), "{:?}", t.elapsed());
                phase_shard.store(2, Ordering::Release);
                let t = Instant::now();
                assert!(stay_awake(&rx, Duration::from_secs(10)).await.is_none());
                t.elapsed()
            })
            .unwrap();
        let core = LocalExecutorBuilder::default()
            .name("stay-awake-core")
            .spawn(move || async move {
                let tx = tx.connect().await;
                let wait_for = |p: u8| {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    let phase = phase.clone();
                    async move {
                        while phase.load(Ordering::Acquire) < p {
                            assert!(Instant::now() < deadline, "the shard never reached {p}");
                            sleep(Duration::from_millis(1)).await;
                        }
                    }
                };
                wait_for(1).await;
                // Watch for 20 ms: a shard that slept here would show it.
                let watch = Instant::now();
                while watch.elapsed() < Duration::from_millis(20) {
                    assert!(!tx.peer_asleep(), "the shard slept while it waited");
                    future::yield_now().await;
                }
                tx.try_send(ShardCommand::HeadsUp).unwrap();
                wait_for(2).await;
                drop(tx);
            })
            .unwrap();
        core.join().unwrap();
        let closed_after = shard.join().unwrap();
        assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    }
}
