//! `App` in a cluster of edges: what it tells the other edges and what it does with what they
//! say. A custom group, a stream and a poll created on any edge exist on every edge (each
//! evaluates predicates against its own viewers); a group-cast posted to any edge is encoded
//! once per edge and cast to that edge's members; each edge publishes its own merged poll
//! count and adds the other edges' latest counts (replacing, never adding, so a late tally
//! counts once). A single edge has no bus and none of this runs.

use cluster::{Announce, Bus, BusEvent, Msg};
use serde_json::{json, Value};
use shards::profile::{Field, Predicate};

use super::polls::{PollRequest, PollState};
use super::streams;
use super::{App, Group, GroupKind, StoredGroup};

impl App {
    /// Joins the cluster through `bus` (at startup, before any viewer).
    pub fn set_bus(&mut self, bus: Box<dyn Bus>) {
        self.groups.set_custom_suffix(&format!("-{}", bus.edge()));
        self.edges.set_bus(bus);
    }

    /// Where the bus delivers other edges' messages.
    pub fn bus_events(&self) -> cluster::flume::Receiver<BusEvent> {
        self.edges.bus().events()
    }

    /// Whether this edge is part of a cluster.
    pub fn clustered(&self) -> bool {
        self.edges.clustered()
    }

    /// How often this edge announces itself.
    pub fn announce_interval_ms(&self) -> u64 {
        self.edges.announce_ms
    }

    /// A group's size over the whole cluster: this edge's exact count plus what the other
    /// live edges last announced.
    pub fn cluster_group_size(&self, g: &Group, now_ms: u64) -> usize {
        let remote = match g.kind {
            GroupKind::Custom | GroupKind::Stream => self.edges.remote_group_size(&g.key, now_ms),
            _ => 0,
        };
        g.size + remote as usize
    }

    /// `GET /api/cluster`.
    pub fn cluster_json(&self, now_ms: u64) -> Value {
        let bus = self.edges.bus();
        let own = json!({
            "id": bus.edge(),
            "self": true,
            "viewer": self.viewer_addr.to_string(),
            "viewers": self.viewer_count(),
            "load": self.load_percent(),
            "draining": self.edges.draining,
        });
        if !self.clustered() {
            return json!({"mode": "single", "edge": bus.edge(), "edges": [own]});
        }
        let mut edges = vec![own];
        for p in self.edges.live(now_ms) {
            edges.push(json!({
                "id": p.id,
                "self": false,
                "viewer": p.announce.viewer,
                "api": p.announce.api,
                "viewers": p.announce.viewers,
                "load": p.announce.load,
                "draining": p.announce.draining,
                "seen_ms_ago": now_ms.saturating_sub(p.seen_ms),
            }));
        }
        json!({
            "mode": bus.mode(),
            "edge": bus.edge(),
            "connected": bus.connected(),
            "dropped": bus.dropped(),
            "edges": edges,
        })
    }

    /// Connections against capacity, 0 to 100.
    fn load_percent(&self) -> u8 {
        let conns: u64 = self.shard_snapshots().iter().map(|s| s.connections).sum();
        let cap = self.config.max_connections.max(1) as u64;
        (conns.saturating_mul(100) / cap).min(100) as u8
    }

    /// Runs every announce interval: tells the other edges about this one, forgets silent
    /// edges, and completes polls whose wait for other edges' final counts is over.
    pub fn cluster_tick(&mut self, now_ms: u64) {
        if !self.clustered() {
            return;
        }
        let mut groups = std::collections::BTreeMap::new();
        for g in self.groups.iter() {
            if matches!(g.kind, GroupKind::Custom | GroupKind::Stream) {
                groups.insert(g.key.clone(), g.size as u64);
            }
        }
        let polls = self
            .polls
            .iter()
            .filter(|p| p.state != PollState::Closed)
            .map(|p| p.id.clone())
            .collect();
        let api = self.announced_api();
        let live = self.origin_live();
        self.edges.publish(Msg::Announce(Announce {
            viewer: self.viewer_addr.to_string(),
            api,
            viewers: self.viewer_count() as u64,
            load: self.load_percent(),
            draining: self.edges.draining,
            groups,
            polls,
            live,
        }));
        self.edges.last_announce_ms = now_ms;
        let gone = self.edges.expire(now_ms);
        for edge in &gone {
            tracing::warn!(edge, "edge silent past three announcements: not live");
        }
        self.relay_origins_gone(&gone);
        for id in self.polls.ids_in(PollState::Closing) {
            self.try_finish(&id, now_ms);
        }
    }

