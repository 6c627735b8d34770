//! Live polls on a shard: validation of votes and the shard's share of the count.
//!
//! Each shard counts the votes of its own viewers into a signed tally per poll; the
//! application core sums the shards' tallies. A vote change is counted exactly once, on the
//! shard where it happens: +1 for the new choice and -1 for the old one. A viewer's earlier
//! vote may have been counted on another shard before the viewer resumed here, so a shard's
//! tally can hold negative entries; the sum over shards is the exact count.
//!
//! A poll opened with a breakdown field (country, os...) also counts, the same way, per value
//! of that field: a vote is counted under its voter's value when it is cast, and a changed
//! vote moves out of the value it was counted under (remembered with the vote). The sum over
//! shards of each value's tally is exact, except for one case: a vote cast before a resume
//! on another shard, changed after it by a viewer whose value differs on the new connection,
//! moves out of the new value (the earlier shard's value is not carried); totals stay exact.

use std::collections::{BTreeMap, HashMap};

use crate::profile::Field;
pub use crate::proto::Breakdown;
use crate::proto::{GroupId, PollSeq, Vote};

/// Most distinct breakdown values a shard counts per poll; votes under further values count
/// under [`OTHER`] (free-form fields such as `region` could otherwise grow without bound).
pub const MAX_BREAKDOWN_VALUES: usize = 256;
/// The breakdown key of values past [`MAX_BREAKDOWN_VALUES`].
pub const OTHER: &str = "~other";

/// One poll as a shard knows it.
#[derive(Debug, Clone)]
pub struct ShardPoll {
    pub seq: PollSeq,
    pub choices: u8,
    /// The group whose members may vote.
    pub audience: GroupId,
    pub open: bool,
    /// This shard's share of the count, per choice.
    pub tally: Vec<i64>,
    /// The field results are broken down by, if any.
    pub breakdown: Option<Field>,
    /// This shard's share of the count per value of `breakdown`.
    pub by_value: BTreeMap<Box<str>, Vec<i64>>,
    /// Changed since the last report to the application core.
    pub dirty: bool,
}

/// Why a vote was refused: the `code` and `message` of the viewer's `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteError {
    UnknownPoll,
    Closed,
    BadChoice,
    NotInAudience,
}

impl VoteError {
    pub fn code(self) -> &'static str {
        match self {
            VoteError::UnknownPoll => "unknown_poll",
            VoteError::Closed => "poll_closed",
            VoteError::BadChoice => "bad_choice",
            VoteError::NotInAudience => "not_in_audience",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            VoteError::UnknownPoll => "no such poll",
            VoteError::Closed => "the poll is closed",
            VoteError::BadChoice => "choice is out of range",
            VoteError::NotInAudience => "this poll is not open to you",
        }
    }
}

/// Closed polls remembered so late votes get `poll_closed` rather than `unknown_poll`.
const CLOSED_KEPT: usize = 1024;

/// Every poll this shard has been told about, by id.
#[derive(Debug, Default)]
pub struct Polls {
    by_id: HashMap<Box<str>, ShardPoll>,
    ids: HashMap<PollSeq, Box<str>>,
    /// Retired polls, oldest first: only their id is kept.
    retired: std::collections::VecDeque<PollSeq>,
    /// Polls that closed before this process started (from the store): votes for them get
    /// `poll_closed` from the first connection on.
    closed_before: std::sync::Arc<std::collections::HashSet<Box<str>>>,
}

impl Polls {
    /// No polls yet; `closed_before` are the ids of polls closed in an earlier run.
    pub fn new(closed_before: std::sync::Arc<std::collections::HashSet<Box<str>>>) -> Polls {
        Polls {
            closed_before,
            ..Polls::default()
        }
    }

    pub fn open(
        &mut self,
        id: Box<str>,
        seq: PollSeq,
        choices: u8,
        audience: GroupId,
        breakdown: Option<Field>,
    ) {
        self.ids.insert(seq, id.clone());
        self.by_id.insert(
            id,
            ShardPoll {
                seq,
                choices,
                audience,
                open: true,
                tally: vec![0; choices as usize],
                breakdown,
                by_value: BTreeMap::new(),
                dirty: false,
            },
        );
    }

