//! The application core's view of the cluster: its bus (none for a single edge), the other
//! edges as they announce themselves, and the timing of announcements and final counts.
//!
//! Owns: the [`Bus`], the [`Peers`] registry, announcement and shutdown bookkeeping. Must not
//! touch: groups, polls or streams (the `impl App` in `cluster.rs` applies what edges say),
//! shard queues, the store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use cluster::{Announce, Bus, LocalBus, Msg, Peer, Peers};
use serde::{Deserialize, Serialize};
use shards::profile::Profile;
use shards::proto::ViewerRef;

/// Longest resume token looked up in the store (the shards issue 32 hex digits).
pub const MAX_TOKEN: usize = 128;

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
    /// Durable votes and cross-edge resumes (JetStream).
    pub durable: DurableState,
    /// Custom groups deleted in this process's life (newest last, at most
    /// [`TOMBSTONES`]): republished on every hello, so an edge cut off when one was deleted
    /// drops it when it comes back, and a cut-off edge's republished definition does not
    /// bring it back here. Keys are never reused (`g<n>-<edge>`, `n` rising).
    deleted_groups: VecDeque<String>,
}

/// Deleted custom groups remembered for reconciliation.
pub const TOMBSTONES: usize = 4096;

/// A viewer's durable record (JetStream key-value, keyed by a hash of its resume token):
/// what another edge needs to resume it after this edge is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewerRecord {
    pub edge: String,
    pub stream: Option<String>,
    pub tags: Vec<String>,
    pub app_version: Option<String>,
    pub hardware: Option<String>,
    pub region: Option<String>,
    pub sub: Option<String>,
    /// Its current choice in each poll, by poll id.
    pub votes: BTreeMap<String, u8>,
}

/// A vote waiting for its record to be stored before the viewer is answered.
#[derive(Debug)]
pub struct PendingVote {
    pub at: ViewerRef,
    pub poll: String,
    pub choice: u8,
}

/// A resume claim this edge did not know, waiting for the durable record.
#[derive(Debug)]
pub struct PendingClaim {
    pub at: ViewerRef,
    pub resume: Box<str>,
    pub profile: Profile,
    pub token: Box<str>,
}

#[derive(Debug, Default)]
pub struct DurableState {
    next_ticket: u64,
    pub votes: HashMap<u64, PendingVote>,
    pub claims: HashMap<u64, PendingClaim>,
    /// Final-count scans in flight: ticket -> poll.
    pub scans: HashMap<u64, String>,
    /// Records of this edge's voters, by resume token.
    pub records: HashMap<Box<str>, ViewerRecord>,
    /// Votes per poll not yet stored.
    pub unstored: HashMap<String, usize>,
    /// Polls with a vote that could not be stored: their final comes from the tallies.
    pub failed: HashSet<String>,
    /// Polls whose final tally waits for their votes to be stored.
    pub held_finals: HashSet<String>,
    /// Polls whose final count is being read from the store.
    pub scanning: HashSet<String>,
    /// Logged once: the store is failing.
    pub warned: bool,
    /// When `records` was last pruned of viewers gone past the resume window.
    pub records_pruned_ms: u64,
}

/// How often this edge's voter records are pruned.
pub const RECORDS_PRUNE_MS: u64 = 10_000;

impl DurableState {
    pub fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

/// The key of a viewer's record: a hash of its resume token (tokens are secrets, and keys
/// must be subject-safe).
pub fn record_key(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
            durable: DurableState::default(),
            deleted_groups: VecDeque::new(),
        }
    }

    /// Remembers that custom group `key` was deleted (see `deleted_groups`).
    pub fn group_deleted(&mut self, key: &str) {
        if self.is_deleted_group(key) {
            return;
        }
        if self.deleted_groups.len() == TOMBSTONES {
            self.deleted_groups.pop_front();
        }
        self.deleted_groups.push_back(key.to_owned());
    }

    pub fn is_deleted_group(&self, key: &str) -> bool {
        self.deleted_groups.iter().any(|k| k == key)
    }

    /// Deleted custom groups, oldest first.
    pub fn deleted_groups(&self) -> impl Iterator<Item = &str> {
        self.deleted_groups.iter().map(String::as_str)
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
