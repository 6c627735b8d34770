//! The profile mirror and resume: the application core's copy of every connected viewer (fed
//! by shard events carrying full profile snapshots), the resume tokens, and the compact
//! records of departed viewers that may come back within the resume window.
//!
//! A token a shard minted (`shards::proto::resume`: the viewer id and a nonce) costs its
//! viewer 8 bytes here, the nonce: a claim is checked against the nonce kept with the id it
//! names, with no token string or token index per viewer. Any other token string (none in
//! production; tests use short ones) is kept in a side index.
//!
//! Owns: viewers, tokens, departed records and their bounds, viewers awaiting their old
//! connection's `Left`. Must not touch: groups (the caller recounts them from the
//! [`Joined`]/[`Change`] values returned here), polls, the store, shard queues.

use std::collections::{BTreeSet, HashMap};

use shards::profile::{Profile, Sym, ViewerId};

use super::by_viewer::{ByViewer, Keyed};
use shards::proto::{resume, GroupId, Restore, Slot, ViewerRef, Vote};

/// The application core's copy of one viewer: 112 bytes, boxed (see the size test). Its
/// connection's viewer id is the profile's (`at.viewer == profile.viewer`, set together by
/// the shard and by a resume), so it is not stored twice.
#[derive(Debug, Clone)]
pub struct Viewer {
    shard: u16,
    slot: Slot,
    /// The nonce of its resume token (0 for a token that is not a minted one).
    pub nonce: u64,
    pub profile: Profile,
}

impl Keyed for Viewer {
    fn key(&self) -> ViewerId {
        self.profile.viewer
    }
}

impl Viewer {
    fn new(at: ViewerRef, nonce: u64, mut profile: Profile) -> Viewer {
        debug_assert_eq!(
            at.viewer, profile.viewer,
            "a profile names its connection's viewer"
        );
        // The table's key: always the connection's.
        profile.viewer = at.viewer;
        Viewer {
            shard: at.shard,
            slot: at.slot,
            nonce,
            profile,
        }
    }

    /// Its current connection.
    pub fn at(&self) -> ViewerRef {
        ViewerRef {
            shard: self.shard,
            slot: self.slot,
            viewer: self.profile.viewer,
        }
    }
}

/// What a departed viewer keeps for a resume, packed: its token's nonce, the profile fields a
/// resume restores (stream, app version, hardware, region, tags) and where its latest
/// telemetry reports were counted (10 bytes a group, only for a viewer that reported) in one
/// byte buffer, its votes, and when it left. About 80 bytes plus the strings it carries (see
/// the size test).
#[derive(Debug, Clone, PartialEq)]
pub struct Departed {
    nonce: u64,
    /// `[kind, len, bytes...]*` with kind 0..=3 for stream, app_version, hardware, region,
    /// 4 for each tag, 5 for the person, 6 for each latest report (group and Unix second, two
    /// little-endian u32s); every field is at most `MAX_FIELD_LEN` (64) bytes.
    packed: Box<[u8]>,
    votes: Box<[Vote]>,
    left_ms: u64,
}

const KIND_TAG: u8 = 4;
/// The person (`sub`) whose connection earned the resume token.
const KIND_SUB: u8 = 5;
/// A group and the second of the viewer's latest telemetry report in it. Not stored across a
/// restart: the windows it points into do not outlive the process.
const KIND_REPORT: u8 = 6;

impl Departed {
    pub fn new(
        nonce: u64,
        profile: &Profile,
        votes: Vec<Vote>,
        reports: &[(GroupId, u32)],
        left_ms: u64,
    ) -> Departed {
        let mut packed = Vec::new();
        let mut put = |kind: u8, s: &str| {
            // Profile fields are bounded by the shard (MAX_FIELD_LEN); cut defensively.
            let mut end = s.len().min(255);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            packed.push(kind);
            packed.push(end as u8);
            packed.extend_from_slice(&s.as_bytes()[..end]);
        };
        for (kind, v) in [
            &profile.stream,
            &profile.app_version,
            &profile.hardware,
            &profile.region,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = v {
                put(kind as u8, v);
            }
        }
        for t in profile.tags() {
            put(KIND_TAG, t);
        }
        if let Some(sub) = profile.sub() {
            put(KIND_SUB, sub);
        }
        for (group, second) in reports {
            packed.extend_from_slice(&[KIND_REPORT, 8]);
            packed.extend_from_slice(&group.0.to_le_bytes());
            packed.extend_from_slice(&second.to_le_bytes());
        }
        Departed {
            nonce,
            packed: packed.into_boxed_slice(),
            votes: votes.into_boxed_slice(),
            left_ms,
        }
    }

