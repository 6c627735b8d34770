//! The application core: one executor beside the shards that knows every viewer.
//!
//! It mirrors the shards' profiles (from [`ShardEvent`]s), keeps groups (the global group, one
//! audience group per stream, and predicate groups), answers the viewer requests that need
//! global knowledge (`watch`), and reaches a group with one [`ShardCommand::Cast`] per shard.
//! It holds no viewer sockets: each shard fans out from its own bitmaps.
//!
//! The shard owns each profile; the mirror changes only on shard events, which carry full
//! snapshots, so it converges to the shard's copy. Changes the application core makes (tags,
//! the watched stream) go down as [`ShardCommand::Update`] and come back as
//! [`ShardEvent::Changed`].

pub mod downlink;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shards::profile::{profile_hash, Predicate, Profile, ViewerId};
use shards::proto::{
    Frame, GroupId, ProfileUpdate, Request, ShardCommand, ShardEvent, Telemetry, ViewerRef,
};
use shards::{ShardStats, StatsSnapshot};

use crate::config::Config;
use downlink::Downlink;

/// The application core's copy of one viewer.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub at: ViewerRef,
    pub resume: Box<str>,
    pub profile: Profile,
    /// The viewer's latest telemetry report.
    pub telemetry: Option<Telemetry>,
}

/// What kind of group, which decides whether the API may delete it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Global,
    Stream,
    Custom,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::Global => "global",
            GroupKind::Stream => "stream",
            GroupKind::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: GroupId,
    /// The id the API uses: `global`, `stream:<id>`, or `g<n>`.
    pub key: String,
    pub name: String,
    pub kind: GroupKind,
    pub predicate: Arc<Predicate>,
    /// Viewers whose mirrored profile matches: kept exact on every event.
    pub size: usize,
    pub created_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub id: String,
    pub title: Option<String>,
    pub group: GroupId,
    pub created_ms: u64,
}

/// A mirror audit in progress or done: every shard lists a hash of each profile it owns and
/// the application core compares them with its mirror at the same point of the event stream.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub shards_reported: usize,
    pub viewers_checked: usize,
    pub mismatches: Vec<String>,
}

