//! The command line (`loadgen run ...`) and its validation into a [`RunPlan`].
//!
//! Every check that can fail happens here, before any process is spawned or socket opened,
//! so a bad flag costs nothing and says exactly what is wrong.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::plan::{default_processes, Behaviour, BehaviourMix, MAX_CONNECTIONS_PER_PROCESS};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Simulated viewers for ovation and peer servers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open viewer connections, drive behaviours, publish, measure, report.
    Run(Box<RunArgs>),
    /// HLS players: reload a live playlist and fetch every new segment, timed.
    Hls(crate::hls::HlsArgs),
    /// Internal: one worker process; reads its spec and commands on stdin, reports on stdout.
    #[command(hide = true)]
    Worker,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Viewer WebSocket URL (ws:// on a loopback address; profile query parameters are added).
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/viewer")]
    pub url: String,

    /// Number of viewer connections to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: u64,

    /// Connection rate over all processes, e.g. `2000` or `2000/s`.
    #[arg(long, default_value = "1000/s", value_parser = parse_rate)]
    pub rate: f64,

    /// Worker processes (default: one per 18,000 connections).
    #[arg(long)]
    pub processes: Option<u32>,

    /// Loopback source addresses to bind, round robin: ranges and lists such as
    /// `127.0.0.2-127.0.0.250`, `127.0.0.2-250,127.0.1.1`, or `none` for the kernel's choice.
    #[arg(long, default_value = "127.0.0.2-127.0.0.250", value_parser = parse_source_ips)]
    pub source_ips: SourceIps,

    /// Behaviour mix with weights, e.g. `idle`, `idle:70,vote:30`
    /// (behaviours: idle, watch, vote, telemetry).
    #[arg(long, alias = "behavior", default_value = "idle", value_parser = parse_mix)]
    pub behaviour: BehaviourMix,

    /// Streams viewers pick from (Zipf-weighted, first most popular), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "live-1,live-2,live-3")]
    pub streams: Vec<String>,

    /// Seconds to keep connections open once all are up (fractions allowed).
    #[arg(long, default_value = "0", value_parser = parse_seconds)]
    pub hold: Duration,

    /// Hard stop in seconds: the run ends by itself by then, whatever state it is in.
    #[arg(long, default_value = "300", value_parser = parse_seconds)]
    pub duration_max: Duration,

    /// Group-casts to publish after all viewers are connected.
    #[arg(long, default_value_t = 0)]
    pub publish_count: u64,

    /// Milliseconds between group-casts.
    #[arg(long, default_value_t = 100)]
    pub publish_interval_ms: u64,

    /// Operator API base URL (http:// on a loopback address).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub api: String,

    /// Bearer token for the operator API.
    #[arg(
        long,
        env = "OVATION_API_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub api_token: String,

    /// Group the publisher sends to.
    #[arg(long, default_value = "global")]
    pub group: String,

    /// Do not create the --streams through the API before connecting (by default they are
    /// created, 409 being fine, whenever viewers watch them: ovation answers a watch for an
    /// unknown stream with an error).
    #[arg(long)]
    pub no_create_streams: bool,

    /// Poll storm: create a stream and a poll, let vote viewers vote, close it, time the finals.
    #[arg(long)]
    pub poll: bool,

    /// Stream that the poll runs on (vote viewers watch it in --poll mode).
    #[arg(long, default_value = "loadgen-poll")]
    pub poll_stream: String,

    /// Number of choices in the poll.
    #[arg(long, default_value_t = 4)]
    pub poll_choices: u32,

    /// `duration_s` given when creating the poll (loadgen closes it explicitly before).
    #[arg(long, default_value_t = 60)]
    pub poll_duration_s: u64,

    /// Milliseconds between telemetry reports of telemetry viewers.
    #[arg(long, default_value_t = 1000)]
    pub telemetry_interval_ms: u64,

    /// Per-connection limit for TCP connect + upgrade + welcome, and for the watch answer.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,

    /// Seconds without progress after which a publish or poll phase stops waiting.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub drain_timeout: Duration,

    /// Seed for profiles, vote choices and telemetry values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write the figures as JSON to this path (schema in loadgen/README.md).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Do not print the summary (errors still go to stderr).
    #[arg(long)]
    pub quiet: bool,

    /// Run workers as threads of this process instead of child processes (tests, debugging).
    #[arg(long, hide = true)]
    pub in_process: bool,
}

