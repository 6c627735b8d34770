//! In-memory tests of the application core: no sockets, no threads, no executor. Shard events
//! go in through `App::on_event`, time through `now_ms`, and the commands the core sends are
//! read back from its downlink queues.

use std::rc::Rc;
use std::sync::Arc;

use serde_json::{json, Value};
use shards::profile::{profile_hash, Field, Predicate, Profile, ViewerId};
use shards::proto::{
    GroupId, MediaCommand, ProfileUpdate, Request, ShardCommand, ShardEvent, ViewerRef,
};

use super::downlink::Downlink;
use super::*;
use crate::config::Config;
use shards::hls_session::SessionCommand;

const UA_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Mobile/15E148 Safari/604.1";
const UA_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";

struct Harness {
    app: App,
    down: Vec<Rc<Downlink>>,
}

fn harness(shards: usize, config: Config) -> Harness {
    let down: Vec<Rc<Downlink>> = (0..shards).map(|_| Rc::default()).collect();
    let stats = (0..shards).map(|_| Arc::default()).collect();
    let app = App::new(Arc::new(config), stats, down.clone(), 1_000);
    Harness { app, down }
}

fn at(shard: u16, slot: u32, viewer: u64) -> ViewerRef {
    ViewerRef {
        shard,
        slot,
        viewer: ViewerId(viewer),
    }
}

fn profile(viewer: u64, ua: &str) -> Profile {
    Profile::from_handshake(
        ViewerId(viewer),
        "127.0.0.1:9".parse().unwrap(),
        Some(ua),
        None,
        &[],
        0,
    )
}

fn decode(frame: &[u8]) -> Value {
    let start = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[start..]).unwrap()
}

impl Harness {
    fn event(&mut self, e: ShardEvent, now_ms: u64) {
        self.app.on_event(e, now_ms);
    }

    fn join(&mut self, at: ViewerRef, resume: &str, p: Profile) {
        let e = ShardEvent::Joined {
            at,
            resume: resume.into(),
            profile: Box::new(p),
            claim: None,
        };
        self.event(e, 1_000);
    }

    /// What shard `i` was sent since the last call.
    fn sent(&self, i: usize) -> Vec<ShardCommand> {
        self.down[i].take_all()
    }

    fn drain(&self) {
        for d in &self.down {
            d.take_all();
        }
    }

    /// JSON of the casts in `cmds` to `group`.
    fn casts(cmds: &[ShardCommand], group: GroupId) -> Vec<Value> {
        cmds.iter()
            .filter_map(|c| match c {
                ShardCommand::Cast { group: g, frame } if *g == group => Some(decode(frame)),
                _ => None,
            })
            .collect()
    }

    /// A viewer watches `stream`: the request and the shard's `Changed` answer.
    fn watch(&mut self, at: ViewerRef, mut p: Profile, stream: &str) {
        let request = Request::Watch {
            stream: stream.into(),
        };
        self.event(ShardEvent::Request { at, request }, 1_000);
        p.stream = Some(stream.into());
        self.event(
            ShardEvent::Changed {
                at,
                profile: Box::new(p),
            },
            1_000,
        );
    }

    fn tally(&mut self, seq: u32, shard: u16, tally: Vec<i64>, closed: bool, now: u64) {
        let e = ShardEvent::PollTally {
            seq,
            shard,
            tally,
            breakdown: vec![],
            closed,
        };
        self.event(e, now);
    }
}

fn poll_request(stream: &str) -> PollRequest {
    PollRequest {
        stream: stream.into(),
        question: "who wins?".into(),
        choices: vec!["a".into(), "b".into()],
        duration_s: 60,
        filter: None,
        breakdown: None,
    }
}

#[test]
fn the_mirror_follows_joins_changes_leaves_and_passes_audits() {
    let mut h = harness(2, Config::default());
    let (a, b) = (at(0, 1, 1), at(1, 1, 2));
    h.join(a, "ta", profile(1, UA_IOS));
    h.join(b, "tb", profile(2, UA_LINUX));
    assert_eq!(h.app.viewer_count(), 2);
    assert_eq!(h.app.group("global").unwrap().size, 2);
    let mut changed = profile(2, UA_LINUX);
    changed.rare.set_tags(vec!["vip".into()]);
    h.event(
        ShardEvent::Changed {
            at: b,
            profile: Box::new(changed.clone()),
        },
        1_000,
    );
    assert_eq!(
        h.app.viewer(ViewerId(2)).unwrap().profile.tags(),
        changed.tags()
    );
    // A snapshot for a connection that is not current changes nothing.
    let stale = ShardEvent::Changed {
        at: at(1, 9, 2),
        profile: Box::new(profile(2, UA_IOS)),
    };
    h.event(stale, 1_000);
    assert_eq!(h.app.viewer(ViewerId(2)).unwrap().profile, changed);

    let audit = h.app.start_audit();
    for i in 0..2 {
        assert!(matches!(h.sent(i)[..], [ShardCommand::Audit { audit: x }] if x == audit));
    }
    let report = |shard: u16, profiles| ShardEvent::Audit {
        audit,
        shard,
        profiles,
    };
    h.event(
        report(0, vec![(a, profile_hash(&profile(1, UA_IOS)))]),
        1_000,
    );
    h.event(report(1, vec![(b, profile_hash(&changed))]), 1_000);
    let done = h.app.audit(audit).unwrap();
    assert_eq!((done.shards_reported, done.viewers_checked), (2, 2));
    assert!(done.mismatches.is_empty(), "{:?}", done.mismatches);

    h.event(
        ShardEvent::Left {
            at: b,
            votes: vec![],
            reports: vec![],
        },
        2_000,
    );
    assert_eq!(h.app.viewer_count(), 1);
    assert_eq!(h.app.group("global").unwrap().size, 1);
    assert_eq!(h.app.resume_stats().departed, 1);
    let audit = h.app.start_audit();
    h.event(
        ShardEvent::Audit {
            audit,
            shard: 1,
            profiles: vec![(b, 0)],
        },
        2_000,
    );
    assert_eq!(h.app.audit(audit).unwrap().mismatches.len(), 2);
}

