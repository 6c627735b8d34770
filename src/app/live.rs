//! `App`'s media side: stream keys, publish turns, segmenting, and what viewers and shards
//! are told when a stream goes live or ends.
//!
//! A publish is let in by [`App::begin_publish`] (the stream key names the stream), its FLV
//! tags go through the stream's [`Segmenter`] in [`App::publish_media`], and each finished
//! segment goes to every shard as one [`MediaCommand::Segment`] carrying the shared buffer.
//! [`App::end_publish`] closes the segment in progress, marks the playlist ended and tells
//! the audience. A stream's segmenter outlives its publishers, so a publisher that comes
//! back continues the same playlist after a discontinuity.

use std::net::SocketAddr;
use std::sync::Arc;

use media::segmenter::{Segment, Segmenter, SegmenterConfig, SegmenterError};
use media::MediaKind;
use serde_json::json;
use shards::config::ZeroCopy;
use shards::proto::{MediaCommand, ShardCommand};

use super::media_state::IngestStats;
use super::streams::{self, PublishError, PublishTurn, StreamError, StreamState};
use super::{messages, App, Stream};

impl App {
    /// The `publish_url` shown with stream keys: `rtmp://ADDR/live`.
    pub fn publish_url(&self) -> String {
        format!("rtmp://{}/live", self.rtmp_addr)
    }

    /// The bound viewer address (the console links its streams' viewer pages to it).
    pub fn viewer_addr(&self) -> std::net::SocketAddr {
        self.viewer_addr
    }

    /// Registers a stream with a fresh key; returns it and the key (shown once: only its
    /// hash is kept).
    pub fn add_stream(
        &mut self,
        id: String,
        title: Option<String>,
        now_ms: u64,
    ) -> Result<(Stream, String), StreamError> {
        self.streams.check_new(&id)?;
        let key = streams::new_key();
        let stream = self.register_stream(id, title, streams::hash_key(&key), now_ms)?;
        self.store_stream(&stream);
        self.cluster_stream(&stream.id);
        Ok((stream, key))
    }

