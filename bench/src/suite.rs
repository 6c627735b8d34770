//! The `bench-suite` command line and the scenario x repeat x server loop.
//!
//! Servers take turns within each repeat (ovation, then each peer, then the next repeat), so
//! a drift in the machine's state over the run touches every server alike. A peer that is
//! not built or cannot start is skipped with a note and never fails the suite; ovation
//! failing a scenario's checks makes the exit status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

use crate::procfs;
use crate::report::{self, Entry, Header, ScenarioResult, ServerEntry, SuiteResult};
use crate::scenario::{self, Scenario, Settings, MAX_RATE};
use crate::server::{Paths, ServerKind};

/// Default N: the servers under test are single processes held to 20,000 descriptors on
/// the bench host, so one can hold about 19,000 viewers; 15,000 leaves room for each
/// server's own descriptors (listeners, io_uring rings, epoll, API sockets, Node's internals),
/// keeps the loadgen in one worker process, and lets the full suite (4 servers, 3 repeats)
/// finish in a few minutes on 2 cores.
pub const DEFAULT_N: u64 = 15_000;
/// N of `--smoke`.
pub const SMOKE_N: u64 = 200;
/// Descriptors a server needs beyond one per viewer.
const FD_HEADROOM: u64 = 500;

#[derive(Debug, Parser)]
#[command(
    name = "bench-suite",
    about = "Runs ovation and its peers under the same loadgen and prints markdown tables (use bench/run)"
)]
pub struct Cli {
    /// Viewers per scenario [default: 15000; 200 with --smoke].
    #[arg(long)]
    pub n: Option<u64>,
    /// Scenarios to run, comma-separated: connect, idle, fanout, latency, poll.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "connect,idle,fanout,latency,poll"
    )]
    pub scenarios: Vec<String>,
    /// Servers, comma-separated: ovation, fastwebsockets, tokio-tungstenite, ws.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ovation,fastwebsockets,tokio-tungstenite,ws"
    )]
    pub servers: Vec<String>,
    /// Repeats per scenario and server; the table shows medians [default: 3; 1 with --smoke].
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the markdown to this file (it is always printed on stdout).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Tiny run for CI: N=200, one repeat, every scenario, every peer that is built.
    #[arg(long)]
    pub smoke: bool,
    /// Connect storm rate per second, or `max` for no limit.
    #[arg(long, default_value = "max")]
    pub connect_rate: String,
    /// Connect rate of the other scenarios' setup phase, per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub setup_rate: f64,
    /// Group-casts in the fan-out (throughput) scenario.
    #[arg(long, default_value_t = 20)]
    pub fanout_count: u64,
    /// Least milliseconds between the fan-out scenario's group-casts.
    #[arg(long, default_value_t = 10)]
    pub fanout_interval_ms: u64,
    /// Group-casts in the latency scenario.
    #[arg(long, default_value_t = 10)]
    pub latency_count: u64,
    /// Milliseconds between the latency scenario's group-casts (long enough for the slowest
    /// server to reach every viewer in between).
    #[arg(long, default_value_t = 250)]
    pub latency_interval_ms: u64,
    /// Choices of the poll storm's poll.
    #[arg(long, default_value_t = 4)]
    pub poll_choices: u32,
    /// Loadgen worker processes for every scenario and server [default: the loadgen's, one
    /// per 18,000 connections]. On loopback a connection's packets are handled on the CPU its
    /// client runs on, so one process puts the whole storm on whichever CPU it is on.
    #[arg(long)]
    pub loadgen_processes: Option<u32>,
    /// Repository root (bench/peers is found under it).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Directory holding the release `ovation` and `loadgen` [default: ROOT/target/release].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The command line to print in the header (bench/run passes its own).
    #[arg(long, hide = true)]
    pub command_line: Option<String>,
}

/// The validated run.
struct Plan {
    settings: Settings,
    scenarios: Vec<Scenario>,
    servers: Vec<ServerKind>,
    repeat: u32,
    paths: Paths,
    command: String,
    smoke: bool,
}

