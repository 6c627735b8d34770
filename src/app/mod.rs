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
pub mod polls;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use shards::profile::{profile_hash, Predicate, Profile, ViewerId};
use shards::proto::{
    Admission, Frame, GroupId, PollSeq, ProfileUpdate, Request, Restore, ShardCommand, ShardEvent,
    Telemetry, ViewerRef, Vote,
};
use shards::{ShardStats, StatsSnapshot};

use crate::api::broadcaster::Sink;
use crate::api::validate;
use crate::config::Config;
use downlink::Downlink;
use polls::{Poll, PollRequest, PollState};
use store::Store;

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
    /// The audience of a poll; it lives as long as the poll is open.
    Poll,
    Custom,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::Global => "global",
            GroupKind::Stream => "stream",
            GroupKind::Poll => "poll",
            GroupKind::Custom => "custom",
        }
    }
}

/// A viewer that left, kept for `resume_window_s` so a reconnect with its token gets back its
/// identity, groups and votes.
#[derive(Debug, Clone)]
pub struct Departed {
    pub resume: Box<str>,
    pub profile: Profile,
    pub votes: Vec<Vote>,
    pub left_ms: u64,
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
    /// Resume token -> identity, for viewers present and departed.
    tokens: HashMap<Box<str>, ViewerId>,
    pub departed: HashMap<ViewerId, Departed>,
    /// Viewers resuming while their old connection was still open: the new connection (and
    /// its profile) waits for the old one's `Left`.
    awaiting: HashMap<ViewerId, (ViewerRef, Profile)>,
    pub polls: BTreeMap<String, Poll>,
    poll_seqs: HashMap<PollSeq, String>,
    next_poll: PollSeq,
    /// Broadcasters following a stream's results over WebSocket.
    pub broadcasters: Vec<(String, Rc<Sink>)>,
    pub store: Option<Store>,
    /// Casts sent to each group that some shard has not finished writing.
    casts_in_flight: HashMap<GroupId, usize>,
    /// Raised when a poll opens: the ticker runs at the results interval only while one is.
    pub poll_opened: Rc<shards::sync::Signal>,
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
            tokens: HashMap::new(),
            departed: HashMap::new(),
            awaiting: HashMap::new(),
            polls: BTreeMap::new(),
            poll_seqs: HashMap::new(),
            next_poll: 1,
            broadcasters: Vec::new(),
            store: None,
            casts_in_flight: HashMap::new(),
            poll_opened: Rc::default(),
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