    /// Adds a stream record (new or restored): its audience group, and the shards learn it.
    pub(super) fn register_stream(
        &mut self,
        id: String,
        title: Option<String>,
        key_sha256: streams::KeyHash,
        created_ms: u64,
    ) -> Result<Stream, StreamError> {
        self.streams.check_new(&id)?;
        let group = self.define_group(
            format!("stream:{id}"),
            format!("audience of {id}"),
            super::GroupKind::Stream,
            shards::profile::Predicate::stream(&id),
            created_ms,
        );
        let name: Box<str> = id.as_str().into();
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Registered {
                stream: name.clone(),
            })
        });
        let stream = self.streams.insert(Stream {
            id,
            title,
            group,
            created_ms,
            key_sha256,
            state: StreamState::Offline,
            publisher: None,
            bitrate_kbps: 0,
            publish: 0,
        })?;
        Ok(stream.clone())
    }

    /// Replaces a stream's key; returns the new one.
    pub fn rotate_key(&mut self, id: &str) -> Result<String, StreamError> {
        let key = streams::new_key();
        let stream = self.streams.set_key(id, streams::hash_key(&key))?.clone();
        self.store_stream(&stream);
        self.cluster_stream(id);
        Ok(key)
    }

    pub(super) fn store_stream(&self, s: &Stream) {
        if let Some(store) = &self.store {
            let record = json!({
                "id": s.id,
                "title": s.title,
                "key_sha256": streams::hash_hex(&s.key_sha256),
                "created_ms": s.created_ms,
                "scheduled_ms": self.player.scheduled(&s.id),
                "distribution": self.distribution.get(&s.id).map(|d| d.to_json()),
                "program": self.ads.programs.get(&s.id),
            });
            store.put_stream(&s.id, &record);
        }
    }

    /// Streams restored from the store at startup.
    pub(super) fn restore_streams(&mut self, records: &[serde_json::Value]) {
        for r in records {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            let hash = r["key_sha256"].as_str().and_then(streams::parse_hash);
            let Some(hash) = hash.filter(|_| !id.is_empty()) else {
                tracing::warn!(record = %r, "skipping a stored stream without an id and key");
                continue;
            };
            let title = r["title"].as_str().map(str::to_owned);
            let created = r["created_ms"].as_u64().unwrap_or(0);
            if let Some(start) = r["scheduled_ms"].as_u64() {
                self.player.schedule(&id, start);
            }
            let rules = r["distribution"]
                .as_object()
                .map(super::distribution::Distribution::from_json);
            match rules {
                Some(Ok(d)) => {
                    self.distribution.insert(id.clone(), d);
                }
                Some(Err(e)) => {
                    tracing::warn!(stream = %id, error = %e, "stored distribution rules skipped")
                }
                None => {}
            }
            let program = serde_json::from_value::<super::ads::Program>(r["program"].clone());
            if let Ok(p) = program {
                self.ads.programs.insert(id.clone(), p);
            }
            if let Err(e) = self.register_stream(id, title, hash, created) {
                tracing::warn!(error = %e, "skipping a stored stream");
            }
        }
    }

    /// Ingest counters.
    pub fn ingest_stats(&self) -> IngestStats {
        self.live.stats
    }

    /// Streams live now.
    pub fn live_streams(&self) -> usize {
        self.streams.live()
    }

    /// An RTMP connection was closed for bad input or a timeout.
    pub fn count_bad_rtmp(&mut self) {
        self.live.stats.closed_bad += 1;
    }

    /// A publisher asks to publish with `key` (the RTMP stream name). On success the stream is
    /// live: shards serve it, and its audience gets `stream` `live` and a fresh `endpoint`.
    pub fn begin_publish(
        &mut self,
        key: &str,
        publisher: SocketAddr,
    ) -> Result<PublishTurn, PublishError> {
        // OBS and ffmpeg send the key alone; tolerate a query string after it.
        let key = key.split('?').next().unwrap_or_default();
        let turn = match self.streams.begin_publish(key, publisher) {
            Ok(t) => t,
            Err(e) => {
                match e {
                    PublishError::UnknownKey => self.live.stats.refused_key += 1,
                    PublishError::Busy(_) => self.live.stats.refused_busy += 1,
                }
                return Err(e);
            }
        };
        let config = SegmenterConfig {
            target_duration_ms: self.config.hls_segment_ms,
            ..SegmenterConfig::default()
        };
        self.live
            .segmenters
            .entry(turn.stream.clone())
            .or_insert_with(|| Segmenter::new(config));
        self.announce_live(&turn.stream);
        tracing::info!(stream = %turn.stream, %publisher, "stream live");
        Ok(turn)
    }

    /// Shards serve the stream as live; its audience gets `stream` `live` and a fresh
    /// `endpoint` each.
    pub(super) fn announce_live(&mut self, id: &str) {
        self.relay_went_live(id);
        let name: Box<str> = id.into();
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Live {
                stream: name.clone(),
            })
        });
        let id = id.to_owned();
        if let Some(group) = self.streams.get(&id).map(|s| s.group) {
            self.cast_frame(
                group,
                messages::stream_state(&id, protocol::StreamState::Live),
            );
        }
        let audience: Vec<_> = self
            .mirror
            .viewers()
            .filter(|v| v.profile.stream.as_deref() == Some(id.as_str()))
            .map(|v| v.at())
            .collect();
        // Each keeps its viewing session, with a freshly signed URL.
        let now_ms = self.clock_ms;
        for at in audience {
            let (session, url) = self.open_session(at, &id, now_ms);
            self.send_to(at, messages::endpoint(&id, &url, &session));
        }
    }

    /// One FLV tag of the publish `turn`. `Err` only for an unsupported codec: the caller
    /// refuses the publisher. Other bad samples are dropped and counted.
    pub fn publish_media(
        &mut self,
        turn: &PublishTurn,
        kind: MediaKind,
        timestamp: u32,
        data: &[u8],
        now_ms: u64,
    ) -> Result<(), SegmenterError> {
        if self.streams.get(&turn.stream).map(|s| s.publish) != Some(turn.turn) {
            return Ok(());
        }
        let Some(seg) = self.live.segmenters.get_mut(&turn.stream) else {
            return Ok(());
        };
        match seg.push(kind, timestamp, data, now_ms) {
            Ok(Some(segment)) => self.segment_out(&turn.stream.clone(), segment, now_ms),
            Ok(None) => {}
            Err(e) if e.is_unsupported_codec() => {
                self.live.stats.refused_codec += 1;
                return Err(e);
            }
            Err(e) => {
                self.live.stats.dropped_samples += 1;
                tracing::debug!(stream = %turn.stream, error = %e, "sample dropped");
            }
        }
        Ok(())
    }

    /// A finished segment (cut here, or relayed from the stream's origin edge) goes to every
    /// shard and to the window other edges pull from; one cut here is counted and recorded.
    pub(super) fn segment_out(&mut self, stream: &str, segment: Segment, now_ms: u64) {
        let relayed = self.relay_window_push(stream, &segment);
        if !relayed {
            self.live.stats.segments += 1;
            self.live.stats.segment_bytes += segment.data.len() as u64;
            self.record_segment(stream, &segment);
        }
        self.live
            .last_segment
            .insert(stream.to_owned(), (segment.sequence, now_ms));
        let file = self.segment_file(stream, &segment);
        let name: Box<str> = stream.into();
        // One message per shard; each carries the same `Arc` buffer (and file).
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Segment {
                stream: name.clone(),
                segment: segment.clone(),
                file: file.clone(),
            })
        });
    }

    /// The segment's bytes in a file made once here and shared by every shard, so plain
    /// viewers get it with `sendfile` (no copy through user space per viewer; on loopback
    /// too, where the kernel copies `SEND_ZC` pages anyway). Only with `zerocopy = auto`, for
    /// bodies at or above the zero-copy threshold. An unlinked file in the data directory
    /// where its file system allows (`sendfile` reads disk-file page cache in batches, a
    /// memfd one shared-memory page at a time: see `docs/media.md`), else a sealed memfd.
    fn segment_file(&mut self, stream: &str, segment: &Segment) -> Option<Arc<std::fs::File>> {
        let auto = ZeroCopy::parse(&self.config.zerocopy) == Some(ZeroCopy::Auto);
        if !auto
            || self.live.segment_files_failed
            || segment.data.len() < self.config.zerocopy_threshold_bytes.max(1)
        {
            return None;
        }
        if !self.live.disk_segment_files_failed {
            match netstack::sys::unlinked_file_in(&self.config.data_dir, &segment.data) {
                Ok(file) => return Some(Arc::new(file)),
                Err(e) => {
                    tracing::info!(error = %e, dir = %self.config.data_dir.display(), "unlinked segment files unavailable in the data directory: sealed in-memory files");
                    self.live.disk_segment_files_failed = true;
                }
            }
        }
        let name = format!("ovation-{stream}-{}", segment.sequence);
        match netstack::sys::sealed_memfd(&name, &segment.data) {
            Ok(file) => Some(Arc::new(file)),
            Err(e) => {
                tracing::warn!(error = %e, "in-memory segment files unavailable: segments go out from their buffers");
                self.live.segment_files_failed = true;
                None
            }
        }
    }

    /// The latest segment of a stream and the wall time it was completed.
    pub fn last_segment(&self, stream: &str) -> Option<(u64, u64)> {
        self.live.last_segment.get(stream).copied()
    }

    /// The publisher's measured input rate.
    pub fn publish_bitrate(&mut self, turn: &PublishTurn, kbps: u64) {
        self.streams.set_bitrate(turn, kbps);
    }

    /// The publish `turn` ended (the publisher left, went silent, or was refused). If it was
    /// the stream's current publish: the segment in progress is closed, the playlist ends
    /// and the audience gets `stream` `ended`.
    pub fn end_publish(&mut self, turn: &PublishTurn, now_ms: u64) {
        if !self.streams.end_publish(turn) {
            return;
        }
        let id = turn.stream.clone();
        if let Some(segment) = self
            .live
            .segmenters
            .get_mut(&id)
            .and_then(Segmenter::restart)
        {
            self.segment_out(&id, segment, now_ms);
        }
        let name: Box<str> = id.as_str().into();
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Ended {
                stream: name.clone(),
            })
        });
        if let Some(group) = self.streams.get(&id).map(|s| s.group) {
            self.cast_frame(
                group,
                messages::stream_state(&id, protocol::StreamState::Ended),
            );
        }
        self.end_recording(&id, now_ms);
        self.live.rebroadcasting.remove(&id);
        self.relay_stream_ended(&id);
        tracing::info!(stream = %id, "stream ended");
    }
}