#[test]
fn group_sizes_follow_predicates_and_errors_are_typed() {
    let mut h = harness(2, Config::default());
    let ios = Predicate {
        clauses: vec![(Field::Os, vec!["ios".into()])],
    };
    h.join(at(0, 1, 1), "t1", profile(1, UA_IOS));
    let key = h.app.add_custom_group("ios".into(), ios, 1_000);
    let id = h.app.group(&key).unwrap().id;
    assert_eq!(h.app.group(&key).unwrap().size, 1, "sized from the mirror");
    for i in 0..2 {
        assert!(matches!(h.sent(i)[..], [ShardCommand::DefineGroup { id: g, .. }] if g == id));
    }
    h.join(at(1, 1, 2), "t2", profile(2, UA_LINUX));
    h.join(at(1, 2, 3), "t3", profile(3, UA_IOS));
    assert_eq!(h.app.group(&key).unwrap().size, 2);
    // Viewer 2 becomes an iOS viewer (a snapshot), viewer 1 leaves.
    let now_ios = Profile {
        os: shards::profile::Os::Ios,
        ..profile(2, UA_LINUX)
    };
    h.event(
        ShardEvent::Changed {
            at: at(1, 1, 2),
            profile: Box::new(now_ios),
        },
        1_000,
    );
    h.event(
        ShardEvent::Left {
            at: at(0, 1, 1),
            votes: vec![],
            reports: vec![],
        },
        1_000,
    );
    assert_eq!(h.app.group(&key).unwrap().size, 2);
    assert_eq!(h.app.group("global").unwrap().size, 2);

    assert_eq!(h.app.cast(&key, &json!({"hi": 1})), Ok(2));
    let casts = Harness::casts(&h.sent(0), id);
    assert_eq!(casts[0]["payload"]["hi"], 1);
    assert_eq!(
        h.app.cast("g99", &json!(1)),
        Err(GroupError::NotFound("g99".into()))
    );
    assert_eq!(
        h.app.delete_group("global"),
        Err(GroupError::BuiltIn("global".into()))
    );
    assert_eq!(h.app.delete_group(&key), Ok(()));
    assert!(matches!(h.sent(1).last(), Some(ShardCommand::DropGroup { id: g }) if *g == id));
    assert_eq!(h.app.delete_group(&key), Err(GroupError::NotFound(key)));
    assert!(matches!(
        h.app
            .add_stream("s".into(), None, 5)
            .map(|(s, _)| s.created_ms),
        Ok(5)
    ));
    assert_eq!(
        h.app.add_stream("s".into(), None, 6).err(),
        Some(StreamError::Exists("s".into()))
    );
}

/// Two shards, viewers on both: open, live results, close, finals.
#[test]
fn a_poll_counts_votes_from_two_shards_and_closes_with_finals() {
    let mut h = harness(2, Config::default());
    h.app.add_stream("s".into(), None, 1_000).unwrap();
    assert_eq!(
        h.app.create_poll(poll_request("nope"), 1_000).err(),
        Some(PollError::UnknownStream("nope".into()))
    );
    let (a, b) = (at(0, 1, 1), at(1, 1, 2));
    h.join(a, "ta", profile(1, UA_IOS));
    h.join(b, "tb", profile(2, UA_LINUX));
    h.watch(a, profile(1, UA_IOS), "s");
    h.watch(b, profile(2, UA_LINUX), "s");
    h.drain();

    let (id, seq, audience) = {
        let p = h.app.create_poll(poll_request("s"), 2_000).unwrap();
        (p.id.clone(), p.seq, p.audience)
    };
    assert_eq!(
        h.app.create_poll(poll_request("s"), 2_000).err(),
        Some(PollError::AlreadyOpen("s".into()))
    );
    assert_eq!(h.app.group(&format!("poll:{id}")).unwrap().size, 2);
    for i in 0..2 {
        let sent = h.sent(i);
        assert!(sent.iter().any(|c| matches!(c, ShardCommand::OpenPoll { seq: s, choices: 2, audience: g, .. } if *s == seq && *g == audience)));
        let casts = Harness::casts(&sent, audience);
        assert_eq!(casts.len(), 1);
        assert_eq!(casts[0]["type"], "poll");
        assert_eq!(casts[0]["closes_at"], 62_000);
    }
    for _ in 0..2 {
        h.event(ShardEvent::CastDone { group: audience }, 2_000);
    }

    h.tally(seq, 0, vec![3, 1], false, 2_050);
    h.tally(seq, 1, vec![-1, 2], false, 2_060);
    h.app.tick(2_100);
    let results = Harness::casts(&h.sent(0), audience);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["counts"], json!([2, 3]));
    assert_eq!(results[0]["final"], false);
    h.sent(1);
    for _ in 0..2 {
        h.event(ShardEvent::CastDone { group: audience }, 2_100);
    }
    // Nothing changed: no push.
    h.app.tick(2_200);
    assert!(Harness::casts(&h.sent(0), audience).is_empty());

    assert_eq!(h.app.close_poll(&id, 3_000), Ok(PollState::Closing));
    assert_eq!(
        h.app.close_poll("p-none", 3_000),
        Err(PollError::NotFound("p-none".into()))
    );
    assert!(matches!(h.sent(0)[..], [ShardCommand::ClosePoll { seq: s }] if s == seq));
    h.sent(1);
    h.tally(seq, 0, vec![3, 2], true, 3_010);
    assert_eq!(
        h.app.poll(&id).unwrap().state,
        PollState::Closing,
        "one final of two"
    );
    h.tally(seq, 1, vec![-1, 2], true, 3_020);
    let poll = h.app.poll(&id).unwrap();
    assert_eq!(poll.state, PollState::Closed);
    assert_eq!(poll.counts(), vec![2, 4]);
    for i in 0..2 {
        let sent = h.sent(i);
        let finals = Harness::casts(&sent, audience);
        assert_eq!(finals.len(), 1);
        assert_eq!(finals[0]["final"], true);
        assert_eq!(finals[0]["total"], 6);
        assert!(sent
            .iter()
            .any(|c| matches!(c, ShardCommand::DropGroup { id: g } if *g == audience)));
        assert!(sent
            .iter()
            .any(|c| matches!(c, ShardCommand::DropPoll { seq: s } if *s == seq)));
    }
    assert!(h.app.group(&format!("poll:{id}")).is_none());
    // A late tally for the retired poll is ignored.
    h.tally(seq, 0, vec![9, 9], true, 3_100);
    assert_eq!(h.app.poll(&id).unwrap().counts(), vec![2, 4]);
    // Another poll may open on the stream now; its deadline closes it on a tick.
    let p2 = h
        .app
        .create_poll(poll_request("s"), 4_000)
        .unwrap()
        .id
        .clone();
    h.app.tick(64_000);
    assert_eq!(h.app.poll(&p2).unwrap().state, PollState::Closing);
}

