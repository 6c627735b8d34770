//! `bench-quality`: the cost of the quality loop (issue 14) at scale.
//!
//! 1. **Telemetry.** The real server (a release `ovation`) with `--groups` custom groups, and
//!    the loadgen holding `--viewers` connections for `--hold` seconds, twice: idle viewers,
//!    then telemetry viewers (one report per `--interval-ms`). The server's CPU time
//!    (`/proc/PID/stat`) over each run is measured; the difference divided by the reports the
//!    shards counted (`telemetry_reports` in `/api/stats`) is the server CPU per report, with
//!    connection set-up and keepalive cancelled out.
//! 2. **Remediation.** The application core's real code in process: `--groups` groups with
//!    full telemetry windows, `--rules` rules over all of them, `evaluate_remediations`
//!    timed over many ticks: CPU per evaluation (a tick) and per (rule, group) judgement.
//!
//! Every figure is printed with its inputs; nothing is asserted.

use std::path::PathBuf;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;

use crate::server::{Paths, Server, ServerKind, API_TOKEN};

#[derive(Parser, Debug)]
#[command(
    name = "bench-quality",
    about = "Server CPU per telemetry report and per remediation evaluation"
)]
pub struct Args {
    /// Directory holding the `ovation` and `loadgen` binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Viewer connections (the machine's limit is about 15,000 here).
    #[arg(long, default_value_t = 15_000)]
    pub viewers: u64,
    /// Seconds the viewers stay connected in each run.
    #[arg(long, default_value_t = 20)]
    pub hold: u64,
    /// Milliseconds between a telemetry viewer's reports.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Custom groups (each report folds into every group its viewer is in).
    #[arg(long, default_value_t = 16)]
    pub groups: usize,
    /// Remediation rules for the in-process measurement.
    #[arg(long, default_value_t = 8)]
    pub rules: usize,
    /// Evaluations timed in process.
    #[arg(long, default_value_t = 2000)]
    pub ticks: u64,
    /// Skip the server runs (remediation only).
    #[arg(long)]
    pub no_server: bool,
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let machine = crate::procfs::read_machine();
    println!("# bench-quality\n\nmachine: {machine:?}\n");
    if !args.no_server {
        telemetry(&args)?;
    }
    remediation(&args);
    Ok(())
}

/// One loadgen run against a fresh server: (server CPU seconds, reports counted).
fn run(args: &Args, behaviour: &str) -> anyhow::Result<(f64, u64, f64)> {
    let paths = Paths {
        root: PathBuf::from("."),
        bin_dir: args.bin_dir.clone(),
    };
    let server = Server::start(&paths, ServerKind::Ovation, Duration::from_secs(30))?;
    let api = |method: &str, path: &str, body: Option<String>| {
        crate::http::request(
            server.api,
            method,
            path,
            API_TOKEN,
            body.as_deref(),
            Duration::from_secs(10),
        )
    };
    // Groups over what the loadgen's viewers vary in: os, device, region, language.
    let oses = ["ios", "android", "windows", "macos", "linux", "other"];
    let devices = ["mobile", "desktop", "tablet"];
    for i in 0..args.groups {
        let pred = match i % 3 {
            0 => json!({"os": [oses[i % oses.len()]]}),
            1 => json!({"device": [devices[i % devices.len()]]}),
            _ => json!({"os": [oses[i % oses.len()], oses[(i + 1) % oses.len()]]}),
        };
        let body = json!({"name": format!("bench-{i}"), "match": pred}).to_string();
        let r = api("POST", "/api/groups", Some(body))?;
        if r.status != 201 {
            bail!("creating a group: {}", r.status);
        }
    }
    let cpu0 = crate::procfs::read_cpu_seconds(server.pid)?;
    let started = Instant::now();
    let status = Command::new(paths.loadgen())
        .arg("run")
        .args(["--connections", &args.viewers.to_string()])
        .args(["--rate", "5000/s"])
        .args(["--behaviour", behaviour])
        .args(["--hold", &args.hold.to_string()])
        .args(["--telemetry-interval-ms", &args.interval_ms.to_string()])
        .args(["--url", &format!("ws://{}/v1/viewer", server.viewer)])
        .args(["--api", &format!("http://{}", server.api)])
        .args(["--api-token", API_TOKEN])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running the loadgen")?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = crate::procfs::read_cpu_seconds(server.pid)? - cpu0;
    if !status.success() {
        bail!("loadgen failed: {status}");
    }
    let stats = api("GET", "/api/stats", None)?;
    let reports: u64 = stats
        .json()
        .and_then(|v| {
            v["shards"].as_array().map(|s| {
                s.iter()
                    .filter_map(|x| x["counters"]["telemetry_reports"].as_u64())
                    .sum()
            })
        })
        .unwrap_or(0);
    let _ = server.stop(Duration::from_secs(10));
    Ok((cpu, reports, wall))
}

