//! Configuration: embedded defaults, overridden by a TOML file (`--config`), overridden by
//! command-line flags (and `OVATION_API_TOKEN` for the token).
//!
//! Every setting has one name, used both as the TOML key and (with `-` for `_`) as the flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use shards::config::ZeroCopy;
use shards::ShardConfig;

/// The default `media_url`: the live playlist, served by the shards on the viewer address
/// (`{listen}` is the bound viewer address).
pub const DEFAULT_MEDIA_URL: &str = "http://{listen}/hls/{stream}/index.m3u8?session={session}";

/// Every setting, with the embedded defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address viewers connect to.
    pub listen: SocketAddr,
    /// Address of the operator API.
    pub api_listen: SocketAddr,
    /// WebSocket path for viewers.
    pub viewer_path: String,
    /// Number of shards; 0 means one per online CPU.
    pub shards: usize,
    /// Steer each connection to the shard on the CPU that received its packets.
    pub cpu_steering: bool,
    /// Most viewer connections (open or handshaking) over all shards. Defaults to the
    /// process's open-file limit less a reserve of max(64, 2%) descriptors for the API, the
    /// 503 answers, the store and logs (`limits::derived_max_connections`).
    pub max_connections: usize,
    /// Listen backlog of each shard's listener.
    pub backlog: i32,
    /// io_uring depth of each shard's rings. Every idle viewer has one readiness poll pending
    /// in its shard's ring, and the kernel files pending polls in a hash table whose bucket
    /// count grows with the ring (ilog2(cq entries) - 5 bits, at most 8). glommio cancels a
    /// preemption timer on most scheduling rounds, and each cancel walks one bucket: at
    /// glommio's default depth of 128 that is 8 buckets; 4096 gives the 256-bucket maximum for
    /// about 400 KiB per ring.
    pub ring_depth: usize,
    /// Longest time a client may take to send its upgrade request.
    pub handshake_timeout_ms: u64,
    /// Largest upgrade request head (bytes); larger gets HTTP 431.
    pub max_header_bytes: usize,
    /// Largest WebSocket frame payload a viewer may send (bytes); larger gets close 1009.
    pub max_frame_bytes: usize,
    /// Largest reassembled WebSocket message (bytes); larger gets close 1009.
    pub max_message_bytes: usize,
    /// Bytes that may wait in one viewer's send queue before it is closed as too slow (1008).
    pub send_queue_bytes: usize,
    /// Ping a viewer after this many seconds of silence.
    pub ping_interval_s: u64,
    /// Close a viewer that has not answered a ping within this many seconds.
    pub pong_timeout_s: u64,
    /// How long a closing viewer may take to answer our close frame.
    pub close_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long to wait for viewers to finish closing.
    pub shutdown_grace_ms: u64,
    /// Most messages one viewer may send per second.
    pub max_messages_per_sec: u32,
    /// Bearer token of the operator API; generated and written to the data directory if unset.
    pub api_token: Option<String>,
    /// Where ovation keeps its files (generated API token, poll results).
    pub data_dir: PathBuf,
    /// Template of the media endpoint URL sent to viewers: `{stream}`, `{session}` and
    /// `{listen}` (the bound viewer address) are replaced. The default is the live playlist
    /// the shards serve on the viewer address.
    pub media_url: String,
    /// Live poll results are pushed at most once per this interval.
    pub results_interval_ms: u64,
    /// How long a departed viewer may come back with its resume token and keep its identity,
    /// groups and votes.
    pub resume_window_s: u64,
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `ovation=debug`).
    pub log: String,
    /// Open polls whose counts changed are checkpointed to the store at most this often: a
    /// crash loses at most this long of votes.
    pub poll_checkpoint_ms: u64,
    /// Most departed viewers kept for a resume; the oldest are dropped first.
    pub resume_max_departed: usize,
    /// Most bytes departed viewers may hold for a resume; the oldest are dropped first.
    pub resume_max_bytes: usize,
    /// Most open operator API connections (broadcaster sockets included); beyond it a new
    /// connection is answered 503 and closed.
    pub api_max_connections: usize,
    /// Most custom groups the API may create; beyond it `POST /api/groups` gets 429.
    pub max_groups: usize,
    /// Most broadcaster sockets following one stream; beyond it the upgrade gets 429.
    pub max_broadcasters_per_stream: usize,
    /// Address of the RTMP ingest listener (broadcasters publish to `rtmp://ADDR/live` with
    /// the stream key as the stream name).
    pub rtmp_listen: SocketAddr,
    /// Most RTMP connections at once (handshaking or publishing); more are closed at accept.
    pub rtmp_max_connections: usize,
    /// Longest time an RTMP client may take from accept to a completed handshake.
    pub rtmp_handshake_timeout_ms: u64,
    /// An RTMP connection silent this long is closed; a publish on it ends.
    pub rtmp_idle_timeout_ms: u64,
    /// Segments are cut at the first keyframe after this much media time.
    pub hls_segment_ms: u64,
    /// Segments listed in a live playlist (and held in memory by every shard).
    pub hls_window: usize,
    /// An HLS keep-alive connection idle this long is closed.
    pub hls_idle_timeout_ms: u64,
    /// Record every live stream under `<data_dir>/recordings/`.
    pub record: bool,
    /// Retention: the oldest finished recordings are removed while all together hold more
    /// than this many bytes (0: no limit).
    pub recording_max_bytes: u64,
    /// Retention: finished recordings that started longer ago than this are removed
    /// (seconds; 0: no limit).
    pub recording_max_age_s: u64,
    /// Segment bodies sent with `IORING_OP_SEND_ZC`: `auto` (when the kernel offers it),
    /// `on` (warns when it does not), `off`.
    pub zerocopy: String,
    /// Bodies at least this many bytes use zero-copy sends (the kernel documents a gain only
    /// above roughly 10 KB); smaller ones plain sends.
    pub zerocopy_threshold_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        let shard = ShardConfig::default();
        Config {
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            api_listen: "127.0.0.1:8081".parse().expect("literal address"),
            viewer_path: shard.path,
            shards: 0,
            cpu_steering: true,
            max_connections: usize::try_from(crate::limits::default_max_connections())
                .unwrap_or(usize::MAX),
            backlog: 4096,
            ring_depth: 4096,
            handshake_timeout_ms: shard.handshake_timeout.as_millis() as u64,
            max_header_bytes: shard.max_header_bytes,
            max_frame_bytes: shard.limits.max_frame,
            max_message_bytes: shard.limits.max_message,
            send_queue_bytes: shard.send_queue_bytes,
            ping_interval_s: shard.ping_interval.as_secs(),
            pong_timeout_s: shard.pong_timeout.as_secs(),
            close_timeout_ms: shard.close_timeout.as_millis() as u64,
            shutdown_grace_ms: 10_000,
            max_messages_per_sec: shard.max_messages_per_sec,
            api_token: None,
            data_dir: PathBuf::from("ovation-data"),
            media_url: DEFAULT_MEDIA_URL.into(),
            results_interval_ms: 100,
            resume_window_s: 300,
            log: "info".into(),
            poll_checkpoint_ms: 1000,
            resume_max_departed: 100_000,
            resume_max_bytes: 64 * 1024 * 1024,
            api_max_connections: 256,
            max_groups: 10_000,
            max_broadcasters_per_stream: 16,
            rtmp_listen: "127.0.0.1:1935".parse().expect("literal address"),
            rtmp_max_connections: 64,
            rtmp_handshake_timeout_ms: 10_000,
            rtmp_idle_timeout_ms: 10_000,
            hls_segment_ms: 2_000,
            hls_window: 6,
            hls_idle_timeout_ms: 30_000,
            record: true,
            recording_max_bytes: 10 * 1024 * 1024 * 1024,
            recording_max_age_s: 0,
            zerocopy: "auto".into(),
            zerocopy_threshold_bytes: 10 * 1024,
        }
    }
}

