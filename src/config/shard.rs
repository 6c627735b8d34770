//! The settings every shard gets, derived from the [`Config`].

use std::time::Duration;

use shards::config::ZeroCopy;
use shards::ShardConfig;

use super::Config;

impl Config {
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
            // Tallies twice per results interval: a push waits at most half an interval.
            tally_interval: Duration::from_millis((self.results_interval_ms / 2).max(10)),
            // The application core sets it from its persisted boot counter.
            id_epoch: 0,
            // Set by the server from the store; counted by the recorder the server starts.
            closed_polls: Default::default(),
            recordings_changes: Default::default(),
            hls_window: self.hls_window,
            hls_target_secs: self.hls_segment_ms.div_ceil(1000),
            hls_idle_timeout: Duration::from_millis(self.hls_idle_timeout_ms),
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .filter_map(|p| shards::proxy::Cidr::parse(p))
                .collect(),
            // The server opens the database once and shares it.
            geo: None,
            recordings_dir: self.record.then(|| self.data_dir.join("recordings")),
            zerocopy: ZeroCopy::parse(&self.zerocopy).unwrap_or(ZeroCopy::Auto),
            zerocopy_threshold: self.zerocopy_threshold_bytes,
            session_key: self
                .session_key
                .as_ref()
                .map(|k| shards::session_sign::SessionKey::new(k.as_bytes())),
            hls_require_session: self.hls_require_session,
            session_url_ttl_s: self.session_url_ttl_s,
            // Set by `identity_verifier` at start (it reads a key file).
            identity: None,
            // Votes are answered once stored only in a cluster (it has JetStream).
            durable_votes: self.cluster_nats_url.is_some(),
            addresses: Some(std::sync::Arc::new(shards::limits::AddressLimits::new(
                self.max_connections_per_address,
                self.handshakes_per_address_per_s,
                self.handshake_burst_per_address,
            ))),
        }
    }
}
