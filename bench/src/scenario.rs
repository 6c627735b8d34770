//! The four scenarios, and one run of a scenario against one fresh server process:
//! start the server on port 0, take baselines from `/proc`, run the loadgen with `--json`,
//! sample the server while the connections are held (idle hold), stop everything, and turn
//! the loadgen report into the table's metrics plus the checks that decide pass or fail.
//! Every wait is bounded, so a run ends by itself whatever the server or loadgen does.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::loadgen::{self, Report};
use crate::procfs;
use crate::report::{Better, Metric, RunResult, Unit};
use crate::server::{Paths, Server, ServerKind, API_TOKEN};

/// Stream the poll storm runs on (loadgen creates it).
pub const POLL_STREAM: &str = "bench-poll";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    Connect,
    Idle,
    /// Group-casts back to back: throughput, and latency under saturation.
    Fanout,
    /// Group-casts paced apart: the time one group-cast takes to reach every viewer.
    Latency,
    Poll,
}

/// The machine's rescheduling IPIs over a run (`procfs::read_rescheduling_ipis`), listed by
/// the scenarios where cross-CPU wake-ups are the cost (connects, fan-out).
const RESCHED_IPIS: Metric = Metric::new(
    "resched_ipis",
    "rescheduling IPIs, whole machine (load generator included)",
    Unit::Count,
    Better::Lower,
);

