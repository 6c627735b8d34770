//! `App`, streams across edges (issue 17): a stream ingested on one edge (its origin) plays
//! from every edge. The origin tells the cluster (`Live`, `Ended`, and its announcements'
//! `live` list) and serves its last segments on its API (`GET /api/relay/...`); every other
//! edge relays the stream: the relay task (`crate::relay`) pulls the origin's playlist and
//! each new segment once, and hands them here, where they take the same path as a local
//! publisher's (`segment_out`): the shards' windows, sessions, `live`/`ended` messages.
//!
//! A relay holds the stream's publish turn on its edge, as a rebroadcast does, so a
//! publisher on a second edge while the stream is live elsewhere is refused like a second
//! publisher on one edge. Relayed segments are not recorded again (the origin records).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use cluster::{Announce, Msg};
use media::playlist::{LivePlaylist, UriTemplate};
use media::segmenter::Segment;

use super::relays::{Origin, OriginRefusal, Relay, RelayStats};
use super::streams::{self, PublishTurn, StreamState};
use super::App;

impl App {
    /// The bound API address (port 0 in the settings becomes the real port): what this edge
    /// announces, and where the other edges pull its streams from.
    pub fn set_api_addr(&mut self, addr: SocketAddr) {
        self.relays.api_addr = Some(addr);
        let advertised = self.config.cluster_advertise_api.unwrap_or(addr);
        if self.config.cluster_nats_url.is_some() && advertised.ip().is_unspecified() {
            tracing::warn!(api = %addr, "the API listens on a wildcard address: set cluster_advertise_api, or other edges cannot pull this edge's streams");
        }
    }

    /// The API address announced to the other edges (`cluster_advertise_api`, else the bound
    /// one).
    pub(super) fn announced_api(&self) -> String {
        self.config
            .cluster_advertise_api
            .or(self.relays.api_addr)
            .unwrap_or(self.config.api_listen)
            .to_string()
    }

    /// Streams live with this edge as their origin (ingested or rebroadcast here), with
    /// their publish ids.
    pub(super) fn origin_live(&self) -> std::collections::BTreeMap<String, u64> {
        self.streams
            .iter()
            .filter(|s| s.state == StreamState::Live && !self.relays.active.contains_key(&s.id))
            .map(|s| {
                let publish = self.relays.publishes.get(&s.id).copied().unwrap_or(0);
                (s.id.clone(), publish)
            })
            .collect()
    }

    /// A stream went live here: its window for other edges is open (an ENDLIST left from an
    /// earlier publish would end the relays of this one), and as its origin (not as a
    /// relay) this edge tells the others, with a new publish id (the wall clock, rising).
    pub(super) fn relay_went_live(&mut self, id: &str) {
        let (window, target) = (self.config.hls_window, self.config.hls_segment_ms);
        self.relays
            .windows
            .entry(id.to_owned())
            .or_insert_with(|| LivePlaylist::new(window, target.div_ceil(1000)))
            .reopen();
        if self.relays.active.contains_key(id) {
            return;
        }
        let last = self.relays.publishes.get(id).copied().unwrap_or(0);
        let publish = self.clock_ms.max(last + 1);
        self.relays.publishes.insert(id.to_owned(), publish);
        self.edges.publish(Msg::Live {
            stream: id.to_owned(),
            api: self.announced_api(),
            publish,
        });
    }

    /// A segment of `stream` goes out: it joins the window served to other edges. True when
    /// it was relayed from another edge (not cut here: no ingest count, not recorded).
    pub(super) fn relay_window_push(&mut self, stream: &str, segment: &Segment) -> bool {
        let (window, target) = (self.config.hls_window, self.config.hls_segment_ms);
        self.relays
            .windows
            .entry(stream.to_owned())
            .or_insert_with(|| LivePlaylist::new(window, target.div_ceil(1000)))
            .push(segment.clone());
        self.relays.active.contains_key(stream)
    }

    /// The stream's current publish (or relay) ended here.
    pub(super) fn relay_stream_ended(&mut self, id: &str) {
        if let Some(w) = self.relays.windows.get_mut(id) {
            w.end();
        }
        if self.relays.active.remove(id).is_none() {
            self.edges.publish(Msg::Ended {
                stream: id.to_owned(),
            });
        }
    }

