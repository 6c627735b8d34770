//! One worker: its share of the viewers on one single-threaded tokio runtime.
//!
//! The same [`run_worker`] serves a child process (spec and commands on stdin, events on
//! stdout; see [`run_process`]) and an in-process thread (channels). A worker paces its
//! connection attempts with a token bucket at its share of the rate, reports `connected` when
//! every attempt has settled, streams [`Progress`] while anything changes, and on `stop`
//! (or its own deadline, or the coordinator vanishing) closes its connections and reports.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

use crate::viewer::{run_viewer, stopped, ViewerEnv};
use crate::wire::{Command, Event, Progress, WorkerSpec};

/// How often a worker checks whether its progress changed.
const PROGRESS_TICK: Duration = Duration::from_millis(20);

/// Spawns between yields in the connector, so a catch-up burst cannot starve the viewers.
const SPAWN_BATCH: u64 = 64;

/// Runs one worker to completion on the current (single-threaded) runtime.
pub async fn run_worker(
    spec: WorkerSpec,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    LocalSet::new()
        .run_until(worker_main(spec, commands, events))
        .await;
}

async fn worker_main(
    spec: WorkerSpec,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    // Sends fail only once the coordinator is gone; the deadline still ends the worker then.
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    let hard_deadline = Instant::now() + spec.duration_max();
    let (stop_tx, stop_rx) = watch::channel(false);
    let env = Rc::new(ViewerEnv::new(&spec, stop_rx));
    emit(Event::Ready);

    let started = tokio::select! {
        c = commands.recv() => c == Some(Command::Start),
        _ = sleep_until(hard_deadline) => false,
    };
    if started {
        let connector =
            tokio::task::spawn_local(connect_all(env.clone(), spec.share.count, spec.share.rate));
        let mut tick = interval(PROGRESS_TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last = Progress::default();
        let mut connected_sent = false;
        loop {
            if !connected_sent && env.settled.get() >= spec.share.count {
                connected_sent = true;
                emit(Event::Progress(env.progress())); // the coordinator reads voters at `connected`
                let m = env.measurements.borrow();
                emit(Event::Connected {
                    established: m.counters.established,
                    failed: m.counters.failed,
                });
            }
            tokio::select! {
                c = commands.recv() => match c {
                    Some(Command::Start) => {}
                    Some(Command::Stop) | None => break,
                },
                _ = sleep_until(hard_deadline) => break,
                _ = tick.tick() => {
                    let p = env.progress();
                    if p != last {
                        last = p;
                        emit(Event::Progress(p));
                    }
                }
                _ = env.changed.notified() => {}
            }
        }
        // Stop: viewers close, the connector spawns no more.
        let _ = stop_tx.send(true);
        let drain_until = Instant::now() + spec.close_timeout() + Duration::from_millis(200);
        while env.tasks.get() > 0 {
            tokio::select! {
                _ = env.changed.notified() => {}
                _ = sleep_until(drain_until) => break,
            }
        }
        connector.abort();
        let p = env.progress();
        if p != last {
            emit(Event::Progress(p));
        }
    }
    drop(stop_tx);
    let result = env.measurements.borrow().to_wire();
    match result {
        Ok(w) => emit(Event::Result(Box::new(w))),
        Err(e) => emit(Event::Fatal {
            message: format!("cannot encode measurements: {e:#}"),
        }),
    }
}

/// Token bucket: attempt `i` is due at `start + i / rate`; late attempts go out at once.
async fn connect_all(env: Rc<ViewerEnv>, count: u64, rate: f64) {
    let mut stop = env.stop_receiver();
    let start = Instant::now();
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    for local in 0..count {
        let due = start + Duration::from_secs_f64(local as f64 / rate);
        if due > Instant::now() {
            tokio::select! {
                _ = sleep_until(due) => {}
                _ = stopped(&mut stop) => return,
            }
        } else if local % SPAWN_BATCH == 0 {
            tokio::task::yield_now().await;
        }
        if *stop.borrow() {
            return;
        }
        env.tasks.set(env.tasks.get() + 1);
        tokio::task::spawn_local(run_viewer(env.clone(), local));
    }
}

/// Raises the soft descriptor limit to the hard one (20,000 on the bench host).
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current
}

/// Body of the hidden `loadgen worker` subcommand: spec as the first stdin line, then
/// commands; events on stdout, one JSON object per line. Diagnostics go to stderr.
pub fn run_process() -> anyhow::Result<()> {
    raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // The coordinator handles Ctrl-C and sends stop; a worker must not die on the
        // terminal's SIGINT before reporting. Installing a handler replaces the default.
        let _sigint =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
        let writer = tokio::spawn(async move {
            let mut out = tokio::io::stdout();
            while let Some(ev) = ev_rx.recv().await {
                let mut line = ev.to_line();
                line.push('\n');
                if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
                    break; // coordinator gone
                }
            }
        });
        let spec: WorkerSpec = match stdin.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<WorkerSpec>(&line) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ev_tx.send(Event::Fatal {
                        message: format!("bad worker spec: {e}"),
                    });
                    drop(ev_tx);
                    let _ = writer.await;
                    anyhow::bail!("bad worker spec: {e}");
                }
            },
            _ => anyhow::bail!("no worker spec on stdin"),
        };
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // EOF or a broken pipe means the coordinator is gone: stop.
            while let Ok(Some(line)) = stdin.next_line().await {
                match serde_json::from_str::<Command>(&line) {
                    Ok(c) => {
                        if cmd_tx.send(c).is_err() {
                            break;
                        }
                    }
                    Err(e) => eprintln!("loadgen worker: ignoring bad command {line:?}: {e}"),
                }
            }
        });
        run_worker(spec, cmd_rx, ev_tx).await;
        let _ = writer.await;
        Ok(())
    })
}