fn telemetry(args: &Args) -> anyhow::Result<()> {
    let (idle_cpu, _, idle_wall) = run(args, "idle")?;
    let (tel_cpu, reports, tel_wall) = run(args, "telemetry")?;
    println!("## Telemetry at the edge\n");
    println!(
        "{} viewers held {} s, {} custom groups, one report per {} ms per telemetry viewer\n",
        args.viewers, args.hold, args.groups, args.interval_ms
    );
    println!("| run | server CPU s | wall s | reports |");
    println!("|---|---|---|---|");
    println!("| idle viewers | {idle_cpu:.2} | {idle_wall:.1} | 0 |");
    println!("| telemetry viewers | {tel_cpu:.2} | {tel_wall:.1} | {reports} |");
    if reports > 0 {
        let net = (tel_cpu - idle_cpu).max(0.0);
        println!(
            "\nserver CPU per telemetry report: {:.2} µs net of idle ({:.2} µs gross), {:.0} reports/s",
            net * 1e6 / reports as f64,
            tel_cpu * 1e6 / reports as f64,
            reports as f64 / tel_wall
        );
    }
    println!();
    Ok(())
}

/// The application core in process: groups with full windows, rules over all of them.
fn remediation(args: &Args) {
    use ovation::app::downlink::Downlink;
    use ovation::app::remediation::{Action, RuleSpec};
    use ovation::app::App;
    use shards::profile::{Field, Predicate};
    use shards::proto::{ShardEvent, Telemetry};
    use shards::telemetry::Aggregate;

    let config = Arc::new(ovation::config::Config::default());
    let downlinks: Vec<Rc<Downlink>> = (0..2).map(|_| Rc::default()).collect();
    let stats = (0..2).map(|_| Arc::default()).collect();
    let t0 = 1_800_000_000_000u64;
    let mut app = App::new(config, stats, downlinks.clone(), t0);
    let mut ids = Vec::new();
    for i in 0..args.groups {
        let key = app.add_custom_group(
            format!("g-{i}"),
            Predicate {
                clauses: vec![(Field::Region, vec![format!("R{i}").into()])],
            },
            t0,
        );
        ids.push(app.group(&key).map(|g| g.id).expect("just added"));
    }
    for r in 0..args.rules {
        let rule = RuleSpec {
            id: format!("rule-{r}"),
            groups: vec![],
            window_s: if r % 2 == 0 { 10 } else { 60 },
            min_reports: 5,
            failures_per_min_above: Some(1e9),
            buffering_ratio_above: Some(0.99),
            hold_s: 5,
            clear_fraction: 0.5,
            cooldown_s: 60,
            actions: vec![Action::Notify],
        };
        app.add_rule(rule).expect("a valid rule");
    }
    // Fill every second of the longest window of every group.
    let mut delta = Aggregate::default();
    for i in 0..100 {
        delta.record(&Telemetry {
            bitrate_kbps: Some(2500.0 + i as f64),
            buffering_ratio: Some(0.01),
            failures: Some((i % 3) as f64),
            rtt_ms: Some(40.0),
            ..Telemetry::default()
        });
    }
    // Each second, 100 other viewers (their latest report is there): every rule has enough.
    delta.viewers = 100;
    let mut now = t0;
    for _ in 0..60 {
        let second = (now / 1000) as u32;
        let deltas = ids.iter().map(|&g| (g, second, delta)).collect();
        app.on_event(ShardEvent::Telemetry { shard: 0, deltas }, now);
        now += 1000;
    }
    let started = Instant::now();
    for _ in 0..args.ticks {
        app.evaluate_remediations(now);
    }
    let per_tick = started.elapsed().as_secs_f64() / args.ticks as f64;
    let judgements = (args.rules * args.groups) as f64;
    for d in &downlinks {
        d.take_all();
    }
    println!("## Remediation evaluation\n");
    println!(
        "{} rules (windows 10 s and 60 s) x {} groups, full windows, {} evaluations\n",
        args.rules, args.groups, args.ticks
    );
    println!(
        "CPU per evaluation (one tick, every rule on every group): {:.1} µs; per (rule, group): {:.2} µs",
        per_tick * 1e6,
        per_tick * 1e6 / judgements
    );
}
