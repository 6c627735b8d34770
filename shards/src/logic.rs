//! The shard's pure state: group membership bitmaps and polls, the vote logic over them, and
//! the keepalive decision for a connection's state.
//!
//! No sockets, no clock: every operation takes a slot and the profile or votes it concerns
//! (or a connection's state and the time), so the logic is tested in memory (below). The runtime
//! (`shard`) owns one `Core` and the connection table beside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bitset::Bitset;
use crate::clock::ticks;
use crate::config::ShardConfig;
use crate::conn::State;
use crate::polls::{Polls, ViewerVotes, VoteError};
use crate::profile::{Predicate, Profile};
use crate::proto::{GroupId, LatestReports, PollSeq, Slot, Telemetry};
use crate::telemetry::Partials;

struct Group {
    predicate: Arc<Predicate>,
    members: Bitset,
}

/// Groups, polls and telemetry partials of one shard.
pub(crate) struct Core {
    groups: BTreeMap<GroupId, Group>,
    pub polls: Polls,
    /// Telemetry folded per group since the last report to the application core.
    pub telemetry: Partials<GroupId>,
}

impl Core {
    /// The built-in global group (every open viewer) and no polls.
    #[cfg(test)]
    pub fn new() -> Core {
        Core::with_closed_polls(Default::default())
    }

    /// As [`Core::new`], knowing the ids of polls closed in an earlier run.
    pub fn with_closed_polls(closed: std::sync::Arc<std::collections::HashSet<Box<str>>>) -> Core {
        let mut groups = BTreeMap::new();
        groups.insert(
            GroupId::GLOBAL,
            Group {
                predicate: Arc::new(Predicate::default()),
                members: Bitset::new(),
            },
        );
        Core {
            groups,
            polls: Polls::new(closed),
            telemetry: Partials::default(),
        }
    }

    /// Re-evaluates every group for the viewer in `slot`.
    pub fn regroup(&mut self, slot: Slot, profile: &Profile) {
        for group in self.groups.values_mut() {
            if group.predicate.matches(profile) {
                group.members.insert(slot);
            } else {
                group.members.remove(slot);
            }
        }
    }

    /// Takes `slot` out of every group.
    pub fn leave(&mut self, slot: Slot) {
        for group in self.groups.values_mut() {
            group.members.remove(slot);
        }
    }

    /// The viewer in `slot` is gone: where its latest telemetry reports were counted (for the
    /// application core to keep with the departed viewer), forgotten here.
    pub fn take_reports(&mut self, slot: Slot) -> LatestReports {
        self.telemetry.leave(slot)
    }

    /// A resumed viewer in `slot` brings back where its latest reports were counted (groups
    /// this shard does not know, dropped meanwhile, are left out).
    pub fn restore_reports(&mut self, slot: Slot, mut reports: LatestReports) {
        reports.retain(|(g, _)| self.groups.contains_key(g));
        self.telemetry.restore(slot, reports);
    }

    /// Creates (or replaces) a group from the viewers that may join groups now.
    pub fn define_group<'a>(
        &mut self,
        id: GroupId,
        predicate: Arc<Predicate>,
        viewers: impl IntoIterator<Item = (Slot, &'a Profile)>,
    ) {
        let mut members = Bitset::new();
        for (slot, profile) in viewers {
            if predicate.matches(profile) {
                members.insert(slot);
            }
        }
        self.groups.insert(id, Group { predicate, members });
    }

    /// Forgets a group; the global group stays.
    pub fn drop_group(&mut self, id: GroupId) {
        if id != GroupId::GLOBAL {
            self.groups.remove(&id);
            self.telemetry.forget(id);
        }
    }

    /// The members of `group` on this shard.
    pub fn members(&self, group: GroupId) -> Option<&Bitset> {
        self.groups.get(&group).map(|g| &g.members)
    }

    /// Checks a vote against the poll and its audience without counting it (an identified
    /// viewer's vote is counted at the application core).
    pub fn check_vote(
        &self,
        slot: Slot,
        poll: &str,
        choice: i64,
    ) -> Result<(PollSeq, u8), VoteError> {
        let (seq, audience) = self.polls.check(poll, choice)?;
        if !self.members(audience).is_some_and(|m| m.contains(slot)) {
            return Err(VoteError::NotInAudience);
        }
        Ok((seq, choice as u8)) // checked: 0 <= choice < choices <= u8::MAX
    }