    /// Publishes this edge's count of every poll it runs, when it changed.
    pub(super) fn cluster_publish_tallies(&mut self, _now_ms: u64) {
        if !self.clustered() {
            return;
        }
        let mut out = Vec::new();
        for poll in self.polls.iter_mut() {
            if poll.state == PollState::Closed || poll.local_final {
                continue;
            }
            let counts = poll.local_counts();
            if poll.published.as_ref() != Some(&counts) {
                poll.published = Some(counts.clone());
                out.push(Msg::Tally {
                    poll: poll.id.clone(),
                    counts,
                    last: false,
                });
            }
        }
        for msg in out {
            self.edges.publish(msg);
        }
    }

    /// Tells the other edges that poll `id` opened here.
    pub(super) fn cluster_poll_opened(&self, id: &str) {
        if let Some(msg) = self.polls.get(id).map(poll_opened) {
            self.edges.publish(msg);
        }
    }

    /// This edge's shards all sent their final tally. A single edge is done; an edge of a
    /// cluster publishes its final count (once its votes are stored) and waits (bounded) for
    /// the other edges'.
    pub(super) fn local_final(&mut self, id: &str, now_ms: u64) {
        if !self.clustered() {
            return self.finish_poll(id, now_ms);
        }
        let Some(poll) = self.polls.get_mut(id) else {
            return;
        };
        poll.local_final = true;
        poll.local_final_ms = Some(now_ms);
        if !self.hold_final(id) {
            self.send_final_tally(id, now_ms);
        }
    }

    /// Publishes this edge's final count of `id`, then sees whether the poll is complete.
    pub(super) fn send_final_tally(&mut self, id: &str, now_ms: u64) {
        let Some(poll) = self.polls.get_mut(id) else {
            return;
        };
        let counts = poll.local_counts();
        poll.published = Some(counts.clone());
        self.edges.publish(Msg::Tally {
            poll: id.to_owned(),
            counts,
            last: true,
        });
        self.try_finish(id, now_ms);
    }

    /// Completes a closing poll once every live edge running it sent its final count, or the
    /// wait is over (an edge that died keeps its last count), or this edge is shutting down.
    fn try_finish(&mut self, id: &str, now_ms: u64) {
        let Some(poll) = self.polls.get(id) else {
            return;
        };
        if poll.state != PollState::Closing || !poll.local_final {
            return;
        }
        let waited = now_ms.saturating_sub(poll.local_final_ms.unwrap_or(now_ms));
        let mut expected = self.edges.with_poll(id, now_ms);
        expected.extend(poll.remote.keys().cloned());
        let live: Vec<String> = self.edges.live(now_ms).map(|p| p.id.clone()).collect();
        let all_in = expected
            .iter()
            .filter(|e| live.contains(e))
            .all(|e| poll.remote.get(e).is_some_and(|(_, last)| *last));
        let held = self.edges.durable.held_finals.contains(id);
        let timed_out = waited >= self.edges.final_wait_ms;
        if (all_in && !held) || timed_out || self.edges.draining {
            if !all_in || held {
                tracing::warn!(poll = id, "final count without every edge's final tally");
            }
            self.final_count(id, now_ms);
        }
    }

    /// Something arrived from the bus.
    pub fn on_bus(&mut self, event: BusEvent, now_ms: u64) {
        match event {
            BusEvent::Message(envelope) => {
                self.on_edge_message(&envelope.from, envelope.msg, now_ms)
            }
            BusEvent::Connected => {
                tracing::info!(
                    edge = self.edges.edge(),
                    "cluster bus up: publishing this edge's state"
                );
                self.edges.publish(Msg::Hello);
                self.republish(now_ms);
            }
            BusEvent::Disconnected => {}
            other => self.on_durable(other, now_ms),
        }
    }