const CONNECT_METRICS: &[Metric] = &[
    Metric::new(
        "connect_rate",
        "connections/s",
        Unit::PerSecond,
        Better::Higher,
    ),
    Metric::new(
        "handshake_p50_ms",
        "handshake p50, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "handshake_p99_ms",
        "handshake p99, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "handshake_max_ms",
        "handshake max, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new("established", "established", Unit::Count, Better::Info),
    Metric::new(
        "failures",
        "failed connections (worst repeat)",
        Unit::Count,
        Better::Info,
    )
    .worst(),
    Metric::new(
        "server_cpu_s",
        "server CPU time, s",
        Unit::Seconds,
        Better::Lower,
    ),
    RESCHED_IPIS,
];

const IDLE_METRICS: &[Metric] = &[
    Metric::new(
        "rss_marginal_per_conn",
        "server RSS per idle connection, marginal (N/2 -> N), bytes",
        Unit::Bytes,
        Better::Lower,
    ),
    Metric::new(
        "rss_per_conn",
        "server RSS per idle connection incl. start-up growth (0 -> N), bytes",
        Unit::Bytes,
        Better::Lower,
    ),
    Metric::new(
        "idle_cpu_ms_per_s",
        "server CPU while holding N idle viewers, ms per second",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "rss_before_mib",
        "server RSS before connecting, MiB",
        Unit::MiB,
        Better::Info,
    ),
    Metric::new(
        "rss_held_mib",
        "server RSS holding N, MiB",
        Unit::MiB,
        Better::Info,
    ),
    Metric::new(
        "kernel_tcp_mem_per_conn",
        "kernel TCP buffer memory per connection, bytes (sockstat, both ends)",
        Unit::Bytes,
        Better::Info,
    ),
    Metric::new(
        "kernel_socket_slab_per_conn",
        "kernel socket objects per connection, bytes (slabinfo, both ends)",
        Unit::Bytes,
        Better::Info,
    ),
    Metric::new("established", "established", Unit::Count, Better::Info),
];

const FANOUT_METRICS: &[Metric] = &[
    Metric::new(
        "delivered_per_s",
        "delivered messages/s",
        Unit::PerSecond,
        Better::Higher,
    ),
    Metric::new(
        "latency_p50_ms",
        "latency p50, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "latency_p99_ms",
        "latency p99, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "latency_max_ms",
        "latency max, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "delivered_pct",
        "delivered of expected",
        Unit::Percent,
        Better::Info,
    ),
    Metric::new(
        "server_cpu_s",
        "server CPU time, s",
        Unit::Seconds,
        Better::Lower,
    ),
    RESCHED_IPIS,
];

const LATENCY_METRICS: &[Metric] = &[
    Metric::new(
        "latency_p50_ms",
        "latency p50, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "latency_p99_ms",
        "latency p99, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "latency_max_ms",
        "latency max, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "delivered_pct",
        "delivered of expected",
        Unit::Percent,
        Better::Info,
    ),
    Metric::new(
        "server_cpu_s",
        "server CPU time, s",
        Unit::Seconds,
        Better::Lower,
    ),
];

const POLL_METRICS: &[Metric] = &[
    Metric::new(
        "votes_per_s",
        "votes acknowledged/s",
        Unit::PerSecond,
        Better::Higher,
    ),
    Metric::new(
        "vote_ack_p50_ms",
        "vote -> voted p50, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "vote_ack_p99_ms",
        "vote -> voted p99, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "last_vote_to_final_ms",
        "last vote -> final results at every viewer, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "last_vote_to_broadcaster_final_ms",
        "last vote -> final results at the broadcaster, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new(
        "close_to_final_ms",
        "close request -> final results at every viewer, ms",
        Unit::Millis,
        Better::Lower,
    ),
    Metric::new("final_total", "final total", Unit::Count, Better::Info),
];

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Connect,
        Scenario::Idle,
        Scenario::Fanout,
        Scenario::Latency,
        Scenario::Poll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Latency => "latency",
            Scenario::Poll => "poll",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s.trim())
    }

    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Scenario::Connect => CONNECT_METRICS,
            Scenario::Idle => IDLE_METRICS,
            Scenario::Fanout => FANOUT_METRICS,
            Scenario::Latency => LATENCY_METRICS,
            Scenario::Poll => POLL_METRICS,
        }
    }

    /// Whether `kind` implements what the scenario needs (peers have no polls).
    pub fn applies_to(self, kind: ServerKind) -> bool {
        self != Scenario::Poll || kind == ServerKind::Ovation
    }

    pub fn title(self, s: &Settings) -> String {
        let n = crate::report::group_digits(s.n);
        match self {
            Scenario::Connect => format!(
                "Connect storm: {n} viewers at {}",
                rate_text(s.connect_rate)
            ),
            Scenario::Idle => format!("Idle hold: {n} idle viewers"),
            Scenario::Fanout => format!(
                "Group-cast fan-out: {n} viewers, {} group-casts to `global` back to back",
                s.fanout_count
            ),
            Scenario::Latency => format!(
                "Group-cast latency: {n} viewers, {} group-casts to `global`, one every {} ms",
                s.latency_count,
                s.latency_interval.as_millis()
            ),
            Scenario::Poll => format!("Poll storm: {n} voters, {} choices", s.poll_choices),
        }
    }

    pub fn description(self, s: &Settings) -> String {
        match self {
            Scenario::Connect => format!(
                "The loadgen opens N WebSocket connections as fast as it can ({}): TCP connect, upgrade and the first server message (ovation's welcome). \
                 Connection rate = established / (last welcome - first attempt). Handshake = TCP connect to first message. \
                 Server CPU time is user + system time of the server process over the whole run (connect and close).",
                rate_text(s.connect_rate)
            ),
            Scenario::Idle => format!(
                "N viewers connect at {}/s and stay idle. Server RSS (VmRSS of /proc/PID/status) is read before the first connection, once \
                 GET /api/stats first reports at least N/2 connections, and once it reports N and 0.5 s more have passed. The marginal figure is \
                 (RSS at N - RSS at the half-way sample) / (connections between them): what one more idle viewer costs. The 0 -> N figure is \
                 (held - before) / N, so it also spreads over N the one-time growth the first connections trigger (allocator arenas, buffers \
                 touched on first use). Server CPU while idle is the process's user + system time over 3 s of holding N, in ms per second. Kernel figures are system-wide deltas over the same interval, divided \
                 by N: TCP buffer memory is /proc/net/sockstat TCP `mem` pages x page size, socket objects are the /proc/slabinfo caches TCP, \
                 sock_inode_cache, eventpoll_epi, ep_head and io_kiocb. The loadgen's client sockets are on this machine too, so both kernel \
                 figures cover both ends of each connection; differences between servers are the servers'.",
                s.setup_rate
            ),
            Scenario::Fanout => format!(
                "N idle viewers connect at {}/s; then {} group-casts of `{{\"t\":<CLOCK_MONOTONIC ns>,\"seq\":i}}` go to the global group through the \
                 operator API as fast as it accepts them (the publisher waits for each answer, and at least {} ms between them), so the server is \
                 saturated: delivered messages/s = deliveries / (last receipt - first publish) is its fan-out throughput. Latency = receipt time - t \
                 over every delivery; here it includes queueing behind the earlier group-casts, and a server whose API answers slowly paces the \
                 publisher and so queues less (the latency scenario compares latency without queueing). Server CPU time is user + system time of \
                 the server process over the whole run (connect, group-casts, close), the same work for every server.",
                s.setup_rate,
                s.fanout_count,
                s.fanout_interval.as_millis()
            ),
            Scenario::Latency => format!(
                "N idle viewers connect at {}/s; then {} timestamped group-casts to the global group, one every {} ms: far enough apart that each \
                 one has reached every viewer before the next goes out (when the server keeps up), so latency = receipt time - t is the time one \
                 group-cast takes to reach the viewers, p50 being about half the fan-out time and max the time to reach the last viewer.",
                s.setup_rate,
                s.latency_count,
                s.latency_interval.as_millis()
            ),
            Scenario::Poll => format!(
                "N voters connect at {}/s and watch the stream `{POLL_STREAM}`; a poll with {} choices is created on it, every viewer votes as soon as \
                 the poll arrives (all within about a second), the poll is closed, and every viewer waits for the final results. \
                 Checks: every vote acknowledged, the final total = N at every viewer and in GET /api/polls/{{id}}. Peers have no polls.",
                s.setup_rate, s.poll_choices
            ),
        }
    }

    /// The loadgen run for this scenario against `server`.
    pub fn loadgen_run(
        self,
        s: &Settings,
        viewer: std::net::SocketAddr,
        api: std::net::SocketAddr,
    ) -> loadgen::Run {
        let connect_rate = match self {
            Scenario::Connect => s.connect_rate,
            _ => s.setup_rate,
        };
        let connect_s = s.n as f64 / connect_rate.min(2_000.0);
        let publish = match self {
            Scenario::Fanout => Some((s.fanout_count, s.fanout_interval)),
            Scenario::Latency => Some((s.latency_count, s.latency_interval)),
            _ => None,
        };
        let publish_s = publish.map_or(0.0, |(count, interval)| {
            count as f64 * interval.as_secs_f64()
        });
        let hold = match self {
            Scenario::Idle => IDLE_HOLD,
            _ => Duration::ZERO,
        };
        let duration_max = Duration::from_secs_f64(30.0 + connect_s + publish_s) + hold;
        loadgen::Run {
            viewer,
            api,
            token: API_TOKEN.into(),
            connections: s.n,
            rate: connect_rate,
            behaviour: if self == Scenario::Poll {
                "vote"
            } else {
                "idle"
            },
            hold,
            duration_max,
            publish,
            poll: (self == Scenario::Poll).then(|| (POLL_STREAM.to_owned(), s.poll_choices)),
            processes: s.loadgen_processes,
        }
    }
}