    /// A viewer's telemetry report received at Unix second `second`, folded into every group
    /// it is a member of now: one bitmap test per group, nothing per other viewer.
    pub fn report(&mut self, slot: Slot, second: u32, t: &Telemetry) {
        let groups = self
            .groups
            .iter()
            .filter(|(_, g)| g.members.contains(slot))
            .map(|(&id, _)| id);
        self.telemetry.record(slot, groups, second, t);
    }

    /// A viewer's vote: checked against the poll and its audience, counted into this shard's
    /// tally (moving the viewer's earlier choice) and recorded in `votes`.
    ///
    /// With a breakdown, the vote counts under the voter's value of the field now (`""`
    /// without one), and a changed vote moves out of the value it was counted under.
    pub fn vote(
        &mut self,
        slot: Slot,
        votes: &mut ViewerVotes,
        profile: &Profile,
        poll: &str,
        choice: i64,
    ) -> Result<(PollSeq, u8), VoteError> {
        let (seq, choice) = self.check_vote(slot, poll, choice)?;
        let value = self
            .polls
            .breakdown(seq)
            .and_then(|f| profile.value(f))
            .unwrap_or("");
        let value = self.polls.key(seq, value);
        // A vote restored from another shard has no value here: it moves out of today's.
        let previous = votes
            .choice(seq)
            .map(|c| (c, votes.value(seq).unwrap_or(value)));
        self.polls.count(seq, previous, choice, value);
        votes.set(seq, choice);
        votes.set_value(seq, value);
        Ok((seq, choice))
    }
}

/// What the keepalive sweep does with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keepalive {
    Nothing,
    Ping,
    /// Unanswered ping or unfinished close: drop without a close frame.
    Drop,
}