    fn on_edge_message(&mut self, from: &str, msg: Msg, now_ms: u64) {
        match msg {
            Msg::Announce(a) => {
                self.relay_reconcile(from, &a);
                self.edges.seen(from, a, now_ms);
            }
            Msg::Live {
                stream,
                api,
                publish,
            } => self.remote_live(from, &stream, &api, publish),
            Msg::Ended { stream } => self.remote_ended(from, &stream),
            Msg::Hello => self.republish(now_ms),
            Msg::Group {
                key,
                name,
                predicate,
                created_ms,
            } => {
                // Known, or deleted while its edge was cut off (see `republish`).
                if self.groups.by_key(&key).is_some() || self.edges.is_deleted_group(&key) {
                    return;
                }
                let Ok(predicate) = serde_json::from_value::<Predicate>(predicate) else {
                    return tracing::warn!(edge = from, group = key, "unreadable group predicate");
                };
                self.groups.reserve_custom_key(&key);
                self.store_group(&key, &name, &predicate, created_ms);
                self.define_group(key, name, GroupKind::Custom, predicate, created_ms);
            }
            Msg::GroupDeleted { key } => {
                let _ = self.drop_custom_group(&key);
                // Also when unknown here: a definition arriving later must not revive it.
                self.edges.group_deleted(&key);
            }
            Msg::Cast { key, payload } => {
                let _ = self.cast_local(&key, &payload);
            }
            Msg::Stream {
                id,
                title,
                key_sha256,
                created_ms,
            } => self.remote_stream(id, title, &key_sha256, created_ms),
            Msg::PollOpened { .. } => self.remote_poll(from, msg, now_ms),
            Msg::PollClose { id } => {
                let _ = self.close_poll(&id, now_ms);
            }
            Msg::Tally { poll, counts, last } => {
                let Some(p) = self.polls.get_mut(&poll) else {
                    return;
                };
                if !p.take_remote(from, counts, last) {
                    return;
                }
                match p.state {
                    PollState::Closing => self.try_finish(&poll, now_ms),
                    // A late count (an edge cut off at the close): merged once, and stored.
                    PollState::Closed => {
                        let record = p.to_json();
                        if let Some(store) = &self.store {
                            store.put_poll(&poll, &record);
                        }
                    }
                    PollState::Open => {}
                }
            }
        }
    }

    /// A stream registered (or its key rotated) on another edge.
    fn remote_stream(&mut self, id: String, title: Option<String>, hash: &str, created_ms: u64) {
        let Some(hash) = streams::parse_hash(hash).filter(|_| streams::plain_id(&id)) else {
            return tracing::warn!(stream = id, "refusing a malformed stream record");
        };
        let stream = if self.streams.contains(&id) {
            self.streams.set_key(&id, hash).ok().cloned()
        } else {
            self.register_stream(id, title, hash, created_ms).ok()
        };
        if let Some(s) = stream {
            self.store_stream(&s);
        }
    }

    /// A poll opened on another edge: run it here with the same id and deadline.
    fn remote_poll(&mut self, from: &str, msg: Msg, now_ms: u64) {
        let Msg::PollOpened {
            id,
            stream,
            question,
            choices,
            filter,
            breakdown,
            created_ms,
            closes_at_ms,
        } = msg
        else {
            return;
        };
        if self.polls.get(&id).is_some() {
            return;
        }
        // Shards count choices in a byte; the API allows far fewer.
        if choices.is_empty() || choices.len() > usize::from(u8::MAX) || !streams::plain_id(&id) {
            return tracing::warn!(edge = from, "refusing a malformed poll from another edge");
        }
        if !self.streams.contains(&stream) || self.polls.check_new(&stream).is_err() {
            return tracing::warn!(
                edge = from,
                poll = id,
                stream,
                "cannot run a poll of another edge here"
            );
        }
        let filter = filter.and_then(|f| serde_json::from_value::<Predicate>(f).ok());
        let req = PollRequest {
            stream,
            question,
            choices,
            duration_s: closes_at_ms.saturating_sub(created_ms) / 1000,
            filter,
            breakdown: breakdown.as_deref().and_then(Field::parse),
        };
        self.open_poll(id, req, now_ms, closes_at_ms);
    }

