//! The coordinator: runs a [`RunPlan`] end to end.
//!
//! Phases, each bounded by the run's deadline:
//! 1. create the streams viewers will watch (`--streams` when the mix has watchers, the poll
//!    stream in poll mode), so that their `watch` finds them;
//! 2. spawn the workers (child processes of this executable, or threads with `--in-process`)
//!    and wait until each is ready; tell them all to start at once;
//! 3. wait until every worker reports `connected` (all attempts settled);
//! 4. publish `--publish-count` timestamped group-casts; wait until the deliveries announced
//!    by the API (`members`) have arrived, or progress stalls for `--drain-timeout`;
//! 5. (poll mode) create the poll; wait for the votes to be acknowledged; close the poll;
//!    wait for the final results to reach the viewers;
//! 6. hold the connections until `--hold` has passed since phase 3;
//! 7. stop the workers, collect and merge their measurements, kill any straggler.
//!
//! The stop is sent a grace period before `--duration-max` so that results come back in time;
//! at `--duration-max` whatever has not reported is killed, so a run always ends by itself.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command as ProcessCommand};
use tokio::sync::mpsc;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

use crate::api::ApiClient;
use crate::cli::RunPlan;
use crate::clock::monotonic_ns;
use crate::plan::plan_processes;
use crate::report::{Report, RunFacts};
use crate::stats::{Counters, Latency, Measurements};
use crate::wire::{Command, Event, Progress, WorkerSpec};
use crate::worker::run_worker;