/// Command-line overrides: one optional flag per setting.
#[derive(Args, Debug, Default, Clone)]
pub struct Overrides {
    /// TOML file with any of the settings below (flags win over the file).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address viewers connect to [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the operator API [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// WebSocket path for viewers [default: /v1/viewer].
    #[arg(long, value_name = "PATH")]
    pub viewer_path: Option<String>,
    /// Number of shards; 0 = one per online CPU [default: 0].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Steer connections to the shard on the CPU that received their packets [default: true].
    #[arg(long, value_name = "BOOL")]
    pub cpu_steering: Option<bool>,
    /// Most viewer connections over all shards [default: the open-file limit less
    /// max(64, 2%)].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Listen backlog per shard [default: 4096].
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// io_uring depth of each shard's rings (more buckets for the pending polls of idle
    /// viewers) [default: 4096].
    #[arg(long, value_name = "N")]
    pub ring_depth: Option<usize>,
    /// Time allowed for the upgrade request, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// Largest upgrade request head in bytes; larger gets 431 [default: 8192].
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Largest frame payload a viewer may send; larger gets close 1009 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Largest reassembled message; larger gets close 1009 [default: 262144].
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Send queue bound per viewer; a viewer over it is closed with 1008 [default: 262144].
    #[arg(long, value_name = "BYTES")]
    pub send_queue_bytes: Option<usize>,
    /// Ping a silent viewer after this many seconds [default: 30].
    #[arg(long, value_name = "S")]
    pub ping_interval_s: Option<u64>,
    /// Close a viewer that leaves a ping unanswered this long [default: 15].
    #[arg(long, value_name = "S")]
    pub pong_timeout_s: Option<u64>,
    /// Time a closing viewer has to answer our close frame, in ms [default: 5000].
    #[arg(long, value_name = "MS")]
    pub close_timeout_ms: Option<u64>,
    /// Time viewers get to close on SIGTERM/SIGINT, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Most messages one viewer may send per second [default: 50].
    #[arg(long, value_name = "N")]
    pub max_messages_per_sec: Option<u32>,
    /// Bearer token for the operator API (or OVATION_API_TOKEN); generated if unset.
    #[arg(
        long,
        env = "OVATION_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Directory for ovation's files [default: ovation-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Media endpoint URL template with {stream}, {session} and {listen} [default:
    /// http://{listen}/hls/{stream}/index.m3u8?session={session}].
    #[arg(long, value_name = "URL")]
    pub media_url: Option<String>,
    /// Live poll results at most once per this many ms [default: 100].
    #[arg(long, value_name = "MS")]
    pub results_interval_ms: Option<u64>,
    /// Seconds a departed viewer may resume with its token [default: 300].
    #[arg(long, value_name = "S")]
    pub resume_window_s: Option<u64>,
    /// Log filter, e.g. info or ovation=debug [default: info; RUST_LOG wins].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Checkpoint changed open polls to the store at most every this many ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub poll_checkpoint_ms: Option<u64>,
    /// Most departed viewers kept for a resume [default: 100000].
    #[arg(long, value_name = "N")]
    pub resume_max_departed: Option<usize>,
    /// Most bytes departed viewers may hold [default: 67108864 (64 MiB)].
    #[arg(long, value_name = "BYTES")]
    pub resume_max_bytes: Option<usize>,
    /// Most open operator API connections, broadcaster sockets included; more get 503
    /// [default: 256].
    #[arg(long, value_name = "N")]
    pub api_max_connections: Option<usize>,
    /// Most custom groups the API may create; more get 429 [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_groups: Option<usize>,
    /// Most broadcaster sockets per stream; more get 429 [default: 16].
    #[arg(long, value_name = "N")]
    pub max_broadcasters_per_stream: Option<usize>,
    /// Address of the RTMP ingest listener [default: 127.0.0.1:1935].
    #[arg(long, value_name = "ADDR")]
    pub rtmp_listen: Option<SocketAddr>,
    /// Most RTMP connections at once [default: 64].
    #[arg(long, value_name = "N")]
    pub rtmp_max_connections: Option<usize>,
    /// Time an RTMP client has to complete its handshake, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub rtmp_handshake_timeout_ms: Option<u64>,
    /// Close an RTMP connection silent this long, ending its publish, in ms [default: 10000].
    #[arg(long, value_name = "MS")]
    pub rtmp_idle_timeout_ms: Option<u64>,
    /// HLS segment target duration in ms (cut at the next keyframe) [default: 2000].
    #[arg(long, value_name = "MS")]
    pub hls_segment_ms: Option<u64>,
    /// Segments in a live playlist window [default: 6].
    #[arg(long, value_name = "N")]
    pub hls_window: Option<usize>,
    /// Close an idle HLS keep-alive connection after this many ms [default: 30000].
    #[arg(long, value_name = "MS")]
    pub hls_idle_timeout_ms: Option<u64>,
    /// Record every live stream under DATA_DIR/recordings [default: true].
    #[arg(long, value_name = "BOOL")]
    pub record: Option<bool>,
    /// Prune the oldest recordings past this many bytes in all, 0 for no limit
    /// [default: 10737418240].
    #[arg(long, value_name = "BYTES")]
    pub recording_max_bytes: Option<u64>,
    /// Prune recordings older than this many seconds, 0 for no limit [default: 0].
    #[arg(long, value_name = "S")]
    pub recording_max_age_s: Option<u64>,
    /// Zero-copy segment sends: auto, on or off [default: auto].
    #[arg(long, value_name = "MODE")]
    pub zerocopy: Option<String>,
    /// Smallest body sent zero-copy, in bytes [default: 10240].
    #[arg(long, value_name = "BYTES")]
    pub zerocopy_threshold_bytes: Option<usize>,
}