    /// Another edge is the origin of live stream `stream` (a `Live` message, or an
    /// announcement listing it): relay it. The same publish again (a repeat on `hello`, a
    /// late announcement) starts nothing once its relay ended.
    pub(super) fn remote_live(&mut self, from: &str, stream: &str, api: &str, publish: u64) {
        let Some(api) = api
            .parse::<SocketAddr>()
            .ok()
            .filter(|_| streams::plain_id(stream))
        else {
            return tracing::warn!(edge = from, stream, api, "refusing a malformed live stream");
        };
        if api.ip().is_unspecified() {
            // A wildcard would reach this edge itself; the origin warned at its start.
            return tracing::debug!(edge = from, stream, %api, "origin announces a wildcard API address");
        }
        let new = Origin {
            edge: from.to_owned(),
            api,
            ended: false,
            lost: false,
            publish,
        };
        let known = self.relays.remote.insert(stream.to_owned(), new);
        let fresh = known
            .as_ref()
            .is_none_or(|o| o.edge != from || o.publish != publish);
        if let Some(old) = known.filter(|_| !fresh) {
            // Known: keep whether it ended (a stale repeat must not revive it).
            if let Some(o) = self.relays.remote.get_mut(stream) {
                o.ended = old.ended;
            }
            if old.ended {
                return;
            }
        }
        if self.relays.active.contains_key(stream) {
            return;
        }
        match self.stream(stream).map(|s| s.state) {
            Some(StreamState::Live) if fresh => tracing::warn!(
                stream,
                origin = from,
                "not relaying: the stream is live here too (two origins)"
            ),
            Some(StreamState::Live) => {}
            Some(_) => self.start_relay(stream),
            None => tracing::debug!(stream, "live on another edge but not registered here yet"),
        }
    }

    /// The origin of `stream` says it ended: its relays end once they have its last
    /// segments (they pull the ENDLIST), or at once if the origin cannot be reached.
    pub(super) fn remote_ended(&mut self, from: &str, stream: &str) {
        if let Some(o) = self.relays.remote.get_mut(stream) {
            if o.edge == from {
                o.ended = true;
            }
        }
    }

    /// An announcement: streams it lists live are relayed as a `Live` would (a missed
    /// `Live`: this edge joined late, or the stream was not registered here yet); streams it
    /// no longer lists (a missed `Ended`) are marked ended.
    pub(super) fn relay_reconcile(&mut self, from: &str, a: &Announce) {
        for (stream, o) in self.relays.remote.iter_mut() {
            if o.edge == from && !a.live.contains_key(stream) {
                o.ended = true;
            }
        }
        for (stream, publish) in &a.live {
            self.remote_live(from, stream, &a.api, *publish);
        }
    }

    /// Edges silent past the announcement ttl: what they were the origin of counts as lost
    /// (its relays end at their first failed pull) until the edge is heard again.
    pub(super) fn relay_origins_gone(&mut self, gone: &[String]) {
        for o in self.relays.remote.values_mut() {
            if gone.contains(&o.edge) {
                o.lost = true;
            }
        }
    }

    /// `Live` again for every stream this edge is the origin of (on hello and reconnect).
    pub(super) fn relay_republish(&self) {
        for (stream, publish) in self.origin_live() {
            self.edges.publish(Msg::Live {
                stream,
                api: self.announced_api(),
                publish,
            });
        }
    }

    /// Takes the stream's publish turn for a relay and queues it for the relay task. A
    /// stream live here already (its own publisher) is not relayed: it is logged, and each
    /// edge keeps serving its own (two origins cannot be merged into one playlist).
    fn start_relay(&mut self, stream: &str) {
        let Some(origin) = self.relays.remote.get(stream).cloned() else {
            return;
        };
        let turn = match self.streams.begin_rebroadcast(stream) {
            Ok(t) => t,
            Err(e) => {
                return tracing::warn!(stream, origin = origin.edge, error = %e, "not relaying: the stream is live here too");
            }
        };
        self.relays.active.insert(stream.to_owned(), turn.turn);
        self.relays.stats.started += 1;
        self.announce_live(stream);
        tracing::info!(stream, origin = origin.edge, api = %origin.api, "relaying a stream from its origin edge");
        self.relays.pending.push(Relay {
            turn,
            origin: origin.api,
            after: self.live.last_segment.get(stream).map(|(seq, _)| *seq),
            publish: origin.publish,
        });
        self.relays.queued.raise();
    }

