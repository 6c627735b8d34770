//! Per-shard settings, fixed at start.

use std::time::Duration;

use netstack::ws::Limits;

/// What every shard needs to know to serve viewers. Built by the binary from its configuration.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// The WebSocket path viewers connect to (`/v1/viewer`).
    pub path: String,
    /// Most open viewer connections over all shards together; more get HTTP 503. The cap is
    /// global because steering decides which shard a viewer lands on, not load.
    pub max_connections: usize,
    /// Longest time from accept to a complete upgrade request (slowloris guard).
    pub handshake_timeout: Duration,
    /// Largest upgrade request head; larger gets 431.
    pub max_header_bytes: usize,
    /// WebSocket frame and message size limits; larger gets close 1009.
    pub limits: Limits,
    /// Bytes that may wait in one viewer's send queue; a viewer over it is closed with 1008.
    pub send_queue_bytes: usize,
    /// A viewer silent this long gets a ping.
    pub ping_interval: Duration,
    /// A ping unanswered this long closes the viewer.
    pub pong_timeout: Duration,
    /// How long a closing viewer may take to answer our close frame.
    pub close_timeout: Duration,
    /// Most messages one viewer may send per second before it gets `rate_limited` errors.
    pub max_messages_per_sec: u32,
    /// How often the shard reports changed poll tallies to the application core.
    pub tally_interval: Duration,
    /// Id epoch of this boot, part of every viewer id the shards mint (see
    /// `protocol::ViewerId`): a boot with another epoch never mints an id an earlier boot
    /// used. The application core persists a boot counter and sets it; 0 by default.
    pub id_epoch: u32,
    /// Ids of polls closed in an earlier run (the store's newest): a vote for one gets
    /// `poll_closed`, not `unknown_poll`, from the first connection on.
    pub closed_polls: std::sync::Arc<std::collections::HashSet<Box<str>>>,
    /// Segments in each stream's live HLS window.
    pub hls_window: usize,
    /// Initial `EXT-X-TARGETDURATION` in seconds (the segment target, rounded up).
    pub hls_target_secs: u64,
    /// An HLS keep-alive connection idle this long is closed.
    pub hls_idle_timeout: Duration,
    /// Viewer identity (signed tokens) and its anonymous-viewer settings; `None` leaves
    /// every viewer anonymous, as before.
    pub identity: Option<std::sync::Arc<crate::identity::Verifier>>,
    /// Per-address connection cap and handshake rate, one state shared by every shard;
    /// `None` (or inactive limits) checks nothing.
    pub addresses: Option<std::sync::Arc<crate::limits::AddressLimits>>,
    /// Load balancers whose PROXY protocol header and `X-Forwarded-For` are believed.
    pub trusted_proxies: std::sync::Arc<[crate::proxy::Cidr]>,
    /// The country database, if one was opened.
    pub geo: Option<std::sync::Arc<crate::geo::GeoDb>>,
    /// Where recordings are (`<data_dir>/recordings`), served at `/hls/{stream}/rec/...`;
    /// None: recordings are not served.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// The recorder's count of finished jobs: a shard's cache of recorded files empties
    /// itself when it moves (`hls_file_cache`).
    pub recordings_changes: crate::hls_file_cache::Changes,
    /// Whether segment bodies go out with zero-copy sends (`IORING_OP_SEND_ZC`).
    pub zerocopy: ZeroCopy,
    /// Bodies at least this large use zero-copy sends; smaller ones plain sends.
    pub zerocopy_threshold: usize,
    /// In a cluster with JetStream: an anonymous vote is counted here at once but answered
    /// `voted` by the application core, only once it is stored durably
    /// ([`crate::proto::Request::DurableVote`]).
    pub durable_votes: bool,
    /// The HMAC key of signed session playlist URLs (`None`: session playlists unsigned,
    /// for in-memory tests; the server always sets one).
    pub session_key: Option<crate::session_sign::SessionKey>,
    /// Refuse (403) playlist requests that name no viewing session.
    pub hls_require_session: bool,
    /// How long a signed session URL is good for (`exp` less this is when it was signed).
    pub session_url_ttl_s: u64,
}

/// The `zerocopy` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Live segments with `sendfile` from read-only files the application core makes (in the
    /// data directory, else memfds); a segment without one with zero-copy sends when offered.
    Auto,
    /// Live segments with zero-copy sends (`IORING_OP_SEND_ZC`); a warning (and plain sends)
    /// when the kernel lacks them.
    On,
    /// Plain sends only.
    Off,
}

impl ZeroCopy {
    /// Parses `auto`, `on` or `off`.
    pub fn parse(text: &str) -> Option<ZeroCopy> {
        match text {
            "auto" => Some(ZeroCopy::Auto),
            "on" => Some(ZeroCopy::On),
            "off" => Some(ZeroCopy::Off),
            _ => None,
        }
    }
}

/// The `shard_sched` setting: the scheduling policy of the shard threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSched {
    /// `SCHED_OTHER` throughout: a shard's wake-up may preempt the task on its CPU.
    Normal,
    /// `SCHED_BATCH` while the shard takes a connect storm (its accept loop gathers) and
    /// until 500 ms after the storm's last connect; `SCHED_OTHER` otherwise.
    Storms,
    /// `SCHED_BATCH` throughout: a shard's wake-up never preempts the task on its CPU.
    Batch,
}

impl ShardSched {
    /// Parses `normal`, `storms` or `batch`.
    pub fn parse(text: &str) -> Option<ShardSched> {
        match text {
            "normal" => Some(ShardSched::Normal),
            "storms" => Some(ShardSched::Storms),
            "batch" => Some(ShardSched::Batch),
            _ => None,
        }
    }
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            path: "/v1/viewer".into(),
            max_connections: 1_000_000,
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 8 * 1024,
            limits: Limits::default(),
            send_queue_bytes: 256 * 1024,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(5),
            max_messages_per_sec: 50,
            tally_interval: Duration::from_millis(50),
            id_epoch: 0,
            closed_polls: Default::default(),
            hls_window: 6,
            hls_target_secs: 2,
            hls_idle_timeout: Duration::from_secs(30),
            identity: None,
            addresses: None,
            durable_votes: false,
            trusted_proxies: std::sync::Arc::new([]),
            geo: None,
            recordings_dir: None,
            recordings_changes: Default::default(),
            zerocopy: ZeroCopy::Auto,
            zerocopy_threshold: 10 * 1024,
            session_key: None,
            hls_require_session: false,
            session_url_ttl_s: 6 * 3600,
        }
    }
}
