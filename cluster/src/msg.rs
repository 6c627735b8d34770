//! The messages edges exchange, as JSON on NATS subjects `ovation.<kind>`.
//!
//! Every message is wrapped in an [`Envelope`] naming the edge that sent it; an edge ignores
//! its own. What each subject guarantees is in docs/cluster.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The prefix of every subject; edges subscribe to `ovation.>`.
pub const SUBJECT_PREFIX: &str = "ovation";

/// Largest message an edge accepts from the bus (anything larger is dropped, logged once).
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// A message and the edge that sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub msg: Msg,
}

/// An edge's periodic report of itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Announce {
    /// Where viewers reach it (WebSocket and HLS).
    pub viewer: String,
    /// Its operator API (origin-edge pulls and operators).
    pub api: String,
    /// Viewers connected now.
    pub viewers: u64,
    /// Connections against capacity, 0 to 100.
    pub load: u8,
    /// Whether it is draining (shutting down).
    pub draining: bool,
    /// The size of each of its custom and stream groups, by key.
    pub groups: BTreeMap<String, u64>,
    /// Polls open on it.
    pub polls: Vec<String>,
    /// Streams live with it as their origin (ingested or rebroadcast there), each with its
    /// publish id (as in [`Msg::Live`]): an edge that joined late or missed a `Live` while
    /// the bus was down learns them here.
    #[serde(default)]
    pub live: BTreeMap<String, u64>,
}

/// What edges tell each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// Sent every `cluster_announce_ms`.
    Announce(Announce),
    /// Sent on (re)connecting to the bus: every edge that hears it publishes its state
    /// again (streams, custom groups, open polls, counts), so whichever edge reconnects last
    /// still learns what the others made while the bus was down.
    Hello,
    /// A custom group exists (created on the sender, or republished on reconnect).
    Group {
        key: String,
        name: String,
        /// The predicate, in its stored JSON form.
        predicate: Value,
        created_ms: u64,
    },
    /// A custom group was deleted.
    GroupDeleted { key: String },
    /// A group-cast: each edge encodes the payload once and casts it to its own members.
    Cast { key: String, payload: Value },
    /// A registered stream (its key's SHA-256 only), so a publish and viewers work anywhere.
    Stream {
        id: String,
        title: Option<String>,
        key_sha256: String,
        created_ms: u64,
    },
    /// A poll opened on the sender: every edge runs it for its own audience.
    PollOpened {
        id: String,
        stream: String,
        question: String,
        choices: Vec<String>,
        /// The audience filter, in its stored JSON form.
        filter: Option<Value>,
        breakdown: Option<String>,
        created_ms: u64,
        closes_at_ms: u64,
    },
    /// A stream went live with the sender as its origin: the other edges pull its playlist
    /// and segments from the sender's API address `api` (origin-edge pull over HTTP).
    /// `publish` identifies this publish (it rises with each one, across restarts of the
    /// origin): a repeat of the same `Live` (on `hello`) is not a new publish.
    Live {
        stream: String,
        api: String,
        publish: u64,
    },
    /// The stream whose origin is the sender ended there.
    Ended { stream: String },
    /// Stop voting on a poll everywhere.
    PollClose { id: String },
    /// The sender's own merged count of a poll (its shards only). Each edge keeps the latest
    /// tally of every other edge and adds them: a late or repeated tally replaces, never adds.
    Tally {
        poll: String,
        counts: Vec<i64>,
        /// The sender's final count (its shards all stopped counting).
        #[serde(rename = "final")]
        last: bool,
    },
}

impl Msg {
    /// The subject the message travels on.
    pub fn subject(&self) -> String {
        let kind = match self {
            Msg::Announce(_) | Msg::Hello => "announce",
            Msg::Group { .. } | Msg::GroupDeleted { .. } => "group",
            Msg::Cast { .. } => "cast",
            Msg::Stream { .. } => "stream",
            Msg::PollOpened { .. } | Msg::PollClose { .. } => "poll",
            Msg::Tally { .. } => "tally",
            Msg::Live { .. } | Msg::Ended { .. } => "live",
        };
        format!("{SUBJECT_PREFIX}.{kind}")
    }
}

/// Why a message from the bus was dropped.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not an envelope (another version, or not ovation's).
    #[error("not an ovation message: {0}")]
    Json(#[from] serde_json::Error),
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail (string keys, no custom serializers).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_round_trip_and_name_their_subject() {
        let e = Envelope {
            from: "e1".into(),
            msg: Msg::Tally {
                poll: "p1".into(),
                counts: vec![1, -1],
                last: true,
            },
        };
        let bytes = e.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""type":"tally""#), "{text}");
        assert!(text.contains(r#""final":true"#), "{text}");
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        assert_eq!(e.msg.subject(), "ovation.tally");
        let cast = Msg::Cast {
            key: "g1".into(),
            payload: json!({"a": 1}),
        };
        assert_eq!(cast.subject(), "ovation.cast");
        let live = Msg::Live {
            stream: "s".into(),
            api: "10.0.0.1:8081".into(),
            publish: 7,
        };
        assert_eq!(live.subject(), "ovation.live");
        assert_eq!(Msg::Ended { stream: "s".into() }.subject(), "ovation.live");
        // An announcement from an edge without the `live` field still reads.
        let old = r#"{"from":"e2","msg":{"type":"announce","viewer":"v","api":"a","viewers":0,"load":0,"draining":false,"groups":{},"polls":[]}}"#;
        let Msg::Announce(a) = Envelope::decode(old.as_bytes()).unwrap().msg else {
            panic!("an announcement");
        };
        assert!(a.live.is_empty());
    }

    #[test]
    fn garbage_from_the_bus_is_an_error_not_a_panic() {
        assert!(Envelope::decode(b"").is_err());
        assert!(Envelope::decode(b"{\"from\":1}").is_err());
        assert!(Envelope::decode(br#"{"from":"x","msg":{"type":"nope"}}"#).is_err());
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            Envelope::decode(&big),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