fn rate_text(rate: f64) -> String {
    if rate >= MAX_RATE {
        "no rate limit".into()
    } else {
        format!("{}/s", crate::report::group_digits(rate as u64))
    }
}

/// loadgen's highest `--rate`: every attempt is due at once.
pub const MAX_RATE: f64 = 1_000_000.0;

/// How long idle viewers stay connected after all are up: long enough for the server's
/// stats to show them all and for the memory sample 0.5 s later.
const IDLE_HOLD: Duration = Duration::from_millis(5_000);
/// Window over which the idle scenario measures the server's CPU while it only holds viewers.
const IDLE_CPU_WINDOW: Duration = Duration::from_secs(3);

/// Time between stats polls while waiting for the idle connections.
const STATS_POLL: Duration = Duration::from_millis(50);

/// What every scenario is parameterised by.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub n: u64,
    /// Connect storm rate (connections/s); [`MAX_RATE`] for no limit.
    pub connect_rate: f64,
    /// Rate for the connect phase of the other scenarios.
    pub setup_rate: f64,
    pub fanout_count: u64,
    pub fanout_interval: Duration,
    pub latency_count: u64,
    pub latency_interval: Duration,
    pub poll_choices: u32,
    /// Loadgen worker processes; `None` for the loadgen's default.
    pub loadgen_processes: Option<u32>,
    pub server_start_timeout: Duration,
    pub stop_grace: Duration,
}