#[test]
fn results_are_not_cast_while_a_cast_is_in_flight() {
    let mut h = harness(2, Config::default());
    h.app.add_stream("s".into(), None, 1_000).unwrap();
    let (seq, audience) = {
        let p = h.app.create_poll(poll_request("s"), 1_000).unwrap();
        (p.seq, p.audience)
    };
    h.drain();
    // The poll message itself is still being written by both shards.
    h.tally(seq, 0, vec![1, 0], false, 1_050);
    h.app.tick(1_100);
    assert!(Harness::casts(&h.sent(0), audience).is_empty(), "held back");
    h.event(ShardEvent::CastDone { group: audience }, 1_150);
    h.app.tick(1_200);
    assert!(
        Harness::casts(&h.sent(0), audience).is_empty(),
        "one shard still writing"
    );
    h.event(ShardEvent::CastDone { group: audience }, 1_250);
    h.app.tick(1_300);
    let results = Harness::casts(&h.sent(0), audience);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["counts"], json!([1, 0]));
    // The next change waits for this cast in turn.
    h.tally(seq, 1, vec![0, 1], false, 1_350);
    h.app.tick(1_400);
    assert!(Harness::casts(&h.sent(0), audience).is_empty());
    h.event(ShardEvent::CastDone { group: audience }, 1_450);
    h.event(ShardEvent::CastDone { group: audience }, 1_450);
    h.app.tick(1_500);
    assert_eq!(
        Harness::casts(&h.sent(0), audience)[0]["counts"],
        json!([1, 1])
    );
}

#[test]
fn a_departed_viewer_claims_back_its_identity_and_votes() {
    let mut h = harness(2, Config::default());
    h.app.add_stream("s".into(), None, 1_000).unwrap();
    let old = at(0, 4, 7);
    h.join(old, "tok7", profile(7, UA_IOS));
    h.watch(old, profile(7, UA_IOS), "s");
    let seq = h.app.create_poll(poll_request("s"), 1_000).unwrap().seq;
    h.event(
        ShardEvent::Left {
            at: old,
            votes: vec![(seq, 1)],
            reports: vec![(GroupId::GLOBAL, 4), (GroupId(1), 3)],
        },
        5_000,
    );
    assert!(h.app.viewer(ViewerId(7)).is_none());
    assert_eq!(h.app.group("stream:s").unwrap().size, 0);
    h.drain();

    // A new connection on shard 1, provisionally viewer 99, presents the token.
    let new = at(1, 2, 99);
    h.event(
        ShardEvent::Joined {
            at: new,
            resume: "fresh".into(),
            profile: Box::new(profile(99, UA_IOS)),
            claim: Some("tok7".into()),
        },
        6_000,
    );
    let sent = h.sent(1);
    let admission = sent
        .iter()
        .find_map(|c| match c {
            ShardCommand::Admit { to, admission } if *to == new => Some(admission),
            _ => None,
        })
        .expect("admitted");
    assert_eq!(admission.viewer, ViewerId(7));
    assert_eq!(&*admission.resume, "tok7");
    let restore = admission.restore.as_ref().expect("restored");
    assert_eq!(restore.votes, vec![(seq, 1)]);
    assert_eq!(
        restore.reports,
        vec![(GroupId::GLOBAL, 4), (GroupId(1), 3)],
        "where its latest telemetry was counted goes with it"
    );
    assert_eq!(restore.stream.as_deref(), Some("s"));
    // The open poll is offered again; the mirror and groups have the viewer back.
    assert!(sent
        .iter()
        .any(|c| matches!(c, ShardCommand::Send { frame, .. } if decode(frame)["type"] == "poll")));
    let v = h.app.viewer(ViewerId(7)).unwrap();
    assert_eq!(
        v.at(),
        ViewerRef {
            viewer: ViewerId(7),
            ..new
        }
    );
    assert_eq!(h.app.group("stream:s").unwrap().size, 1);
    assert_eq!(h.app.resume_stats().departed, 0);

    // An unknown token: a new viewer, admitted as itself.
    let other = at(0, 3, 50);
    h.event(
        ShardEvent::Joined {
            at: other,
            resume: "t50".into(),
            profile: Box::new(profile(50, UA_LINUX)),
            claim: Some("nobody".into()),
        },
        6_000,
    );
    let sent = h.sent(0);
    assert!(
        matches!(&sent[..], [ShardCommand::Admit { admission, .. }] if admission.viewer == ViewerId(50) && admission.restore.is_none())
    );
}

