//! The suite's results: metric definitions, medians over repeats, ratios against each peer,
//! and their rendering as markdown tables and as JSON. Pure: everything here works on
//! already-collected numbers, so it is tested without servers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};

use crate::procfs::Machine;
use crate::server::ServerKind;
use crate::stats;

/// Which way a metric is better; decides the ratio's direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Throughput: the ratio is ovation / peer.
    Higher,
    /// Latency, bytes, CPU time: the ratio is peer / ovation.
    Lower,
    /// Context only: no ratio.
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    PerSecond,
    Millis,
    Bytes,
    MiB,
    Seconds,
    Count,
    Percent,
}

/// How repeats combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    Median,
    /// The worst repeat (failure counts).
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub better: Better,
    pub combine: Combine,
}

impl Metric {
    pub const fn new(key: &'static str, label: &'static str, unit: Unit, better: Better) -> Self {
        Metric {
            key,
            label,
            unit,
            better,
            combine: Combine::Median,
        }
    }

    pub const fn worst(mut self) -> Self {
        self.combine = Combine::Max;
        self
    }
}

/// One scenario run against one server process.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunResult {
    pub metrics: BTreeMap<String, f64>,
    /// Failed checks: the run did not do what the scenario asks (counts towards the exit
    /// status when the server is ovation).
    pub problems: Vec<String>,
    /// Worth knowing but not a failure (e.g. loadgen errors during teardown).
    pub notes: Vec<String>,
}

impl RunResult {
    pub fn failed(problem: impl Into<String>) -> Self {
        RunResult {
            problems: vec![problem.into()],
            ..RunResult::default()
        }
    }

    pub fn set(&mut self, key: &str, value: f64) {
        self.metrics.insert(key.to_owned(), value);
    }
}

/// What happened with one server in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Entry {
    Ran { runs: Vec<RunResult> },
    Skipped { reason: String },
    NotApplicable { reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerEntry {
    pub server: ServerKind,
    pub entry: Entry,
}

impl ServerEntry {
    /// The combined value of `metric` over this server's repeats.
    pub fn value(&self, metric: &Metric) -> Option<f64> {
        let Entry::Ran { runs } = &self.entry else {
            return None;
        };
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.metrics.get(metric.key).copied())
            .collect();
        match metric.combine {
            Combine::Median => stats::median(&values),
            Combine::Max => stats::max(&values),
        }
    }

    /// Problems of every repeat, prefixed with the repeat number.
    pub fn problems(&self) -> Vec<String> {
        self.collect(|r| &r.problems)
    }

    pub fn notes(&self) -> Vec<String> {
        self.collect(|r| &r.notes)
    }

    fn collect(&self, pick: impl Fn(&RunResult) -> &Vec<String>) -> Vec<String> {
        let Entry::Ran { runs } = &self.entry else {
            return Vec::new();
        };
        runs.iter()
            .enumerate()
            .flat_map(|(i, r)| {
                pick(r)
                    .iter()
                    .map(move |p| format!("repeat {}: {p}", i + 1))
            })
            .collect()
    }
}

/// One scenario's results over all servers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioResult {
    pub name: &'static str,
    pub title: String,
    pub description: String,
    pub metrics: Vec<Metric>,
    pub servers: Vec<ServerEntry>,
    /// Set when the whole scenario did not run (e.g. the server has no poll API).
    pub skipped: Option<String>,
    /// The loadgen command of this scenario (token shown as `$TOKEN`).
    pub loadgen_command: String,
}