    /// Tells the other edges everything they may have missed (on (re)connecting, and when
    /// another edge says hello).
    fn republish(&mut self, now_ms: u64) {
        for s in self.streams.iter() {
            self.edges.publish(stream_msg(s));
        }
        self.relay_republish();
        // Deletions first: an edge cut off when a group was deleted drops it now.
        for key in self.edges.deleted_groups() {
            self.edges.publish(Msg::GroupDeleted {
                key: key.to_owned(),
            });
        }
        for g in self.groups.iter().filter(|g| g.kind == GroupKind::Custom) {
            self.edges.publish(Msg::Group {
                key: g.key.clone(),
                name: g.name.clone(),
                predicate: serde_json::to_value(&*g.predicate).unwrap_or(Value::Null),
                created_ms: g.created_ms,
            });
        }
        for p in self.polls.iter().filter(|p| p.state != PollState::Closed) {
            self.edges.publish(poll_opened(p));
        }
        // Every count goes out again, final or not: receivers replace, so nothing doubles.
        for p in self.polls.iter_mut() {
            p.published = None;
            if p.local_final || p.state == PollState::Closed {
                self.edges.publish(Msg::Tally {
                    poll: p.id.clone(),
                    counts: p.local_counts(),
                    last: true,
                });
            }
        }
        self.cluster_publish_tallies(now_ms);
        self.cluster_tick(now_ms);
    }

    /// Tells the other edges about a stream registered or re-keyed here.
    pub(super) fn cluster_stream(&self, id: &str) {
        if let Some(s) = self.streams.get(id) {
            self.edges.publish(stream_msg(s));
        }
    }

    /// Tells the other edges about a custom group created here.
    pub(super) fn cluster_group(&self, key: &str) {
        if let Some(g) = self.groups.by_key(key) {
            self.edges.publish(Msg::Group {
                key: g.key.clone(),
                name: g.name.clone(),
                predicate: serde_json::to_value(&*g.predicate).unwrap_or(Value::Null),
                created_ms: g.created_ms,
            });
        }
    }

    /// Stores a custom group's definition.
    pub(super) fn store_group(
        &self,
        key: &str,
        name: &str,
        predicate: &Predicate,
        created_ms: u64,
    ) {
        if let Some(store) = &self.store {
            let record = StoredGroup {
                key: key.to_owned(),
                name: name.to_owned(),
                predicate: predicate.clone(),
                created_ms,
            };
            match serde_json::to_value(&record) {
                Ok(v) => store.put_group(key, &v),
                Err(e) => tracing::error!(group = key, error = %e, "could not store group"),
            }
        }
    }
}

fn stream_msg(s: &super::Stream) -> Msg {
    Msg::Stream {
        id: s.id.clone(),
        title: s.title.clone(),
        key_sha256: streams::hash_hex(&s.key_sha256),
        created_ms: s.created_ms,
    }
}

