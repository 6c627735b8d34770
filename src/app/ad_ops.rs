//! `App`'s side of ads (an `impl App` block; the state, `ads::AdState`, is a field of `App`):
//! the library (every shard gets each asset once, shared), programs, breaks (each session on
//! the stream gets its own plan from its profile) and beacons from the sessions' fetches.
//! Ads are kept under `<data_dir>/ads/{id}/` (segments and `ad.json`) and come back at start;
//! programs are stored with their stream.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use shards::hls_ads::AdSegment;
use shards::hls_session::SessionCommand;
use shards::profile::Field;
use shards::proto::{MediaCommand, ShardCommand};

use super::ads::{self, Ad, AdError, BreakBeacons, Program, VastRequest, MAX_AD_SEGMENTS};
use super::{messages, App, StreamState};

impl App {
    fn ads_dir(&self) -> PathBuf {
        self.config.data_dir.join("ads")
    }

    /// Adds an ad from its segments; it is stored and every shard serves it.
    pub fn add_ad(
        &mut self,
        id: String,
        segments: Vec<AdSegment>,
        source: String,
        now_ms: u64,
    ) -> Result<Ad, AdError> {
        if id.starts_with('.') {
            // Ids name directories under <data_dir>/ads: no ".", ".." or hidden names.
            return Err(AdError::Invalid("an ad id may not start with '.'".into()));
        }
        if self.ads.library.contains_key(&id) {
            return Err(AdError::Exists(id));
        }
        if segments.is_empty() || segments.len() > MAX_AD_SEGMENTS {
            return Err(AdError::Invalid(format!(
                "an ad needs 1 to {MAX_AD_SEGMENTS} segments"
            )));
        }
        for (i, s) in segments.iter().enumerate() {
            let ts = !s.data.is_empty() && s.data.len() % 188 == 0 && s.data[0] == 0x47;
            if !ts || s.duration_ms == 0 || s.duration_ms > 60_000 {
                return Err(AdError::Invalid(format!(
                    "segment {i} is not MPEG-TS (188-byte packets, sync byte 0x47) of 1-60000 ms"
                )));
            }
        }
        let ad = Ad {
            id: id.clone(),
            segments: segments.into(),
            source,
            created_ms: now_ms,
        };
        self.save_ad(&ad).map_err(|e| AdError::Io(e.to_string()))?;
        self.serve_ad(&ad);
        self.ads.library.insert(id, ad.clone());
        Ok(ad)
    }

    /// Turns a finished recording of an RTMP publish into an ad.
    pub fn ad_from_recording(
        &mut self,
        id: String,
        stream: &str,
        recording: &str,
        now_ms: u64,
    ) -> Result<Ad, AdError> {
        let finished = self
            .recordings
            .get(stream, recording)
            .is_some_and(|r| r.ended);
        let dir = self.recording_dir(stream, recording).filter(|_| finished);
        let Some(dir) = dir else {
            return Err(AdError::Invalid(format!(
                "no finished recording \"{recording}\" of stream \"{stream}\""
            )));
        };
        let io = |e: std::io::Error| AdError::Io(e.to_string());
        let index = std::fs::read_to_string(dir.join("index.m3u8")).map_err(io)?;
        let mut segments = Vec::new();
        let mut duration = None;
        for line in index.lines() {
            if let Some(d) = line.strip_prefix("#EXTINF:") {
                let secs: f64 = d.trim_end_matches(',').parse().unwrap_or(0.0);
                duration = Some((secs * 1000.0).round() as u32);
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = std::path::Path::new(line)
                    .file_name()
                    .ok_or_else(|| AdError::Invalid("a bad segment name".into()))?;
                let data = std::fs::read(dir.join(name)).map_err(io)?;
                segments.push(AdSegment {
                    duration_ms: duration.take().unwrap_or(0),
                    data: data.into(),
                });
            }
        }
        let source = format!("recording:{stream}/{recording}");
        self.add_ad(id, segments, source, now_ms)
    }

