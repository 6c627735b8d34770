//! Streams: the directory of streams viewers may watch (id, title, audience group, the
//! SHA-256 of the stream key) and the live registry (offline, live or ended; who publishes;
//! bitrate in).
//!
//! Owns: stream records, the key index, publish turns. Must not touch: groups (the caller
//! creates the audience group and passes its id), shard queues, the store, segmenting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use shards::proto::GroupId;

/// A stream's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Registered, never published since the server started.
    Offline,
    /// A publisher is sending it.
    Live,
    /// Its last publish ended (the publisher left, went silent or was refused mid-way).
    Ended,
}

impl From<StreamState> for protocol::StreamState {
    fn from(s: StreamState) -> protocol::StreamState {
        match s {
            StreamState::Offline => protocol::StreamState::Offline,
            StreamState::Live => protocol::StreamState::Live,
            StreamState::Ended => protocol::StreamState::Ended,
        }
    }
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Offline => "offline",
            StreamState::Live => "live",
            StreamState::Ended => "ended",
        }
    }
}

/// A SHA-256 digest of a stream key: only this is kept and stored.
pub type KeyHash = [u8; 32];

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub id: String,
    pub title: Option<String>,
    pub group: GroupId,
    pub created_ms: u64,
    pub key_sha256: KeyHash,
    pub state: StreamState,
    /// The publisher's address while live (the last one once ended).
    pub publisher: Option<SocketAddr>,
    /// Bytes in from the publisher, as kilobits per second over the last measurement.
    pub bitrate_kbps: u64,
    /// The current publish turn (0: none has run).
    pub publish: u64,
}

/// Why a stream operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A stream with this id is already registered.
    #[error("stream \"{0}\" already exists")]
    Exists(String),
    /// No stream has this id.
    #[error("no stream \"{0}\"")]
    NotFound(String),
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The stream key matches no stream.
    #[error("unknown stream key")]
    UnknownKey,
    /// The stream already has a publisher.
    #[error("stream \"{0}\" already has a publisher")]
    Busy(String),
}

/// A publish that was let in: the stream and the turn that identifies this publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishTurn {
    pub stream: String,
    pub turn: u64,
}

/// The SHA-256 of a key.
pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A fresh stream key: 128 random bits as two groups of 16 hex digits.
pub fn new_key() -> String {
    let hex = super::random::random_hex(16);
    format!("{}-{}", &hex[..16], &hex[16..])
}