fn poll_opened(p: &super::Poll) -> Msg {
    Msg::PollOpened {
        id: p.id.clone(),
        stream: p.stream.clone(),
        question: p.question.clone(),
        choices: p.choices.clone(),
        filter: p.filter.as_ref().and_then(|f| serde_json::to_value(f).ok()),
        breakdown: p.breakdown.map(|f| f.as_str().to_owned()),
        created_ms: p.created_ms,
        closes_at_ms: p.closes_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use cluster::Msg;
    use serde_json::json;
    use shards::proto::ShardCommand;

    use super::super::test_bus::{self, from};
    use super::*;

    #[test]
    fn another_edges_group_and_cast_reach_this_edges_shards_once() {
        let (mut app, down, sent) = test_bus::clustered("e1", 1_000);
        let predicate = serde_json::to_value(Predicate::default()).unwrap();
        let group = Msg::Group {
            key: "g1-e2".into(),
            name: "all".into(),
            predicate,
            created_ms: 5,
        };
        app.on_bus(from("e2", group.clone()), 1_000);
        app.on_bus(from("e2", group), 1_000); // a repeat (hello) defines nothing new
        assert!(app.group("g1-e2").is_some());
        let defines = down
            .take_all()
            .into_iter()
            .filter(|c| matches!(c, ShardCommand::DefineGroup { .. }))
            .count();
        assert_eq!(defines, 1);
        let cast = Msg::Cast {
            key: "g1-e2".into(),
            payload: json!({"n": 1}),
        };
        app.on_bus(from("e2", cast), 1_000);
        let casts = down
            .take_all()
            .into_iter()
            .filter(|c| matches!(c, ShardCommand::Cast { .. }))
            .count();
        assert_eq!(casts, 1);
        assert!(sent.borrow().is_empty(), "a received cast is not sent on");
        // This edge's own custom groups name it, and are published.
        let key = app.add_custom_group("mine".into(), Predicate::default(), 1_000);
        assert_eq!(key, "g2-e1", "numbers after another edge's keys, suffixed");
        assert!(matches!(&sent.borrow()[0], Msg::Group { key, .. } if key == "g2-e1"));
    }

    #[test]
    fn a_group_deleted_while_an_edge_was_cut_off_stays_deleted_everywhere() {
        let (mut app, _down, sent) = test_bus::clustered("e1", 1_000);
        let predicate = serde_json::to_value(Predicate::default()).unwrap();
        let group = |key: &str| Msg::Group {
            key: key.into(),
            name: "g".into(),
            predicate: predicate.clone(),
            created_ms: 5,
        };
        app.on_bus(from("e2", group("g1-e2")), 1_000);
        assert!(app.group("g1-e2").is_some());
        // e3 deletes e2's group while e2 is cut off; e2 comes back and republishes it.
        let deleted = Msg::GroupDeleted {
            key: "g1-e2".into(),
        };
        app.on_bus(from("e3", deleted), 1_100);
        assert!(app.group("g1-e2").is_none());
        app.on_bus(from("e2", group("g1-e2")), 1_200);
        assert!(
            app.group("g1-e2").is_none(),
            "not revived by a stale definition"
        );
        // A deletion this edge heard of before the definition also holds.
        app.on_bus(
            from(
                "e3",
                Msg::GroupDeleted {
                    key: "g7-e3".into(),
                },
            ),
            1_200,
        );
        app.on_bus(from("e3", group("g7-e3")), 1_200);
        assert!(app.group("g7-e3").is_none());
        // Its own group, deleted here; then e2 says hello: every deletion goes out again,
        // before any definition, so e2 drops what it missed.
        let mine = app.add_custom_group("mine".into(), Predicate::default(), 1_300);
        app.delete_group(&mine).unwrap();
        sent.borrow_mut().clear();
        app.on_bus(from("e2", Msg::Hello), 1_400);
        let sent = sent.borrow();
        let deletions: Vec<&str> = sent
            .iter()
            .filter_map(|m| match m {
                Msg::GroupDeleted { key } => Some(key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deletions, ["g1-e2", "g7-e3", mine.as_str()]);
        let first_definition = sent.iter().position(|m| matches!(m, Msg::Group { .. }));
        let last_deletion = sent
            .iter()
            .rposition(|m| matches!(m, Msg::GroupDeleted { .. }));
        assert!(first_definition.is_none_or(|d| last_deletion < Some(d)));
    }

    #[test]
    fn remote_tallies_replace_and_malformed_messages_are_refused() {
        let (mut app, _down, _sent) = test_bus::clustered("e1", 1_000);
        let stream = Msg::Stream {
            id: "s".into(),
            title: None,
            key_sha256: "ab".repeat(32),
            created_ms: 1,
        };
        app.on_bus(from("e2", stream), 1_000);
        assert!(app.stream("s").is_some());
        let bad_stream = Msg::Stream {
            id: "../x".into(),
            title: None,
            key_sha256: "ab".repeat(32),
            created_ms: 1,
        };
        app.on_bus(from("e2", bad_stream), 1_000);
        assert!(app.stream("../x").is_none());
        let opened = |id: &str, choices: usize| Msg::PollOpened {
            id: id.into(),
            stream: "s".into(),
            question: "q".into(),
            choices: (0..choices).map(|i| format!("c{i}")).collect(),
            filter: None,
            breakdown: None,
            created_ms: 1_000,
            closes_at_ms: 61_000,
        };
        app.on_bus(from("e2", opened("pbad", 300)), 1_000);
        assert!(app.poll("pbad").is_none(), "more choices than a byte holds");
        app.on_bus(from("e2", opened("p1", 2)), 1_000);
        let tally = |counts: Vec<i64>, last: bool| Msg::Tally {
            poll: "p1".into(),
            counts,
            last,
        };
        app.on_bus(from("e2", tally(vec![2, 1], false)), 1_100);
        app.on_bus(from("e3", tally(vec![0, 4], false)), 1_100);
        assert_eq!(app.poll("p1").unwrap().counts(), vec![2, 5]);
        // Retransmitted, then superseded: replaced, never added.
        app.on_bus(from("e2", tally(vec![2, 1], false)), 1_200);
        app.on_bus(from("e2", tally(vec![1, 2], true)), 1_200);
        assert_eq!(app.poll("p1").unwrap().counts(), vec![1, 6]);
        app.on_bus(from("e2", tally(vec![9], true)), 1_200);
        assert_eq!(app.poll("p1").unwrap().counts(), vec![1, 6], "wrong length");
    }
}
