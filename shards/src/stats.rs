//! Per-shard counters, written by the shard's thread only and read by anyone.
//!
//! Relaxed atomics on a cache line the shard owns: an uncontended add costs about as much as a
//! plain one, and the operator API reads them without asking the shard.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {
        /// Live counters of one shard.
        #[derive(Debug, Default)]
        pub struct ShardStats { $($(#[$doc])* pub $name: AtomicU64,)+ }

        /// A copy of [`ShardStats`] at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct StatsSnapshot { $(pub $name: u64,)+ }

        impl ShardStats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)+ }
            }
        }
    };
}

counters!(
    /// Open viewer connections (after the handshake).
    connections,
    /// TCP connections accepted.
    accepted,
    /// Of those, taken from a neighbour shard's backlog while that shard left them waiting.
    accepted_from_neighbour,
    /// Upgrade requests refused with an HTTP error status.
    handshake_rejected,
    /// Sockets closed at once, unanswered: accepted over `max_connections` while this shard's
    /// 503 answers were all busy, or accepted on the spare descriptor when `accept` failed
    /// with EMFILE/ENFILE.
    refused_unanswered,
    /// Handshakes that timed out or whose peer went away.
    handshake_aborted,
    /// Viewers closed because their send queue overflowed.
    closed_slow,
    /// Viewers closed because they did not answer a ping, or did not finish closing.
    closed_timeout,
    /// Viewers closed for a protocol violation (1002, 1007, 1009).
    closed_protocol,
    /// Viewers closed by server shutdown.
    closed_shutdown,
    /// WebSocket messages received from viewers.
    messages_in,
    /// Frames written (or queued) to viewers.
    frames_out,
    /// Group-casts executed on this shard.
    casts,
    /// HLS requests (playlists, segments, preflights) answered on this shard.
    hls_requests,
    /// Upgrades refused with 401: a missing (when anonymous viewers are off), malformed,
    /// expired or wrongly signed token.
    handshake_unauthorized,
    /// Viewers closed with 4001 because their token expired while connected.
    closed_token_expired,
    /// Connections refused because their source address already held
    /// `max_connections_per_address` (503, or closed unanswered on the TLS port).
    refused_address_cap,
    /// Connections refused by their source address's handshake rate limit (429, or closed
    /// unanswered on the TLS port).
    refused_rate_limited,
    /// Votes counted on this shard (changed votes included).
    votes,
    /// Telemetry reports folded on this shard.
    telemetry_reports,
    /// Segment body bytes sent zero-copy (`IORING_OP_SEND_ZC`).
    hls_bytes_zerocopy,
    /// Recorded segment body bytes sent with `sendfile(2)` from their files.
    hls_bytes_sendfile,
    /// Segment body bytes (live or recorded) sent with plain sends (below the threshold,
    /// zero-copy off or unavailable, or a full socket).
    hls_bytes_plain,
    /// Recorded files (segments, playlists) opened to answer a request: a request answered
    /// from the shard's cache of recorded files opens nothing.
    hls_files_opened,
    /// Commands taken from the application core's channel.
    commands,
    /// Heads-ups taken (`wake_shards_ahead`): the core began to read an operator's request
    /// while this shard slept, and the shard stayed awake for the command it announced.
    heads_ups,
    /// Of those, holds that ran out with no command (the request sent this shard nothing).
    heads_ups_unused,
);

impl ShardStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }
}