/// The keepalive decision for a connection in `state` at tick `now`.
pub(crate) fn keepalive(
    state: State,
    now: u32,
    last_rx: u32,
    ping_sent: u32,
    c: &ShardConfig,
) -> Keepalive {
    match state {
        State::Open => {
            if ping_sent != 0 && now.wrapping_sub(ping_sent) >= ticks(c.pong_timeout) {
                Keepalive::Drop
            } else if ping_sent == 0 && now.wrapping_sub(last_rx) >= ticks(c.ping_interval) {
                Keepalive::Ping
            } else {
                Keepalive::Nothing
            }
        }
        State::Closing { deadline, .. } if now >= deadline => Keepalive::Drop,
        _ => Keepalive::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Field, ViewerId};
    use std::time::Duration;

    fn profile(n: u32, stream: Option<&str>) -> Profile {
        let mut p = Profile::from_handshake(
            ViewerId::compose(0, 0, n),
            "127.0.0.1:1".parse().unwrap(),
            Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)"),
            None,
            &[],
            0,
        );
        p.stream = stream.map(Into::into);
        p
    }

    fn size(core: &Core, g: GroupId) -> usize {
        core.members(g).map_or(0, |m| m.iter_from(0).count())
    }

    #[test]
    fn groups_follow_profiles_and_leaving() {
        let mut core = Core::new();
        let (a, mut b) = (profile(1, Some("main")), profile(2, None));
        core.regroup(0, &a);
        core.regroup(1, &b);
        core.define_group(
            GroupId(5),
            Arc::new(Predicate::stream("main")),
            [(0, &a), (1, &b)],
        );
        assert_eq!(size(&core, GroupId::GLOBAL), 2);
        assert_eq!(size(&core, GroupId(5)), 1);
        b.stream = Some("main".into());
        core.regroup(1, &b);
        assert_eq!(size(&core, GroupId(5)), 2);
        core.leave(0);
        assert_eq!(size(&core, GroupId(5)), 1);
        assert_eq!(size(&core, GroupId::GLOBAL), 1);
        core.drop_group(GroupId(5));
        core.drop_group(GroupId::GLOBAL);
        assert!(core.members(GroupId(5)).is_none());
        assert!(core.members(GroupId::GLOBAL).is_some(), "global stays");
    }

    #[test]
    fn votes_are_checked_counted_moved_and_tallied() {
        let mut core = Core::new();
        let (a, b) = (profile(1, Some("main")), profile(2, Some("other")));
        core.regroup(0, &a);
        core.regroup(1, &b);
        let audience = GroupId(9);
        let pred = Predicate {
            clauses: vec![(Field::Stream, vec!["main".into()])],
        };
        core.define_group(audience, Arc::new(pred), [(0, &a), (1, &b)]);
        core.polls.open("p1".into(), 1, 3, audience, None);
        let (mut va, mut vb) = (ViewerVotes::default(), ViewerVotes::default());
        assert_eq!(
            core.vote(0, &mut va, &a, "nope", 0),
            Err(VoteError::UnknownPoll)
        );
        assert_eq!(
            core.vote(0, &mut va, &a, "p1", 3),
            Err(VoteError::BadChoice)
        );
        assert_eq!(
            core.vote(1, &mut vb, &b, "p1", 0),
            Err(VoteError::NotInAudience)
        );
        assert_eq!(core.vote(0, &mut va, &a, "p1", 2), Ok((1, 2)));
        assert_eq!(
            core.vote(0, &mut va, &a, "p1", 0),
            Ok((1, 0)),
            "a changed vote"
        );
        assert_eq!(va.choice(1), Some(0));
        assert_eq!(vb.choice(1), None, "a refused vote changes nothing");
        assert_eq!(core.polls.take_dirty(), vec![(1, vec![1, 0, 0], vec![])]);
        assert_eq!(core.polls.close(1), Some((vec![1, 0, 0], vec![])));
        assert_eq!(core.vote(0, &mut va, &a, "p1", 1), Err(VoteError::Closed));
    }

    #[test]
    fn telemetry_goes_to_the_reporters_groups_only() {
        let mut core = Core::new();
        let (a, b) = (profile(1, Some("main")), profile(2, Some("other")));
        core.regroup(0, &a);
        core.regroup(1, &b);
        core.define_group(
            GroupId(5),
            Arc::new(Predicate::stream("main")),
            [(0, &a), (1, &b)],
        );
        let t = Telemetry {
            failures: Some(2.0),
            ..Telemetry::default()
        };
        core.report(0, 100, &t);
        core.report(1, 100, &t);
        let deltas = core.telemetry.take();
        let reports: Vec<(GroupId, u32, u64, i64)> = deltas
            .iter()
            .map(|(g, s, a)| (*g, *s, a.reports, a.viewers))
            .collect();
        assert_eq!(
            reports,
            vec![(GroupId::GLOBAL, 100, 2, 2), (GroupId(5), 100, 1, 1)]
        );
        core.report(0, 101, &t);
        core.drop_group(GroupId(5));
        let reports: Vec<GroupId> = core
            .telemetry
            .take()
            .into_iter()
            .map(|(g, _, _)| g)
            .collect();
        assert_eq!(
            reports,
            vec![GroupId::GLOBAL, GroupId::GLOBAL],
            "a dropped group's delta is forgotten (the global one moved from 100 to 101)"
        );
        // Leaving hands over the latest reports; a resume elsewhere takes back known groups.
        let carried = core.take_reports(0);
        assert_eq!(carried, vec![(GroupId::GLOBAL, 101)]);
        let mut other = Core::new();
        other.regroup(3, &a);
        other.restore_reports(3, vec![(GroupId::GLOBAL, 101), (GroupId(9), 90)]);
        other.report(3, 104, &t);
        let moved: Vec<(GroupId, u32, i64)> = other
            .telemetry
            .take()
            .into_iter()
            .map(|(g, s, a)| (g, s, a.viewers))
            .collect();
        assert_eq!(
            moved,
            vec![(GroupId::GLOBAL, 101, -1), (GroupId::GLOBAL, 104, 1)]
        );
        assert_eq!(
            other.take_reports(3),
            vec![(GroupId::GLOBAL, 104)],
            "group 9 unknown here"
        );
    }

    #[test]
    fn keepalive_pings_silence_then_drops_the_unanswered() {
        let c = ShardConfig {
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(15),
            ..ShardConfig::default()
        };
        let open = State::Open;
        assert_eq!(keepalive(open, 299, 0, 0, &c), Keepalive::Nothing);
        assert_eq!(keepalive(open, 300, 0, 0, &c), Keepalive::Ping);
        assert_eq!(keepalive(open, 449, 0, 300, &c), Keepalive::Nothing);
        assert_eq!(keepalive(open, 450, 0, 300, &c), Keepalive::Drop);
        let closing = |deadline| State::Closing {
            deadline,
            peer_closed: false,
            write_shut: true,
        };
        assert_eq!(keepalive(closing(50), 49, 0, 0, &c), Keepalive::Nothing);
        assert_eq!(keepalive(closing(50), 50, 0, 0, &c), Keepalive::Drop);
        assert_eq!(keepalive(State::Done, 1000, 0, 0, &c), Keepalive::Nothing);
    }
}
