//! The command-line flags: one optional override per setting of [`super::Config`], with its
//! `--help` text (flags win over the TOML file, the file over the embedded defaults).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

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
    /// Shard threads' policy: storms (SCHED_BATCH during connect storms: their wake-ups do
    /// not preempt other tasks on their CPUs), batch (always) or normal [default: storms].
    #[arg(long, value_name = "POLICY")]
    pub shard_sched: Option<String>,
    /// Wake sleeping shards as an API request other than GET/HEAD begins (on a connection
    /// whose last such request succeeded), so their wake-up overlaps its handling
    /// [default: true].
    #[arg(long, value_name = "BOOL")]
    pub wake_shards_ahead: Option<bool>,
    /// Let a shard take the connections its neighbour leaves waiting for 2 ms [default: true].
    #[arg(long, value_name = "BOOL")]
    pub accept_stealing: Option<bool>,
    /// Most viewer connections over all shards [default: the open-file limit less
    /// max(64, 2%)].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Listen backlog per shard [default: 4096].
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// io_uring depth of each executor's glommio rings (more buckets for pending polls: TLS
    /// HLS players, handshakes in progress) [default: 512].
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
    /// Media endpoint URL template with {stream}, {session}, {exp}, {sig} and {listen}
    /// [default: http://{listen}/hls/{stream}/index.m3u8?session={session}&exp={exp}&sig={sig}].
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
    /// TLS viewer listener address (wss://); needs --tls-cert and --tls-key [default: off].
    #[arg(long, value_name = "ADDR")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for the TLS listeners, re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listeners, re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// HS256 secret for viewer tokens (or OVATION_JWT_SECRET); turns identity on.
    #[arg(
        long,
        env = "OVATION_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_hs256_secret: Option<String>,
    /// PEM public key (RS256 or EdDSA) for viewer tokens; turns identity on.
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// With identity on: may viewers without a token connect? [default: true].
    #[arg(long, value_name = "BOOL")]
    pub anonymous_viewers: Option<bool>,
    /// With identity on: may viewers without a token vote? [default: true].
    #[arg(long, value_name = "BOOL")]
    pub anonymous_votes: Option<bool>,
    /// Most viewer connections per source address; 0 = no cap [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connections_per_address: Option<u32>,
    /// Viewer handshakes per second per source address; 0 = no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub handshakes_per_address_per_s: Option<u32>,
    /// Handshakes per source address at once before the rate applies [default: 20].
    #[arg(long, value_name = "N")]
    pub handshake_burst_per_address: Option<u32>,
    /// Most operator API connections per source address; 0 = no cap [default: 0].
    #[arg(long, value_name = "N")]
    pub api_max_connections_per_address: Option<u32>,
    /// Operator API connections per second per source address; 0 = no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub api_connections_per_address_per_s: Option<u32>,
    /// TLS listener of the operator API (https://); needs --tls-cert and --tls-key [default: off].
    #[arg(long, value_name = "ADDR")]
    pub api_tls_listen: Option<SocketAddr>,
    /// RTMPS ingest listener (rtmps://ADDR/live); needs --tls-cert and --tls-key [default: off].
    #[arg(long, value_name = "ADDR")]
    pub rtmps_listen: Option<SocketAddr>,
    /// Sliding telemetry windows in seconds, comma-separated [default: 10,60].
    #[arg(long, value_name = "S,S", value_delimiter = ',')]
    pub telemetry_windows_s: Option<Vec<u64>>,
    /// Read-only bearer token for GET /metrics (the API token works too).
    #[arg(long, value_name = "TOKEN", env = "OVATION_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
    /// Trusted load balancers: addresses or CIDR ranges, comma-separated [default: none].
    #[arg(long, value_name = "CIDR,CIDR", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// The country database (MaxMind format) [default: none].
    #[arg(long, value_name = "FILE")]
    pub geo_db: Option<PathBuf>,
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
    /// NATS server(s) joining this edge to a cluster, e.g. nats://127.0.0.1:4222
    /// [default: none, a single edge].
    #[arg(long, value_name = "URL")]
    pub cluster_nats_url: Option<String>,
    /// This edge's id in the cluster [default: edge- and 8 random hex digits].
    #[arg(long, value_name = "ID")]
    pub edge_id: Option<String>,
    /// How often this edge announces itself to the cluster, in ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub cluster_announce_ms: Option<u64>,
    /// How long a closing poll waits for other edges' final counts, in ms [default: 3000].
    #[arg(long, value_name = "MS")]
    pub cluster_final_wait_ms: Option<u64>,
    /// Address answering HAProxy's agent-check (TCP) [default: none].
    #[arg(long, value_name = "ADDR")]
    pub agent_listen: Option<SocketAddr>,
    /// Seconds a signed session playlist URL is good for [default: 21600].
    #[arg(long, value_name = "S")]
    pub session_url_ttl_s: Option<u64>,
    /// Target durations without a fetch before a session is stalled [default: 3].
    #[arg(long, value_name = "N")]
    pub session_stall_targets: Option<u64>,
    /// Seconds without a fetch before a session ends [default: 60].
    #[arg(long, value_name = "S")]
    pub session_end_s: Option<u64>,
    /// Refuse playlist requests that name no viewing session [default: false].
    #[arg(long, value_name = "BOOL")]
    pub hls_require_session: Option<bool>,
}
