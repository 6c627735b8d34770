//! Wires one shard together on its executor: spawns the accept loop, the reactor that serves
//! the open connections, the uplink, the keepalive sweeper and the tally reporter, runs the command loop (batching casts), and
//! drains on shutdown.

use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use glommio::channels::shared_channel::{SharedReceiver, SharedSender};
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
