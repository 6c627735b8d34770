//! The link between ovation edges (seed 000, FIG. 1: the connection cluster 114 joined by a
//! fast lossless link 118) and each edge's load report to the balancer (108).
//!
//! Owns: the messages edges exchange ([`msg`]), the registry of live peers ([`peers`]), the
//! [`Bus`] the application core publishes to and receives from ([`LocalBus`] for a single
//! edge with no NATS at all; [`nats::NatsBus`] on its own thread and tokio runtime), and the
//! HAProxy agent-check answer ([`agent`]). Must not touch: the application core's state (it
//! only hands [`BusEvent`]s over a runtime-agnostic channel), shard queues, the store.
//!
//! Everything here but [`nats`] and [`agent::serve`] is pure: messages are values, the peer
//! registry and the agent's answer take the time and the load as arguments.

pub mod agent;
pub mod msg;
pub mod nats;
pub mod peers;

pub use flume;
pub use msg::{Announce, Envelope, Msg};
pub use peers::{Peer, Peers};

/// What the bus hands the application core.
#[derive(Debug, Clone, PartialEq)]
pub enum BusEvent {
    /// A message another edge published.
    Message(Envelope),
    /// The bus (re)connected: publish what the other edges may have missed.
    Connected,
    /// The bus lost its server: keep serving local viewers; nothing is published meanwhile.
    Disconnected,
    /// A [`Durable::Put`] was stored (`ok`) or could not be.
    Stored { ticket: u64, ok: bool },
    /// The answer to a [`Durable::Get`]: the record, if there is one.
    Found { ticket: u64, value: Option<Vec<u8>> },
    /// The answer to a [`Durable::Scan`]: every record, or `None` when the store failed.
    Scanned {
        ticket: u64,
        values: Option<Vec<Vec<u8>>>,
    },
}

/// Operations on the durable viewer records (a JetStream key-value bucket): each answers
/// with the [`BusEvent`] of the same ticket.
#[derive(Debug, Clone, PartialEq)]
pub enum Durable {
    /// Stores `value` under `key` (a subject-safe token, e.g. hex); answered once the
    /// server has it on disk.
    Put {
        ticket: u64,
        key: String,
        value: Vec<u8>,
    },
    Get {
        ticket: u64,
        key: String,
    },
    /// Every record.
    Scan {
        ticket: u64,
    },
}

/// Why the bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus thread or its runtime could not be started.
    #[error("starting the cluster bus thread: {0}")]
    Thread(std::io::Error),
    /// The NATS URL cannot be used.
    #[error("cluster_nats_url {url:?}: {reason}")]
    Url { url: String, reason: String },
}

/// The application core's side of the bus. Publishing never blocks and never fails loudly:
/// while the bus is down, messages are dropped (and counted), and the edge republishes its
/// state on [`BusEvent::Connected`].
pub trait Bus {
    /// `"single"` (no bus) or `"nats"`.
    fn mode(&self) -> &'static str;
    /// This edge's id.
    fn edge(&self) -> &str;
    /// Sends `msg` to every other edge.
    fn publish(&self, msg: Msg);
    /// Whether the bus is connected now.
    fn connected(&self) -> bool;
    /// Messages dropped because the bus was down or behind.
    fn dropped(&self) -> u64;
    /// Where incoming messages arrive (never yields for a single edge).
    fn events(&self) -> flume::Receiver<BusEvent>;
    /// Whether [`Bus::durable`] operations are available (JetStream).
    fn has_store(&self) -> bool {
        false
    }
    /// Queues a durable operation; its answer arrives on [`Bus::events`]. Refused at once
    /// (answered as failed) while the bus is down.
    fn durable(&self, _op: Durable) {}
}

/// A single edge: nothing goes out, nothing comes in.
#[derive(Debug)]
pub struct LocalBus {
    edge: String,
    /// Held so that `events()` receivers wait forever instead of ending.
    _keep: flume::Sender<BusEvent>,
    rx: flume::Receiver<BusEvent>,
}

impl LocalBus {
    pub fn new(edge: impl Into<String>) -> LocalBus {
        let (tx, rx) = flume::bounded(1);
        LocalBus {
            edge: edge.into(),
            _keep: tx,
            rx,
        }
    }
}

impl Bus for LocalBus {
    fn mode(&self) -> &'static str {
        "single"
    }
    fn edge(&self) -> &str {
        &self.edge
    }
    fn publish(&self, _msg: Msg) {}
    fn connected(&self) -> bool {
        false
    }
    fn dropped(&self) -> u64 {
        0
    }
    fn events(&self) -> flume::Receiver<BusEvent> {
        self.rx.clone()
    }
}

/// Whether `id` is usable as an edge id: 1 to 32 of `[A-Za-z0-9_-]` (it is part of NATS
/// subjects and of group keys).
pub fn valid_edge_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_edge_bus_sends_nothing_and_receives_nothing() {
        let bus = LocalBus::new("e1");
        bus.publish(Msg::GroupDeleted { key: "g1".into() });
        assert_eq!(bus.mode(), "single");
        assert!(!bus.connected());
        assert!(bus.events().try_recv().is_err());
    }

    #[test]
    fn edge_ids_are_subject_safe() {
        assert!(valid_edge_id("edge-1_a"));
        assert!(!valid_edge_id(""));
        assert!(!valid_edge_id("a.b"));
        assert!(!valid_edge_id("a b"));
        assert!(!valid_edge_id(&"x".repeat(33)));
    }
}
