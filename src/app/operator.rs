//! `App`'s operator side: the views the API reads and the commands it gives, with typed
//! results. Only `api/` turns these into HTTP statuses and JSON.

use std::rc::Rc;

use serde_json::Value;
use shards::profile::{Predicate, ViewerId};
use shards::proto::{GroupId, ProfileUpdate, ShardCommand};
use shards::StatsSnapshot;

use super::sink::Sink;
use super::store::StoreError;
use super::{
    messages, App, Audit, Group, GroupError, GroupKind, Poll, PollState, ResumeStats, StoreStats,
    Stream, Viewer,
};

impl App {
    // ---- views ----

    pub fn viewer(&self, id: ViewerId) -> Option<&Viewer> {
        self.mirror.viewer(id)
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &crate::config::Config {
        &self.config
    }

    pub fn viewer_count(&self) -> usize {
        self.mirror.len()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter()
    }

    pub fn group(&self, key: &str) -> Option<&Group> {
        self.groups.by_key(key)
    }

    /// The global group's telemetry over each configured window: `(window ms, aggregate)`.
    pub fn global_telemetry(&self, now_ms: u64) -> Vec<(u64, shards::telemetry::Aggregate)> {
        self.telemetry
            .windows_ms()
            .iter()
            .map(|&w| (w, self.telemetry.window(GroupId::GLOBAL, w, now_ms)))
            .collect()
    }

    /// A group's telemetry over each configured window (JSON keyed `"10s"`, `"60s"`...).
    /// Costs O(window seconds), whatever the group's size.
    pub fn group_telemetry(&self, group: GroupId, now_ms: u64) -> Value {
        self.telemetry.to_json(group, now_ms)
    }

    pub fn streams(&self) -> impl Iterator<Item = &Stream> {
        self.streams.iter()
    }

    pub fn stream(&self, id: &str) -> Option<&Stream> {
        self.streams.get(id)
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Viewers watching the stream.
    pub fn audience_size(&self, stream: &Stream) -> usize {
        self.groups.get(stream.group).map_or(0, |g| g.size)
    }

    pub fn polls(&self) -> impl Iterator<Item = &Poll> {
        self.polls.iter()
    }

    pub fn poll(&self, id: &str) -> Option<&Poll> {
        self.polls.get(id)
    }

    /// A poll of an earlier run (or one closed in this run), as stored.
    pub fn stored_poll(&self, id: &str) -> Result<Option<Value>, StoreError> {
        match &self.store {
            Some(store) => store.poll(id),
            None => Ok(None),
        }
    }

    pub fn audit(&self, id: u64) -> Option<&Audit> {
        self.audits.get(id)
    }

    pub fn shards(&self) -> usize {
        self.downlinks.len()
    }

    /// Live counters of every shard.
    pub fn shard_snapshots(&self) -> Vec<StatsSnapshot> {
        self.shard_stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Commands waiting in each shard's downlink queue (not yet in its channel).
    pub fn commands_queued(&self) -> Vec<usize> {
        self.downlinks.iter().map(|d| d.len()).collect()
    }

    pub fn resume_stats(&self) -> ResumeStats {
        ResumeStats {
            departed: self.mirror.departed_count(),
            departed_bytes: self.mirror.departed_bytes(),
            dropped: self.mirror.departed_dropped(),
        }
    }

    pub fn store_stats(&self) -> StoreStats {
        StoreStats {
            unsaved_polls: self.polls.iter().filter(|p| p.needs_checkpoint()).count(),
            queued_writes: self.store.as_ref().map_or(0, |s| s.queued()),
            failed_writes: self.store.as_ref().map_or(0, |s| s.failed()),
        }
    }

    /// The latest results of the stream's poll, for a broadcaster who just connected.
    pub fn results_snapshot(&self, stream: &str) -> Option<shards::proto::Frame> {
        let poll = self.polls.latest_on(stream)?;
        let (counts, last) = (poll.counts(), poll.state == PollState::Closed);
        Some(
            poll.broadcaster_frame(&counts, last)
                .unwrap_or_else(|| poll.results_frame(&counts, last)),
        )
    }

    // ---- commands ----

    /// Creates a custom predicate group (stored, so it survives a restart; in a cluster, on
    /// every edge); returns its key.
    pub fn add_custom_group(&mut self, name: String, predicate: Predicate, now_ms: u64) -> String {
        let key = self.groups.next_custom_key();
        self.store_group(&key, &name, &predicate, now_ms);
        self.define_group(key.clone(), name, GroupKind::Custom, predicate, now_ms);
        self.cluster_group(&key);
        key
    }

    /// Deletes a custom group everywhere (every edge of a cluster too).
    pub fn delete_group(&mut self, key: &str) -> Result<(), GroupError> {
        self.drop_custom_group(key)?;
        self.edges.publish(cluster::Msg::GroupDeleted {
            key: key.to_owned(),
        });
        Ok(())
    }

    /// Deletes a custom group on this edge.
    pub(super) fn drop_custom_group(&mut self, key: &str) -> Result<(), GroupError> {
        let id = self.groups.delete_custom(key)?;
        self.edges.group_deleted(key);
        self.telemetry.forget(id);
        self.broadcast(|| ShardCommand::DropGroup { id });
        if let Some(store) = &self.store {
            store.delete_group(key);
        }
        Ok(())
    }

    /// Group-cast (FIG. 6, 606-608): the message is encoded into one frame here, and each
    /// shard writes those bytes to its members; in a cluster every other edge does the same
    /// for its own members. Returns the group's size on this edge
    /// ([`App::cluster_group_size`] gives it over the cluster).
    pub fn cast(&mut self, key: &str, payload: &Value) -> Result<usize, GroupError> {
        let size = self.cast_local(key, payload)?;
        self.edges.publish(cluster::Msg::Cast {
            key: key.to_owned(),
            payload: payload.clone(),
        });
        Ok(size)
    }

    /// Casts to this edge's members of a group.
    pub(super) fn cast_local(&mut self, key: &str, payload: &Value) -> Result<usize, GroupError> {
        let group = self
            .groups
            .by_key(key)
            .ok_or_else(|| GroupError::NotFound(key.to_owned()))?;
        let (id, size) = (group.id, group.size);
        self.cast_frame(id, messages::group_message(key, payload));
        Ok(size)
    }

    /// Replaces a viewer's tags through its shard. `None` if the viewer is unknown.
    pub fn set_tags(&self, viewer: ViewerId, tags: Vec<Box<str>>) -> Option<()> {
        let v = self.mirror.viewer(viewer)?;
        self.command(
            v.at().shard,
            ShardCommand::Update {
                to: v.at(),
                update: ProfileUpdate::Tags(tags),
            },
        );
        Some(())
    }

    /// Starts a mirror audit; its result fills in as shards answer.
    pub fn start_audit(&mut self) -> u64 {
        let id = self.audits.start();
        self.broadcast(|| ShardCommand::Audit { audit: id });
        id
    }

    /// A broadcaster follows `stream`'s results from now on.
    pub fn add_broadcaster(&mut self, stream: String, sink: Rc<Sink>) {
        self.broadcasters.push((stream, sink));
    }

    /// Broadcaster sockets open on `stream`.
    pub fn broadcasters_of(&self, stream: &str) -> usize {
        self.broadcasters
            .iter()
            .filter(|(s, sink)| s == stream && !sink.is_closed())
            .count()
    }

    /// At shutdown: every broadcaster gets what is queued, then a close frame (1001).
    pub fn close_broadcasters(&mut self) {
        for (_, sink) in &self.broadcasters {
            sink.close_going_away();
        }
    }

    /// The broadcasters' sinks (shutdown waits for their sessions to end).
    pub fn broadcaster_sinks(&self) -> Vec<Rc<Sink>> {
        self.broadcasters.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Stops the shards, each closing its viewers with 1001 within `grace`.
    pub fn shutdown_shards(&self, grace: std::time::Duration) {
        self.broadcast(|| ShardCommand::Shutdown { grace });
    }

    /// Commits what is queued for the store and stops its writer (last step of shutdown).
    /// Viewers that left (every one, by now) are stored first, so they can resume after the
    /// restart within the resume window.
    pub fn close_store(&mut self) {
        if let Some(store) = &self.store {
            let records: Vec<(u64, Vec<u8>)> = self
                .mirror
                .departed_records()
                .map(|(id, d)| (id.0, d.to_bytes()))
                .collect();
            tracing::info!(
                viewers = records.len(),
                "kept for a resume after the restart"
            );
            store.put_departed(records);
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.close();
        }
        if let Some(store) = &mut self.store {
            store.close();
        }
    }

    // ---- player configuration ----

    /// The `config` message of `stream` at `now_ms`, encoded once.
    pub(super) fn config_frame(&self, stream: &str, now_ms: u64) -> shards::proto::Frame {
        let config = self.player.config(stream, now_ms, |id| {
            self.streams.get(id).and_then(|s| s.title.clone())
        });
        messages::config(stream, self.player.version(), config)
    }

    /// What a viewer of `stream` gets now: `(version, config)`.
    pub fn player_config(&self, stream: &str, now_ms: u64) -> Option<(u64, Value)> {
        self.streams.get(stream)?;
        let config = self.player.config(stream, now_ms, |id| {
            self.streams.get(id).and_then(|s| s.title.clone())
        });
        Some((self.player.version(), config))
    }

    /// Replaces a stream's player configuration and pushes it to the stream's audience.
    pub fn set_player_config(
        &mut self,
        stream: &str,
        settings: super::player_config::Settings,
        now_ms: u64,
    ) -> Result<(u64, Value), super::StreamError> {
        if self.streams.get(stream).is_none() {
            return Err(super::StreamError::NotFound(stream.to_owned()));
        }
        if let Some(store) = &self.store {
            store.put_setting(
                &format!("player/{stream}"),
                &Value::Object(settings.clone()),
            );
        }
        self.player.set(stream, settings);
        self.push_config(stream, now_ms);
        self.player_config(stream, now_ms)
            .ok_or_else(|| super::StreamError::NotFound(stream.to_owned()))
    }

    /// Records a registered stream's scheduled start and pushes the new `upcoming` list to
    /// every stream's audience.
    pub fn schedule_stream(&mut self, stream: &str, start_ms: u64, now_ms: u64) {
        self.player.schedule(stream, start_ms);
        if let Some(s) = self.streams.get(stream) {
            self.store_stream(s);
        }
        let ids: Vec<String> = self.streams.iter().map(|s| s.id.clone()).collect();
        for id in ids {
            self.push_config(&id, now_ms);
        }
    }

    /// A stream's scheduled start, if it was registered with one.
    pub fn scheduled_start(&self, stream: &str) -> Option<u64> {
        self.player.scheduled(stream)
    }

    /// Casts `stream`'s configuration to its audience.
    pub(super) fn push_config(&mut self, stream: &str, now_ms: u64) {
        let Some(group) = self.streams.get(stream).map(|s| s.group) else {
            return;
        };
        let frame = self.config_frame(stream, now_ms);
        self.cast_frame(group, frame);
    }
}