    /// Stops accepting votes; returns the final tally and breakdown.
    pub fn close(&mut self, seq: PollSeq) -> Option<(Vec<i64>, Breakdown)> {
        let id = self.ids.get(&seq)?;
        let poll = self.by_id.get_mut(id)?;
        poll.open = false;
        poll.dirty = false;
        Some((poll.tally.clone(), breakdown_of(poll)))
    }

    /// The key a vote with breakdown `value` counts under: the value itself, or [`OTHER`]
    /// once the poll has [`MAX_BREAKDOWN_VALUES`] others.
    pub fn key<'a>(&self, seq: PollSeq, value: &'a str) -> &'a str {
        let full = self
            .ids
            .get(&seq)
            .and_then(|id| self.by_id.get(id))
            .is_some_and(|p| {
                p.by_value.len() >= MAX_BREAKDOWN_VALUES && !p.by_value.contains_key(value)
            });
        if full {
            OTHER
        } else {
            value
        }
    }

    /// The breakdown field of poll `seq`, if it has one.
    pub fn breakdown(&self, seq: PollSeq) -> Option<Field> {
        self.ids
            .get(&seq)
            .and_then(|id| self.by_id.get(id))
            .and_then(|p| p.breakdown)
    }

    /// Frees a closed poll's tally, keeping its id (bounded) so late votes learn it closed.
    pub fn retire(&mut self, seq: PollSeq) {
        let Some(poll) = self.ids.get(&seq).and_then(|id| self.by_id.get_mut(id)) else {
            return;
        };
        poll.open = false;
        poll.tally = Vec::new();
        poll.by_value = BTreeMap::new();
        self.retired.push_back(seq);
        while self.retired.len() > CLOSED_KEPT {
            if let Some(old) = self.retired.pop_front() {
                if let Some(id) = self.ids.remove(&old) {
                    self.by_id.remove(&id);
                }
            }
        }
    }

    /// Checks a vote and returns the poll's sequence number and audience group; the caller
    /// checks the audience bitmap and then calls [`Polls::count`].
    pub fn check(&self, id: &str, choice: i64) -> Result<(PollSeq, GroupId), VoteError> {
        let Some(poll) = self.by_id.get(id) else {
            return Err(if self.closed_before.contains(id) {
                VoteError::Closed
            } else {
                VoteError::UnknownPoll
            });
        };
        if !poll.open {
            return Err(VoteError::Closed);
        }
        if choice < 0 || choice >= i64::from(poll.choices) {
            return Err(VoteError::BadChoice);
        }
        Ok((poll.seq, poll.audience))
    }

    /// Counts a viewer's vote: `previous` is the choice it had (counted here or elsewhere)
    /// and the breakdown value it was counted under; `value` is the voter's value now (both
    /// ignored without a breakdown).
    pub fn count(&mut self, seq: PollSeq, previous: Option<(u8, &str)>, choice: u8, value: &str) {
        let Some(poll) = self.ids.get(&seq).and_then(|id| self.by_id.get_mut(id)) else {
            return;
        };
        if previous == Some((choice, value)) {
            return;
        }
        let n = poll.tally.len();
        let breakdown = poll.breakdown.is_some();
        let mut add = |choice: u8, value: &str, delta: i64| {
            if let Some(c) = poll.tally.get_mut(choice as usize) {
                *c += delta;
            }
            if breakdown {
                let row = poll
                    .by_value
                    .entry(value.into())
                    .or_insert_with(|| vec![0; n]);
                if let Some(c) = row.get_mut(choice as usize) {
                    *c += delta;
                }
            }
        };
        if let Some((p, old)) = previous {
            add(p, old, -1);
        }
        add(choice, value, 1);
        poll.dirty = true;
    }

    /// Tallies (and breakdowns) changed since the last call, for the periodic report.
    pub fn take_dirty(&mut self) -> Vec<(PollSeq, Vec<i64>, Breakdown)> {
        self.by_id
            .values_mut()
            .filter(|p| p.dirty && p.open)
            .map(|p| {
                p.dirty = false;
                (p.seq, p.tally.clone(), breakdown_of(p))
            })
            .collect()
    }

    pub fn is_open(&self, seq: PollSeq) -> bool {
        self.ids
            .get(&seq)
            .and_then(|id| self.by_id.get(id))
            .is_some_and(|p| p.open)
    }
}