    /// The state a resume gives back.
    pub fn restore(&self) -> Restore {
        let mut r = Restore {
            votes: self.votes.to_vec(),
            ..Restore::default()
        };
        let mut rest = &self.packed[..];
        while let [kind, len, tail @ ..] = rest {
            let n = (*len as usize).min(tail.len());
            if *kind == KIND_REPORT {
                if let [g0, g1, g2, g3, s0, s1, s2, s3] = tail[..n] {
                    let group = GroupId(u32::from_le_bytes([g0, g1, g2, g3]));
                    r.reports
                        .push((group, u32::from_le_bytes([s0, s1, s2, s3])));
                }
                rest = &tail[n..];
                continue;
            }
            let value = String::from_utf8_lossy(&tail[..n]);
            match *kind {
                0 => r.stream = Some(Sym::new(&value)),
                1 => r.app_version = Some(Sym::new(&value)),
                2 => r.hardware = Some(Sym::new(&value)),
                3 => r.region = Some(Sym::new(&value)),
                KIND_SUB => {}
                _ => r.tags.push(value.into()),
            }
            rest = &tail[n..];
        }
        r
    }

    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The person whose connection left this record, if it was identified.
    pub fn sub(&self) -> Option<&str> {
        let mut rest = &self.packed[..];
        while let [kind, len, tail @ ..] = rest {
            let n = (*len as usize).min(tail.len());
            if *kind == KIND_SUB {
                return std::str::from_utf8(&tail[..n]).ok();
            }
            rest = &tail[n..];
        }
        None
    }

    pub fn left_ms(&self) -> u64 {
        self.left_ms
    }

    /// The record as the store keeps it across a restart: `nonce`, `left_ms` (little-endian
    /// u64s) and the packed profile fields. Votes are not kept: the polls they were cast in do
    /// not outlive the process (they come back `interrupted`); nor are the latest reports: the
    /// telemetry windows they point into do not either.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.packed.len());
        b.extend_from_slice(&self.nonce.to_le_bytes());
        b.extend_from_slice(&self.left_ms.to_le_bytes());
        let mut rest = &self.packed[..];
        while let [kind, len, tail @ ..] = rest {
            let n = (*len as usize).min(tail.len());
            if *kind != KIND_REPORT {
                b.extend_from_slice(&[*kind, n as u8]);
                b.extend_from_slice(&tail[..n]);
            }
            rest = &tail[n..];
        }
        b
    }

    /// A stored record back; `None` when it is too short or its fields do not parse.
    pub fn from_bytes(b: &[u8]) -> Option<Departed> {
        let nonce = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let left_ms = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        let packed = &b[16..];
        let mut rest = packed;
        while let [kind, len, tail @ ..] = rest {
            let n = *len as usize;
            if *kind > KIND_SUB || n > tail.len() || std::str::from_utf8(&tail[..n]).is_err() {
                return None;
            }
            rest = &tail[n..];
        }
        rest.is_empty().then(|| Departed {
            nonce,
            packed: packed.into(),
            votes: Box::default(),
            left_ms,
        })
    }

    /// Bytes this record holds: its own size plus its heap buffers, plus the departed index
    /// entry it causes (map overhead per entry is estimated at one control byte plus the
    /// entry). Its token costs nothing beyond the nonce inside it.
    pub fn footprint(&self) -> usize {
        let record = std::mem::size_of::<(ViewerId, Departed)>() + 1;
        let heap = self.packed.len() + std::mem::size_of_val(&*self.votes);
        let order = std::mem::size_of::<(u64, ViewerId)>();
        record + heap + order
    }
}

/// Limits on what departed viewers keep.
#[derive(Debug, Clone, Copy)]
pub struct DepartedLimits {
    pub window_ms: u64,
    pub max_count: usize,
    pub max_bytes: usize,
}

/// What happened to a claim.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The token was unknown: a new viewer, to be joined with this profile.
    New { profile: Profile },
    /// The token belongs to a departed viewer: `x` is its identity, given to the connection.
    Resumed {
        x: ViewerId,
        departed: Departed,
        profile: Profile,
    },
    /// The token's owner is still connected at `old`: evict it; the claim waits for its `Left`.
    EvictFirst { old: ViewerRef },
}