/// All state of the application core. Single-threaded: the executor's tasks share it through
/// `Rc<RefCell<App>>` and never hold a borrow across an await.
pub struct App {
    pub config: Arc<Config>,
    pub shard_stats: Vec<Arc<ShardStats>>,
    downlinks: Vec<Rc<Downlink>>,
    pub viewers: HashMap<ViewerId, Viewer>,
    pub groups: BTreeMap<GroupId, Group>,
    group_keys: HashMap<String, GroupId>,
    next_group: u32,
    next_custom: u64,
    pub streams: BTreeMap<String, Stream>,
    pub audits: BTreeMap<u64, Audit>,
    next_audit: u64,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random token in hex (`bytes` random bytes).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom(2) only fails before the kernel pool is seeded, long before a server runs;
    // zeros would still be a well-formed (if guessable) session id.
    let _ = getrandom::getrandom(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl App {
    pub fn new(
        config: Arc<Config>,
        shard_stats: Vec<Arc<ShardStats>>,
        downlinks: Vec<Rc<Downlink>>,
    ) -> App {
        let mut app = App {
            config,
            shard_stats,
            downlinks,
            viewers: HashMap::new(),
            groups: BTreeMap::new(),
            group_keys: HashMap::new(),
            next_group: 1,
            next_custom: 1,
            streams: BTreeMap::new(),
            audits: BTreeMap::new(),
            next_audit: 1,
        };
        let global = Group {
            id: GroupId::GLOBAL,
            key: "global".into(),
            name: "every connected viewer".into(),
            kind: GroupKind::Global,
            predicate: Arc::new(Predicate::default()),
            size: 0,
            created_ms: unix_ms(),
        };
        app.group_keys.insert(global.key.clone(), global.id);
        app.groups.insert(global.id, global);
        app
    }

    /// Sends `command` to shard `shard`.
    pub fn command(&self, shard: u16, command: ShardCommand) {
        if let Some(d) = self.downlinks.get(shard as usize) {
            d.push(command);
        }
    }

    /// Sends a command built by `make` to every shard.
    pub fn broadcast(&self, mut make: impl FnMut() -> ShardCommand) {
        for d in &self.downlinks {
            d.push(make());
        }
    }

    /// Sends an encoded frame to one viewer.
    pub fn send_to(&self, at: ViewerRef, frame: Frame) {
        self.command(at.shard, ShardCommand::Send { to: at, frame });
    }

    /// Sends `{"type":"error",...}` to one viewer.
    pub fn send_error(&self, at: ViewerRef, code: &str, message: &str) {
        let json = json!({"type": "error", "code": code, "message": message});
        self.send_to(at, text_frame(&json.to_string()));
    }

    // ---- mirror ----

    pub fn on_event(&mut self, event: ShardEvent) {
        match event {
            ShardEvent::Joined {
                at,
                resume,
                profile,
            } => {
                self.count(&profile, 1);
                if let Some(old) = self.viewers.insert(
                    at.viewer,
                    Viewer {
                        at,
                        resume,
                        profile: *profile,
                        telemetry: None,
                    },
                ) {
                    self.count(&old.profile, -1);
                }
            }
            ShardEvent::Changed { at, profile } => {
                let Some(old) = self.viewers.get(&at.viewer).filter(|v| v.at == at) else {
                    return;
                };
                let old = old.profile.clone();
                self.recount(&old, &profile);
                if let Some(v) = self.viewers.get_mut(&at.viewer) {
                    v.profile = *profile;
                }
            }
            ShardEvent::Left { at } => {
                if self.viewers.get(&at.viewer).is_some_and(|v| v.at == at) {
                    if let Some(v) = self.viewers.remove(&at.viewer) {
                        self.count(&v.profile, -1);
                    }
                }
            }
            ShardEvent::Request { at, request } => self.on_request(at, request),
            ShardEvent::Audit {
                audit,
                shard,
                profiles,
            } => self.on_audit(audit, shard, profiles),
        }
    }

    fn count(&mut self, profile: &Profile, delta: isize) {
        for g in self.groups.values_mut() {
            if g.predicate.matches(profile) {
                g.size = g.size.saturating_add_signed(delta);
            }
        }
    }

    fn recount(&mut self, old: &Profile, new: &Profile) {
        for g in self.groups.values_mut() {
            match (g.predicate.matches(old), g.predicate.matches(new)) {
                (false, true) => g.size += 1,
                (true, false) => g.size = g.size.saturating_sub(1),
                _ => {}
            }
        }
    }

    fn on_request(&mut self, at: ViewerRef, request: Request) {
        match request {
            Request::Watch { stream } => self.watch(at, &stream),
            Request::Vote { poll, .. } => {
                self.send_error(at, "unknown_poll", &format!("no open poll {poll:?}"))
            }
            Request::Telemetry(t) => {
                if let Some(v) = self.viewers.get_mut(&at.viewer).filter(|v| v.at == at) {
                    v.telemetry = Some(t);
                }
            }
        }
    }

    /// A viewer asks for a stream (FIG. 4): check it is live, answer with its media endpoint
    /// and move the viewer into the stream's audience group.
    fn watch(&mut self, at: ViewerRef, stream: &str) {
        if !self.streams.contains_key(stream) {
            return self.send_error(
                at,
                "unknown_stream",
                &format!("no stream {stream:?} is live"),
            );
        }
        let session = random_hex(12);
        let url = self
            .config
            .media_url
            .replace("{stream}", stream)
            .replace("{session}", &session);
        let endpoint =
            json!({"type": "endpoint", "stream": stream, "url": url, "session": session});
        self.send_to(at, text_frame(&endpoint.to_string()));
        self.command(
            at.shard,
            ShardCommand::Update {
                to: at,
                update: ProfileUpdate::Stream(Some(stream.into())),
            },
        );
    }

    // ---- streams and groups ----

    fn add_group(&mut self, key: String, name: String, kind: GroupKind, p: Predicate) -> GroupId {
        let id = GroupId(self.next_group);
        self.next_group += 1;
        let predicate = Arc::new(p);
        let size = self
            .viewers
            .values()
            .filter(|v| predicate.matches(&v.profile))
            .count();
        self.broadcast(|| ShardCommand::DefineGroup {
            id,
            predicate: predicate.clone(),
        });
        self.group_keys.insert(key.clone(), id);
        self.groups.insert(
            id,
            Group {
                id,
                key,
                name,
                kind,
                predicate,
                size,
                created_ms: unix_ms(),
            },
        );
        id
    }

    /// Registers a live stream and its audience group. `Err` if it exists.
    pub fn add_stream(&mut self, id: String, title: Option<String>) -> Result<&Stream, String> {
        if self.streams.contains_key(&id) {
            return Err(format!("stream \"{id}\" already exists"));
        }
        let group = self.add_group(
            format!("stream:{id}"),
            format!("audience of {id}"),
            GroupKind::Stream,
            Predicate::stream(&id),
        );
        let stream = Stream {
            id: id.clone(),
            title,
            group,
            created_ms: unix_ms(),
        };
        Ok(self.streams.entry(id).or_insert(stream))
    }

    /// Creates a predicate group; returns its API id.
    pub fn add_custom_group(&mut self, name: String, predicate: Predicate) -> String {
        let key = format!("g{}", self.next_custom);
        self.next_custom += 1;
        self.add_group(key.clone(), name, GroupKind::Custom, predicate);
        key
    }

    pub fn group_by_key(&self, key: &str) -> Option<&Group> {
        self.group_keys.get(key).and_then(|id| self.groups.get(id))
    }

    /// Deletes a custom group everywhere.
    pub fn delete_group(&mut self, key: &str) -> Result<(), (u16, String)> {
        let group = self
            .group_by_key(key)
            .ok_or_else(|| (404, format!("no group \"{key}\"")))?;
        if group.kind != GroupKind::Custom {
            return Err((
                409,
                format!("group \"{key}\" is built in and cannot be deleted"),
            ));
        }
        let id = group.id;
        self.groups.remove(&id);
        self.group_keys.remove(key);
        self.broadcast(|| ShardCommand::DropGroup { id });
        Ok(())
    }

    /// Group-cast (FIG. 6, 606-608): the message is encoded into one frame here, and each
    /// shard writes those bytes to its members. Returns the group's size.
    pub fn cast(&self, key: &str, payload: &Value) -> Option<usize> {
        let group = self.group_by_key(key)?;
        let message = json!({"type": "message", "group": key, "payload": payload});
        let frame = text_frame(&message.to_string());
        let id = group.id;
        self.broadcast(|| ShardCommand::Cast {
            group: id,
            frame: frame.clone(),
        });
        Some(group.size)
    }

    /// Replaces a viewer's tags through its shard. `None` if the viewer is unknown.
    pub fn set_tags(&self, viewer: ViewerId, tags: Vec<Box<str>>) -> Option<()> {
        let v = self.viewers.get(&viewer)?;
        self.command(
            v.at.shard,
            ShardCommand::Update {
                to: v.at,
                update: ProfileUpdate::Tags(tags),
            },
        );
        Some(())
    }

    /// Aggregated telemetry of a group's members that reported any.
    pub fn group_telemetry(&self, group: &Group) -> Value {
        #[derive(Default)]
        struct Agg {
            n: u64,
            sum: f64,
            max: f64,
        }
        let mut aggs: [Agg; 4] = Default::default();
        let mut reporting = 0u64;
        for v in self.viewers.values() {
            let Some(t) = v.telemetry else { continue };
            if !group.predicate.matches(&v.profile) {
                continue;
            }
            reporting += 1;
            for (agg, value) in
                aggs.iter_mut()
                    .zip([t.bitrate_kbps, t.buffering_ms, t.dropped_frames, t.rtt_ms])
            {
                if let Some(x) = value.filter(|x| x.is_finite()) {
                    agg.n += 1;
                    agg.sum += x;
                    agg.max = if agg.n == 1 { x } else { agg.max.max(x) };
                }
            }
        }
        let show = |a: &Agg| {
            if a.n == 0 {
                Value::Null
            } else {
                json!({"mean": a.sum / a.n as f64, "max": a.max, "reports": a.n})
            }
        };
        json!({
            "viewers_reporting": reporting,
            "bitrate_kbps": show(&aggs[0]),
            "buffering_ms": show(&aggs[1]),
            "dropped_frames": show(&aggs[2]),
            "rtt_ms": show(&aggs[3]),
        })
    }

    /// The API view of a group.
    pub fn group_json(&self, g: &Group) -> Value {
        json!({
            "id": g.key,
            "name": g.name,
            "kind": g.kind.as_str(),
            "match": validate::predicate_json(&g.predicate),
            "size": g.size,
            "created_ms": g.created_ms,
        })
    }

    // ---- audits ----

    /// Starts a mirror audit; its result fills in as shards answer.
    pub fn start_audit(&mut self) -> u64 {
        let id = self.next_audit;
        self.next_audit += 1;
        self.audits.insert(id, Audit::default());
        while self.audits.len() > 16 {
            self.audits.pop_first();
        }
        self.broadcast(|| ShardCommand::Audit { audit: id });
        id
    }

    fn on_audit(&mut self, audit: u64, shard: u16, profiles: Vec<(ViewerRef, u64)>) {
        let mut mismatches = Vec::new();
        let mut seen = 0usize;
        for (at, hash) in &profiles {
            match self.viewers.get(&at.viewer) {
                Some(v) if v.at == *at && profile_hash(&v.profile) == *hash => seen += 1,
                Some(v) if v.at == *at => {
                    mismatches.push(format!("{}: profile differs", at.viewer))
                }
                _ => mismatches.push(format!("{}: missing from the mirror", at.viewer)),
            }
        }
        let mirrored = self
            .viewers
            .values()
            .filter(|v| v.at.shard == shard)
            .count();
        if mirrored != profiles.len() {
            mismatches.push(format!(
                "shard {shard}: owns {} viewers, the mirror has {mirrored}",
                profiles.len()
            ));
        }
        if let Some(a) = self.audits.get_mut(&audit) {
            a.shards_reported += 1;
            a.viewers_checked += seen + mismatches.len();
            a.mismatches.extend(mismatches);
        }
    }

    pub fn shards(&self) -> usize {
        self.downlinks.len()
    }

    /// Live counters of every shard.
    pub fn shard_snapshots(&self) -> Vec<StatsSnapshot> {
        self.shard_stats.iter().map(|s| s.snapshot()).collect()
    }
}

/// Encodes one text frame.
pub fn text_frame(json: &str) -> Frame {
    let mut buf = Vec::with_capacity(netstack::ws::header_len(json.len()) + json.len());
    netstack::ws::encode_frame(netstack::ws::OpCode::Text, json.as_bytes(), &mut buf);
    buf.into()
}