macro_rules! apply {
    ($cfg:ident, $o:ident, $($field:ident),+) => {
        $(if let Some(v) = $o.$field.clone() { $cfg.$field = v; })+
    };
}

impl Config {
    /// Defaults, then the file named by `--config`, then the flags.
    pub fn load(o: &Overrides) -> anyhow::Result<Config> {
        let mut cfg = match &o.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        apply!(
            cfg,
            o,
            listen,
            api_listen,
            viewer_path,
            shards,
            cpu_steering,
            max_connections,
            backlog,
            ring_depth,
            handshake_timeout_ms,
            max_header_bytes,
            max_frame_bytes,
            max_message_bytes,
            send_queue_bytes,
            ping_interval_s,
            pong_timeout_s,
            close_timeout_ms,
            shutdown_grace_ms,
            max_messages_per_sec,
            data_dir,
            media_url,
            results_interval_ms,
            resume_window_s,
            log,
            poll_checkpoint_ms,
            resume_max_departed,
            resume_max_bytes,
            api_max_connections,
            max_groups,
            max_broadcasters_per_stream,
            rtmp_listen,
            rtmp_max_connections,
            rtmp_handshake_timeout_ms,
            rtmp_idle_timeout_ms,
            hls_segment_ms,
            hls_window,
            hls_idle_timeout_ms,
            record,
            recording_max_bytes,
            recording_max_age_s,
            zerocopy,
            zerocopy_threshold_bytes
        );
        if o.api_token.is_some() {
            cfg.api_token = o.api_token.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Rejects settings the server cannot run with, naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.viewer_path.starts_with('/') {
            bail!("viewer_path must start with '/': {:?}", self.viewer_path);
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.backlog <= 0 {
            bail!("backlog must be at least 1");
        }
        if !(16..=32768).contains(&self.ring_depth) {
            bail!("ring_depth must be between 16 and 32768");
        }
        if self.max_header_bytes < 256 {
            bail!("max_header_bytes must be at least 256");
        }
        if self.max_frame_bytes < 125 || self.max_message_bytes < self.max_frame_bytes {
            bail!("need 125 <= max_frame_bytes <= max_message_bytes");
        }
        if self.send_queue_bytes < 4096 {
            bail!("send_queue_bytes must be at least 4096");
        }
        for (name, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("ping_interval_s", self.ping_interval_s),
            ("pong_timeout_s", self.pong_timeout_s),
            ("close_timeout_ms", self.close_timeout_ms),
            ("results_interval_ms", self.results_interval_ms),
            ("poll_checkpoint_ms", self.poll_checkpoint_ms),
            ("rtmp_handshake_timeout_ms", self.rtmp_handshake_timeout_ms),
            ("rtmp_idle_timeout_ms", self.rtmp_idle_timeout_ms),
            ("hls_idle_timeout_ms", self.hls_idle_timeout_ms),
        ] {
            if v == 0 {
                bail!("{name} must be greater than 0");
            }
        }
        if let Some(t) = &self.api_token {
            if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                bail!("api_token must be at least 16 printable ASCII characters without spaces");
            }
        }
        for (name, v) in [
            ("api_max_connections", self.api_max_connections),
            ("max_groups", self.max_groups),
            (
                "max_broadcasters_per_stream",
                self.max_broadcasters_per_stream,
            ),
            ("rtmp_max_connections", self.rtmp_max_connections),
            ("hls_window", self.hls_window),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if !(500..=60_000).contains(&self.hls_segment_ms) {
            bail!("hls_segment_ms must be between 500 and 60000");
        }
        if ZeroCopy::parse(&self.zerocopy).is_none() {
            bail!("zerocopy must be auto, on or off: {:?}", self.zerocopy);
        }
        if self.hls_window > 100 {
            bail!("hls_window must be at most 100");
        }
        Ok(())
    }

    /// The settings every shard gets.
    pub fn shard_config(&self) -> ShardConfig {
        ShardConfig {
            path: self.viewer_path.clone(),
            max_connections: self.max_connections,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            max_header_bytes: self.max_header_bytes,
            limits: netstack::ws::Limits {
                max_frame: self.max_frame_bytes,
                max_message: self.max_message_bytes,
            },
            send_queue_bytes: self.send_queue_bytes,
            ping_interval: Duration::from_secs(self.ping_interval_s),
            pong_timeout: Duration::from_secs(self.pong_timeout_s),
            close_timeout: Duration::from_millis(self.close_timeout_ms),
            max_messages_per_sec: self.max_messages_per_sec,
            // Shards report tallies twice per results interval, so a push never waits for
            // more than half an interval of shard-side coalescing.
            tally_interval: Duration::from_millis((self.results_interval_ms / 2).max(10)),
            // The application core sets it from its persisted boot counter.
            id_epoch: 0,
            // The server sets it from the store.
            closed_polls: Default::default(),
            hls_window: self.hls_window,
            hls_target_secs: self.hls_segment_ms.div_ceil(1000),
            hls_idle_timeout: Duration::from_millis(self.hls_idle_timeout_ms),
            recordings_dir: self.record.then(|| self.data_dir.join("recordings")),
            zerocopy: ZeroCopy::parse(&self.zerocopy).unwrap_or(ZeroCopy::Auto),
            zerocopy_threshold: self.zerocopy_threshold_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.api_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.viewer_path, "/v1/viewer");
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("ovation-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("o.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nshards = 3\nping_interval_s = 5\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path.clone()),
            shards: Some(2),
            ..Default::default()
        };
        let c = Config::load(&o).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.shards, 2, "flag wins over file");
        assert_eq!(c.ping_interval_s, 5);
        std::fs::write(&path, "listen = 5\n").unwrap();
        let err = format!("{:#}", Config::load(&o).unwrap_err());
        assert!(err.contains("listen"), "{err}");
        std::fs::write(&path, "nonsense = 1\n").unwrap();
        let err = format!("{:#}", Config::load(&o).unwrap_err());
        assert!(err.contains("nonsense"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_settings_are_named() {
        let c = Config {
            pong_timeout_s: 0,
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pong_timeout_s"));
        let c = Config {
            api_token: Some("short".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("api_token"));
    }
}