#[test]
fn a_claim_while_the_old_connection_is_open_evicts_it_first() {
    let mut h = harness(2, Config::default());
    let old = at(0, 1, 7);
    let mut tagged = profile(7, UA_IOS);
    tagged.rare.set_tags(vec!["vip".into()]);
    h.join(old, "tok7", tagged);
    h.drain();
    let new = at(1, 5, 80);
    h.event(
        ShardEvent::Joined {
            at: new,
            resume: "x".into(),
            profile: Box::new(profile(80, UA_IOS)),
            claim: Some("tok7".into()),
        },
        2_000,
    );
    assert!(matches!(h.sent(0)[..], [ShardCommand::Evict { to }] if to == old));
    assert!(h.sent(1).is_empty(), "the new connection waits");
    h.event(
        ShardEvent::Left {
            at: old,
            votes: vec![(3, 0)],
            reports: vec![],
        },
        2_100,
    );
    let sent = h.sent(1);
    let Some(ShardCommand::Admit { to, admission }) = sent.first() else {
        panic!("admit expected: {sent:?}");
    };
    assert_eq!(*to, new);
    assert_eq!(admission.viewer, ViewerId(7));
    let restore = admission.restore.as_ref().unwrap();
    assert_eq!(restore.votes, vec![(3, 0)]);
    assert_eq!(restore.tags, vec![Box::<str>::from("vip")]);
    assert_eq!(h.app.viewer(ViewerId(7)).unwrap().at().shard, 1);
    assert_eq!(h.app.group("global").unwrap().size, 1);
}

#[test]
fn departed_viewers_expire_after_the_window_and_are_bounded() {
    let config = Config {
        resume_window_s: 10,
        resume_max_departed: 2,
        ..Config::default()
    };
    let mut h = harness(1, config);
    for i in 1..=3u64 {
        h.join(at(0, i as u32, i), &format!("t{i}"), profile(i, UA_IOS));
        h.event(
            ShardEvent::Left {
                at: at(0, i as u32, i),
                votes: vec![],
                reports: vec![],
            },
            1_000 * i,
        );
    }
    let stats = h.app.resume_stats();
    assert_eq!((stats.departed, stats.dropped), (2, 1));
    h.app.tick(12_500);
    assert_eq!(h.app.resume_stats().departed, 1, "viewer 2 left 10.5 s ago");
    h.app.tick(13_001);
    assert_eq!(h.app.resume_stats().departed, 0);
    assert_eq!(h.app.resume_stats().departed_bytes, 0);
}

#[test]
fn watch_answers_with_an_endpoint_or_an_error() {
    let mut h = harness(1, Config::default());
    let a = at(0, 1, 1);
    h.join(a, "t", profile(1, UA_IOS));
    h.drain();
    let request = Request::Watch {
        stream: "none".into(),
    };
    h.event(ShardEvent::Request { at: a, request }, 1_000);
    let sent = h.sent(0);
    assert!(
        matches!(&sent[..], [ShardCommand::Send { frame, .. }] if decode(frame)["code"] == "unknown_stream")
    );
    h.app.add_stream("s".into(), None, 1_000).unwrap();
    h.drain();
    let request = Request::Watch { stream: "s".into() };
    h.event(ShardEvent::Request { at: a, request }, 1_000);
    let (media, sent): (Vec<_>, Vec<_>) = h
        .sent(0)
        .into_iter()
        .partition(|c| matches!(c, ShardCommand::Media(_)));
    // Every shard learns the viewing session's route before the viewer gets its URL.
    assert!(matches!(
        &media[..],
        [ShardCommand::Media(MediaCommand::Session(SessionCommand::Open { stream, prefix, .. }))]
            if &**stream == "s" && prefix.is_empty()
    ));
    // The stream is registered but nobody publishes it: its state, then the endpoint.
    assert!(
        matches!(&sent[0], ShardCommand::Send { frame, .. } if decode(frame)["state"] == "offline")
    );
    assert!(
        matches!(&sent[1], ShardCommand::Send { frame, .. } if decode(frame)["type"] == "endpoint")
    );
    assert!(
        matches!(&sent[2], ShardCommand::Update { update: ProfileUpdate::Stream(Some(s)), .. } if &**s == "s")
    );
}

#[test]
fn shutdown_waits_for_final_tallies_and_the_final_cast() {
    let mut h = harness(2, Config::default());
    h.app.add_stream("s".into(), None, 1_000).unwrap();
    let (seq, audience) = {
        let p = h.app.create_poll(poll_request("s"), 1_000).unwrap();
        (p.seq, p.audience)
    };
    for _ in 0..2 {
        h.event(ShardEvent::CastDone { group: audience }, 1_000);
    }
    assert!(
        h.app.shutdown_settled(),
        "nothing closing, nothing in flight"
    );
    h.app.close_open_polls(2_000);
    assert!(!h.app.shutdown_settled());
    h.tally(seq, 0, vec![1, 0], true, 2_010);
    h.tally(seq, 1, vec![0, 1], true, 2_020);
    assert!(
        !h.app.shutdown_settled(),
        "the final results are being written"
    );
    h.event(ShardEvent::CastDone { group: audience }, 2_030);
    assert!(!h.app.shutdown_settled());
    h.event(ShardEvent::CastDone { group: audience }, 2_040);
    assert!(h.app.shutdown_settled());
}