impl ScenarioResult {
    fn entry(&self, kind: ServerKind) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.server == kind)
    }

    /// Ratio against `peer`, oriented so that > 1 means ovation did better.
    pub fn ratio(&self, metric: &Metric, peer: ServerKind) -> Option<f64> {
        let ovation = self.entry(ServerKind::Ovation)?.value(metric)?;
        let other = self.entry(peer)?.value(metric)?;
        ratio(metric.better, ovation, other)
    }

    /// The peers that ran, in table order: they get ratio columns.
    fn peers_that_ran(&self) -> Vec<ServerKind> {
        self.servers
            .iter()
            .filter(|s| s.server.is_peer() && matches!(s.entry, Entry::Ran { .. }))
            .map(|s| s.server)
            .collect()
    }

    /// Whether ovation ran and any of its repeats failed a check.
    pub fn ovation_failed(&self) -> bool {
        self.entry(ServerKind::Ovation)
            .is_some_and(|e| !e.problems().is_empty())
    }
}

/// `ovation / peer` for higher-is-better metrics, `peer / ovation` for lower-is-better ones,
/// so that every ratio reads the same way: > 1 means ovation did better.
pub fn ratio(better: Better, ovation: f64, peer: f64) -> Option<f64> {
    let (num, den) = match better {
        Better::Higher => (ovation, peer),
        Better::Lower => (peer, ovation),
        Better::Info => return None,
    };
    // A zero is below the measurement's resolution (CPU time counts 10 ms ticks): no ratio.
    (den > 0.0 && num > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
}

/// What the header says about the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Header {
    pub date_utc: String,
    pub machine: Machine,
    pub command: String,
    pub n: u64,
    pub repeat: u32,
    /// Server command lines, as a reader could paste them.
    pub server_commands: Vec<(String, String)>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuiteResult {
    pub header: Header,
    pub scenarios: Vec<ScenarioResult>,
}

impl SuiteResult {
    pub fn ovation_failed(&self) -> bool {
        self.scenarios.iter().any(ScenarioResult::ovation_failed)
    }

    /// The markdown document: header, one table per scenario, notes, commands.
    pub fn markdown(&self) -> String {
        let h = &self.header;
        let m = &h.machine;
        let mut s = String::new();
        let _ = writeln!(s, "## ovation benchmark suite\n");
        let _ = writeln!(s, "- date: {}", h.date_utc);
        let _ = writeln!(
            s,
            "- machine: {} cores{}, {:.1} GiB memory, Linux {}",
            m.cores,
            if m.cpu_model.is_empty() {
                String::new()
            } else {
                format!(" ({})", m.cpu_model)
            },
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            m.kernel
        );
        let _ = writeln!(s, "- command: `{}`", h.command);
        let _ = writeln!(
            s,
            "- N = {} viewers per scenario; every figure is the median of {} repeat{}, each against a fresh server process",
            group_digits(h.n),
            h.repeat,
            if h.repeat == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            "- the load generator runs on the same machine and competes with the server for the same {} cores: figures are what server and loadgen reach together, and ratios shrink towards 1 where the loadgen is the bottleneck",
            m.cores
        );
        let _ = writeln!(
            s,
            "- ratio columns read the same way everywhere: **> 1 means ovation did better** (ovation/peer for throughput, peer/ovation for latency, bytes and CPU time)"
        );
        for note in &h.notes {
            let _ = writeln!(s, "- {note}");
        }
        for sc in &self.scenarios {
            s.push('\n');
            s.push_str(&render_scenario(sc));
        }
        let _ = writeln!(s, "\n### Commands\n");
        let _ = writeln!(
            s,
            "Servers (each on port 0; `$TOKEN` is any 16+ character string):\n"
        );
        for (name, cmd) in &h.server_commands {
            let _ = writeln!(s, "- {name}: `{cmd}`");
        }
        let _ = writeln!(
            s,
            "\nLoadgen, per scenario (addresses are the ones the server printed):\n"
        );
        for sc in &self.scenarios {
            if sc.skipped.is_none() {
                let _ = writeln!(s, "- {}: `{}`", sc.name, sc.loadgen_command);
            }
        }
        s
    }

    /// The JSON document: everything in [`SuiteResult`] plus the combined values and ratios.
    pub fn json(&self) -> Value {
        let scenarios: Vec<Value> = self
            .scenarios
            .iter()
            .map(|sc| {
                let combined: BTreeMap<&str, BTreeMap<&str, Option<f64>>> = sc
                    .servers
                    .iter()
                    .map(|e| {
                        let values = sc.metrics.iter().map(|m| (m.key, e.value(m))).collect();
                        (e.server.name(), values)
                    })
                    .collect();
                let ratios: BTreeMap<&str, BTreeMap<&str, Option<f64>>> = sc
                    .peers_that_ran()
                    .into_iter()
                    .map(|p| {
                        let values = sc
                            .metrics
                            .iter()
                            .filter(|m| m.better != Better::Info)
                            .map(|m| (m.key, sc.ratio(m, p)))
                            .collect();
                        (p.name(), values)
                    })
                    .collect();
                let mut v = serde_json::to_value(sc).unwrap_or(Value::Null);
                v["combined"] = json!(combined);
                v["ratios_ovation_better_above_1"] = json!(ratios);
                v
            })
            .collect();
        json!({
            "schema": "ovation-bench/1",
            "header": self.header,
            "ovation_failed": self.ovation_failed(),
            "scenarios": scenarios,
        })
    }
}

fn render_scenario(sc: &ScenarioResult) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n", sc.title);
    let _ = writeln!(s, "{}\n", sc.description);
    if let Some(reason) = &sc.skipped {
        // "Poll storm: 15,000 voters" -> "poll storm: skipped (...)".
        let label = sc.title.split(':').next().unwrap_or(sc.name).to_lowercase();
        let _ = writeln!(s, "{label}: skipped ({reason})");
        return s;
    }
    let peers = sc.peers_that_ran();
    let mut head = vec!["metric".to_owned()];
    head.extend(sc.servers.iter().map(|e| e.server.name().to_owned()));
    if !peers.is_empty() {
        head.push("ratio".into());
        head.extend(peers.iter().map(|p| format!("vs {}", p.name())));
    }
    let mut align = vec!["---"];
    align.extend(std::iter::repeat_n("---:", head.len() - 1));
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "| {} |", align.join(" | "));
    let flagged: Vec<bool> = sc
        .servers
        .iter()
        .map(|e| !e.problems().is_empty())
        .collect();
    for m in &sc.metrics {
        let mut row = vec![format!("{}{}", m.label, better_hint(m.better))];
        for (e, flag) in sc.servers.iter().zip(&flagged) {
            row.push(match &e.entry {
                Entry::Ran { .. } => {
                    let v = e
                        .value(m)
                        .map_or("-".to_owned(), |v| format_value(m.unit, v));
                    if *flag {
                        format!("{v} †")
                    } else {
                        v
                    }
                }
                Entry::Skipped { .. } => "skipped".into(),
                Entry::NotApplicable { .. } => "n/a".into(),
            });
        }
        if !peers.is_empty() {
            row.push(
                match m.better {
                    Better::Higher => "ovation/peer",
                    Better::Lower => "peer/ovation",
                    Better::Info => "",
                }
                .into(),
            );
            for p in &peers {
                row.push(sc.ratio(m, *p).map_or_else(
                    || {
                        if m.better == Better::Info {
                            String::new()
                        } else {
                            "-".into()
                        }
                    },
                    |r| format!("{r:.2}×"),
                ));
            }
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    let mut notes = Vec::new();
    for e in &sc.servers {
        match &e.entry {
            Entry::Ran { .. } => {
                notes.extend(
                    e.problems()
                        .into_iter()
                        .map(|p| format!("† {}: {p}", e.server.name())),
                );
                notes.extend(
                    e.notes()
                        .into_iter()
                        .map(|p| format!("{}: {p}", e.server.name())),
                );
            }
            Entry::Skipped { reason } => {
                notes.push(format!("{}: skipped ({reason})", e.server.name()))
            }
            Entry::NotApplicable { reason } => {
                notes.push(format!("{}: n/a ({reason})", e.server.name()))
            }
        }
    }
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn better_hint(b: Better) -> &'static str {
    match b {
        Better::Higher => " (higher is better)",
        Better::Lower => " (lower is better)",
        Better::Info => "",
    }
}

/// A table cell.
pub fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::PerSecond | Unit::Bytes | Unit::Count => group_signed(v),
        Unit::Millis => {
            let a = v.abs();
            if a < 1.0 {
                format!("{v:.3}")
            } else if a < 10.0 {
                format!("{v:.2}")
            } else if a < 100.0 {
                format!("{v:.1}")
            } else {
                group_signed(v)
            }
        }
        Unit::MiB => format!("{v:.1}"),
        Unit::Seconds => format!("{v:.2}"),
        Unit::Percent => format!("{v:.2}%"),
    }
}

