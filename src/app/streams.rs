//! Live streams: the registry of streams viewers may watch, each with its audience group.
//!
//! Owns: stream records. Must not touch: groups (the caller creates the audience group and
//! passes its id), shard queues, the store.

use std::collections::BTreeMap;

use shards::proto::GroupId;

#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub id: String,
    pub title: Option<String>,
    pub group: GroupId,
    pub created_ms: u64,
}

/// Why a stream operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A stream with this id is already live.
    #[error("stream \"{0}\" already exists")]
    Exists(String),
}

#[derive(Debug, Default)]
pub struct Streams {
    streams: BTreeMap<String, Stream>,
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
        Ok(self.streams.entry(stream.id.clone()).or_insert(stream))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_id_is_taken_once() {
        let mut s = Streams::default();
        let stream = Stream {
            id: "s".into(),
            title: None,
            group: GroupId(1),
            created_ms: 3,
        };
        assert!(s.insert(stream.clone()).is_ok());
        assert_eq!(s.check_new("s"), Err(StreamError::Exists("s".into())));
        assert_eq!(s.insert(stream), Err(StreamError::Exists("s".into())));
        assert_eq!(s.len(), 1);
        assert!(s.contains("s") && !s.contains("t"));
    }
}