    /// Relays queued for the relay task.
    pub fn take_relays(&mut self) -> Vec<Relay> {
        std::mem::take(&mut self.relays.pending)
    }

    /// Raised when a relay is queued.
    pub fn relay_queued(&self) -> Rc<shards::sync::Signal> {
        self.relays.queued.clone()
    }

    /// Whether `turn` still holds its stream as a relay.
    pub fn relay_holds(&self, turn: &PublishTurn) -> bool {
        self.relays.active.get(&turn.stream) == Some(&turn.turn)
            && self.streams.get(&turn.stream).map(|s| s.publish) == Some(turn.turn)
    }

    /// Whether the origin of `stream` is known to have ended it or gone away.
    pub fn relay_origin_ended(&self, stream: &str) -> bool {
        self.relays
            .remote
            .get(stream)
            .is_none_or(|o| o.ended || o.lost)
    }

    /// One segment pulled from the origin goes out as the stream's next segment here, with
    /// the origin's sequence number. False when the relay no longer holds the stream.
    pub fn relay_segment(&mut self, turn: &PublishTurn, segment: Segment, now_ms: u64) -> bool {
        if !self.relay_holds(turn) {
            return false;
        }
        self.relays.stats.segments += 1;
        self.relays.stats.bytes += segment.data.len() as u64;
        self.segment_out(&turn.stream.clone(), segment, now_ms);
        true
    }

    /// The relay of `relay` is over: the origin's playlist ended (`gave_up` false) or it
    /// could not be pulled (`gave_up`). The audience gets `ended`. If the origin went live
    /// again meanwhile (a newer publish), a new relay starts; an origin that was silent on
    /// the bus is relayed again when it is heard again.
    pub fn end_relay(&mut self, relay: &Relay, gave_up: bool, now_ms: u64) {
        if let Some(o) = self.relays.remote.get_mut(&relay.turn.stream) {
            // This publish is over (a repeat of its `Live` does not start it again), unless
            // the relay gave up on an origin that fell silent (a partition).
            if (gave_up && !o.lost) || (!gave_up && o.publish == relay.publish) {
                o.ended = true;
            }
        }
        self.end_publish(&relay.turn, now_ms);
        let again = self
            .relays
            .remote
            .get(&relay.turn.stream)
            .is_some_and(|o| !o.ended && !o.lost);
        if again && !self.relays.active.contains_key(&relay.turn.stream) {
            self.start_relay(&relay.turn.stream);
        }
    }

    /// Counts a playlist pulled, a failed pull, a segment missed.
    pub fn relay_counted(&mut self, playlists: u64, failures: u64, missed: u64) {
        let s = &mut self.relays.stats;
        s.playlists += playlists;
        s.failures += failures;
        s.missed += missed;
    }

    pub fn relay_stats(&self) -> RelayStats {
        self.relays.stats
    }

    /// The origin edge a stream is relayed from now, if it is.
    pub fn relayed_from(&self, stream: &str) -> Option<&str> {
        self.relays.active.get(stream)?;
        self.relays.remote.get(stream).map(|o| o.edge.as_str())
    }

    /// Streams relayed here now.
    pub fn relays_active(&self) -> usize {
        self.relays.active.len()
    }

    /// `GET /api/relay/{stream}/index.m3u8`: the stream's window as this edge has it, with
    /// `{seq}.ts` URIs (never a session: it is for edges).
    pub fn origin_playlist(&self, stream: &str) -> Result<String, OriginRefusal> {
        let w = self
            .relays
            .windows
            .get(stream)
            .ok_or(OriginRefusal::Unknown)?;
        if w.segments().next().is_none() {
            return Err(OriginRefusal::NoSegment);
        }
        // A literal template with `{seq}`: it parses.
        let uris = UriTemplate::new("{seq}.ts").unwrap_or_else(|_| unreachable!("literal"));
        Ok(w.render(&uris, &[]))
    }