/// A parsed `--source-ips` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(pub Vec<Ipv4Addr>);

/// Where the viewers connect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsTarget {
    pub addr: SocketAddrV4,
    /// `host[:port]` as written in the URL, for the request line and Host header.
    pub authority: String,
    /// Path plus any query from the URL (profile parameters are appended).
    pub path_and_query: String,
}

impl WsTarget {
    /// The URL for one viewer, with its profile's `stream` and `region` query parameters.
    pub fn viewer_url(&self, stream: &str, region: &str) -> String {
        let sep = if self.path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "ws://{}{}{}stream={}&region={}",
            self.authority, self.path_and_query, sep, stream, region
        )
    }
}

/// Where the operator API listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTarget {
    pub addr: SocketAddrV4,
    pub authority: String,
}

/// Group-cast publishing settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishPlan {
    pub count: u64,
    pub interval: Duration,
    pub group: String,
}

/// Poll storm settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PollPlan {
    pub stream: String,
    pub choices: u32,
    pub duration_s: u64,
}

/// A validated run.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub target: WsTarget,
    pub url: String,
    pub api: Option<HttpTarget>,
    pub api_token: String,
    pub connections: u64,
    pub rate: f64,
    pub processes: u32,
    pub source_ips: Vec<Ipv4Addr>,
    pub mix: BehaviourMix,
    pub streams: Vec<String>,
    pub hold: Duration,
    pub duration_max: Duration,
    pub publish: Option<PublishPlan>,
    pub poll: Option<PollPlan>,
    /// Create the `--streams` through the API before connecting.
    pub create_streams: bool,
    pub telemetry_interval: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub seed: u64,
    pub json: Option<PathBuf>,
    pub quiet: bool,
    pub in_process: bool,
}

impl RunArgs {
    /// Checks the arguments together and resolves defaults.
    pub fn validate(&self) -> Result<RunPlan, String> {
        let target = parse_ws_url(&self.url)?;
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        let processes = self
            .processes
            .unwrap_or_else(|| default_processes(self.connections));
        if processes == 0 {
            return Err("--processes must be at least 1".into());
        }
        if u64::from(processes) > self.connections {
            return Err(format!(
                "--processes {processes} is more than --connections {}",
                self.connections
            ));
        }
        let per_process = self.connections.div_ceil(u64::from(processes));
        if per_process > MAX_CONNECTIONS_PER_PROCESS {
            let needed = self.connections.div_ceil(MAX_CONNECTIONS_PER_PROCESS);
            return Err(format!(
                "{per_process} connections per process is above the limit of \
                 {MAX_CONNECTIONS_PER_PROCESS} (20,000 descriptors per process); \
                 use --processes {needed} or more"
            ));
        }
        if self.in_process && self.connections > MAX_CONNECTIONS_PER_PROCESS {
            // Worker threads share this process's descriptor table.
            return Err("--in-process shares one descriptor table; use child processes".into());
        }
        if self.streams.is_empty() || self.streams.iter().any(|s| !is_token(s)) {
            return Err(format!(
                "--streams needs one or more names of letters, digits, '-', '_' or '.': {:?}",
                self.streams
            ));
        }
        if self.duration_max.is_zero() {
            return Err("--duration-max must be more than 0 seconds".into());
        }
        if self.telemetry_interval_ms == 0 {
            return Err("--telemetry-interval-ms must be at least 1".into());
        }
        if self.connect_timeout_ms == 0 {
            return Err("--connect-timeout-ms must be at least 1".into());
        }
        let publish = if self.publish_count > 0 {
            if self.publish_interval_ms == 0 {
                return Err("--publish-interval-ms must be at least 1".into());
            }
            if !is_token(&self.group) {
                return Err(format!("--group {:?} is not a valid group id", self.group));
            }
            Some(PublishPlan {
                count: self.publish_count,
                interval: Duration::from_millis(self.publish_interval_ms),
                group: self.group.clone(),
            })
        } else {
            None
        };
        let poll = if self.poll {
            if self.behaviour.weight_of(Behaviour::Vote) == 0 {
                return Err(
                    "--poll needs voters: include vote in --behaviour, e.g. idle:70,vote:30".into(),
                );
            }
            if !is_token(&self.poll_stream) {
                return Err(format!(
                    "--poll-stream {:?} is not a valid stream id",
                    self.poll_stream
                ));
            }
            if !(2..=64).contains(&self.poll_choices) {
                return Err("--poll-choices must be between 2 and 64".into());
            }
            if self.poll_duration_s == 0 {
                return Err("--poll-duration-s must be at least 1".into());
            }
            Some(PollPlan {
                stream: self.poll_stream.clone(),
                choices: self.poll_choices,
                duration_s: self.poll_duration_s,
            })
        } else {
            None
        };
        let watches_streams = self.behaviour.weight_of(Behaviour::Watch) > 0
            || (poll.is_none() && self.behaviour.weight_of(Behaviour::Vote) > 0);
        let create_streams = watches_streams && !self.no_create_streams;
        let api = if publish.is_some() || poll.is_some() || create_streams {
            Some(parse_http_url(&self.api)?)
        } else {
            None
        };
        Ok(RunPlan {
            target,
            url: self.url.clone(),
            api,
            api_token: self.api_token.clone(),
            connections: self.connections,
            rate: self.rate,
            processes,
            source_ips: self.source_ips.0.clone(),
            mix: self.behaviour.clone(),
            streams: self.streams.clone(),
            hold: self.hold,
            duration_max: self.duration_max,
            publish,
            poll,
            create_streams,
            telemetry_interval: Duration::from_millis(self.telemetry_interval_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            drain_timeout: self.drain_timeout,
            seed: self.seed,
            json: self.json.clone(),
            quiet: self.quiet,
            in_process: self.in_process,
        })
    }
}

/// Ids we put into URLs and JSON without escaping.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `2000`, `2000/s`, `2.5/s`: connections per second, finite and positive.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let num = s.trim().strip_suffix("/s").unwrap_or(s.trim());
    let r: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("rate {s:?} is not a number (e.g. 2000 or 2000/s)"))?;
    if !r.is_finite() || r <= 0.0 {
        return Err(format!("rate must be more than 0 per second, got {s:?}"));
    }
    if r > 1_000_000.0 {
        return Err(format!("rate {r} is above 1,000,000/s"));
    }
    Ok(r)
}