/// A claim that waited for the old connection's `Left`: resume it now.
#[derive(Debug)]
pub struct Waiting {
    /// The new connection.
    pub at: ViewerRef,
    /// Its profile at the handshake.
    pub profile: Profile,
    /// What the old connection left behind.
    pub departed: Departed,
}

#[derive(Debug, Default)]
pub struct Mirror {
    /// Boxed, keyed by the profile's viewer id: a slot is 8 bytes, so the table's spare
    /// capacity costs little.
    viewers: ByViewer<Viewer>,
    /// Tokens that are not minted ones (see the module doc), both ways, for viewers present
    /// and departed. Empty in production.
    other_tokens: HashMap<Box<str>, ViewerId>,
    other_by_viewer: HashMap<ViewerId, Box<str>>,
    departed: HashMap<ViewerId, Departed>,
    /// Departed viewers by the time they left, oldest first: expiry and the bounds drop from
    /// the front in O(log n).
    order: BTreeSet<(u64, ViewerId)>,
    departed_bytes: usize,
    /// Departed records dropped by the count or byte bound before their window ended.
    dropped: u64,
    /// Viewers resuming while their old connection was still open: the new connection (and
    /// its profile) waits for the old one's `Left`.
    awaiting: HashMap<ViewerId, (ViewerRef, Profile)>,
}

impl Mirror {
    pub fn viewer(&self, id: ViewerId) -> Option<&Viewer> {
        self.viewers.get(id)
    }

    /// The viewer, if `at` is its current connection.
    pub fn at(&self, at: ViewerRef) -> Option<&Viewer> {
        self.viewer(at.viewer).filter(|v| v.at() == at)
    }

    /// Whether `token` is a viewer's here, present or departed (within the resume window).
    pub fn knows_token(&self, token: &str) -> bool {
        self.resolve(token).is_some()
    }

    /// The viewer whose token `token` is (present or departed), if any.
    fn resolve(&self, token: &str) -> Option<ViewerId> {
        if let Some(&x) = self.other_tokens.get(token) {
            return Some(x);
        }
        let (x, nonce) = resume::parse(token)?;
        if self.other_by_viewer.contains_key(&x) {
            return None;
        }
        let kept = match self.departed.get(&x) {
            Some(d) => d.nonce,
            None => self.viewers.get(x)?.nonce,
        };
        (kept == nonce).then_some(x)
    }

    /// The resume token of viewer `x` whose token's nonce is `nonce`.
    pub fn token(&self, x: ViewerId, nonce: u64) -> Box<str> {
        match self.other_by_viewer.get(&x) {
            Some(t) => t.clone(),
            None => resume::mint(x, nonce),
        }
    }

    /// The nonce to keep for `token`, given to viewer `x` (indexing it if it is not minted).
    fn keep_token(&mut self, x: ViewerId, token: Box<str>) -> u64 {
        match resume::parse(&token) {
            Some((id, nonce)) if id == x && !self.other_by_viewer.contains_key(&x) => nonce,
            _ => {
                if self.other_by_viewer.get(&x) != Some(&token) {
                    if let Some(old) = self.other_by_viewer.insert(x, token.clone()) {
                        self.other_tokens.remove(&old);
                    }
                    self.other_tokens.insert(token, x);
                }
                0
            }
        }
    }

    fn forget_token(&mut self, x: ViewerId) {
        if let Some(t) = self.other_by_viewer.remove(&x) {
            self.other_tokens.remove(&t);
        }
    }

    pub fn viewers(&self) -> impl Iterator<Item = &Viewer> {
        self.viewers.values()
    }

    pub fn len(&self) -> usize {
        self.viewers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.viewers.is_empty()
    }

    pub fn departed_count(&self) -> usize {
        self.departed.len()
    }

    pub fn departed_bytes(&self) -> usize {
        self.departed_bytes
    }

    pub fn departed_dropped(&self) -> u64 {
        self.dropped
    }

    /// A viewer joined; returns the profile a replaced entry had (to uncount).
    pub fn join(&mut self, at: ViewerRef, resume: Box<str>, profile: Profile) -> Option<Profile> {
        let nonce = self.keep_token(at.viewer, resume);
        let viewer = Box::new(Viewer::new(at, nonce, profile));
        self.viewers.insert(viewer).map(|old| old.profile)
    }