    /// Casts `frame` to `group` on every shard, counting it in flight until every shard has
    /// written it.
    fn cast_frame(&mut self, group: GroupId, frame: Frame) {
        *self.casts_in_flight.entry(group).or_default() += self.downlinks.len();
        self.broadcast(|| ShardCommand::Cast {
            group,
            frame: frame.clone(),
        });
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
                claim,
            } => match claim {
                None => self.join(at, resume, *profile),
                Some(token) => self.claim(at, resume, *profile, &token),
            },
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
            ShardEvent::Left { at, votes } => self.leave(at, votes),
            ShardEvent::Request { at, request } => self.on_request(at, request),
            ShardEvent::Audit {
                audit,
                shard,
                profiles,
            } => self.on_audit(audit, shard, profiles),
            ShardEvent::PollTally {
                seq,
                shard,
                tally,
                closed,
            } => self.on_tally(seq, shard, tally, closed),
            ShardEvent::CastDone { group } => {
                if let Some(n) = self.casts_in_flight.get_mut(&group) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.casts_in_flight.remove(&group);
                    }
                }
            }
        }
    }

    fn join(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile) {
        self.count(&profile, 1);
        self.tokens.insert(resume.clone(), at.viewer);
        let viewer = Viewer {
            at,
            resume,
            profile,
            telemetry: None,
        };
        if let Some(old) = self.viewers.insert(at.viewer, viewer) {
            self.count(&old.profile, -1);
        }
    }

    /// A new connection presents a resume token. Its welcome waits for our answer.
    fn claim(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile, token: &str) {
        let known = self.tokens.get(token).copied();
        match known {
            Some(x) if self.departed.contains_key(&x) => {
                if let Some(dep) = self.departed.remove(&x) {
                    self.resume_into(at, x, dep, profile);
                }
            }
            Some(x) if self.viewers.contains_key(&x) && !self.awaiting.contains_key(&x) => {
                // The old connection is still open (its loss not yet noticed): drop it, and
                // resume once its `Left` brings back its votes.
                let old = self.viewers[&x].at;
                self.command(old.shard, ShardCommand::Evict { to: old });
                self.awaiting.insert(x, (at, profile));
            }
            _ => {
                let admission = Admission {
                    viewer: at.viewer,
                    resume: resume.clone(),
                    restore: None,
                };
                self.command(at.shard, ShardCommand::Admit { to: at, admission });
                self.join(at, resume, profile);
            }
        }
    }

    /// Gives identity `x` and its departed state to the waiting connection `provisional`.
    fn resume_into(
        &mut self,
        provisional: ViewerRef,
        x: ViewerId,
        dep: Departed,
        mut profile: Profile,
    ) {
        let restore = Restore {
            stream: dep.profile.stream.clone(),
            tags: dep.profile.tags.clone(),
            app_version: dep.profile.app_version.clone(),
            hardware: dep.profile.hardware.clone(),
            region: dep.profile.region.clone(),
            votes: dep.votes,
        };
        // The same transformation the shard applies; its `Changed` snapshot confirms it.
        profile.viewer = x;
        profile.stream = restore.stream.clone();
        profile.tags = restore.tags.clone();
        profile.app_version = restore.app_version.clone().or(profile.app_version);
        profile.hardware = restore.hardware.clone().or(profile.hardware);
        if profile.region.is_none() {
            profile.region = restore.region.clone();
        }
        self.command(
            provisional.shard,
            ShardCommand::Admit {
                to: provisional,
                admission: Admission {
                    viewer: x,
                    resume: dep.resume.clone(),
                    restore: Some(Box::new(restore)),
                },
            },
        );
        let at = ViewerRef {
            viewer: x,
            ..provisional
        };
        self.join(at, dep.resume, profile);
        self.offer_open_poll(at);
    }

    fn leave(&mut self, at: ViewerRef, votes: Vec<Vote>) {
        if !self.viewers.get(&at.viewer).is_some_and(|v| v.at == at) {
            return;
        }
        let Some(v) = self.viewers.remove(&at.viewer) else {
            return;
        };
        self.count(&v.profile, -1);
        let dep = Departed {
            resume: v.resume,
            profile: v.profile,
            votes,
            left_ms: unix_ms(),
        };
        match self.awaiting.remove(&at.viewer) {
            Some((new_at, profile)) => self.resume_into(new_at, at.viewer, dep, profile),
            None => {
                self.departed.insert(at.viewer, dep);
            }
        }
    }

    /// Forgets departed viewers older than the resume window.
    pub fn expire_departed(&mut self, now_ms: u64) {
        let window = self.config.resume_window_s * 1000;
        let expired: Vec<ViewerId> = self
            .departed
            .iter()
            .filter(|(_, d)| now_ms.saturating_sub(d.left_ms) > window)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(d) = self.departed.remove(&id) {
                self.tokens.remove(&d.resume);
            }
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
        // A late joiner gets the stream's open poll at once, if it is in the audience.
        if let Some(v) = self.viewers.get(&at.viewer).filter(|v| v.at == at) {
            let mut profile = v.profile.clone();
            profile.stream = Some(stream.into());
            self.offer_poll_for(at, &profile);
        }
    }

    /// Sends the open poll of the viewer's stream, if the viewer is in its audience.
    fn offer_open_poll(&self, at: ViewerRef) {
        if let Some(v) = self.viewers.get(&at.viewer) {
            self.offer_poll_for(at, &v.profile);
        }
    }

    fn offer_poll_for(&self, at: ViewerRef, profile: &Profile) {
        let Some(stream) = profile.stream.as_deref() else {
            return;
        };
        let open = self
            .polls
            .values()
            .filter(|p| p.state == PollState::Open && p.stream == stream);
        for poll in open {
            let in_audience = self
                .groups
                .get(&poll.audience)
                .is_some_and(|g| g.predicate.matches(profile));
            if in_audience {
                self.send_to(at, text_frame(&poll.poll_message().to_string()));
            }
        }
    }

    // ---- polls ----

    /// Opens a poll (FIG. 6, 600-608): its audience group is defined on every shard, the
    /// shards start counting, and the poll message, assembled once, is cast to the audience.
    pub fn create_poll(&mut self, req: PollRequest) -> Result<&Poll, String> {
        if !self.streams.contains_key(&req.stream) {
            return Err(format!("unknown stream \"{}\"", req.stream));
        }
        if self
            .polls
            .values()
            .any(|p| p.stream == req.stream && p.state != PollState::Closed)
        {
            return Err(format!(
                "stream \"{}\" already has an open poll: close it first",
                req.stream
            ));
        }
        let id = format!("p{}", random_hex(8));
        let seq = self.next_poll;
        self.next_poll += 1;
        let audience = self.add_group(
            format!("poll:{id}"),
            format!("audience of poll {id}"),
            GroupKind::Poll,
            polls::audience(&req),
        );
        let choices = req.choices.len() as u8;
        self.broadcast(|| ShardCommand::OpenPoll {
            id: id.as_str().into(),
            seq,
            choices,
            audience,
        });
        let poll = Poll::new(id.clone(), seq, req, audience, self.shards(), unix_ms());
        let frame = text_frame(&poll.poll_message().to_string());
        self.cast_frame(audience, frame);
        self.poll_seqs.insert(seq, id.clone());
        self.poll_opened.raise();
        Ok(self.polls.entry(id).or_insert(poll))
    }

    /// Closes every open poll (at shutdown: their final counts are stored before the shards
    /// stop, since the shards handle `ClosePoll` before `Shutdown`).
    pub fn close_open_polls(&mut self) {
        for id in self.open_poll_ids() {
            self.close_poll(&id);
        }
    }

    /// Whether any poll is open (live results and deadlines need the ticker).
    pub fn has_open_polls(&self) -> bool {
        self.polls.values().any(|p| p.state == PollState::Open)
    }

    fn open_poll_ids(&self) -> Vec<String> {
        self.polls
            .iter()
            .filter(|(_, p)| p.state == PollState::Open)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Stops voting: every shard sends its final tally, and the last one completes the poll.
    pub fn close_poll(&mut self, id: &str) -> Option<PollState> {
        let poll = self.polls.get_mut(id)?;
        if poll.state == PollState::Open {
            poll.state = PollState::Closing;
            poll.closing_since = Some(std::time::Instant::now());
            let seq = poll.seq;
            self.broadcast(|| ShardCommand::ClosePoll { seq });
        }
        self.polls.get(id).map(|p| p.state)
    }

    fn on_tally(&mut self, seq: PollSeq, shard: u16, tally: Vec<i64>, closed: bool) {
        let Some(id) = self.poll_seqs.get(&seq).cloned() else {
            return;
        };
        let done = self
            .polls
            .get_mut(&id)
            .is_some_and(|p| p.take_tally(shard as usize, tally, closed));
        if done {
            self.finish_poll(&id);
        }
    }

    /// The final count: pushed at once, stored durably, and the poll's state freed everywhere.
    fn finish_poll(&mut self, id: &str) {
        let Some(poll) = self.polls.get_mut(id) else {
            return;
        };
        poll.state = PollState::Closed;
        let counts = poll.counts();
        poll.pushed = Some(counts.clone());
        poll.pushes += 1;
        let message = poll.results_message(&counts, true);
        let (audience, seq, stream) = (poll.audience, poll.seq, poll.stream.clone());
        let stored = poll.to_json();
        tracing::info!(
            poll = id,
            total = counts.iter().sum::<u64>(),
            final_ms = poll
                .closing_since
                .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3),
            "poll closed"
        );
        self.push_results(Some(audience), true, &stream, &message);
        if let Some(store) = &self.store {
            if let Err(e) = store.put_poll(id, &stored) {
                tracing::error!(poll = id, error = %e, "could not store final poll results");
            }
        }
        self.groups.remove(&audience);
        self.group_keys.remove(&format!("poll:{id}"));
        self.broadcast(|| ShardCommand::DropGroup { id: audience });
        self.broadcast(|| ShardCommand::DropPoll { seq });
        self.poll_seqs.remove(&seq);
    }

    /// Sends a results message to the poll's audience (a cast, when `audience` is given)
    /// and, when `broadcasters`, to the stream's broadcasters.
    fn push_results(
        &mut self,
        audience: Option<GroupId>,
        broadcasters: bool,
        stream: &str,
        message: &Value,
    ) {
        let frame = text_frame(&message.to_string());
        if let Some(audience) = audience {
            self.cast_frame(audience, frame.clone());
        }
        if broadcasters {
            self.broadcasters.retain(|(_, sink)| !sink.is_closed());
            for (s, sink) in &self.broadcasters {
                if s == stream {
                    sink.push(frame.clone());
                }
            }
        }
    }

    /// The latest results of the stream's open poll, for a broadcaster who just connected.
    pub fn results_snapshot(&self, stream: &str) -> Option<Value> {
        let poll = self
            .polls
            .values()
            .filter(|p| p.stream == stream)
            .max_by_key(|p| p.created_ms)?;
        Some(poll.results_message(&poll.counts(), poll.state == PollState::Closed))
    }

    /// Runs every results interval: pushes the counts of open polls that changed since the
    /// last push (so a vote storm yields at most one push per interval, and none while the
    /// previous cast is still being written), closes polls whose time is up, and forgets
    /// departed viewers past the resume window.
    pub fn tick(&mut self, now_ms: u64) {
        for id in self.open_poll_ids() {
            let mut push = None;
            let mut due = false;
            if let Some(poll) = self.polls.get_mut(&id) {
                let counts = poll.counts();
                // Results are snapshots. While the last cast to the audience is still being
                // written, a newer one would only queue behind it (and delay the close), so
                // the audience waits; broadcasters are few and get every change.
                let to_audience = poll.pushed.as_ref() != Some(&counts)
                    && !self.casts_in_flight.contains_key(&poll.audience);
                let to_broadcasters = poll.broadcast.as_ref() != Some(&counts);
                if to_audience || to_broadcasters {
                    let message = poll.results_message(&counts, false);
                    if to_audience {
                        poll.pushed = Some(counts.clone());
                        poll.pushes += 1;
                    }
                    if to_broadcasters {
                        poll.broadcast = Some(counts);
                    }
                    let audience = to_audience.then_some(poll.audience);
                    push = Some((audience, to_broadcasters, poll.stream.clone(), message));
                }
                due = poll.closes_at_ms <= now_ms;
            }
            if let Some((audience, broadcasters, stream, message)) = push {
                self.push_results(audience, broadcasters, &stream, &message);
            }
            if due {
                self.close_poll(&id);
            }
        }
        self.expire_departed(now_ms);
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
    pub fn delete_group(&mut self, key: &str) -> Result<(), (u16, &'static str, String)> {
        let group = self
            .group_by_key(key)
            .ok_or_else(|| (404, "not_found", format!("no group \"{key}\"")))?;
        if group.kind != GroupKind::Custom {
            return Err((
                409,
                "built_in",
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
    pub fn cast(&mut self, key: &str, payload: &Value) -> Option<usize> {
        let group = self.group_by_key(key)?;
        let (id, size) = (group.id, group.size);
        let message = json!({"type": "message", "group": key, "payload": payload});
        self.cast_frame(id, text_frame(&message.to_string()));
        Some(size)
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