/// Hex text of a key hash (the stored form).
pub fn hash_hex(hash: &KeyHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// An id as the API accepts them (letters, digits, `-`, `_`, `.`; at most 128 bytes): what
/// another edge sends is checked like what an operator sends.
pub fn plain_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Parses [`hash_hex`] text back.
pub fn parse_hash(text: &str) -> Option<KeyHash> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[derive(Debug, Default)]
pub struct Streams {
    streams: BTreeMap<String, Stream>,
    by_key: HashMap<KeyHash, String>,
    next_turn: u64,
}

impl Streams {
    /// `Err` when `id` is taken (checked before its audience group is created).
    pub fn check_new(&self, id: &str) -> Result<(), StreamError> {
        if self.streams.contains_key(id) {
            return Err(StreamError::Exists(id.to_owned()));
        }
        Ok(())
    }

    pub fn insert(&mut self, stream: Stream) -> Result<&Stream, StreamError> {
        self.check_new(&stream.id)?;
        self.by_key.insert(stream.key_sha256, stream.id.clone());
        Ok(self.streams.entry(stream.id.clone()).or_insert(stream))
    }

    /// Replaces a stream's key: the old one stops working at once (a publisher already in
    /// keeps publishing until it leaves).
    pub fn set_key(&mut self, id: &str, hash: KeyHash) -> Result<&Stream, StreamError> {
        let stream = self
            .streams
            .get_mut(id)
            .ok_or_else(|| StreamError::NotFound(id.to_owned()))?;
        self.by_key.remove(&stream.key_sha256);
        stream.key_sha256 = hash;
        self.by_key.insert(hash, id.to_owned());
        Ok(stream)
    }

    pub fn get(&self, id: &str) -> Option<&Stream> {
        self.streams.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.streams.contains_key(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Stream> {
        self.streams.values()
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Streams live now.
    pub fn live(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.state == StreamState::Live)
            .count()
    }

    /// A publisher presents `key`: the stream goes live under a new turn, unless the key is
    /// unknown or the stream already has a publisher.
    pub fn begin_publish(
        &mut self,
        key: &str,
        publisher: SocketAddr,
    ) -> Result<PublishTurn, PublishError> {
        let id = self
            .by_key
            .get(&hash_key(key))
            .ok_or(PublishError::UnknownKey)?;
        let stream = self.streams.get_mut(id).ok_or(PublishError::UnknownKey)?;
        if stream.state == StreamState::Live {
            return Err(PublishError::Busy(stream.id.clone()));
        }
        self.next_turn += 1;
        stream.state = StreamState::Live;
        stream.publisher = Some(publisher);
        stream.bitrate_kbps = 0;
        stream.publish = self.next_turn;
        Ok(PublishTurn {
            stream: stream.id.clone(),
            turn: self.next_turn,
        })
    }

    /// A recording is played out on stream `id` as live (a rebroadcast): like a publish, it
    /// takes a turn, and is refused while the stream already has a publisher or rebroadcast.
    pub fn begin_rebroadcast(&mut self, id: &str) -> Result<PublishTurn, PublishError> {
        let stream = self.streams.get_mut(id).ok_or(PublishError::UnknownKey)?;
        if stream.state == StreamState::Live {
            return Err(PublishError::Busy(stream.id.clone()));
        }
        self.next_turn += 1;
        stream.state = StreamState::Live;
        stream.publisher = None;
        stream.bitrate_kbps = 0;
        stream.publish = self.next_turn;
        Ok(PublishTurn {
            stream: stream.id.clone(),
            turn: self.next_turn,
        })
    }

    /// The publish `turn` ended; true when it was the stream's current one (it is now ended).
    pub fn end_publish(&mut self, turn: &PublishTurn) -> bool {
        match self.streams.get_mut(&turn.stream) {
            Some(s) if s.publish == turn.turn && s.state == StreamState::Live => {
                s.state = StreamState::Ended;
                s.bitrate_kbps = 0;
                true
            }
            _ => false,
        }
    }

    /// The current publisher's measured bitrate.
    pub fn set_bitrate(&mut self, turn: &PublishTurn, kbps: u64) {
        if let Some(s) = self.streams.get_mut(&turn.stream) {
            if s.publish == turn.turn {
                s.bitrate_kbps = kbps;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str, key: &str) -> Stream {
        Stream {
            id: id.into(),
            title: None,
            group: GroupId(1),
            created_ms: 3,
            key_sha256: hash_key(key),
            state: StreamState::Offline,
            publisher: None,
            bitrate_kbps: 0,
            publish: 0,
        }
    }

    #[test]
    fn a_stream_id_is_taken_once() {
        let mut s = Streams::default();
        assert!(s.insert(stream("s", "k")).is_ok());
        assert_eq!(s.check_new("s"), Err(StreamError::Exists("s".into())));
        assert_eq!(
            s.insert(stream("s", "k2")),
            Err(StreamError::Exists("s".into()))
        );
        assert_eq!(s.len(), 1);
        assert!(s.contains("s") && !s.contains("t"));
    }

    #[test]
    fn keys_are_random_hex_and_round_trip_as_hashes() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 33);
        assert!(a.bytes().enumerate().all(|(i, c)| if i == 16 {
            c == b'-'
        } else {
            c.is_ascii_hexdigit()
        }));
        let h = hash_key(&a);
        assert_eq!(parse_hash(&hash_hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn one_publisher_per_stream_and_keys_rotate() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut s = Streams::default();
        s.insert(stream("s", "old")).unwrap();
        assert_eq!(s.begin_publish("nope", peer), Err(PublishError::UnknownKey));
        let turn = s.begin_publish("old", peer).unwrap();
        assert_eq!(s.get("s").unwrap().state, StreamState::Live);
        assert_eq!(s.live(), 1);
        assert_eq!(
            s.begin_publish("old", peer),
            Err(PublishError::Busy("s".into()))
        );
        s.set_bitrate(&turn, 900);
        assert_eq!(s.get("s").unwrap().bitrate_kbps, 900);
        assert!(s.end_publish(&turn));
        assert!(!s.end_publish(&turn), "a turn ends once");
        assert_eq!(s.get("s").unwrap().state, StreamState::Ended);

        s.set_key("s", hash_key("new")).unwrap();
        assert_eq!(s.begin_publish("old", peer), Err(PublishError::UnknownKey));
        let second = s.begin_publish("new", peer).unwrap();
        assert_ne!(second.turn, turn.turn);
        // A late end of the first turn does not end the second.
        assert!(!s.end_publish(&turn));
        assert_eq!(s.get("s").unwrap().state, StreamState::Live);
        assert_eq!(
            s.set_key("t", hash_key("x")).map(|_| ()),
            Err(StreamError::NotFound("t".into()))
        );
    }
}