/// Non-negative seconds, fractions allowed (`0.5`), at most a day.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("seconds must be 0 or more, got {s:?}"));
    }
    if v > 86_400.0 {
        return Err(format!("{v} seconds is more than a day"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_mix(s: &str) -> Result<BehaviourMix, String> {
    BehaviourMix::parse(s)
}

/// Most source addresses accepted (a /16 of loopback).
pub const MAX_SOURCE_IPS: usize = 65_536;

/// `none`, or a comma list of `A`, `A-B` (full addresses) or `A-N` (last octet).
/// Loopback (127.0.0.0/8) only: test traffic must stay on this host.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    if s.trim() == "none" {
        return Ok(SourceIps(Vec::new()));
    }
    let mut ips = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty entry in source addresses {s:?}"));
        }
        let (start, end) = match item.split_once('-') {
            Some((a, b)) => {
                let a = parse_loopback(a.trim())?;
                let b = b.trim();
                let b = if b.contains('.') {
                    parse_loopback(b)?
                } else {
                    let last: u8 = b
                        .parse()
                        .map_err(|_| format!("range end {b:?} is not an address or 0-255"))?;
                    let o = a.octets();
                    Ipv4Addr::new(o[0], o[1], o[2], last)
                };
                (a, b)
            }
            None => {
                let a = parse_loopback(item)?;
                (a, a)
            }
        };
        let (lo, hi) = (u32::from(start), u32::from(end));
        if lo > hi {
            return Err(format!("source range {item:?} runs backwards"));
        }
        let n = (hi - lo) as usize + 1;
        if ips.len() + n > MAX_SOURCE_IPS {
            return Err(format!("more than {MAX_SOURCE_IPS} source addresses"));
        }
        ips.extend((lo..=hi).map(Ipv4Addr::from));
    }
    Ok(SourceIps(ips))
}

fn parse_loopback(s: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))?;
    if !ip.is_loopback() {
        return Err(format!(
            "{ip} is not a loopback address (127.0.0.0/8); test traffic stays on this host"
        ));
    }
    Ok(ip)
}