    /// A profile snapshot; returns (old, new) when `at` is current.
    pub fn change(&mut self, at: ViewerRef, profile: Profile) -> Option<(Profile, Profile)> {
        let v = self.viewers.get_mut(at.viewer).filter(|v| v.at() == at)?;
        debug_assert_eq!(
            at.viewer, profile.viewer,
            "a profile names its connection's viewer"
        );
        let mut profile = profile;
        // The table's key: always the connection's.
        profile.viewer = at.viewer;
        let old = std::mem::replace(&mut v.profile, profile);
        Some((old, v.profile.clone()))
    }

    /// A connection presents a resume token.
    /// A token is bound to the identity that earned it: presented by another person (or by
    /// an anonymous connection for an identified one, or the reverse) it is unknown.
    pub fn claim(&mut self, at: ViewerRef, profile: Profile, token: &str) -> Claim {
        let x = self.resolve(token);
        let earned_by = x.and_then(|x| match self.departed.get(&x) {
            Some(d) => Some(d.sub().map(Box::<str>::from)),
            None => self
                .viewers
                .get(x)
                .map(|v| v.profile.sub().map(Box::<str>::from)),
        });
        if earned_by.is_some_and(|sub| sub.as_deref() != profile.sub()) {
            return Claim::New { profile };
        }
        match x {
            Some(x) if self.departed.contains_key(&x) => match self.take_departed(x) {
                Some(departed) => Claim::Resumed {
                    x,
                    departed,
                    profile,
                },
                None => Claim::New { profile },
            },
            Some(x) if self.viewers.contains(x) && !self.awaiting.contains_key(&x) => {
                let Some(old) = self.viewers.get(x).map(Viewer::at) else {
                    return Claim::New { profile };
                };
                self.awaiting.insert(x, (at, profile));
                Claim::EvictFirst { old }
            }
            _ => Claim::New { profile },
        }
    }

    /// Takes the departed record of `x` (for a resume).
    pub fn take_departed(&mut self, x: ViewerId) -> Option<Departed> {
        let d = self.departed.remove(&x)?;
        self.order.remove(&(d.left_ms, x));
        self.departed_bytes -= d.footprint();
        Some(d)
    }

    /// A connection ended. Returns the departed viewer's profile (to uncount) and, when a
    /// claim was waiting for this `Left`, the claim to resume now with the departed record
    /// (handed over directly, so the bounds can never drop it first).
    pub fn leave(
        &mut self,
        at: ViewerRef,
        votes: Vec<Vote>,
        reports: &[(GroupId, u32)],
        now_ms: u64,
        limits: DepartedLimits,
    ) -> Option<(Profile, Option<Waiting>)> {
        self.at(at)?;
        let v = self.viewers.remove(at.viewer)?;
        let dep = Departed::new(v.nonce, &v.profile, votes, reports, now_ms);
        let waiting = match self.awaiting.remove(&at.viewer) {
            Some((new_at, profile)) => Some(Waiting {
                at: new_at,
                profile,
                departed: dep,
            }),
            None => {
                self.insert_departed(at.viewer, dep, limits);
                None
            }
        };
        Some((v.profile, waiting))
    }

    /// Departed viewers whose token is a minted one (what a restart can bring back), oldest
    /// first.
    pub fn departed_records(&self) -> impl Iterator<Item = (ViewerId, &Departed)> {
        self.order.iter().filter_map(|&(_, id)| {
            let d = self.departed.get(&id)?;
            (d.nonce != 0 && !self.other_by_viewer.contains_key(&id)).then_some((id, d))
        })
    }

    /// A departed record from the last run (at startup), within the same bounds.
    pub fn restore_departed(&mut self, id: ViewerId, dep: Departed, limits: DepartedLimits) {
        if !self.viewers.contains(id) {
            self.insert_departed(id, dep, limits);
        }
    }

    fn insert_departed(&mut self, id: ViewerId, dep: Departed, limits: DepartedLimits) {
        if let Some(old) = self.take_departed(id) {
            // A viewer id departs once at a time; keep the accounting exact anyway.
            drop(old);
        }
        self.departed_bytes += dep.footprint();
        self.order.insert((dep.left_ms, id));
        self.departed.insert(id, dep);
        while self.departed.len() > limits.max_count || self.departed_bytes > limits.max_bytes {
            if !self.drop_oldest() {
                break;
            }
            self.dropped += 1;
        }
    }

    fn drop_oldest(&mut self) -> bool {
        let Some((_, id)) = self.order.pop_first() else {
            return false;
        };
        if let Some(d) = self.departed.remove(&id) {
            self.departed_bytes -= d.footprint();
            self.forget_token(id);
        }
        true
    }