    fn save_ad(&self, ad: &Ad) -> std::io::Result<()> {
        let dir = self.ads_dir().join(&ad.id);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in ad.segments.iter().enumerate() {
            std::fs::write(dir.join(format!("{i}.ts")), &s.data)?;
        }
        let meta = json!({"id": ad.id, "source": ad.source, "created_ms": ad.created_ms,
            "segments": ad.segments.iter().map(|s| s.duration_ms).collect::<Vec<_>>()});
        let tmp = dir.join("ad.json.tmp");
        std::fs::write(&tmp, meta.to_string())?;
        std::fs::rename(tmp, dir.join("ad.json"))
    }

    fn serve_ad(&self, ad: &Ad) {
        let (id, segments): (Box<str>, _) = (ad.id.as_str().into(), ad.segments.clone());
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Ad {
                id: id.clone(),
                segments: segments.clone(),
            })
        });
    }

    /// Ads stored under `<data_dir>/ads/` (at start).
    pub(super) fn restore_ads(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.ads_dir()) else {
            return;
        };
        for dir in dirs.flatten().map(|d| d.path()) {
            let read = || -> Option<Ad> {
                let meta: Value =
                    serde_json::from_slice(&std::fs::read(dir.join("ad.json")).ok()?).ok()?;
                let mut segments = Vec::new();
                for (i, d) in meta["segments"].as_array()?.iter().enumerate() {
                    let data = std::fs::read(dir.join(format!("{i}.ts"))).ok()?;
                    segments.push(AdSegment {
                        duration_ms: u32::try_from(d.as_u64()?).ok()?,
                        data: data.into(),
                    });
                }
                Some(Ad {
                    id: meta["id"].as_str()?.to_owned(),
                    segments: segments.into(),
                    source: meta["source"].as_str().unwrap_or("upload").to_owned(),
                    created_ms: meta["created_ms"].as_u64().unwrap_or(0),
                })
            };
            match read() {
                Some(ad) => {
                    self.serve_ad(&ad);
                    self.ads.library.insert(ad.id.clone(), ad);
                }
                None => tracing::warn!(dir = %dir.display(), "skipping an unreadable stored ad"),
            }
        }
    }

    pub fn ads(&self) -> impl Iterator<Item = &Ad> {
        self.ads.library.values()
    }

    pub fn ad(&self, id: &str) -> Option<&Ad> {
        self.ads.library.get(id)
    }

    /// Removes an ad; refused while a program names it.
    pub fn delete_ad(&mut self, id: &str) -> Result<(), AdError> {
        if !self.ads.library.contains_key(id) {
            return Err(AdError::NoAd(id.to_owned()));
        }
        if let Some((stream, _)) = self
            .ads
            .programs
            .iter()
            .find(|(_, p)| p.ads().any(|a| a == id))
        {
            return Err(AdError::Invalid(format!(
                "the program of stream \"{stream}\" uses ad \"{id}\""
            )));
        }
        self.ads.library.remove(id);
        let _ = std::fs::remove_dir_all(self.ads_dir().join(id));
        let id: Box<str> = id.into();
        self.broadcast(|| ShardCommand::Media(MediaCommand::AdRemoved { id: id.clone() }));
        Ok(())
    }

    /// Sets a stream's program (every ad it names must be in the library).
    pub fn set_program(&mut self, stream: &str, program: Program) -> Result<(), AdError> {
        let Some(s) = self.streams.get(stream).cloned() else {
            return Err(AdError::NoStream(stream.to_owned()));
        };
        if let Some(missing) = program.ads().find(|a| !self.ads.library.contains_key(*a)) {
            return Err(AdError::NoAd(missing.clone()));
        }
        self.ads.programs.insert(stream.to_owned(), program);
        self.store_stream(&s);
        Ok(())
    }

    pub fn program(&self, stream: &str) -> Option<&Program> {
        self.ads.programs.get(stream)
    }

    /// Starts an ad break of `duration_ms` on a live stream at its next segment: each
    /// session on the stream gets the ads its program's selectors choose for its viewer.
    pub fn start_break(
        &mut self,
        stream: &str,
        duration_ms: u64,
        now_ms: u64,
    ) -> Result<Value, AdError> {
        match self.streams.get(stream).map(|s| s.state) {
            None => return Err(AdError::NoStream(stream.to_owned())),
            Some(StreamState::Live) => {}
            Some(_) => return Err(AdError::NotLive(stream.to_owned())),
        }
        let program = self.ads.programs.get(stream).cloned().unwrap_or_default();
        let start_seq = self.last_segment(stream).map_or(0, |(seq, _)| seq + 1);
        let target = self.config.hls_segment_ms.max(1);
        let content_count = duration_ms.div_ceil(target).max(1);
        self.ads.next_break += 1;
        let id = self.ads.next_break;
        let sessions: Vec<(String, shards::profile::ViewerId)> = self
            .sessions
            .active()
            .filter(|s| s.stream == stream)
            .map(|s| (s.id.clone(), s.viewer))
            .collect();
        let slate = program.slate.as_ref().and_then(|s| self.ads.library.get(s));
        let mut plans = Vec::with_capacity(sessions.len());
        let mut questions = Vec::new();
        for (session, viewer) in &sessions {
            let chosen: Vec<&Ad> = match self.mirror.viewer(*viewer) {
                Some(v) => {
                    let mut profile = v.profile.clone();
                    profile.stream = Some(stream.into());
                    if let Some(vast) = &program.vast {
                        let mut url = format!(
                            "{}{}session={session}&stream={}&break={id}&duration_s={}",
                            vast.url,
                            if vast.url.contains('?') { '&' } else { '?' },
                            ads::percent_encode(stream),
                            duration_ms / 1000
                        );
                        for field in [Field::Os, Field::Browser, Field::Device, Field::Region]
                            .into_iter()
                            .chain([Field::Country, Field::Language, Field::AppVersion])
                        {
                            if let Some(value) = profile.value(field) {
                                url.push_str(&format!(
                                    "&{}={}",
                                    field.as_str(),
                                    ads::percent_encode(value)
                                ));
                            }
                        }
                        questions.push(VastRequest {
                            break_id: id,
                            session: session.clone(),
                            url,
                            timeout_ms: vast.timeout_ms,
                        });
                    }
                    program
                        .ads_for(&profile)
                        .iter()
                        .filter_map(|a| self.ads.library.get(a))
                        .collect()
                }
                None => Vec::new(),
            };
            let plan = ads::plan(id, (start_seq, content_count, duration_ms), &chosen, slate);
            plans.push((session.clone(), Arc::new(plan)));
        }
        let mut beacons = BreakBeacons {
            id,
            stream: stream.to_owned(),
            started_ms: now_ms,
            start_seq,
            content_count,
            duration_ms,
            sessions: plans.len(),
            vast: program.vast.as_ref().map(|_| (0, 0)),
            ..BreakBeacons::default()
        };
        for (session, plan) in plans {
            let mut planned: Vec<Box<str>> = plan.entries.iter().map(|e| e.ad.clone()).collect();
            planned.dedup();
            for ad in &planned {
                beacons.counts.entry(ad.to_string()).or_default();
            }
            let state = self.ads.sessions.entry(session.clone()).or_default();
            state.breaks.push((id, planned));
            let session: Box<str> = session.into();
            self.broadcast(|| {
                ShardCommand::Media(MediaCommand::Session(SessionCommand::Break {
                    id: session.clone(),
                    plan: plan.clone(),
                }))
            });
        }
        let answer = beacons.to_json();
        self.ads.breaks.push(beacons);
        if self.ads.breaks.len() > 1000 {
            self.ads.breaks.remove(0);
        }
        if !questions.is_empty() {
            self.ads.vast_pending.extend(questions);
            self.ads.vast_queued.raise();
        }
        Ok(answer)
    }

    /// Raised when VAST requests are queued (the VAST task waits on it).
    pub fn vast_queued(&self) -> std::rc::Rc<shards::sync::Signal> {
        self.ads.vast_queued.clone()
    }

    pub fn take_vast_requests(&mut self) -> Vec<VastRequest> {
        std::mem::take(&mut self.ads.vast_pending)
    }

    /// The ad decision server answered `request` with these ads (each a list of names, best
    /// first): those in the library replace the session's plan for the break. An answer
    /// naming no known ad leaves the selectors' plan.
    pub fn vast_answer(&mut self, request: &VastRequest, answer: &[Vec<String>]) {
        let chosen: Vec<&Ad> = answer
            .iter()
            .filter_map(|names| names.iter().find_map(|n| self.ads.library.get(n)))
            .collect();
        let Some(b) = self.ads.breaks.iter().find(|b| b.id == request.break_id) else {
            return;
        };
        if chosen.is_empty() {
            return self.vast_fallback(request);
        }
        let slate = self
            .ads
            .programs
            .get(&b.stream)
            .and_then(|p| p.slate.as_ref())
            .and_then(|s| self.ads.library.get(s));
        let plan = ads::plan(
            b.id,
            (b.start_seq, b.content_count, b.duration_ms),
            &chosen,
            slate,
        );
        let mut planned: Vec<Box<str>> = plan.entries.iter().map(|e| e.ad.clone()).collect();
        planned.dedup();
        if let Some(b) = self
            .ads
            .breaks
            .iter_mut()
            .find(|b| b.id == request.break_id)
        {
            for ad in &planned {
                b.counts.entry(ad.to_string()).or_default();
            }
            if let Some((answered, _)) = b.vast.as_mut() {
                *answered += 1;
            }
            b.dirty = true;
        }
        if let Some(state) = self.ads.sessions.get_mut(&request.session) {
            for (id, ads) in state.breaks.iter_mut() {
                if *id == request.break_id {
                    *ads = planned.clone();
                }
            }
        }
        let (session, plan): (Box<str>, _) = (request.session.as_str().into(), Arc::new(plan));
        self.broadcast(|| {
            ShardCommand::Media(MediaCommand::Session(SessionCommand::Break {
                id: session.clone(),
                plan: plan.clone(),
            }))
        });
    }

    /// No usable answer (timeout, error, no known ad): the selectors' plan stays.
    pub fn vast_fallback(&mut self, request: &VastRequest) {
        if let Some(b) = self
            .ads
            .breaks
            .iter_mut()
            .find(|b| b.id == request.break_id)
        {
            if let Some((_, fallback)) = b.vast.as_mut() {
                *fallback += 1;
            }
            b.dirty = true;
        }
    }

    /// A stream's breaks with their beacon counts, oldest first.
    pub fn breaks_of(&self, stream: &str) -> Vec<Value> {
        self.ads
            .breaks
            .iter()
            .filter(|b| b.stream == stream)
            .map(BreakBeacons::to_json)
            .collect()
    }

    /// The beacons a session fired (`GET /api/sessions/{id}`).
    pub fn session_beacons(&self, session: &str) -> Value {
        self.ads
            .sessions
            .get(session)
            .map_or_else(|| json!({}), |s| s.to_json())
    }

    /// Ad segments a session fetched (from a shard's report): beacons.
    pub(super) fn ad_fetches(&mut self, session: &str, fetched: &[(Box<str>, u16)]) {
        let Some(state) = self.ads.sessions.get_mut(session) else {
            return;
        };
        for (ad, index) in fetched {
            let Some(ad) = self.ads.library.get(&**ad) else {
                continue;
            };
            for (brk, event) in state.fetched(ad, *index) {
                if let Some(b) = self.ads.breaks.iter_mut().find(|b| b.id == brk) {
                    b.counts.entry(ad.id.clone()).or_default()[event] += 1;
                    b.dirty = true;
                }
            }
        }
    }

    /// Pushes changed beacon counts to the stream's broadcasters (from the ticker).
    pub(super) fn push_beacons(&mut self) {
        let mut frames = Vec::new();
        for b in self.ads.breaks.iter_mut().filter(|b| b.dirty) {
            b.dirty = false;
            frames.push((b.stream.clone(), messages::beacons(b.to_json())));
        }
        if frames.is_empty() {
            return;
        }
        self.broadcasters.retain(|(_, sink)| !sink.is_closed());
        for (stream, frame) in frames {
            for (s, sink) in &self.broadcasters {
                if *s == stream {
                    sink.push(frame.clone());
                }
            }
        }
    }
}