fn plan(cli: &Cli) -> anyhow::Result<Plan> {
    let n = cli.n.unwrap_or(if cli.smoke { SMOKE_N } else { DEFAULT_N });
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let repeat = cli.repeat.unwrap_or(if cli.smoke { 1 } else { 3 });
    if repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let mut scenarios = Vec::new();
    for s in &cli.scenarios {
        let sc = Scenario::parse(s).with_context(|| {
            format!("unknown scenario {s:?} (connect, idle, fanout, latency, poll)")
        })?;
        if !scenarios.contains(&sc) {
            scenarios.push(sc);
        }
    }
    if cli.smoke {
        scenarios = Scenario::ALL.to_vec();
    }
    let mut servers = Vec::new();
    for s in &cli.servers {
        let k = ServerKind::parse(s).with_context(|| {
            format!("unknown server {s:?} (ovation, fastwebsockets, tokio-tungstenite, ws)")
        })?;
        if !servers.contains(&k) {
            servers.push(k);
        }
    }
    if cli.smoke {
        servers = ServerKind::ALL.to_vec();
    }
    if scenarios.is_empty() || servers.is_empty() {
        bail!("nothing to run: give at least one scenario and one server");
    }
    let connect_rate = match cli.connect_rate.trim() {
        "max" => MAX_RATE,
        r => {
            let v: f64 = r
                .trim_end_matches("/s")
                .parse()
                .with_context(|| format!("--connect-rate {r:?} is not a number or `max`"))?;
            if !(v > 0.0 && v <= MAX_RATE) {
                bail!("--connect-rate must be between 0 and {MAX_RATE}");
            }
            v
        }
    };
    if !(cli.setup_rate > 0.0 && cli.setup_rate <= MAX_RATE) {
        bail!("--setup-rate must be between 0 and {MAX_RATE}");
    }
    if [
        cli.fanout_count,
        cli.fanout_interval_ms,
        cli.latency_count,
        cli.latency_interval_ms,
    ]
    .contains(&0)
    {
        bail!("group-cast counts and intervals must be at least 1");
    }
    if !(2..=64).contains(&cli.poll_choices) {
        bail!("--poll-choices must be between 2 and 64");
    }
    let fd_limit = raise_nofile_limit();
    if n + FD_HEADROOM > fd_limit {
        bail!(
            "--n {n} needs about {} descriptors in each server process, but the limit here is {fd_limit}; \
             use --n {} or less, or raise the hard limit (ulimit -Hn) on a bigger host",
            n + FD_HEADROOM,
            fd_limit.saturating_sub(FD_HEADROOM)
        );
    }
    let root = cli.root.clone();
    let bin_dir = cli
        .bin_dir
        .clone()
        .unwrap_or_else(|| root.join("target").join("release"));
    let paths = Paths { root, bin_dir };
    for bin in [paths.loadgen(), paths.bin_dir.join("ovation")] {
        if !bin.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release -p ovation -p ovation-loadgen` (bench/run does)",
                bin.display()
            );
        }
    }
    let command = cli
        .command_line
        .clone()
        .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "));
    Ok(Plan {
        settings: Settings {
            n,
            connect_rate,
            setup_rate: cli.setup_rate,
            fanout_count: cli.fanout_count,
            fanout_interval: Duration::from_millis(cli.fanout_interval_ms),
            latency_count: cli.latency_count,
            latency_interval: Duration::from_millis(cli.latency_interval_ms),
            poll_choices: cli.poll_choices,
            loadgen_processes: cli.loadgen_processes,
            server_start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(10),
        },
        scenarios,
        servers,
        repeat,
        paths,
        command,
        smoke: cli.smoke,
    })
}

/// Raises this process's soft descriptor limit to the hard one, so that the servers and the
/// loadgen it starts inherit it (Node and the tokio peers do not raise their own). Returns
/// the limit now in force.
fn raise_nofile_limit() -> u64 {
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
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match plan(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench-suite: {e:#}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = run(&plan);
    let markdown = result.markdown();
    print!("{markdown}");
    let mut status = if result.ovation_failed() {
        eprintln!("bench-suite: ovation failed at least one scenario (see † in the tables)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    if let Some(path) = &cli.markdown {
        if let Err(e) = std::fs::write(path, &markdown) {
            eprintln!("bench-suite: writing {}: {e}", path.display());
            status = ExitCode::FAILURE;
        }
    }
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&result.json()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench-suite: writing {}: {e}", path.display());
            status = ExitCode::FAILURE;
        }
    }
    eprintln!(
        "bench-suite: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    status
}

fn run(plan: &Plan) -> SuiteResult {
    let s = &plan.settings;
    let load_before = procfs::read_loadavg();
    let mut notes = vec![format!(
        "ovation and loadgen binaries: {}",
        plan.paths.bin_dir.display()
    )];
    if plan.smoke {
        notes.push(
            "smoke run: it checks that the suite works end to end; its figures (tiny N, possibly debug builds) mean nothing"
                .into(),
        );
    }
    let mut available = Vec::new();
    for &kind in &plan.servers {
        match plan.paths.check(kind) {
            Ok(()) => available.push(kind),
            Err(why) => {
                eprintln!("bench-suite: skipping {}: {why}", kind.name());
                notes.push(format!("{} skipped: {why}", kind.name()));
            }
        }
    }
    let mut scenarios = Vec::new();
    for &sc in &plan.scenarios {
        let mut result = ScenarioResult {
            name: sc.name(),
            title: sc.title(s),
            description: sc.description(s),
            metrics: sc.metrics().to_vec(),
            servers: Vec::new(),
            skipped: None,
            loadgen_command: loadgen_command_text(sc, plan),
        };
        if sc == Scenario::Poll && plan.servers.contains(&ServerKind::Ovation) {
            match scenario::probe_polls(&plan.paths, s) {
                Ok(true) => {}
                Ok(false) => {
                    eprintln!("bench-suite: poll storm: skipped (server has no /api/polls)");
                    result.skipped = Some("server has no /api/polls".into());
                }
                Err(e) => {
                    eprintln!("bench-suite: poll probe failed: {e:#}");
                    result.skipped = Some(format!("the poll API probe failed: {e:#}"));
                }
            }
        }
        let mut runs: Vec<(ServerKind, Vec<report::RunResult>)> = Vec::new();
        for &kind in &plan.servers {
            let entry = if !available.contains(&kind) {
                Some(Entry::Skipped {
                    reason: "not built or not runnable here".into(),
                })
            } else if !sc.applies_to(kind) {
                Some(Entry::NotApplicable {
                    reason: "peers implement no polls".into(),
                })
            } else {
                runs.push((kind, Vec::new()));
                None
            };
            if let Some(entry) = entry {
                result.servers.push(ServerEntry {
                    server: kind,
                    entry,
                });
            }
        }
        if result.skipped.is_none() {
            for rep in 0..plan.repeat {
                // Each repeat starts with the next server, so that no server always runs
                // right after another scenario's teardown (sockets being freed, caches).
                if rep > 0 && !runs.is_empty() {
                    runs.rotate_left(1);
                }
                for (kind, list) in &mut runs {
                    let t = Instant::now();
                    let r = scenario::run_once(&plan.paths, *kind, sc, s);
                    eprintln!(
                        "bench-suite: [{} {}/{}] {}: {} ({:.1} s)",
                        sc.name(),
                        rep + 1,
                        plan.repeat,
                        kind.name(),
                        progress_line(sc, &r),
                        t.elapsed().as_secs_f64()
                    );
                    list.push(r);
                }
            }
        }
        for (kind, list) in runs {
            result.servers.push(ServerEntry {
                server: kind,
                entry: Entry::Ran { runs: list },
            });
        }
        // Table columns in the order the servers were asked for.
        result
            .servers
            .sort_by_key(|e| plan.servers.iter().position(|k| *k == e.server));
        scenarios.push(result);
    }
    if let (Some(before), Some(after)) = (load_before, procfs::read_loadavg()) {
        notes.push(format!(
            "1-minute load average {before:.2} before the run and {after:.2} after it: anything else running on the machine shows up as noise"
        ));
    }
    let machine = procfs::read_machine();
    let date = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SuiteResult {
        header: Header {
            date_utc: report::format_utc(date),
            machine,
            command: plan.command.clone(),
            n: s.n,
            repeat: plan.repeat,
            server_commands: plan
                .servers
                .iter()
                .map(|k| (k.name().to_owned(), plan.paths.display_command(*k)))
                .collect(),
            notes,
        },
        scenarios,
    }
}

fn loadgen_command_text(sc: Scenario, plan: &Plan) -> String {
    let v = ([127, 0, 0, 1], 0).into();
    let text = sc
        .loadgen_run(&plan.settings, v, v)
        .display(&plan.paths.loadgen());
    text.replace("ws://127.0.0.1:0/", "ws://VIEWER_ADDR/")
        .replace("http://127.0.0.1:0", "http://API_ADDR")
}

fn progress_line(sc: Scenario, r: &report::RunResult) -> String {
    let m = |k: &str| r.metrics.get(k).copied();
    let mut s = match sc {
        Scenario::Connect => format!(
            "{:.0} conn/s, handshake p99 {:.2} ms",
            m("connect_rate").unwrap_or(0.0),
            m("handshake_p99_ms").unwrap_or(0.0)
        ),
        Scenario::Idle => format!("{:.0} B/conn RSS", m("rss_per_conn").unwrap_or(f64::NAN)),
        Scenario::Fanout => format!(
            "{:.0} msg/s, p99 {:.2} ms",
            m("delivered_per_s").unwrap_or(0.0),
            m("latency_p99_ms").unwrap_or(0.0)
        ),
        Scenario::Latency => format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            m("latency_p50_ms").unwrap_or(0.0),
            m("latency_p99_ms").unwrap_or(0.0),
            m("latency_max_ms").unwrap_or(0.0)
        ),
        Scenario::Poll => format!(
            "{:.0} votes/s, last vote -> final {:.1} ms",
            m("votes_per_s").unwrap_or(0.0),
            m("last_vote_to_final_ms").unwrap_or(f64::NAN)
        ),
    };
    if !r.problems.is_empty() {
        s.push_str(&format!("; PROBLEMS: {}", r.problems.join("; ")));
    }
    s
}