fn breakdown_of(p: &ShardPoll) -> Breakdown {
    p.by_value
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One viewer's current choice in each poll it voted in (a few entries: a small vector), and
/// the breakdown value each vote cast on this connection was counted under. Nothing but a
/// null pointer for a viewer that never voted: 8 bytes in its connection, no heap.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ViewerVotes(Option<Box<VoteBook>>);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct VoteBook {
    votes: Vec<Vote>,
    values: Vec<(PollSeq, Box<str>)>,
}

impl ViewerVotes {
    pub fn new(votes: Vec<Vote>) -> ViewerVotes {
        if votes.is_empty() {
            return ViewerVotes(None);
        }
        ViewerVotes(Some(Box::new(VoteBook {
            votes,
            values: Vec::new(),
        })))
    }

    fn book(&mut self) -> &mut VoteBook {
        self.0.get_or_insert_with(Box::default)
    }

    /// The breakdown value the vote in poll `seq` was counted under on this connection.
    pub fn value(&self, seq: PollSeq) -> Option<&str> {
        let book = self.0.as_ref()?;
        book.values
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, v)| &**v)
    }

    /// Records the breakdown value of the vote in poll `seq`.
    pub fn set_value(&mut self, seq: PollSeq, value: &str) {
        let values = &mut self.book().values;
        match values.iter_mut().find(|(s, _)| *s == seq) {
            Some(v) => v.1 = value.into(),
            None => values.push((seq, value.into())),
        }
    }

    /// The choice in poll `seq`, if any.
    pub fn choice(&self, seq: PollSeq) -> Option<u8> {
        let book = self.0.as_ref()?;
        book.votes.iter().find(|(s, _)| *s == seq).map(|&(_, c)| c)
    }

    /// Records the choice in poll `seq`.
    pub fn set(&mut self, seq: PollSeq, choice: u8) {
        let votes = &mut self.book().votes;
        match votes.iter_mut().find(|(s, _)| *s == seq) {
            Some(v) => v.1 = choice,
            None => votes.push((seq, choice)),
        }
    }

    /// Forgets poll `seq` (dropped); a viewer left with no vote holds no heap again.
    pub fn forget(&mut self, seq: PollSeq) {
        if let Some(book) = self.0.as_mut() {
            book.votes.retain(|(s, _)| *s != seq);
            book.values.retain(|(s, _)| *s != seq);
            if book.votes.is_empty() && book.values.is_empty() {
                self.0 = None;
            }
        }
    }

    /// Every vote, leaving none.
    pub fn take(&mut self) -> Vec<Vote> {
        self.0.take().map(|b| b.votes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_closed_before_the_start_answer_closed() {
        let closed: std::collections::HashSet<Box<str>> = ["p-old".into()].into();
        let p = Polls::new(std::sync::Arc::new(closed));
        assert_eq!(p.check("p-old", 0), Err(VoteError::Closed));
        assert_eq!(p.check("p-new", 0), Err(VoteError::UnknownPoll));
    }

    #[test]
    fn votes_count_once_and_changes_move_counts() {
        let mut p = Polls::default();
        p.open("p1".into(), 1, 3, GroupId(5), None);
        assert_eq!(p.check("p1", 2), Ok((1, GroupId(5))));
        assert_eq!(p.check("p1", 3), Err(VoteError::BadChoice));
        assert_eq!(p.check("p1", -1), Err(VoteError::BadChoice));
        assert_eq!(p.check("nope", 0), Err(VoteError::UnknownPoll));
        p.count(1, None, 0, "");
        p.count(1, None, 0, "");
        p.count(1, Some((0, "")), 2, ""); // a changed vote: total stays 2
        p.count(1, Some((2, "")), 2, ""); // the same vote again changes nothing
        assert_eq!(p.take_dirty(), vec![(1, vec![1, 0, 1], vec![])]);
        assert!(p.take_dirty().is_empty());
        assert_eq!(p.close(1), Some((vec![1, 0, 1], vec![])));
        assert_eq!(p.check("p1", 0), Err(VoteError::Closed));
        assert!(!p.is_open(1));
        p.retire(1);
        assert_eq!(p.check("p1", 0), Err(VoteError::Closed));
        for seq in 2..(CLOSED_KEPT as u32 + 3) {
            p.open(format!("q{seq}").into(), seq, 2, GroupId(1), None);
            p.close(seq);
            p.retire(seq);
        }
        assert_eq!(
            p.check("p1", 0),
            Err(VoteError::UnknownPoll),
            "oldest forgotten"
        );
    }

    #[test]
    fn a_resumed_viewer_moves_a_vote_counted_elsewhere() {
        // Shard A counted the first vote; the viewer resumed on shard B and changed it.
        let (mut a, mut b) = (Polls::default(), Polls::default());
        a.open("p".into(), 7, 2, GroupId(1), None);
        b.open("p".into(), 7, 2, GroupId(1), None);
        a.count(7, None, 0, "");
        b.count(7, Some((0, "")), 1, "");
        let (ta, tb) = (a.close(7).unwrap().0, b.close(7).unwrap().0);
        let merged: Vec<i64> = ta.iter().zip(&tb).map(|(x, y)| x + y).collect();
        assert_eq!(merged, vec![0, 1]);
    }

    #[test]
    fn breakdowns_count_per_value_and_move_out_of_the_old_value() {
        let mut p = Polls::default();
        p.open("p".into(), 1, 2, GroupId(1), Some(Field::Region));
        assert_eq!(p.breakdown(1), Some(Field::Region));
        p.count(1, None, 0, "HU");
        p.count(1, None, 1, "DE");
        p.count(1, None, 1, "");
        // The HU voter changed region (hello) and then its vote.
        p.count(1, Some((0, "HU")), 1, "AT");
        let (_, tally, breakdown) = p.take_dirty().remove(0);
        assert_eq!(tally, vec![0, 3]);
        let as_map: std::collections::BTreeMap<&str, Vec<i64>> =
            breakdown.iter().map(|(k, v)| (&**k, v.clone())).collect();
        assert_eq!(as_map[""], vec![0, 1]);
        assert_eq!(as_map["AT"], vec![0, 1]);
        assert_eq!(as_map["DE"], vec![0, 1]);
        assert_eq!(as_map["HU"], vec![0, 0]);
        for n in 0..MAX_BREAKDOWN_VALUES {
            let v = format!("R{n}");
            let key = p.key(1, &v).to_owned();
            p.count(1, None, 0, &key);
        }
        assert_eq!(p.key(1, "HU"), "HU", "a known value keeps its row");
        assert_eq!(p.key(1, "NEW"), OTHER);
    }

    #[test]
    fn viewer_votes_move_and_forget() {
        let mut v = ViewerVotes::default();
        assert_eq!(v.choice(1), None);
        v.set(1, 2);
        v.set(4, 0);
        v.set(1, 1);
        v.set_value(1, "HU");
        assert_eq!(v.choice(1), Some(1));
        assert_eq!(v.value(1), Some("HU"));
        v.forget(1);
        assert_eq!(v.choice(1), None);
        assert_eq!(v.value(1), None);
        assert_eq!(v.take(), vec![(4, 0)]);
        assert_eq!(v, ViewerVotes::default());
        assert_eq!(std::mem::size_of::<ViewerVotes>(), 8);
        v.set(2, 1);
        v.forget(2);
        assert_eq!(v, ViewerVotes::default(), "no vote left: no heap");
    }
}