/// Splits `scheme://authority/rest` and resolves the authority to a loopback socket address.
fn split_url<'a>(
    url: &'a str,
    scheme: &str,
    default_port: u16,
) -> Result<(SocketAddrV4, &'a str, &'a str), String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| format!("{url:?} must start with {scheme}:// (TLS is not supported)"))?;
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port {p:?} in {url:?} is not a number 0-65535"))?,
        ),
        None => (authority, default_port),
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse::<Ipv4Addr>().map_err(|_| {
            format!("host {host:?} in {url:?} must be localhost or an IPv4 loopback address")
        })?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "host {ip} in {url:?} is not loopback; test traffic stays on this host"
        ));
    }
    if port == 0 {
        return Err(format!("port 0 in {url:?}"));
    }
    Ok((SocketAddrV4::new(ip, port), authority, tail))
}

pub fn parse_ws_url(url: &str) -> Result<WsTarget, String> {
    let (addr, authority, tail) = split_url(url, "ws", 80)?;
    let path_and_query = if tail.is_empty() {
        "/".to_owned()
    } else if tail.starts_with('?') {
        format!("/{tail}")
    } else {
        tail.to_owned()
    };
    Ok(WsTarget {
        addr,
        authority: authority.to_owned(),
        path_and_query,
    })
}

pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let (addr, authority, tail) = split_url(url, "http", 80)?;
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "--api {url:?} should be a base URL without a path (http://HOST:PORT)"
        ));
    }
    Ok(HttpTarget {
        addr,
        authority: authority.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["loadgen", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Run(r) => Ok(*r),
            Command::Worker | Command::Hls(_) => unreachable!("parsed run"),
        }
    }

    #[test]
    fn defaults_validate() {
        let plan = run(&[]).unwrap().validate().unwrap();
        assert_eq!(plan.connections, 100);
        assert_eq!(plan.processes, 1);
        assert_eq!(plan.rate, 1000.0);
        assert_eq!(plan.source_ips.len(), 249);
        assert_eq!(plan.target.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(plan.target.path_and_query, "/v1/viewer");
        assert!(plan.publish.is_none() && plan.poll.is_none() && plan.api.is_none());
        assert!(!plan.create_streams, "idle viewers watch nothing");
        let watch = run(&["--behaviour", "idle:9,watch:1"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(watch.create_streams && watch.api.is_some());
        let no = run(&["--behaviour", "watch", "--no-create-streams"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(!no.create_streams && no.api.is_none());
        let poll = run(&["--behaviour", "vote", "--poll"])
            .unwrap()
            .validate()
            .unwrap();
        assert!(
            !poll.create_streams,
            "poll voters watch the poll stream only"
        );
    }

    #[test]
    fn full_command_line() {
        let plan = run(&[
            "--url",
            "ws://localhost:9000/v1/viewer?x=1",
            "--connections",
            "100000",
            "--rate",
            "5000/s",
            "--source-ips",
            "127.0.0.2-127.0.0.10,127.0.1.1",
            "--behaviour",
            "idle:70,vote:30",
            "--streams",
            "a,b",
            "--hold",
            "2.5",
            "--duration-max",
            "60",
            "--publish-count",
            "10",
            "--publish-interval-ms",
            "50",
            "--api",
            "http://127.0.0.1:8081",
            "--api-token",
            "secret",
            "--poll",
            "--json",
            "/tmp/x.json",
            "--quiet",
        ])
        .unwrap()
        .validate()
        .unwrap();
        assert_eq!(plan.processes, 6, "ceil(100000 / 18000)");
        assert_eq!(plan.rate, 5000.0);
        assert_eq!(plan.source_ips.len(), 10);
        assert_eq!(plan.hold, Duration::from_millis(2500));
        assert_eq!(plan.publish.as_ref().unwrap().count, 10);
        assert_eq!(plan.poll.as_ref().unwrap().stream, "loadgen-poll");
        assert_eq!(plan.api.as_ref().unwrap().addr.port(), 8081);
        assert_eq!(
            plan.target.viewer_url("a", "HU"),
            "ws://localhost:9000/v1/viewer?x=1&stream=a&region=HU"
        );
        assert!(plan.quiet);
    }

    #[test]
    fn rate_parsing() {
        assert_eq!(parse_rate("2000").unwrap(), 2000.0);
        assert_eq!(parse_rate("2.5/s").unwrap(), 2.5);
        for bad in ["0", "0/s", "-5", "nan", "inf", "fast", "", "/s", "2000000"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(run(&["--rate", "0"]).is_err());
    }

    #[test]
    fn source_ip_parsing() {
        assert_eq!(parse_source_ips("127.0.0.2-127.0.0.4").unwrap().0.len(), 3);
        assert_eq!(
            parse_source_ips("127.0.0.250-127.0.1.3").unwrap().0.len(),
            10,
            "ranges cross octets"
        );
        assert_eq!(
            parse_source_ips("127.0.0.2-5, 127.0.0.9").unwrap().0,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4),
                Ipv4Addr::new(127, 0, 0, 5),
                Ipv4Addr::new(127, 0, 0, 9),
            ]
        );
        assert!(parse_source_ips("none").unwrap().0.is_empty());
        for bad in [
            "",
            "127.0.0.5-127.0.0.2",
            "127.0.0.5-2",
            "10.0.0.1",
            "127.0.0.1-10.0.0.1",
            "127.0.0.300",
            "127.0.0.2-999",
            "localhost",
            "127.0.0.2,,127.0.0.3",
            "127.0.0.0-127.1.0.1",
        ] {
            assert!(parse_source_ips(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn url_validation() {
        assert!(parse_ws_url("wss://127.0.0.1/v1/viewer").is_err());
        assert!(parse_ws_url("http://127.0.0.1/v1/viewer").is_err());
        assert!(parse_ws_url("ws://192.168.1.1:8080/").is_err());
        assert!(parse_ws_url("ws://example.com/").is_err());
        assert!(parse_ws_url("ws://127.0.0.1:99999/").is_err());
        assert!(parse_ws_url("ws:///v1").is_err());
        let t = parse_ws_url("ws://127.0.0.3").unwrap();
        assert_eq!(t.addr, "127.0.0.3:80".parse().unwrap());
        assert_eq!(t.path_and_query, "/");
        assert!(parse_http_url("http://127.0.0.1:8081/").is_ok());
        assert!(parse_http_url("http://127.0.0.1:8081/api").is_err());
    }

    #[test]
    fn argument_combinations() {
        let bad = |args: &[&str]| run(args).map(|r| r.validate()).ok().map(|v| v.is_err());
        assert_eq!(bad(&["--connections", "0"]), Some(true));
        assert_eq!(bad(&["--connections", "5", "--processes", "6"]), Some(true));
        assert_eq!(bad(&["--processes", "0"]), Some(true));
        assert_eq!(
            bad(&["--connections", "40000", "--processes", "2"]),
            Some(true),
            "20,000 per process is over the descriptor limit"
        );
        assert_eq!(
            bad(&["--connections", "40000", "--processes", "3"]),
            Some(false)
        );
        assert_eq!(bad(&["--poll"]), Some(true), "poll needs voters");
        assert_eq!(bad(&["--poll", "--behaviour", "vote"]), Some(false));
        assert_eq!(
            bad(&["--poll", "--behaviour", "vote", "--poll-choices", "1"]),
            Some(true)
        );
        assert_eq!(
            bad(&["--publish-count", "3", "--api", "http://10.1.1.1:8081"]),
            Some(true)
        );
        assert_eq!(bad(&["--publish-count", "3", "--group", "a b"]), Some(true));
        assert_eq!(bad(&["--streams", ""]), Some(true));
        assert_eq!(bad(&["--streams", "ok,no/slash"]), Some(true));
        assert_eq!(bad(&["--duration-max", "0"]), Some(true));
        assert!(run(&["--hold", "-1"]).is_err());
        assert!(run(&["--behaviour", "idle:0"]).is_err());
        assert!(run(&["--behaviour", "sleep"]).is_err());
        assert!(run(&["--source-ips", "10.0.0.1-10.0.0.5"]).is_err());
        assert!(run(&["--connections", "-3"]).is_err());
    }

    #[test]
    fn worker_subcommand_is_hidden_but_parses() {
        let cli = Cli::try_parse_from(["loadgen", "worker"]).unwrap();
        assert!(matches!(cli.command, Command::Worker));
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("worker"));
    }
}