/// A rounded value with digit groups, negative values included (a kernel memory delta can
/// come out below zero when other sockets were freed meanwhile).
fn group_signed(v: f64) -> String {
    let r = v.round();
    if r < 0.0 {
        format!("-{}", group_digits(-r as u64))
    } else {
        group_digits(r as u64)
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch (proleptic Gregorian calendar).
pub fn format_utc(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Metric = Metric::new("rate", "delivered/s", Unit::PerSecond, Better::Higher);
    const P99: Metric = Metric::new("p99", "latency p99, ms", Unit::Millis, Better::Lower);
    const FAILS: Metric = Metric::new("fails", "failures", Unit::Count, Better::Info).worst();

    fn runs(values: &[(f64, f64, f64)]) -> Entry {
        Entry::Ran {
            runs: values
                .iter()
                .map(|(rate, p99, fails)| {
                    let mut r = RunResult::default();
                    r.set("rate", *rate);
                    r.set("p99", *p99);
                    r.set("fails", *fails);
                    r
                })
                .collect(),
        }
    }

    fn scenario() -> ScenarioResult {
        ScenarioResult {
            name: "fanout",
            title: "Fan-out".into(),
            description: "N viewers, K group-casts.".into(),
            metrics: vec![RATE, P99, FAILS],
            servers: vec![
                ServerEntry {
                    server: ServerKind::Ovation,
                    entry: runs(&[(300.0, 2.0, 0.0), (100.0, 1.0, 0.0), (200.0, 4.0, 1.0)]),
                },
                ServerEntry {
                    server: ServerKind::Fastwebsockets,
                    entry: runs(&[(100.0, 4.0, 3.0)]),
                },
                ServerEntry {
                    server: ServerKind::Ws,
                    entry: Entry::Skipped {
                        reason: "node is not on PATH".into(),
                    },
                },
            ],
            skipped: None,
            loadgen_command: "loadgen run".into(),
        }
    }

    #[test]
    fn medians_worst_and_ratios() {
        let sc = scenario();
        let ovation = &sc.servers[0];
        assert_eq!(ovation.value(&RATE), Some(200.0));
        assert_eq!(ovation.value(&P99), Some(2.0));
        assert_eq!(ovation.value(&FAILS), Some(1.0), "worst repeat");
        assert_eq!(sc.ratio(&RATE, ServerKind::Fastwebsockets), Some(2.0));
        assert_eq!(
            sc.ratio(&P99, ServerKind::Fastwebsockets),
            Some(2.0),
            "peer/ovation: > 1 means ovation is faster"
        );
        assert_eq!(sc.ratio(&FAILS, ServerKind::Fastwebsockets), None);
        assert_eq!(sc.ratio(&RATE, ServerKind::Ws), None, "skipped peer");
    }

    #[test]
    fn ratio_edge_cases() {
        assert_eq!(ratio(Better::Higher, 5.0, 0.0), None);
        assert_eq!(ratio(Better::Lower, 0.0, 5.0), None);
        assert_eq!(
            ratio(Better::Lower, 5.0, 0.0),
            None,
            "peer below resolution"
        );
        assert_eq!(ratio(Better::Lower, 4.0, 2.0), Some(0.5));
        assert_eq!(ratio(Better::Info, 4.0, 2.0), None);
        assert_eq!(ratio(Better::Higher, f64::NAN, 2.0), None);
    }

    #[test]
    fn markdown_table() {
        let sc = scenario();
        let text = render_scenario(&sc);
        assert!(
            text.contains("| metric | ovation | fastwebsockets | ws | ratio | vs fastwebsockets |")
        );
        assert!(text.contains("| --- | ---: | ---: | ---: | ---: | ---: |"));
        assert!(text.contains(
            "| delivered/s (higher is better) | 200 | 100 | skipped | ovation/peer | 2.00× |"
        ));
        assert!(text.contains(
            "| latency p99, ms (lower is better) | 2.00 | 4.00 | skipped | peer/ovation | 2.00× |"
        ));
        assert!(text.contains("| failures | 1 | 3 | skipped |  |  |"));
        assert!(text.contains("- ws: skipped (node is not on PATH)"));
    }

    #[test]
    fn problems_are_flagged_and_listed() {
        let mut sc = scenario();
        if let Entry::Ran { runs } = &mut sc.servers[0].entry {
            runs[1].problems.push("delivered 99 of 100".into());
            runs[2]
                .notes
                .push("loadgen errors: close_incomplete 1".into());
        }
        assert!(sc.ovation_failed());
        let text = render_scenario(&sc);
        assert!(text.contains("| 200 † |"));
        assert!(text.contains("- † ovation: repeat 2: delivered 99 of 100"));
        assert!(text.contains("- ovation: repeat 3: loadgen errors: close_incomplete 1"));
    }

    #[test]
    fn skipped_scenario_and_only_ovation() {
        let mut sc = scenario();
        sc.skipped = Some("server has no /api/polls".into());
        assert_eq!(
            render_scenario(&sc).lines().last(),
            Some("fan-out: skipped (server has no /api/polls)")
        );
        sc.skipped = None;
        sc.servers.truncate(1);
        let text = render_scenario(&sc);
        assert!(
            text.contains("| metric | ovation |\n"),
            "no ratio columns: {text}"
        );
    }

    #[test]
    fn json_has_combined_values_and_ratios() {
        let suite = SuiteResult {
            header: Header {
                date_utc: format_utc(0),
                machine: Machine::default(),
                command: "bench/run --smoke".into(),
                n: 200,
                repeat: 1,
                server_commands: vec![],
                notes: vec![],
            },
            scenarios: vec![scenario()],
        };
        let v = suite.json();
        assert_eq!(v["scenarios"][0]["combined"]["ovation"]["rate"], 200.0);
        assert_eq!(
            v["scenarios"][0]["ratios_ovation_better_above_1"]["fastwebsockets"]["p99"],
            2.0
        );
        assert_eq!(
            v["scenarios"][0]["servers"][2]["entry"]["status"],
            "skipped"
        );
        assert_eq!(v["ovation_failed"], false);
        assert!(suite.markdown().contains("- command: `bench/run --smoke`"));
    }

    #[test]
    fn number_formats() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(format_value(Unit::PerSecond, 152_340.4), "152,340");
        assert_eq!(format_value(Unit::Millis, 0.4123), "0.412");
        assert_eq!(format_value(Unit::Millis, 3.456), "3.46");
        assert_eq!(format_value(Unit::Millis, 45.67), "45.7");
        assert_eq!(format_value(Unit::Millis, 1234.4), "1,234");
        assert_eq!(format_value(Unit::Percent, 99.5), "99.50%");
        assert_eq!(format_value(Unit::Bytes, -3_210.0), "-3,210");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_763_731_380), "2025-11-21 13:23 UTC");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28 23:59 UTC");
    }
}