/// Connect/disconnect churn (issue 10, item 3): what departed viewers hold stays within the
/// count and byte bounds however many cycles run, dropping the oldest first.
#[test]
fn churn_keeps_departed_records_within_their_bounds() {
    let config = Config {
        resume_max_departed: 1_000,
        resume_max_bytes: 150 * 1024,
        ..Config::default()
    };
    let mut h = harness(2, config);
    let base = profile(0, UA_IOS);
    for i in 1..=100_000u64 {
        let at = at((i % 2) as u16, i as u32, i);
        let p = Profile {
            viewer: ViewerId(i),
            ..base.clone()
        };
        h.join(at, &format!("{i:032x}"), p);
        h.event(
            ShardEvent::Left {
                at,
                votes: vec![],
                reports: vec![],
            },
            1_000 + i,
        );
        if i % 10_000 == 0 {
            h.drain();
        }
    }
    let stats = h.app.resume_stats();
    assert!(stats.departed <= 1_000, "{stats:?}");
    assert!(stats.departed_bytes <= 150 * 1024, "{stats:?}");
    assert_eq!(stats.dropped, 100_000 - stats.departed as u64);
    assert_eq!(h.app.viewer_count(), 0);
    assert_eq!(h.app.group("global").unwrap().size, 0);
    // The newest survived: its token still resumes.
    let new = at(0, 1, 200_000);
    h.event(
        ShardEvent::Joined {
            at: new,
            resume: "n".into(),
            profile: Box::new(profile(200_000, UA_IOS)),
            claim: Some(format!("{:032x}", 100_000).into()),
        },
        200_000,
    );
    assert!(h.app.viewer(ViewerId(100_000)).is_some());
    // The oldest did not: its token makes a new viewer.
    let newer = at(1, 2, 200_001);
    h.event(
        ShardEvent::Joined {
            at: newer,
            resume: "m".into(),
            profile: Box::new(profile(200_001, UA_IOS)),
            claim: Some(format!("{:032x}", 1).into()),
        },
        200_000,
    );
    assert!(h.app.viewer(ViewerId(200_001)).is_some());
    assert!(h.app.viewer(ViewerId(1)).is_none());
}