/// Runs `scenario` once against a fresh `kind` server.
pub fn run_once(paths: &Paths, kind: ServerKind, scenario: Scenario, s: &Settings) -> RunResult {
    let mut server = match Server::start(paths, kind, s.server_start_timeout) {
        Ok(server) => server,
        Err(e) => return RunResult::failed(format!("{e:#}")),
    };
    let mut result = RunResult::default();
    let pid = server.pid;
    let rss_before = procfs::read_rss(pid);
    let sock_before = procfs::read_sockstat();
    let slab_before = procfs::read_socket_slab_bytes();
    let cpu_before = procfs::read_cpu_seconds(pid);
    let lists_ipis = scenario.metrics().iter().any(|m| m.key == RESCHED_IPIS.key);
    let ipis_before = lists_ipis.then(procfs::read_rescheduling_ipis);

    let run = scenario.loadgen_run(s, server.viewer, server.api);
    let json_path = report_path(kind, scenario);
    let _ = std::fs::remove_file(&json_path);
    let mut loadgen = match Command::new(paths.loadgen())
        .args(run.args(&json_path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let stopped = server.stop(s.stop_grace);
            let _ = stopped;
            return RunResult::failed(format!("cannot start {}: {e}", paths.loadgen().display()));
        }
    };
    let loadgen_stderr = loadgen.stderr.take().map(|e| {
        thread::spawn(move || {
            BufReader::new(e)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        })
    });
    let loadgen_deadline = Instant::now() + run.duration_max + Duration::from_secs(15);

    if scenario == Scenario::Idle {
        // Wait until the server holds all N (bounded by the loadgen's own life), then sample.
        // RSS is also read once half are connected: the slope from there to N is the marginal
        // cost of a connection, free of the one-time growth (allocator arenas, I/O rings
        // touched on first use) that the first connections trigger.
        let mut seen = 0;
        let mut reached = false;
        let mut half: Option<(u64, u64)> = None;
        while Instant::now() < loadgen_deadline && matches!(loadgen.try_wait(), Ok(None)) {
            match server.connections(Duration::from_secs(2)) {
                Ok(c) => seen = c,
                Err(e) => result.notes.push(format!("stats: {e:#}")),
            }
            if half.is_none() && seen >= s.n / 2 && seen < s.n {
                if let Ok(rss) = procfs::read_rss(pid) {
                    half = Some((seen, rss));
                }
            }
            if seen >= s.n {
                reached = true;
                break;
            }
            thread::sleep(STATS_POLL);
        }
        if reached {
            thread::sleep(Duration::from_millis(500));
            sample_memory(
                &mut result,
                pid,
                s.n,
                &rss_before,
                half,
                &sock_before,
                &slab_before,
            );
            // What holding idle viewers costs: keepalive sweeps, scheduler rounds, timers.
            if let Ok(c0) = procfs::read_cpu_seconds(pid) {
                thread::sleep(IDLE_CPU_WINDOW);
                if let Ok(c1) = procfs::read_cpu_seconds(pid) {
                    result.set(
                        "idle_cpu_ms_per_s",
                        (c1 - c0) * 1e3 / IDLE_CPU_WINDOW.as_secs_f64(),
                    );
                }
            }
        } else {
            result.problems.push(format!(
                "the server never reported {} connections (last seen {seen}); no memory sample",
                s.n
            ));
        }
        result.notes.dedup();
    }

    let loadgen_status = loop {
        match loadgen.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < loadgen_deadline => {
                thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = loadgen.kill();
                let _ = loadgen.wait();
                result.problems.push(format!(
                    "loadgen did not end within {:?}; killed",
                    run.duration_max + Duration::from_secs(15)
                ));
                break None;
            }
        }
    };
    let stderr_lines = loadgen_stderr
        .and_then(|h| h.join().ok())
        .unwrap_or_default();

    if !server.is_running() {
        result.problems.push(format!(
            "the server exited during the run; stderr: {}",
            server.stderr_tail()
        ));
    }
    if let Ok(before) = cpu_before {
        if let Ok(after) = procfs::read_cpu_seconds(pid) {
            result.set("server_cpu_s", after - before);
        }
    }
    if let (Some(Ok(before)), Ok(after)) = (ipis_before, procfs::read_rescheduling_ipis()) {
        result.set(RESCHED_IPIS.key, after.saturating_sub(before) as f64);
    }
    let stopped = server.stop(s.stop_grace);
    if let Some(p) = stopped.problem(s.stop_grace) {
        result.problems.push(format!("stop: {p}"));
    }

    if let Some(status) = loadgen_status {
        if !status.success() {
            let tail: Vec<&String> = stderr_lines.iter().rev().take(5).collect();
            result.problems.push(format!(
                "loadgen exited with {status}: {}",
                tail.into_iter()
                    .rev()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
    }
    match std::fs::read_to_string(&json_path)
        .map_err(anyhow::Error::from)
        .and_then(|text| loadgen::parse_report(&text))
    {
        Ok(report) => evaluate(scenario, s, &report, &mut result),
        Err(e) => result.problems.push(format!(
            "no loadgen report at {}: {e:#}",
            json_path.display()
        )),
    }
    let _ = std::fs::remove_file(&json_path);
    result
}

fn report_path(kind: ServerKind, scenario: Scenario) -> PathBuf {
    std::env::temp_dir().join(format!(
        "ovation-bench-{}-{}-{}.json",
        std::process::id(),
        kind.name(),
        scenario.name()
    ))
}

fn sample_memory(
    result: &mut RunResult,
    pid: u32,
    n: u64,
    rss_before: &std::io::Result<u64>,
    half: Option<(u64, u64)>,
    sock_before: &std::io::Result<procfs::TcpSockstat>,
    slab_before: &std::io::Result<u64>,
) {
    let n_f = n as f64;
    match (rss_before, procfs::read_rss(pid)) {
        (Ok(before), Ok(after)) => {
            result.set("rss_before_mib", *before as f64 / MIB);
            result.set("rss_held_mib", after as f64 / MIB);
            result.set("rss_per_conn", (after as f64 - *before as f64) / n_f);
            if let Some(per) = half.and_then(|h| marginal_per_conn(h, (n, after))) {
                result.set("rss_marginal_per_conn", per);
            }
        }
        (Err(e), _) => result.problems.push(format!("reading RSS before: {e}")),
        (_, Err(e)) => result.problems.push(format!("reading RSS: {e}")),
    }
    if let (Ok(before), Ok(after)) = (sock_before, procfs::read_sockstat()) {
        let pages = after.mem_pages as f64 - before.mem_pages as f64;
        result.set(
            "kernel_tcp_mem_per_conn",
            pages * procfs::page_size() as f64 / n_f,
        );
    }
    if let (Ok(before), Ok(after)) = (slab_before, procfs::read_socket_slab_bytes()) {
        result.set(
            "kernel_socket_slab_per_conn",
            (after as f64 - *before as f64) / n_f,
        );
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes per connection between two (connections, RSS) samples.
fn marginal_per_conn((n0, rss0): (u64, u64), (n1, rss1): (u64, u64)) -> Option<f64> {
    (n1 > n0).then(|| (rss1 as f64 - rss0 as f64) / (n1 - n0) as f64)
}

/// Turns a loadgen report into the scenario's metrics and checks.
pub fn evaluate(scenario: Scenario, s: &Settings, r: &Report, result: &mut RunResult) {
    let ms = |us: u64| us as f64 / 1e3;
    result.set("established", r.connections_established as f64);
    if r.connections_established < s.n {
        result.problems.push(format!(
            "established {} of {} connections",
            r.connections_established, s.n
        ));
    }
    if r.cut_short {
        result
            .problems
            .push("the loadgen run was cut short by its --duration-max".into());
    }
    match scenario {
        Scenario::Connect => {
            result.set("connect_rate", r.connect_rate_per_s);
            result.set("handshake_p50_ms", ms(r.handshake_us.p50));
            result.set("handshake_p99_ms", ms(r.handshake_us.p99));
            result.set("handshake_max_ms", ms(r.handshake_us.max));
            result.set("failures", r.connect_failures as f64);
        }
        Scenario::Idle => {}
        Scenario::Fanout | Scenario::Latency => {
            let count = if scenario == Scenario::Fanout {
                s.fanout_count
            } else {
                s.latency_count
            };
            result.set("delivered_per_s", r.delivered_per_s);
            if r.latency_us.count > 0 {
                result.set("latency_p50_ms", ms(r.latency_us.p50));
                result.set("latency_p99_ms", ms(r.latency_us.p99));
                result.set("latency_max_ms", ms(r.latency_us.max));
            }
            // Every viewer is in `global`, so each accepted group-cast is owed to every
            // established viewer, whatever the API said about `members`.
            let expected = r.published * r.connections_established;
            if expected > 0 {
                result.set(
                    "delivered_pct",
                    100.0 * r.delivered as f64 / expected as f64,
                );
            }
            if let Some(members) = r.expected_deliveries.filter(|m| *m != expected) {
                result.notes.push(format!(
                    "the API's `members` added up to {members}, not {} group-casts x {} viewers = {expected}",
                    r.published, r.connections_established
                ));
            }
            if r.published < count {
                result.problems.push(format!(
                    "the API accepted {} of {count} group-casts",
                    r.published
                ));
            }
            if r.delivered < expected || expected == 0 {
                result
                    .problems
                    .push(format!("delivered {} of {expected} messages", r.delivered));
            }
            if r.clock_anomalies > 0 {
                result.notes.push(format!(
                    "{} receipts timed before their publish",
                    r.clock_anomalies
                ));
            }
        }
        Scenario::Poll => {
            result.set("votes_per_s", r.votes_per_s);
            if r.vote_ack_us.count > 0 {
                result.set("vote_ack_p50_ms", ms(r.vote_ack_us.p50));
                result.set("vote_ack_p99_ms", ms(r.vote_ack_us.p99));
            }
            if let Some(v) = r.last_vote_to_final_ms {
                result.set("last_vote_to_final_ms", v);
            }
            if let Some(v) = r.last_vote_to_broadcaster_final_ms {
                result.set("last_vote_to_broadcaster_final_ms", v);
            }
            if let Some(v) = r.close_to_final_ms {
                result.set("close_to_final_ms", v);
            }
            if let Some(t) = r.final_total {
                result.set("final_total", t as f64);
            }
            let n = s.n;
            if r.poll_id.is_none() {
                result.problems.push("no poll was created".into());
            }
            if r.votes_acked < n {
                result
                    .problems
                    .push(format!("{} of {n} votes acknowledged", r.votes_acked));
            }
            if r.finals_received < n {
                result.problems.push(format!(
                    "{} of {n} viewers got the final results",
                    r.finals_received
                ));
            }
            if r.final_total != Some(n) {
                result.problems.push(format!(
                    "final total {} at the viewers, expected {n}",
                    r.final_total.map_or("missing".into(), |t| t.to_string())
                ));
            }
            if r.finals_inconsistent > 0 {
                result.problems.push(format!(
                    "{} viewers got final counts that differ from the others'",
                    r.finals_inconsistent
                ));
            }
            if let Some(t) = r.broadcaster_final_total.filter(|t| *t != n) {
                result
                    .problems
                    .push(format!("final total {t} at the broadcaster, expected {n}"));
            }
            if r.api_poll_total != Some(n) {
                result.problems.push(format!(
                    "GET /api/polls/{{id}} total {}, expected {n}",
                    r.api_poll_total.map_or("missing".into(), |t| t.to_string())
                ));
            }
        }
    }
    if let Some(t) = r.trouble() {
        result.notes.push(format!("loadgen reported: {t}"));
    }
}

/// Whether the server behind `paths` has the poll API: starts one ovation, creates a stream
/// and a poll on it, and closes the poll. `Ok(false)` when `POST /api/polls` answers 404.
pub fn probe_polls(paths: &Paths, s: &Settings) -> anyhow::Result<bool> {
    let server = Server::start(paths, ServerKind::Ovation, s.server_start_timeout)?;
    let t = Duration::from_secs(5);
    let api = server.api;
    let outcome = (|| {
        let stream = crate::http::request(
            api,
            "POST",
            "/api/streams",
            API_TOKEN,
            Some(r#"{"id":"bench-probe"}"#),
            t,
        )?;
        if !(200..300).contains(&stream.status) && stream.status != 409 {
            anyhow::bail!("POST /api/streams answered {}", stream.status);
        }
        let body = r#"{"stream":"bench-probe","question":"probe?","choices":["yes","no"],"duration_s":60}"#;
        let poll = crate::http::request(api, "POST", "/api/polls", API_TOKEN, Some(body), t)?;
        if poll.status == 404 {
            return Ok(false);
        }
        if let Some(id) = poll
            .json()
            .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
        {
            let _ = crate::http::request(
                api,
                "POST",
                &format!("/api/polls/{id}/close"),
                API_TOKEN,
                None,
                t,
            );
        }
        Ok(true)
    })();
    let _ = server.stop(s.stop_grace);
    outcome
}

#[cfg(test)]
mod tests {
    #[test]
    fn marginal_memory_is_the_slope_between_samples() {
        assert_eq!(
            super::marginal_per_conn((5_000, 1_000_000), (10_000, 3_000_000)),
            Some(400.0)
        );
        assert_eq!(super::marginal_per_conn((10_000, 1), (10_000, 2)), None);
    }

    use super::*;

    fn settings() -> Settings {
        Settings {
            n: 100,
            connect_rate: MAX_RATE,
            setup_rate: 5_000.0,
            fanout_count: 20,
            fanout_interval: Duration::from_millis(10),
            latency_count: 5,
            latency_interval: Duration::from_millis(250),
            poll_choices: 4,
            loadgen_processes: None,
            server_start_timeout: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
        }
    }

    fn report() -> Report {
        Report {
            schema: loadgen::SCHEMA.into(),
            connections_requested: 100,
            connections_established: 100,
            ..Report::default()
        }
    }

    #[test]
    fn connect_metrics_and_shortfall() {
        let mut r = report();
        r.connect_rate_per_s = 9_000.0;
        r.handshake_us.p99 = 2_500;
        let mut out = RunResult::default();
        evaluate(Scenario::Connect, &settings(), &r, &mut out);
        assert_eq!(out.metrics["connect_rate"], 9_000.0);
        assert_eq!(out.metrics["handshake_p99_ms"], 2.5);
        assert!(out.problems.is_empty());

        r.connections_established = 97;
        r.connect_failures = 3;
        r.errors.insert("connect_timeout".into(), 3);
        let mut out = RunResult::default();
        evaluate(Scenario::Connect, &settings(), &r, &mut out);
        assert_eq!(out.problems, vec!["established 97 of 100 connections"]);
        assert_eq!(out.notes, vec!["loadgen reported: connect_timeout 3"]);
    }

    #[test]
    fn fanout_checks_every_delivery() {
        let mut r = report();
        r.published = 20;
        r.expected_deliveries = Some(2_000);
        r.delivered = 2_000;
        r.delivered_per_s = 50_000.0;
        r.latency_us.count = 2_000;
        r.latency_us.max = 12_345;
        let mut out = RunResult::default();
        evaluate(Scenario::Fanout, &settings(), &r, &mut out);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.metrics["latency_max_ms"], 12.345);
        assert_eq!(out.metrics["delivered_pct"], 100.0);

        r.published = 19;
        r.delivered = 1_881;
        let mut out = RunResult::default();
        evaluate(Scenario::Fanout, &settings(), &r, &mut out);
        assert_eq!(
            out.problems,
            vec![
                "the API accepted 19 of 20 group-casts",
                "delivered 1881 of 1900 messages"
            ]
        );
        assert_eq!(out.metrics["delivered_pct"], 99.0);

        // `members` that undercount the viewers: a note, and the check still counts every
        // established viewer.
        r.expected_deliveries = Some(1_900);
        r.published = 20;
        r.delivered = 2_000;
        let mut out = RunResult::default();
        evaluate(Scenario::Fanout, &settings(), &r, &mut out);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(
            out.notes,
            vec!["the API's `members` added up to 1900, not 20 group-casts x 100 viewers = 2000"]
        );
        r.delivered = 1_900;
        let mut out = RunResult::default();
        evaluate(Scenario::Latency, &settings(), &r, &mut out);
        assert_eq!(out.problems, vec!["delivered 1900 of 2000 messages"]);
    }

    #[test]
    fn poll_needs_every_vote_in_the_final_total() {
        let mut r = report();
        r.poll_id = Some("p1".into());
        r.votes_acked = 100;
        r.finals_received = 100;
        r.final_total = Some(100);
        r.api_poll_total = Some(100);
        r.votes_per_s = 40_000.0;
        r.last_vote_to_final_ms = Some(120.0);
        let mut out = RunResult::default();
        evaluate(Scenario::Poll, &settings(), &r, &mut out);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.metrics["last_vote_to_final_ms"], 120.0);

        r.broadcaster_final_total = Some(100);
        r.last_vote_to_broadcaster_final_ms = Some(80.0);
        let mut out = RunResult::default();
        evaluate(Scenario::Poll, &settings(), &r, &mut out);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.metrics["last_vote_to_broadcaster_final_ms"], 80.0);

        r.final_total = Some(99);
        r.broadcaster_final_total = Some(98);
        r.api_poll_total = None;
        let mut out = RunResult::default();
        evaluate(Scenario::Poll, &settings(), &r, &mut out);
        assert_eq!(
            out.problems,
            vec![
                "final total 99 at the viewers, expected 100",
                "final total 98 at the broadcaster, expected 100",
                "GET /api/polls/{id} total missing, expected 100"
            ]
        );
    }

    #[test]
    fn loadgen_runs_per_scenario() {
        let s = settings();
        let (v, a) = (
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let connect = Scenario::Connect.loadgen_run(&s, v, a);
        assert_eq!(connect.rate, MAX_RATE);
        assert!(connect.publish.is_none() && connect.poll.is_none());
        let idle = Scenario::Idle.loadgen_run(&s, v, a);
        assert_eq!((idle.rate, idle.hold), (5_000.0, IDLE_HOLD));
        let fanout = Scenario::Fanout.loadgen_run(&s, v, a);
        assert_eq!(fanout.publish, Some((20, Duration::from_millis(10))));
        let latency = Scenario::Latency.loadgen_run(&s, v, a);
        assert_eq!(latency.publish, Some((5, Duration::from_millis(250))));
        let poll = Scenario::Poll.loadgen_run(&s, v, a);
        assert_eq!(poll.behaviour, "vote");
        assert_eq!(poll.poll, Some((POLL_STREAM.to_owned(), 4)));
        assert!(Scenario::Poll.applies_to(ServerKind::Ovation));
        assert!(!Scenario::Poll.applies_to(ServerKind::Ws));
        for sc in Scenario::ALL {
            assert_eq!(Scenario::parse(sc.name()), Some(sc));
            assert!(sc.loadgen_run(&s, v, a).duration_max >= Duration::from_secs(30));
        }
    }
}