/// Longest wait for workers to start up and report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one operator API request.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the plan and returns the merged report.
pub async fn run(plan: &RunPlan) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = started + plan.duration_max;
    let grace = (plan.duration_max / 4).min(Duration::from_secs(5));
    let close_timeout = (grace / 3).clamp(Duration::from_millis(50), Duration::from_secs(2));
    let api = plan
        .api
        .clone()
        .map(|t| ApiClient::new(t, plan.api_token.clone(), API_TIMEOUT));
    let mut coord = Counters::default();
    let mut facts = RunFacts {
        url: plan.url.clone(),
        processes: plan.processes,
        seed: plan.seed,
        behaviour: plan.mix.to_string(),
        connections_requested: plan.connections,
        ..RunFacts::default()
    };

    if let Some(api) = &api {
        let mut streams: Vec<&str> = Vec::new();
        if plan.create_streams {
            streams.extend(plan.streams.iter().map(String::as_str));
        }
        if let Some(poll) = &plan.poll {
            streams.push(&poll.stream);
        }
        for stream in streams {
            create_stream(api, stream, &mut coord).await;
        }
    }

    let shares = plan_processes(
        plan.connections,
        plan.processes,
        plan.rate,
        &plan.source_ips,
    );
    let specs: Vec<WorkerSpec> = shares
        .into_iter()
        .map(|share| WorkerSpec {
            share,
            target: plan.target.clone(),
            seed: plan.seed,
            streams: plan.streams.clone(),
            mix: plan.mix.clone(),
            poll_stream: plan.poll.as_ref().map(|p| p.stream.clone()),
            telemetry_interval_ms: plan.telemetry_interval.as_millis() as u64,
            connect_timeout_ms: plan.connect_timeout.as_millis() as u64,
            duration_max_ms: plan.duration_max.as_millis() as u64,
            close_timeout_ms: close_timeout.as_millis() as u64,
        })
        .collect();
    let mut fleet = Fleet::spawn(specs, plan.in_process, deadline - grace)?;

    let ready_by = (Instant::now() + READY_TIMEOUT).min(fleet.stop_at);
    if !fleet.wait(Fleet::all_ready, ready_by).await {
        eprintln!("loadgen: not every worker came up; going on with the others");
    }
    fleet.broadcast(Command::Start);
    fleet.wait(Fleet::all_connected, fleet.stop_at).await;
    let connected_at = Instant::now();

    if let (Some(publish), Some(api)) = (&plan.publish, &api) {
        let before = fleet.progress().delivered;
        let mut api_latency = Latency::default();
        let mut expected: Option<u64> = None;
        let mut tick = interval(publish.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let path = format!("/api/groups/{}/messages", publish.group);
        for seq in 0..publish.count {
            tokio::select! {
                _ = tick.tick() => {}
                _ = fleet.interrupted() => break,
            }
            if Instant::now() >= fleet.stop_at {
                break;
            }
            let t = monotonic_ns();
            let body = format!(r#"{{"payload":{{"t":{t},"seq":{seq}}}}}"#);
            Counters::mark(&mut facts.first_publish_ns, t, true);
            match api.request("POST", &path, Some(&body)).await {
                Ok(r) if r.is_success() => {
                    api_latency.record_span(t, monotonic_ns());
                    facts.published += 1;
                    if let Some(n) = r.json().and_then(|v| v.get("members")?.as_u64()) {
                        expected = Some(expected.unwrap_or(0) + n);
                    }
                }
                Ok(r) => coord.error(format!("api_publish_status_{}", r.status)),
                Err(e) => {
                    eprintln!("loadgen: publish {seq}: {e:#}");
                    coord.error("api_publish_failed");
                }
            }
        }
        facts.expected_deliveries = expected;
        facts.publish_api = api_latency.summary();
        if facts.published > 0 {
            let target = expected;
            fleet
                .wait_stall(
                    |f| target.is_some_and(|e| f.progress().delivered.saturating_sub(before) >= e),
                    plan.drain_timeout,
                )
                .await;
        }
    }

    if let (Some(poll), Some(api)) = (&plan.poll, &api) {
        let voters = fleet.progress().voters;
        // The broadcaster follows the results before the poll exists, as a real one would.
        let follower = match &plan.api {
            Some(target) => {
                let addr = std::net::SocketAddr::V4(target.addr);
                match crate::broadcaster::follow(addr, &poll.stream, &plan.api_token).await {
                    Ok(rx) => Some(rx),
                    Err(e) => {
                        // Peers have no broadcaster endpoint: not an error, just no figure.
                        eprintln!(
                            "loadgen: no broadcaster view ({e:#}); timing finals at viewers only"
                        );
                        None
                    }
                }
            }
            None => None,
        };
        let choices: Vec<String> = (1..=poll.choices).map(|i| format!("Choice {i}")).collect();
        let body = serde_json::json!({
            "stream": poll.stream,
            "question": "Who wins tonight?",
            "choices": choices,
            "duration_s": poll.duration_s,
        });
        let id = match api.post_json("/api/polls", &body).await {
            Ok(r) if r.is_success() => {
                let id = r
                    .json()
                    .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
                if id.is_none() {
                    coord.error("api_poll_without_id");
                }
                id
            }
            Ok(r) => {
                coord.error(format!("api_poll_status_{}", r.status));
                None
            }
            Err(e) => {
                eprintln!("loadgen: creating poll: {e:#}");
                coord.error("api_poll_failed");
                None
            }
        };
        if let Some(id) = id {
            fleet
                .wait_stall(
                    |f| {
                        let p = f.progress();
                        p.votes_sent >= voters && p.votes_acked >= p.votes_sent
                    },
                    plan.drain_timeout,
                )
                .await;
            let close_ns = monotonic_ns();
            match api
                .request("POST", &format!("/api/polls/{id}/close"), None)
                .await
            {
                Ok(r) if r.is_success() => {}
                Ok(r) => coord.error(format!("api_poll_close_status_{}", r.status)),
                Err(e) => {
                    eprintln!("loadgen: closing poll {id}: {e:#}");
                    coord.error("api_poll_close_failed");
                }
            }
            facts.poll_close_ns = Some(close_ns);
            fleet
                .wait_stall(
                    |f| {
                        let p = f.progress();
                        p.finals_received >= p.polls_received
                    },
                    plan.drain_timeout,
                )
                .await;
            if let Some(rx) = follower {
                if let Ok(Ok(view)) = tokio::time::timeout(plan.drain_timeout, rx).await {
                    facts.broadcaster = Some(view);
                } else {
                    coord.error("broadcaster_no_final");
                }
            }
            match api.request("GET", &format!("/api/polls/{id}"), None).await {
                Ok(r) if r.is_success() => {
                    facts.api_poll_total = r.json().and_then(|v| v.get("total")?.as_u64());
                }
                Ok(r) => coord.error(format!("api_poll_get_status_{}", r.status)),
                Err(e) => {
                    eprintln!("loadgen: reading poll {id}: {e:#}");
                    coord.error("api_poll_get_failed");
                }
            }
            facts.poll_id = Some(id);
        }
    }

    let hold_until = (connected_at + plan.hold).min(fleet.stop_at);
    fleet.wait(|_| false, hold_until).await;
    facts.cut_short = fleet.cut_short || Instant::now() >= fleet.stop_at;

    fleet.broadcast(Command::Stop);
    // From here on the limit is the hard deadline (a second Ctrl-C cuts it short).
    fleet.stop_at = deadline;
    if !fleet.wait(Fleet::all_reported, deadline).await {
        facts.cut_short = true;
    }
    let mut merged = fleet.finish(&mut coord).await;
    merged.counters.merge(&coord);
    facts.duration_s = started.elapsed().as_secs_f64();
    Ok(Report::build(&merged, &facts))
}

/// `POST /api/streams {"id":S}`; a 409 (it exists) is as good as a 201.
async fn create_stream(api: &ApiClient, stream: &str, coord: &mut Counters) {
    let body = serde_json::json!({ "id": stream });
    match api.post_json("/api/streams", &body).await {
        Ok(r) if r.is_success() || r.status == 409 => {}
        Ok(r) => coord.error(format!("api_stream_status_{}", r.status)),
        Err(e) => {
            eprintln!("loadgen: creating stream {stream}: {e:#}");
            coord.error("api_stream_failed");
        }
    }
}

/// Where a worker runs.
enum Runner {
    Process(Child),
    Thread(Option<std::thread::JoinHandle<()>>),
}

struct WorkerSlot {
    commands: mpsc::UnboundedSender<Command>,
    runner: Runner,
    ready: bool,
    connected: bool,
    exited: bool,
    progress: Progress,
    result: Option<Measurements>,
}

/// The workers and what they have reported.
struct Fleet {
    slots: Vec<WorkerSlot>,
    events: mpsc::UnboundedReceiver<(usize, Option<Event>)>,
    /// When phases stop waiting and the stop goes out; moved to "now" by Ctrl-C.
    stop_at: Instant,
    cut_short: bool,
    last_change: Instant,
    sigint: Option<tokio::signal::unix::Signal>,
}

impl Fleet {
    fn spawn(specs: Vec<WorkerSpec>, in_process: bool, stop_at: Instant) -> anyhow::Result<Fleet> {
        let (ev_tx, events) = mpsc::unbounded_channel();
        let mut slots = Vec::with_capacity(specs.len());
        let exe = std::env::current_exe().context("locating the loadgen executable")?;
        for (i, spec) in specs.into_iter().enumerate() {
            let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<Command>();
            let runner = if in_process {
                let (wtx, mut wrx) = mpsc::unbounded_channel::<Event>();
                let handle = std::thread::Builder::new()
                    .name(format!("loadgen-worker-{i}"))
                    .spawn(move || {
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt.block_on(run_worker(spec, cmd_rx, wtx)),
                            Err(e) => {
                                let _ = wtx.send(Event::Fatal {
                                    message: format!("worker runtime: {e}"),
                                });
                            }
                        }
                    })
                    .context("spawning a worker thread")?;
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    while let Some(e) = wrx.recv().await {
                        let _ = tx.send((i, Some(e)));
                    }
                    let _ = tx.send((i, None));
                });
                Runner::Thread(Some(handle))
            } else {
                let mut child = ProcessCommand::new(&exe)
                    .arg("worker")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("spawning worker {i} ({})", exe.display()))?;
                let stdout = child.stdout.take().context("worker stdout")?;
                let mut stdin = child.stdin.take().context("worker stdin")?;
                let tx = ev_tx.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        match serde_json::from_str::<Event>(&line) {
                            Ok(e) => {
                                let _ = tx.send((i, Some(e)));
                            }
                            Err(e) => eprintln!("loadgen: worker {i} said {line:?}: {e}"),
                        }
                    }
                    let _ = tx.send((i, None));
                });
                let first = serde_json::to_string(&spec).context("encoding worker spec")?;
                let mut cmd_rx = cmd_rx;
                tokio::spawn(async move {
                    let mut line = first;
                    loop {
                        line.push('\n');
                        if stdin.write_all(line.as_bytes()).await.is_err()
                            || stdin.flush().await.is_err()
                        {
                            return;
                        }
                        match cmd_rx.recv().await {
                            Some(c) => line = serde_json::to_string(&c).unwrap_or_default(),
                            None => return, // dropping stdin tells the worker to stop
                        }
                    }
                });
                Runner::Process(child)
            };
            slots.push(WorkerSlot {
                commands: cmd_tx,
                runner,
                ready: false,
                connected: false,
                exited: false,
                progress: Progress::default(),
                result: None,
            });
        }
        let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        Ok(Fleet {
            slots,
            events,
            stop_at,
            cut_short: false,
            last_change: Instant::now(),
            sigint,
        })
    }

    fn all_ready(&self) -> bool {
        self.slots.iter().all(|s| s.ready || s.exited)
    }

    fn all_connected(&self) -> bool {
        self.slots.iter().all(|s| s.connected || s.exited)
    }

    fn all_reported(&self) -> bool {
        self.slots.iter().all(|s| s.result.is_some() || s.exited)
    }

    fn progress(&self) -> Progress {
        let mut p = Progress::default();
        for s in &self.slots {
            p.add(&s.progress);
        }
        p
    }

    fn broadcast(&self, c: Command) {
        for s in &self.slots {
            let _ = s.commands.send(c);
        }
    }

    /// Resolves on Ctrl-C (never, if no handler could be installed).
    async fn interrupted(&mut self) {
        interrupted(&mut self.sigint).await;
    }

    fn apply(&mut self, i: usize, ev: Option<Event>) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        match ev {
            None => slot.exited = true,
            Some(Event::Ready) => slot.ready = true,
            Some(Event::Connected { .. }) => slot.connected = true,
            Some(Event::Progress(p)) => {
                slot.progress = p;
                self.last_change = Instant::now();
            }
            Some(Event::Result(w)) => match Measurements::from_wire(&w) {
                Ok(m) => slot.result = Some(m),
                Err(e) => {
                    eprintln!("loadgen: worker {i} sent unreadable measurements: {e:#}");
                    slot.result = Some(Measurements::default());
                }
            },
            Some(Event::Fatal { message }) => {
                eprintln!("loadgen: worker {i} failed: {message}");
                slot.exited = true;
            }
        }
    }

    /// Processes events until `cond` holds (true) or `until` / the stop time passes (false).
    async fn wait(&mut self, cond: impl Fn(&Fleet) -> bool, until: Instant) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            let limit = until.min(self.stop_at);
            if Instant::now() >= limit {
                return false;
            }
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some((i, e)) => self.apply(i, e),
                    None => return cond(self),
                },
                _ = sleep_until(limit) => {}
                _ = interrupted(&mut self.sigint) => {
                    eprintln!("loadgen: interrupted; stopping");
                    self.stop_at = Instant::now();
                    self.cut_short = true;
                }
            }
        }
    }

    /// Like [`Fleet::wait`], but also gives up once no progress arrived for `stall`.
    async fn wait_stall(&mut self, cond: impl Fn(&Fleet) -> bool, stall: Duration) -> bool {
        self.last_change = Instant::now();
        loop {
            let until = self.last_change + stall;
            if self.wait(&cond, until).await {
                return true;
            }
            if Instant::now() >= self.stop_at || self.last_change + stall <= Instant::now() {
                return false;
            }
        }
    }

    /// Collects results, kills workers that did not report, and merges.
    async fn finish(&mut self, coord: &mut Counters) -> Measurements {
        let mut merged = Measurements::default();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            match slot.result.take() {
                Some(m) => {
                    if let Err(e) = merged.merge(&m) {
                        eprintln!("loadgen: merging worker {i}: {e:#}");
                        coord.error("merge_failed");
                    }
                }
                None => coord.error("worker_lost"),
            }
            match &mut slot.runner {
                Runner::Process(child) => {
                    if matches!(child.try_wait(), Ok(None)) {
                        let _ = child.start_kill();
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                }
                Runner::Thread(handle) => {
                    // The worker's own deadline ends a thread that did not report; only join
                    // threads that are done, so a stuck one cannot hang the run.
                    if handle.as_ref().is_some_and(|h| h.is_finished()) {
                        if let Some(h) = handle.take() {
                            let _ = h.join();
                        }
                    }
                }
            }
        }
        merged
    }
}

/// Resolves on Ctrl-C (never, if no handler could be installed).
async fn interrupted(sigint: &mut Option<tokio::signal::unix::Signal>) {
    match sigint {
        Some(sig) => {
            sig.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