    /// `GET /api/relay/{stream}/{seq}.ts`: the shared buffer of one segment, counted.
    pub fn origin_segment(&mut self, stream: &str, sequence: u64) -> Option<Arc<[u8]>> {
        let data = self
            .relays
            .windows
            .get(stream)?
            .segment(sequence)?
            .data
            .clone();
        self.relays.stats.served_segments += 1;
        self.relays.stats.served_bytes += data.len() as u64;
        Some(data)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use shards::proto::{MediaCommand, ShardCommand};

    use super::super::downlink::Downlink;
    use super::super::test_bus::{self, from};
    use super::super::PublishError;
    use super::*;

    fn edge() -> (App, Rc<Downlink>, Rc<RefCell<Vec<Msg>>>) {
        let (mut app, down, sent) = test_bus::clustered("e3", 0);
        app.set_api_addr("10.0.0.3:8081".parse().unwrap());
        (app, down, sent)
    }

    fn live(stream: &str, publish: u64) -> Msg {
        Msg::Live {
            stream: stream.into(),
            api: "10.0.0.1:8081".into(),
            publish,
        }
    }

    fn segment(sequence: u64) -> Segment {
        Segment {
            sequence,
            duration_ms: 1000,
            start_wall_ms: 1_764_510_000_000 + sequence * 1000,
            discontinuity: false,
            starts_with_keyframe: true,
            data: vec![0x47; 188].into(),
        }
    }

    fn media(down: &Downlink) -> Vec<MediaCommand> {
        down.take_all()
            .into_iter()
            .filter_map(|c| match c {
                ShardCommand::Media(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_wildcard_origin_is_not_pulled_and_an_advertised_address_is_announced() {
        let (mut app, _down, _sent) = edge();
        app.add_stream("s".into(), None, 0).unwrap();
        let wildcard = Msg::Live {
            stream: "s".into(),
            api: "0.0.0.0:8081".into(),
            publish: 1,
        };
        app.on_bus(from("e1", wildcard), 10);
        assert!(
            app.take_relays().is_empty(),
            "0.0.0.0 would reach this edge itself"
        );
        assert_eq!(
            app.announced_api(),
            "10.0.0.3:8081",
            "the bound address by default"
        );
        let mut config = (*app.config).clone();
        config.cluster_advertise_api = Some("192.0.2.7:8081".parse().unwrap());
        app.config = std::sync::Arc::new(config);
        assert_eq!(app.announced_api(), "192.0.2.7:8081");
    }

    #[test]
    fn a_stream_live_elsewhere_is_relayed_once_and_ends_with_its_origin() {
        let (mut app, down, sent) = edge();
        let (_, key) = app.add_stream("s".into(), None, 0).unwrap();
        sent.borrow_mut().clear();
        down.take_all();
        app.on_bus(from("e1", live("s", 5)), 10);
        let relays = app.take_relays();
        assert_eq!(relays.len(), 1);
        let relay = &relays[0];
        assert_eq!(relay.origin, "10.0.0.1:8081".parse().unwrap());
        assert_eq!(relay.after, None);
        assert_eq!(app.relayed_from("s"), Some("e1"));
        assert!(matches!(media(&down)[..], [MediaCommand::Live { .. }]));
        assert!(
            sent.borrow().is_empty(),
            "a relay is not an origin: no Live sent on"
        );
        // A repeat, or an announcement listing it, starts nothing more.
        app.on_bus(from("e1", live("s", 5)), 20);
        let a = Announce {
            api: "10.0.0.1:8081".into(),
            live: [("s".to_owned(), 5)].into(),
            ..Announce::default()
        };
        app.on_bus(from("e1", Msg::Announce(a.clone())), 20);
        assert!(app.take_relays().is_empty());
        // A local publisher is refused while the relay holds the stream.
        let peer = "127.0.0.1:9".parse().unwrap();
        assert!(matches!(
            app.begin_publish(&key, peer),
            Err(PublishError::Busy(_))
        ));
        // Relayed segments keep the origin's numbers, are not counted as cut here.
        assert!(app.relay_segment(&relay.turn, segment(7), 30));
        assert!(app.relay_segment(&relay.turn, segment(8), 30));
        assert_eq!(app.relay_stats().segments, 2);
        assert_eq!(app.ingest_stats().segments, 0);
        let pushed: Vec<u64> = media(&down)
            .iter()
            .filter_map(|m| match m {
                MediaCommand::Segment { segment, .. } => Some(segment.sequence),
                _ => None,
            })
            .collect();
        assert_eq!(pushed, vec![7, 8]);
        // The origin ends it: the relay ends after its last segment; the audience is told.
        app.on_bus(from("e1", Msg::Ended { stream: "s".into() }), 40);
        assert!(app.relay_origin_ended("s"));
        app.end_relay(relay, false, 50);
        assert!(!app.relay_holds(&relay.turn));
        assert!(media(&down)
            .iter()
            .any(|m| matches!(m, MediaCommand::Ended { .. })));
        assert!(sent.borrow().is_empty(), "no Ended sent for a relay");
        // A stale announcement or a repeat of its Live (a hello) does not start it again;
        // a new publish does, after segment 8.
        app.on_bus(from("e1", Msg::Announce(a)), 60);
        app.on_bus(from("e1", live("s", 5)), 60);
        assert!(app.take_relays().is_empty());
        app.on_bus(from("e1", live("s", 6)), 70);
        let again = app.take_relays();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].after, Some(8));
    }

    #[test]
    fn an_origin_tells_the_cluster_and_serves_its_window() {
        let (mut app, _down, sent) = edge();
        let (_, key) = app.add_stream("s".into(), None, 0).unwrap();
        sent.borrow_mut().clear();
        let turn = app
            .begin_publish(&key, "127.0.0.1:9".parse().unwrap())
            .unwrap();
        assert_eq!(
            sent.borrow().last(),
            Some(&Msg::Live {
                stream: "s".into(),
                api: "10.0.0.3:8081".into(),
                publish: 1,
            })
        );
        assert_eq!(app.origin_live(), [("s".to_owned(), 1)].into());
        assert_eq!(app.origin_playlist("s"), Err(OriginRefusal::NoSegment));
        assert_eq!(app.origin_playlist("t"), Err(OriginRefusal::Unknown));
        app.segment_out("s", segment(0), 1);
        let text = app.origin_playlist("s").unwrap();
        assert!(
            text.contains("\n0.ts\n") && !text.contains("ENDLIST"),
            "{text}"
        );
        assert_eq!(app.origin_segment("s", 0).map(|d| d.len()), Some(188));
        assert!(app.origin_segment("s", 1).is_none());
        assert_eq!(app.relay_stats().served_segments, 1);
        app.end_publish(&turn, 2);
        assert_eq!(
            sent.borrow().last(),
            Some(&Msg::Ended { stream: "s".into() })
        );
        assert!(app
            .origin_playlist("s")
            .unwrap()
            .ends_with("#EXT-X-ENDLIST\n"));
        // Live again: the window reopens before any new segment.
        app.begin_publish(&key, "127.0.0.1:9".parse().unwrap())
            .unwrap();
        assert!(!app.origin_playlist("s").unwrap().contains("ENDLIST"));
    }

    #[test]
    fn a_late_edge_relays_from_announcements_and_malformed_ones_are_refused() {
        let (mut app, _down, _sent) = edge();
        app.add_stream("s".into(), None, 0).unwrap();
        let bad = Msg::Live {
            stream: "s".into(),
            api: "not an address".into(),
            publish: 1,
        };
        app.on_bus(from("e1", bad), 1);
        let bad_id = Msg::Live {
            stream: "../s".into(),
            api: "10.0.0.1:8081".into(),
            publish: 1,
        };
        app.on_bus(from("e1", bad_id), 1);
        assert!(app.take_relays().is_empty());
        let a = Announce {
            api: "10.0.0.1:8081".into(),
            live: [("s".to_owned(), 5)].into(),
            ..Announce::default()
        };
        app.on_bus(from("e1", Msg::Announce(a.clone())), 2);
        let relays = app.take_relays();
        assert_eq!(relays.len(), 1, "learnt from the announcement");
        assert_eq!(relays[0].publish, 5);
        // The origin falls silent: what it was the origin of counts as lost, and its relay
        // gives up at its first failed pull.
        app.cluster_tick(1_000_000);
        assert!(app.relay_origin_ended("s"));
        app.end_relay(&relays[0], true, 1_000_001);
        assert!(app.take_relays().is_empty());
        // Heard again, still live with the same publish (a partition healed): relayed again.
        app.on_bus(from("e1", Msg::Announce(a.clone())), 1_000_002);
        let revived = app.take_relays();
        assert_eq!(revived.len(), 1);
        // A relay that gave up on an origin the bus still hears is final for that publish.
        app.end_relay(&revived[0], true, 1_000_003);
        app.on_bus(from("e1", Msg::Announce(a)), 1_000_004);
        assert!(app.take_relays().is_empty());
    }
}
