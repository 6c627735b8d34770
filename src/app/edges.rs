//! The application core's view of the cluster: its bus (none for a single edge), the other
//! edges as they announce themselves, and the timing of announcements and final counts.
//!
//! Owns: the [`Bus`], the [`Peers`] registry, announcement and shutdown bookkeeping. Must not
//! touch: groups, polls or streams (the `impl App` in `cluster.rs` applies what edges say),
//! shard queues, the store.

use cluster::{Announce, Bus, LocalBus, Msg, Peer, Peers};

/// Announcements missed before an edge counts as gone.
const MISSED_ANNOUNCES: u64 = 3;

pub struct Edges {
    bus: Box<dyn Bus>,
    peers: Peers,
    pub announce_ms: u64,
    pub final_wait_ms: u64,
    /// The last announcement sent.
    pub last_announce_ms: u64,
    /// Shutting down: announce `draining`, finish polls without waiting for other edges.
    pub draining: bool,
}

impl Edges {
    /// A single edge (no bus).
    pub fn single(edge: &str, announce_ms: u64, final_wait_ms: u64) -> Edges {
        Edges {
            bus: Box::new(LocalBus::new(edge)),
            peers: Peers::default(),
            announce_ms,
            final_wait_ms,
            last_announce_ms: 0,
            draining: false,
        }
    }

    pub fn set_bus(&mut self, bus: Box<dyn Bus>) {
        self.bus = bus;
    }

    pub fn bus(&self) -> &dyn Bus {
        &*self.bus
    }

    /// Whether this edge is part of a cluster (it has a bus, connected or not).
    pub fn clustered(&self) -> bool {
        self.bus.mode() != "single"
    }

    pub fn edge(&self) -> &str {
        self.bus.edge()
    }

    pub fn publish(&self, msg: Msg) {
        if self.clustered() {
            self.bus.publish(msg);
        }
    }

    /// How long an edge may stay silent and still count as live.
    pub fn ttl_ms(&self) -> u64 {
        self.announce_ms.saturating_mul(MISSED_ANNOUNCES)
    }

    pub fn seen(&mut self, edge: &str, announce: Announce, now_ms: u64) {
        self.peers.seen(edge, announce, now_ms);
    }

    /// Forgets silent edges; returns their ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let ttl = self.ttl_ms();
        self.peers.expire(now_ms, ttl)
    }

    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &Peer> {
        self.peers.live(now_ms, self.ttl_ms())
    }

    /// Members of group `key` on the other live edges.
    pub fn remote_group_size(&self, key: &str, now_ms: u64) -> u64 {
        self.peers.group_size(key, now_ms, self.ttl_ms())
    }

    /// Live edges that announced `poll` as open.
    pub fn with_poll(&self, poll: &str, now_ms: u64) -> Vec<String> {
        self.peers.with_poll(poll, now_ms, self.ttl_ms())
    }
}