/// Checkpoints and restore with a real store file (its writer thread is the one thread
/// here): counts are written only when changed and at most every `poll_checkpoint_ms`; after
/// a restart the poll reads back `interrupted`, custom groups come back, and the shards are
/// told the stored poll ids so late votes get `poll_closed`.
#[test]
fn checkpoints_are_bounded_and_a_restart_restores_polls_and_groups() {
    let dir = std::env::temp_dir().join(format!("ovation-app-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        poll_checkpoint_ms: 1_000,
        ..Config::default()
    };
    let (id, group_key) = {
        let mut h = harness(2, config.clone());
        let (store, restored) = store::Store::open(&dir).unwrap();
        assert_eq!(restored.boot, 1);
        h.app.restore(store, &restored, 1_000);
        h.app.add_stream("s".into(), None, 1_000).unwrap();
        let ios = Predicate {
            clauses: vec![(Field::Os, vec!["ios".into()])],
        };
        let key = h.app.add_custom_group("apple".into(), ios, 1_000);
        let (id, seq) = {
            let p = h.app.create_poll(poll_request("s"), 1_000).unwrap();
            (p.id.clone(), p.seq)
        };
        assert_eq!(
            h.app.store_stats().unsaved_polls,
            0,
            "the definition is stored at once"
        );
        h.tally(seq, 0, vec![2, 0], false, 1_100);
        assert_eq!(h.app.store_stats().unsaved_polls, 1);
        h.app.tick(1_500);
        assert_eq!(
            h.app.store_stats().unsaved_polls,
            1,
            "not before the interval"
        );
        h.app.tick(2_000);
        assert_eq!(h.app.store_stats().unsaved_polls, 0);
        h.tally(seq, 1, vec![0, 3], false, 2_100);
        h.app.tick(3_000);
        // A vote after the last checkpoint is what a crash may lose.
        h.tally(seq, 1, vec![0, 4], false, 3_100);
        h.app.close_store();
        (id, key)
    };

    let mut h = harness(2, config);
    let (store, restored) = store::Store::open(&dir).unwrap();
    assert_eq!(restored.boot, 2);
    assert_eq!(restored.interrupted, vec![id.clone()]);
    h.app.restore(store, &restored, 10_000);
    let stored = h.app.stored_poll(&id).unwrap().unwrap();
    assert_eq!(stored["state"], "interrupted");
    assert_eq!(stored["counts"], json!([2, 3]));
    let g = h.app.group(&group_key).expect("the custom group is back");
    assert_eq!((g.name.as_str(), g.kind), ("apple", GroupKind::Custom));
    assert!(h.app.stream("s").is_some(), "the stream directory is back");
    for i in 0..2 {
        let all = h.sent(i);
        // The stream's audience group and HLS window, the custom group, then the poll.
        assert!(matches!(&all[0], ShardCommand::DefineGroup { .. }));
        assert!(
            matches!(&all[1], ShardCommand::Media(MediaCommand::Registered { stream }) if &**stream == "s")
        );
        let sent = &all[2..];
        assert!(matches!(&sent[0], ShardCommand::DefineGroup { .. }));
        assert_eq!(sent.len(), 1, "only the group goes down: {sent:?}");
    }
    // The shards learn the stored polls from their configuration instead.
    assert!(restored.closed_poll_ids(10).contains(id.as_str()));
    drop(h);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A claim waiting for its old connection's `Left` gets the departed record directly: even
/// with no room for departed viewers at all, it resumes.
#[test]
fn a_waiting_claim_resumes_even_when_the_departed_bounds_are_zero() {
    let config = Config {
        resume_max_departed: 0,
        ..Config::default()
    };
    let mut h = harness(1, config);
    let old = at(0, 1, 7);
    h.join(old, "tok7", profile(7, UA_IOS));
    let new = at(0, 2, 8);
    h.event(
        ShardEvent::Joined {
            at: new,
            resume: "x".into(),
            profile: Box::new(profile(8, UA_IOS)),
            claim: Some("tok7".into()),
        },
        2_000,
    );
    h.drain();
    h.event(
        ShardEvent::Left {
            at: old,
            votes: vec![(1, 1)],
            reports: vec![],
        },
        2_100,
    );
    let sent = h.sent(0);
    assert!(
        matches!(&sent[..], [ShardCommand::Admit { to, admission }] if *to == new && admission.viewer == ViewerId(7) && admission.restore.as_ref().is_some_and(|r| r.votes == vec![(1, 1)])),
        "{sent:?}"
    );
    assert_eq!(h.app.resume_stats().dropped, 0);
    // A plain departure with no room is dropped at once, and counted.
    h.event(
        ShardEvent::Left {
            at: ViewerRef {
                viewer: ViewerId(7),
                ..new
            },
            votes: vec![],
            reports: vec![],
        },
        2_200,
    );
    assert_eq!(h.app.resume_stats().departed, 0);
    assert_eq!(h.app.resume_stats().dropped, 1);
}

/// The live registry in memory: keys let a publisher in once, the audience hears `live` and
/// gets an endpoint, an unsupported codec is refused by name, and the end reaches the shards
/// and the audience.
#[test]
fn a_publish_turns_a_stream_live_and_its_end_reaches_shards_and_audience() {
    let mut h = harness(2, Config::default());
    let (stream, key) = h.app.add_stream("s".into(), None, 1_000).unwrap();
    let a = at(1, 1, 1);
    h.join(a, "t", profile(1, UA_IOS));
    h.watch(a, profile(1, UA_IOS), "s");
    h.drain();

    let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
    assert_eq!(
        h.app.begin_publish("not-a-key", peer),
        Err(PublishError::UnknownKey)
    );
    let turn = h.app.begin_publish(&key, peer).unwrap();
    assert_eq!(
        h.app.begin_publish(&key, peer),
        Err(PublishError::Busy("s".into()))
    );
    assert_eq!(h.app.stream("s").map(|s| s.state), Some(StreamState::Live));
    for i in 0..2 {
        let sent = h.sent(i);
        assert!(
            matches!(&sent[0], ShardCommand::Media(MediaCommand::Live { stream }) if &**stream == "s")
        );
        assert_eq!(
            Harness::casts(&sent, stream.group),
            vec![json!({"type": "stream", "stream": "s", "state": "live"})]
        );
        let endpoints: Vec<Value> = sent
            .iter()
            .filter_map(|c| match c {
                ShardCommand::Send { to, frame } if *to == a => Some(decode(frame)),
                _ => None,
            })
            .collect();
        // The viewer lives on shard 1: only that shard gets its endpoint.
        assert_eq!(endpoints.len(), i, "{endpoints:?}");
        if let Some(e) = endpoints.first() {
            assert_eq!(e["type"], "endpoint");
            assert!(e["url"]
                .as_str()
                .unwrap()
                .contains("/hls/s/index.m3u8?session="));
        }
    }

    // An HEVC keyframe tag: refused by name, counted.
    let err = h
        .app
        .publish_media(
            &turn,
            media::MediaKind::Video,
            0,
            &[0x1C, 0, 0, 0, 0],
            2_000,
        )
        .unwrap_err();
    assert!(err.to_string().contains("HEVC"), "{err}");
    // Audio before its sequence header: dropped, counted, not fatal.
    h.app
        .publish_media(&turn, media::MediaKind::Audio, 0, &[0xAF, 1, 0x21], 2_000)
        .unwrap();
    let stats = h.app.ingest_stats();
    assert_eq!(
        (
            stats.refused_key,
            stats.refused_busy,
            stats.refused_codec,
            stats.dropped_samples
        ),
        (1, 1, 1, 1)
    );

    h.app.end_publish(&turn, 3_000);
    h.app.end_publish(&turn, 3_000);
    assert_eq!(h.app.stream("s").map(|s| s.state), Some(StreamState::Ended));
    for i in 0..2 {
        let sent = h.sent(i);
        let ended = sent
            .iter()
            .filter(|c| matches!(c, ShardCommand::Media(MediaCommand::Ended { .. })))
            .count();
        assert_eq!(ended, 1, "an end is told once");
        assert_eq!(
            Harness::casts(&sent, stream.group),
            vec![json!({"type": "stream", "stream": "s", "state": "ended"})]
        );
    }
    // The stream can go live again with the same key.
    assert!(h.app.begin_publish(&key, peer).is_ok());
}

/// The config file's `[[remediation_rules]]` (as docs/api.md shows them) become rules, and
/// a rule fires on a group's window in memory: the overlay is cast to the group, the cdn set.
#[test]
fn remediation_rules_from_the_config_file_act_on_a_group() {
    let config: Config = toml::from_str(
        r#"
        telemetry_windows_s = [10, 60]
        [[remediation_rules]]
        id = "failing-country"
        window_s = 10
        min_reports = 1
        hold_s = 0
        failures_per_min_above = 30
        actions = [
          { type = "player_config", config = { max_bitrate_kbps = 1500 } },
          { type = "cdn", cdn = "backup" },
        ]
        "#,
    )
    .unwrap();
    let rule: remediation::RuleSpec =
        serde_json::from_value(config.remediation_rules[0].clone()).unwrap();
    let mut h = harness(1, config);
    h.app.add_rule(rule).unwrap();
    let key = h.app.add_custom_group(
        "ios".into(),
        Predicate {
            clauses: vec![(Field::Os, vec!["ios".into()])],
        },
        1_000,
    );
    let id = h.app.group(&key).unwrap().id;
    let mut delta = shards::telemetry::Aggregate::default();
    delta.record(&shards::proto::Telemetry {
        failures: Some(10.0),
        ..Default::default()
    });
    delta.viewers = 1;
    h.event(
        ShardEvent::Telemetry {
            shard: 0,
            deltas: vec![(id, 5, delta)],
        },
        5_000,
    );
    h.drain();
    h.app.evaluate_remediations(5_000);
    assert_eq!(h.app.group_cdn(id), Some("backup"));
    let (events, in_force) = h.app.remediation_events();
    assert_eq!(events.len(), 1);
    assert_eq!(in_force, vec!["r1".to_owned()]);
    assert!(h
        .sent(0)
        .iter()
        .any(|c| matches!(c, ShardCommand::Cast { group, .. } if *group == id)));
    h.app.revert_remediation("r1", 6_000).unwrap();
    assert_eq!(h.app.group_cdn(id), None);
    assert!(h.app.revert_remediation("r1", 6_000).is_err());
}

/// `min_reports` counts distinct reporting viewers: one viewer reporting failures every
/// 100 ms (600 reports a minute) never makes a rule with `min_reports = 5` fire; five viewers
/// do. The shard side is the shards' own fold (`Partials`), flushed every 250 ms.
#[test]
fn a_rules_minimum_counts_viewers_not_reports() {
    let fired_with = |n_viewers: u32| -> Vec<u64> {
        let config: Config = toml::from_str(
            r#"
            telemetry_windows_s = [10, 60]
            [[remediation_rules]]
            id = "failing"
            window_s = 10
            min_reports = 5
            hold_s = 2
            failures_per_min_above = 30
            actions = [{ type = "notify" }]
            "#,
        )
        .unwrap();
        let rule: remediation::RuleSpec =
            serde_json::from_value(config.remediation_rules[0].clone()).unwrap();
        let mut h = harness(1, config);
        h.app.add_rule(rule).unwrap();
        let key = h.app.add_custom_group(
            "ios".into(),
            Predicate {
                clauses: vec![(Field::Os, vec!["ios".into()])],
            },
            1_000,
        );
        let id = h.app.group(&key).unwrap().id;
        let mut shard = shards::telemetry::Partials::default();
        let failing = shards::proto::Telemetry {
            failures: Some(1.0),
            ..Default::default()
        };
        let mut fired = Vec::new();
        for step in 0..300u64 {
            let now = 2_000_000 + step * 100;
            for v in 0..n_viewers {
                shard.record(v, [GroupId::GLOBAL, id], (now / 1000) as u32, &failing);
            }
            if step % 5 == 0 {
                let deltas = shard.take();
                h.event(ShardEvent::Telemetry { shard: 0, deltas }, now);
            }
            if step % 10 == 0 {
                h.app.evaluate_remediations(now);
                if h.app.remediation_events().0.len() > fired.len() {
                    fired.push(step / 10);
                }
            }
            h.drain();
        }
        let deltas = shard.take();
        h.event(ShardEvent::Telemetry { shard: 0, deltas }, 2_029_900);
        let window = h.app.group_telemetry(id, 2_029_900);
        assert_eq!(window["10s"]["viewers"], n_viewers, "{window}");
        assert_eq!(window["10s"]["reports"], 100 * n_viewers);
        fired
    };
    assert_eq!(
        fired_with(1),
        Vec::<u64>::new(),
        "one viewer: 600 reports/min"
    );
    assert_eq!(fired_with(4), Vec::<u64>::new());
    // Bad from the second evaluation (1 s of reports: 55 failures, 330 a minute), held 2 s.
    assert_eq!(fired_with(5), vec![3], "fires after hold_s");
}

/// The session routes shard `i` was sent: (session, stream, prefix) opens and ended ids.
fn session_routes(cmds: &[ShardCommand]) -> (Vec<(String, String, String)>, Vec<String>) {
    let (mut open, mut ended) = (Vec::new(), Vec::new());
    for c in cmds {
        match c {
            ShardCommand::Media(MediaCommand::Session(SessionCommand::Open {
                id,
                stream,
                prefix,
            })) => open.push((id.to_string(), stream.to_string(), prefix.to_string())),
            ShardCommand::Media(MediaCommand::Session(SessionCommand::Ended { id })) => {
                ended.push(id.to_string())
            }
            _ => {}
        }
    }
    (open, ended)
}

/// Sessions in memory: a watch opens one (CDN by region and weight, signed URL), fetches
/// make it playing, a group's CDN re-points it, watching elsewhere ends it.
#[test]
fn sessions_follow_watches_fetches_and_group_cdns() {
    let config: Config = toml::from_str(
        r#"
        session_key = "0123456789abcdef0123456789abcdef"
        [[cdns]]
        name = "edge-a"
        base = "https://a.cdn.example/"
        [[cdns]]
        name = "backup"
        base = "https://b.cdn.example"
        weight = 0
        "#,
    )
    .unwrap();
    let mut h = harness(2, config);
    for s in ["s", "t"] {
        h.app.add_stream(s.into(), None, 1_000).unwrap();
    }
    let (a, b) = (at(0, 1, 1), at(1, 1, 2));
    h.join(a, "ra", profile(1, UA_IOS));
    h.join(b, "rb", profile(2, UA_LINUX));
    h.drain();
    h.watch(a, profile(1, UA_IOS), "s");
    h.watch(b, profile(2, UA_LINUX), "s");
    let cmds = h.sent(0);
    let endpoint = cmds
        .iter()
        .find_map(|c| match c {
            ShardCommand::Send { frame, .. } if decode(frame)["type"] == "endpoint" => {
                Some(decode(frame))
            }
            _ => None,
        })
        .unwrap();
    let session = endpoint["session"].as_str().unwrap().to_owned();
    assert_eq!(session.len(), 32, "128 random bits");
    let url = endpoint["url"].as_str().unwrap();
    let key = shards::session_sign::SessionKey::new(b"0123456789abcdef0123456789abcdef");
    let exp = (1_000 / 1000 + 6 * 3600).to_string();
    let sig = key.sign(&session, "s", 1 + 6 * 3600);
    assert!(
        url.ends_with(&format!(
            "/hls/s/index.m3u8?session={session}&exp={exp}&sig={sig}"
        )),
        "{url}"
    );
    // Both shards learn both sessions, pointed at the one weighted CDN.
    let (open, _) = session_routes(&cmds);
    assert_eq!(open.len(), 2);
    assert!(
        open.iter()
            .all(|(_, s, p)| s == "s" && p == "https://a.cdn.example/hls/s/"),
        "{open:?}"
    );
    assert_eq!(session_routes(&h.sent(1)).0, open);
    let s = h.app.session(&session).unwrap();
    assert_eq!((s.state.as_str(), s.cdn.as_str()), ("created", "edge-a"));

    // A fetch report: playing, with bytes.
    let delta = shards::hls_session::FetchDelta {
        playlists: 1,
        segments: 2,
        bytes: 4000,
        ads: vec![],
    };
    let fetches = vec![(Box::<str>::from(session.as_str()), delta)];
    h.event(ShardEvent::SessionFetches { shard: 0, fetches }, 2_000);
    let s = h.app.session(&session).unwrap();
    assert_eq!(
        (s.state.as_str(), s.bytes, s.segments),
        ("playing", 4000, 2)
    );
    assert_eq!(
        h.app.session_counts("s"),
        vec![("created", 1), ("playing", 1), ("stalled", 0), ("ended", 0)]
    );
    // The viewer's telemetry says it is buffering: stalled until its next segment.
    h.event(ShardEvent::Buffering { viewers: vec![a] }, 2_100);
    assert_eq!(h.app.session(&session).unwrap().state.as_str(), "stalled");

    // The iOS group moves to the backup CDN: only its member's route changes.
    let ios = h.app.add_custom_group(
        "ios".into(),
        Predicate {
            clauses: vec![(Field::Os, vec!["ios".into()])],
        },
        2_000,
    );
    h.drain();
    assert!(h.app.set_group_cdn(&ios, Some("nowhere".into())).is_err());
    h.app.set_group_cdn(&ios, Some("backup".into())).unwrap();
    let (open, _) = session_routes(&h.sent(0));
    assert_eq!(
        open,
        vec![(
            session.clone(),
            "s".into(),
            "https://b.cdn.example/hls/s/".into()
        )]
    );
    h.drain();
    h.app.set_group_cdn(&ios, None).unwrap();
    assert_eq!(
        session_routes(&h.sent(1)).0[0].2,
        "https://a.cdn.example/hls/s/"
    );

    // Watching another stream ends the session (every shard forgets it).
    h.drain();
    h.watch(a, profile(1, UA_IOS), "t");
    let (open, ended) = session_routes(&h.sent(0));
    assert_eq!(ended, vec![session.clone()]);
    assert_eq!(open.len(), 1);
    assert_ne!(open[0].0, session);
    let s = h.app.session(&session).unwrap();
    assert_eq!((s.state.as_str(), s.end_reason), ("ended", Some("left")));
    // Watching the same stream again keeps the session.
    h.drain();
    h.watch(a, profile(1, UA_IOS), "t");
    assert!(session_routes(&h.sent(0)).0.is_empty());
}

#[test]
fn voter_records_are_kept_only_while_their_viewer_may_come_back() {
    let config = Config {
        resume_window_s: 10,
        ..Config::default()
    };
    let mut h = harness(1, config);
    h.join(at(0, 1, 1), "t1", profile(1, UA_IOS));
    h.join(at(0, 2, 2), "t2", profile(2, UA_IOS));
    for token in ["t1", "t2", "gone"] {
        let record = super::edges::ViewerRecord::default();
        h.app.edges.durable.records.insert(token.into(), record);
    }
    h.event(
        ShardEvent::Left {
            at: at(0, 2, 2),
            votes: vec![],
            reports: vec![],
        },
        5_000,
    );
    let kept = |h: &Harness| {
        let mut k: Vec<String> = h
            .app
            .edges
            .durable
            .records
            .keys()
            .map(|t| t.to_string())
            .collect();
        k.sort();
        k
    };
    h.app.tick(11_500);
    assert_eq!(
        kept(&h),
        ["t1", "t2"],
        "connected, and departed within the window"
    );
    h.app.tick(15_000);
    h.app
        .edges
        .durable
        .records
        .insert("gone".into(), Default::default());
    assert_eq!(kept(&h).len(), 3, "pruned at most every RECORDS_PRUNE_MS");
    h.app.tick(22_000);
    assert_eq!(kept(&h), ["t1"], "t2 left 17 s ago, past its 10 s window");
}
