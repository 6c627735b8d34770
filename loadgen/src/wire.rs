//! The coordinator <-> worker protocol: one JSON object per line.
//!
//! A worker process reads its [`WorkerSpec`] as the first line of stdin, then [`Command`]s;
//! it writes [`Event`]s to stdout. In-process workers (tests) exchange the same values over
//! channels, so both paths run the same worker code. Timestamps are CLOCK_MONOTONIC ns.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::WsTarget;
use crate::plan::{BehaviourMix, ProcessShare};
use crate::stats::MeasurementsWire;

/// Everything a worker needs to run its share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub share: ProcessShare,
    pub target: WsTarget,
    pub seed: u64,
    pub streams: Vec<String>,
    pub mix: BehaviourMix,
    /// In `--poll` mode, the stream that vote viewers watch instead of their profile's.
    pub poll_stream: Option<String>,
    pub telemetry_interval_ms: u64,
    pub connect_timeout_ms: u64,
    /// The worker ends by itself after this long even if the coordinator is gone.
    pub duration_max_ms: u64,
    /// How long a viewer waits for the server's answer to its close frame at stop.
    pub close_timeout_ms: u64,
}

impl WorkerSpec {
    pub fn telemetry_interval(&self) -> Duration {
        Duration::from_millis(self.telemetry_interval_ms.max(1))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.close_timeout_ms.max(1))
    }

    pub fn duration_max(&self) -> Duration {
        Duration::from_millis(self.duration_max_ms.max(1))
    }
}

/// Coordinator -> worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Begin opening connections.
    Start,
    /// Close every connection and report.
    Stop,
}

/// Running totals a worker reports while it works (only when they change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Connections currently open.
    pub live: u64,
    /// Open connections with behaviour vote (they should all receive the poll).
    pub voters: u64,
    pub delivered: u64,
    pub polls_received: u64,
    pub votes_sent: u64,
    pub votes_acked: u64,
    pub finals_received: u64,
}

impl Progress {
    pub fn add(&mut self, o: &Progress) {
        self.live += o.live;
        self.voters += o.voters;
        self.delivered += o.delivered;
        self.polls_received += o.polls_received;
        self.votes_sent += o.votes_sent;
        self.votes_acked += o.votes_acked;
        self.finals_received += o.finals_received;
    }
}

/// Worker -> coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The spec was accepted; waiting for [`Command::Start`].
    Ready,
    /// Every connection of this worker was attempted and has settled (welcome received and,
    /// for watchers, the watch answered; or failed).
    Connected {
        established: u64,
        failed: u64,
    },
    Progress(Progress),
    /// Final measurements; the worker exits after this.
    Result(Box<MeasurementsWire>),
    /// The worker could not run (bad spec, runtime failure).
    Fatal {
        message: String,
    },
}

impl Event {
    pub fn to_line(&self) -> String {
        // Serializing these plain data types cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"event":"fatal","message":"cannot encode event: {e}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Measurements;

    #[test]
    fn events_round_trip_as_lines() {
        let mut m = Measurements::default();
        m.counters.established = 3;
        m.handshake.record_us(1500);
        let events = vec![
            Event::Ready,
            Event::Connected {
                established: 3,
                failed: 1,
            },
            Event::Progress(Progress {
                delivered: 9,
                ..Progress::default()
            }),
            Event::Result(Box::new(m.to_wire().unwrap())),
            Event::Fatal {
                message: "x".into(),
            },
        ];
        for e in events {
            let line = e.to_line();
            assert!(!line.contains('\n'));
            let back: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(back, e);
        }
        let c: Command = serde_json::from_str(r#"{"cmd":"stop"}"#).unwrap();
        assert_eq!(c, Command::Stop);
    }
}