    /// Forgets departed viewers older than the window.
    pub fn expire(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(&(left, _)) = self.order.first() {
            if now_ms.saturating_sub(left) <= window_ms {
                break;
            }
            self.drop_oldest();
        }
    }
}

/// The profile a resumed connection ends up with: the same transformation the shard applies
/// on `Admit` (its `Changed` snapshot confirms it).
pub fn resumed_profile(mut profile: Profile, x: ViewerId, restore: &Restore) -> Profile {
    profile.viewer = x;
    profile.stream = restore.stream.clone();
    profile.rare.set_tags(restore.tags.clone());
    profile.app_version = restore.app_version.clone().or(profile.app_version);
    profile.hardware = restore.hardware.clone().or(profile.hardware);
    if profile.region.is_none() {
        profile.region = restore.region.clone();
    }
    profile
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departed_records_round_trip_through_bytes_without_votes() {
        let p = profile(3);
        let d = Departed::new(77, &p, vec![], &[], 1234);
        let back = Departed::from_bytes(&d.to_bytes()).expect("parses");
        assert_eq!(back, d);
        assert_eq!(back.restore().stream.as_deref(), Some("final"));
        assert_eq!(Departed::from_bytes(&[1, 2, 3]), None, "too short");
        let mut bad = d.to_bytes();
        bad.push(9);
        assert_eq!(Departed::from_bytes(&bad), None, "a truncated field");
    }

    #[test]
    fn latest_reports_go_with_a_departed_viewer_but_not_across_a_restart() {
        let p = profile(3);
        let reports = [
            (GroupId::GLOBAL, 1_800_000_000),
            (GroupId(7), 1_799_999_990),
        ];
        let d = Departed::new(77, &p, vec![(1, 0)], &reports, 1234);
        let r = d.restore();
        assert_eq!(r.reports, reports.to_vec());
        assert_eq!(r.tags, p.tags(), "the other fields parse around them");
        assert_eq!(
            d.footprint(),
            Departed::new(77, &p, vec![(1, 0)], &[], 1234).footprint() + 20
        );
        let back = Departed::from_bytes(&d.to_bytes()).expect("parses");
        assert!(back.restore().reports.is_empty());
        assert_eq!(back, Departed::new(77, &p, vec![], &[], 1234));
    }

    fn profile(id: u64) -> Profile {
        let mut p = Profile::from_handshake(
            ViewerId(id),
            "127.0.0.1:1".parse().unwrap(),
            Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Mobile/15E148 Safari/604.1"),
            Some("hu-HU"),
            &[("region".into(), "hu".into()), ("x".into(), "y".into())],
            5,
        );
        p.stream = Some("final".into());
        p.rare.set_tags(vec!["vip".into(), "beta".into()]);
        p.app_version = Some("3.2.1".into());
        p
    }

    fn at(id: u64) -> ViewerRef {
        ViewerRef {
            shard: 0,
            slot: id as u32,
            viewer: ViewerId(id),
        }
    }

    const LIMITS: DepartedLimits = DepartedLimits {
        window_ms: 1000,
        max_count: 3,
        max_bytes: usize::MAX,
    };

    #[test]
    fn a_departed_record_restores_what_a_resume_needs() {
        let p = profile(1);
        let d = Departed::new(9, &p, vec![(1, 2)], &[], 7);
        let r = d.restore();
        assert_eq!(r.stream.as_deref(), Some("final"));
        assert_eq!(r.region.as_deref(), Some("HU"));
        assert_eq!(r.app_version.as_deref(), Some("3.2.1"));
        assert_eq!(r.hardware, None);
        assert_eq!(r.tags, p.tags());
        assert_eq!(r.votes, vec![(1, 2)]);
    }

    #[test]
    fn a_departed_record_is_compact() {
        // A typical departed viewer: 32-hex-digit token, stream, region, app version, two
        // tags, one vote. Versus the full Viewer (Profile clone) kept before.
        let p = profile(1);
        let d = Departed::new(0x0123_4567_89ab_cdef, &p, vec![(1, 0)], &[], 7);
        let bytes = d.footprint();
        println!(
            "departed record: {} B inline, {} B total with heap and index entries",
            std::mem::size_of::<Departed>(),
            bytes
        );
        assert!(std::mem::size_of::<Departed>() <= 56);
        assert!(bytes <= 256, "{bytes} B per departed viewer");
    }

    #[test]
    fn a_mirror_entry_shares_the_shards_strings() {
        let mut m = Mirror::default();
        let p = profile(4);
        m.join(at(4), "t4".into(), p.clone());
        let v = m.viewer(ViewerId(4)).unwrap();
        assert_eq!(v.at(), at(4));
        assert_eq!(v.profile, p);
        assert_eq!(
            shards::profile::profile_hash(&v.profile),
            shards::profile::profile_hash(&p)
        );
        assert_eq!(v.profile.tags(), [Box::from("vip"), Box::from("beta")]);
        // A profile snapshot moves into the mirror: its tags stay the shard's allocation.
        assert!(std::ptr::eq(v.profile.tags(), p.tags()));
    }

    #[test]
    fn minted_tokens_are_checked_by_their_nonce() {
        let minter = resume::Minter::random();
        let mut m = Mirror::default();
        let token = minter.token(ViewerId(1));
        m.join(at(1), token.clone(), profile(1));
        assert!(m.other_tokens.is_empty(), "a minted token is not indexed");
        assert_eq!(
            m.token(ViewerId(1), m.viewer(ViewerId(1)).unwrap().nonce),
            token
        );
        // Another nonce for the same id, or another id: unknown.
        let forged = resume::mint(ViewerId(1), 12345);
        assert!(matches!(
            m.claim(at(2), profile(2), &forged),
            Claim::New { .. }
        ));
        let other = minter.token(ViewerId(3));
        assert!(matches!(
            m.claim(at(2), profile(2), &other),
            Claim::New { .. }
        ));
        assert!(m.leave(at(1), vec![(4, 1)], &[], 10, LIMITS).is_some());
        match m.claim(at(5), profile(5), &token) {
            Claim::Resumed { x, departed, .. } => {
                assert_eq!(x, ViewerId(1));
                assert_eq!(m.token(x, departed.nonce()), token);
            }
            other => panic!("resumed, got {other:?}"),
        }
    }

    /// The per-viewer budget of the application core: a regression guard, every byte here
    /// is multiplied by the viewers connected.
    #[test]
    fn a_mirror_entry_fits_its_budget() {
        // Boxed: 112 B is one of the allocator's size classes (184 B was in the 192 class).
        let entry = std::mem::size_of::<Viewer>();
        assert!(entry <= 112, "Viewer is {entry} B");
        // The table slot: the box (the id is the profile's).
        assert_eq!(std::mem::size_of::<Box<Viewer>>(), 8);
    }

    #[test]
    fn departed_viewers_are_bounded_oldest_first() {
        let mut m = Mirror::default();
        for i in 1..=5 {
            m.join(at(i), format!("t{i}").into(), profile(i));
        }
        for i in 1..=5 {
            assert!(m.leave(at(i), vec![], &[], 100 + i, LIMITS).is_some());
        }
        assert_eq!(m.departed_count(), 3);
        assert_eq!(m.departed_dropped(), 2);
        // The oldest two are gone, tokens and all: their claims are new viewers.
        assert!(matches!(
            m.claim(at(10), profile(10), "t1"),
            Claim::New { .. }
        ));
        assert!(matches!(
            m.claim(at(11), profile(11), "t5"),
            Claim::Resumed { x: ViewerId(5), .. }
        ));
        // A byte budget bounds too.
        let mut m = Mirror::default();
        let one = Departed::new(1, &profile(1), vec![], &[], 0).footprint();
        let limits = DepartedLimits {
            max_count: 100,
            max_bytes: one * 2 + one / 2,
            ..LIMITS
        };
        for i in 1..=4 {
            m.join(at(i), format!("t{i}").into(), profile(i));
            m.leave(at(i), vec![], &[], i, limits);
        }
        assert_eq!(m.departed_count(), 2);
        assert!(m.departed_bytes() <= limits.max_bytes);
        assert_eq!(m.departed_dropped(), 2);
    }

    #[test]
    fn expiry_drops_only_records_past_the_window() {
        let mut m = Mirror::default();
        for i in 1..=3 {
            m.join(at(i), format!("t{i}").into(), profile(i));
            m.leave(at(i), vec![], &[], i * 1000, LIMITS);
        }
        m.expire(2500, 1000);
        assert_eq!(m.departed_count(), 2);
        m.expire(10_000, 1000);
        assert_eq!(m.departed_count(), 0);
        assert_eq!(m.departed_bytes(), 0);
        assert_eq!(m.departed_dropped(), 0, "expiry is not a drop");
        assert!(matches!(
            m.claim(at(9), profile(9), "t3"),
            Claim::New { .. }
        ));
    }
}
