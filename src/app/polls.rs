//! Live polls at the application core (FIG. 6): the registry of polls by id and by the short
//! sequence number the shards use, each poll's life (open, closing, closed), the merge of the
//! shards' signed tallies into counts, and what is checkpointed to the store.
//!
//! Owns: poll records, sequence numbers, merged counts, push and checkpoint bookkeeping.
//! Must not touch: groups (the audience group is created and dropped by the caller), shard
//! queues, the store (the caller writes what [`Poll::to_json`] gives).

use std::collections::{BTreeMap, HashMap};

use protocol::ResultsBreakdown;
use serde_json::{json, Value};
use shards::polls::Breakdown;
use shards::profile::{Field, Predicate};
use shards::proto::{Frame, GroupId, PollSeq};

use super::messages;

/// A validated `POST /api/polls` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest {
    pub stream: String,
    pub question: String,
    pub choices: Vec<String>,
    pub duration_s: u64,
    /// Narrows the audience beyond the stream's viewers.
    pub filter: Option<Predicate>,
    /// Results are also counted per value of this profile field.
    pub breakdown: Option<Field>,
}

/// The audience of a poll: the stream's viewers, narrowed by the filter.
pub fn audience(req: &PollRequest) -> Predicate {
    let mut p = Predicate::stream(&req.stream);
    if let Some(f) = &req.filter {
        p.clauses.extend(f.clauses.iter().cloned());
    }
    p
}

/// Adds one shard's tally into the merged counts.
pub fn merge_counts(into: &mut [i64], from: &[i64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Why a poll operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// The poll's stream is not live.
    #[error("unknown stream \"{0}\"")]
    UnknownStream(String),
    /// The stream already has a poll that is not closed.
    #[error("stream \"{0}\" already has an open poll: close it first")]
    AlreadyOpen(String),
    /// No poll has this id.
    #[error("no poll \"{0}\"")]
    NotFound(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollState {
    Open,
    /// Shards were told to stop; waiting for every final tally.
    Closing,
    Closed,
}

impl PollState {
    pub fn as_str(self) -> &'static str {
        match self {
            PollState::Open => "open",
            PollState::Closing => "closing",
            PollState::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Poll {
    pub id: String,
    pub seq: PollSeq,
    pub stream: String,
    pub question: String,
    pub choices: Vec<String>,
    pub filter: Option<Predicate>,
    pub audience: GroupId,
    pub created_ms: u64,
    pub closes_at_ms: u64,
    pub state: PollState,
    /// The latest tally of each shard.
    pub tallies: Vec<Vec<i64>>,
    /// The field results are broken down by, and each shard's latest tally per value.
    pub breakdown: Option<Field>,
    pub breakdowns: Vec<Breakdown>,
    /// Which shards sent their final tally.
    pub finals: Vec<bool>,
    /// Counts at the last results cast to the audience, to coalesce pushes.
    pub pushed: Option<Vec<u64>>,
    /// Counts at the last results push to broadcasters.
    pub broadcast: Option<Vec<u64>>,
    /// The breakdown at that push.
    pub broadcast_breakdown: Option<ResultsBreakdown>,
    /// Counts at the last checkpoint to the store.
    pub checkpointed: Option<Vec<u64>>,
    /// Results pushes so far (live and final).
    pub pushes: u64,
    /// When closing started, to log how long the final count took.
    pub closing_since_ms: Option<u64>,
    /// One vote per person: the current choice of each identified viewer (`sub`), over all
    /// of its connections and shards. Anonymous votes stay in the shards' tallies.
    pub people: HashMap<Box<str>, u8>,
    /// The people's votes per choice (added to the shards' tallies in `counts`).
    pub people_tally: Vec<i64>,
    /// In a cluster: the latest count of each other edge (replaced, never added, so a late
    /// or repeated tally counts once), and whether it was that edge's final one.
    pub remote: BTreeMap<String, (Vec<i64>, bool)>,
    /// This edge's own count as last published to the other edges.
    pub published: Option<Vec<i64>>,
    /// This edge's shards all sent their final tally; the poll waits for the other edges'.
    pub local_final: bool,
    /// When this edge's final count completed (the wait for other edges is bounded from it).
    pub local_final_ms: Option<u64>,
    /// In a cluster with JetStream: the final count read from the stored votes (every
    /// acknowledged vote once, at its latest choice), which wins over the tallies.
    pub durable_counts: Option<Vec<u64>>,
}

impl Poll {
    pub fn new(
        id: String,
        seq: PollSeq,
        req: PollRequest,
        audience: GroupId,
        shards: usize,
        now_ms: u64,
    ) -> Poll {
        let n = req.choices.len();
        Poll {
            id,
            seq,
            stream: req.stream,
            question: req.question,
            choices: req.choices,
            filter: req.filter,
            audience,
            created_ms: now_ms,
            closes_at_ms: now_ms + req.duration_s * 1000,
            state: PollState::Open,
            tallies: vec![vec![0; n]; shards],
            breakdown: req.breakdown,
            breakdowns: vec![Vec::new(); shards],
            finals: vec![false; shards],
            pushed: None,
            broadcast: None,
            broadcast_breakdown: None,
            checkpointed: None,
            pushes: 0,
            closing_since_ms: None,
            people: HashMap::new(),
            people_tally: vec![0; n],
            remote: BTreeMap::new(),
            published: None,
            local_final: false,
            local_final_ms: None,
            durable_counts: None,
        }
    }

    /// This edge's own merged count (its shards and its identified people), signed.
    pub fn local_counts(&self) -> Vec<i64> {
        let mut sum = vec![0i64; self.choices.len()];
        for t in &self.tallies {
            merge_counts(&mut sum, t);
        }
        merge_counts(&mut sum, &self.people_tally);
        sum
    }

    /// Another edge's count: replaces its previous one. Returns whether anything changed.
    pub fn take_remote(&mut self, edge: &str, counts: Vec<i64>, last: bool) -> bool {
        if counts.len() != self.choices.len() {
            return false;
        }
        let entry = (counts, last);
        if self.remote.get(edge) == Some(&entry) {
            return false;
        }
        self.remote.insert(edge.to_owned(), entry);
        true
    }

    /// An identified person's vote: replaces that person's earlier choice, whichever
    /// connection or shard cast it. Ignored once the poll is closed (a shard only forwards
    /// votes while the poll is open there, before its final tally).
    pub fn person_vote(&mut self, sub: Box<str>, choice: u8) {
        if self.state == PollState::Closed || choice as usize >= self.people_tally.len() {
            return;
        }
        if let Some(old) = self.people.insert(sub, choice) {
            self.people_tally[old as usize] -= 1;
        }
        self.people_tally[choice as usize] += 1;
    }

    /// The merged counts. Each shard's tally is signed (a vote moved between shards leaves
    /// -1 on one and +1 on another); the sum is exact and never negative. In a cluster the
    /// other edges' latest counts are merged the same way.
    pub fn counts(&self) -> Vec<u64> {
        if let Some(counts) = &self.durable_counts {
            return counts.clone();
        }
        let mut sum = self.local_counts();
        for (counts, _) in self.remote.values() {
            merge_counts(&mut sum, counts);
        }
        sum.into_iter().map(|c| c.max(0) as u64).collect()
    }

    /// The merged counts per breakdown value (exact like [`Poll::counts`]), if the poll has
    /// a breakdown.
    pub fn breakdown_counts(&self) -> Option<ResultsBreakdown> {
        let field = self.breakdown?;
        let mut sums: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for shard in &self.breakdowns {
            for (value, tally) in shard {
                let sum = sums
                    .entry(value.to_string())
                    .or_insert_with(|| vec![0; self.choices.len()]);
                merge_counts(sum, tally);
            }
        }
        let counts = sums
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.into_iter().map(|c| c.max(0) as u64).collect::<Vec<_>>(),
                )
            })
            .filter(|(_, v)| v.iter().any(|c| *c > 0))
            .collect();
        Some(ResultsBreakdown {
            field: field.as_str().to_owned(),
            counts,
        })
    }

    /// Takes a shard's tally (and breakdown); true when this completes the final count.
    pub fn take_tally(
        &mut self,
        shard: usize,
        tally: Vec<i64>,
        breakdown: Breakdown,
        closed: bool,
    ) -> bool {
        if self.state == PollState::Closed || shard >= self.tallies.len() {
            return false;
        }
        if tally.len() == self.choices.len() {
            self.tallies[shard] = tally;
            self.breakdowns[shard] = breakdown;
        }
        if closed {
            self.finals[shard] = true;
        }
        self.state == PollState::Closing && !self.local_final && self.finals.iter().all(|f| *f)
    }

    pub fn poll_frame(&self) -> Frame {
        messages::poll(
            &self.id,
            &self.stream,
            &self.question,
            &self.choices,
            self.closes_at_ms,
        )
    }

    pub fn results_frame(&self, counts: &[u64], last: bool) -> Frame {
        messages::results(&self.id, counts, last)
    }

    /// What broadcasters get: the results plus the breakdown, if the poll has one (then a
    /// frame of its own; otherwise `None` and they get the audience's bytes).
    pub fn broadcaster_frame(&self, counts: &[u64], last: bool) -> Option<Frame> {
        let breakdown = self.breakdown_counts()?;
        Some(messages::results_with_breakdown(
            &self.id, counts, last, breakdown,
        ))
    }

    /// Whether the counts changed since the last checkpoint (open polls only).
    pub fn needs_checkpoint(&self) -> bool {
        self.state != PollState::Closed && self.checkpointed.as_ref() != Some(&self.counts())
    }

    /// The API and storage form.
    pub fn to_json(&self) -> Value {
        let counts = self.counts();
        json!({
            "id": self.id,
            "stream": self.stream,
            "question": self.question,
            "choices": self.choices,
            "match": self.filter.as_ref().map(super::groups::predicate_json),
            "state": self.state.as_str(),
            "counts": counts,
            "total": counts.iter().sum::<u64>(),
            "breakdown": self.breakdown_counts(),
            "created_ms": self.created_ms,
            "closes_at": self.closes_at_ms,
        })
    }
}

/// Every poll of this run, by id, and the open ones by sequence number.
#[derive(Debug)]
pub struct Polls {
    polls: BTreeMap<String, Poll>,
    seqs: HashMap<PollSeq, String>,
    next_seq: PollSeq,
}

impl Default for Polls {
    fn default() -> Self {
        Polls {
            polls: BTreeMap::new(),
            seqs: HashMap::new(),
            next_seq: 1,
        }
    }
}

impl Polls {
    /// A fresh sequence number (also for stored polls announced to the shards at startup).
    pub fn next_seq(&mut self) -> PollSeq {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// `Err` when the stream already has a poll that is not closed.
    pub fn check_new(&self, stream: &str) -> Result<(), PollError> {
        if self
            .polls
            .values()
            .any(|p| p.stream == stream && p.state != PollState::Closed)
        {
            return Err(PollError::AlreadyOpen(stream.to_owned()));
        }
        Ok(())
    }

    pub fn insert(&mut self, poll: Poll) -> &Poll {
        self.seqs.insert(poll.seq, poll.id.clone());
        self.polls.entry(poll.id.clone()).or_insert(poll)
    }

    pub fn get(&self, id: &str) -> Option<&Poll> {
        self.polls.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Poll> {
        self.polls.get_mut(id)
    }

    /// The poll a shard's tally is about, while the shards count it.
    pub fn by_seq(&mut self, seq: PollSeq) -> Option<&mut Poll> {
        let id = self.seqs.get(&seq)?;
        self.polls.get_mut(id)
    }

    /// The shards forgot `seq`.
    pub fn retire_seq(&mut self, seq: PollSeq) {
        self.seqs.remove(&seq);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Poll> {
        self.polls.values()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Poll> {
        self.polls.values_mut()
    }

    /// Ids of the polls in `state`.
    pub fn ids_in(&self, state: PollState) -> Vec<String> {
        self.polls
            .values()
            .filter(|p| p.state == state)
            .map(|p| p.id.clone())
            .collect()
    }

    pub fn any_in(&self, state: PollState) -> bool {
        self.polls.values().any(|p| p.state == state)
    }

    /// Open polls of a stream.
    pub fn open_on<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a Poll> + 'a {
        self.polls
            .values()
            .filter(move |p| p.state == PollState::Open && p.stream == stream)
    }

    /// The stream's most recent poll.
    pub fn latest_on(&self, stream: &str) -> Option<&Poll> {
        self.polls
            .values()
            .filter(|p| p.stream == stream)
            .max_by_key(|p| p.created_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(choices: usize) -> PollRequest {
        PollRequest {
            stream: "s".into(),
            question: "q".into(),
            choices: (0..choices).map(|i| format!("c{i}")).collect(),
            duration_s: 60,
            filter: None,
            breakdown: None,
        }
    }

    #[test]
    fn tallies_merge_and_finish_on_the_last_final() {
        let mut p = Poll::new("p".into(), 1, req(2), GroupId(3), 2, 1000);
        assert!(!p.take_tally(0, vec![2, 1], vec![], false));
        assert!(!p.take_tally(1, vec![-1, 1], vec![], false));
        assert_eq!(p.counts(), vec![1, 2]);
        p.state = PollState::Closing;
        assert!(!p.take_tally(0, vec![2, 1], vec![], true));
        assert!(p.take_tally(1, vec![-1, 2], vec![], true));
        assert_eq!(p.counts(), vec![1, 3]);
        let frame = p.results_frame(&p.counts(), true);
        let results: serde_json::Value = serde_json::from_slice(&frame[2..]).unwrap();
        assert_eq!(
            (results["total"].as_u64(), results["final"].as_bool()),
            (Some(4), Some(true))
        );
    }

    #[test]
    fn a_person_has_one_vote_beside_the_shards_tallies() {
        let mut p = Poll::new("p".into(), 1, req(3), GroupId(1), 2, 0);
        p.take_tally(0, vec![1, 0, 0], Vec::new(), false); // an anonymous vote on shard 0
        p.person_vote("alice".into(), 1);
        p.person_vote("alice".into(), 2); // from another connection: moves, not adds
        p.person_vote("bob".into(), 2);
        p.person_vote("bob".into(), 9); // out of range: ignored
        assert_eq!(p.counts(), vec![1, 0, 2]);
        p.state = PollState::Closed;
        p.person_vote("carol".into(), 0);
        assert_eq!(p.counts(), vec![1, 0, 2], "nothing counts after the close");
    }

    #[test]
    fn other_edges_counts_replace_rather_than_add() {
        let mut p = Poll::new("p".into(), 1, req(2), GroupId(3), 1, 0);
        p.take_tally(0, vec![1, 2], vec![], false);
        assert!(p.take_remote("e2", vec![3, 0], false));
        assert!(p.take_remote("e3", vec![0, 1], false));
        assert_eq!(p.counts(), vec![4, 3]);
        // The same tally again (a partition healing, a retransmission) changes nothing.
        assert!(!p.take_remote("e2", vec![3, 0], false));
        assert!(p.take_remote("e2", vec![2, 1], true));
        assert_eq!(p.counts(), vec![3, 4]);
        assert_eq!(
            p.local_counts(),
            vec![1, 2],
            "the local count excludes other edges"
        );
        assert!(!p.take_remote("e4", vec![1], true), "wrong length: refused");
        assert_eq!(p.counts(), vec![3, 4]);
    }

    #[test]
    fn merged_counts_sum_signed_tallies() {
        let mut merged = vec![0i64; 2];
        merge_counts(&mut merged, &[1, -1]);
        merge_counts(&mut merged, &[-1, 2]);
        merge_counts(&mut merged, &[5]); // a short tally adds what it has
        assert_eq!(merged, vec![5, 1]);
    }

    #[test]
    fn one_open_poll_per_stream_and_checkpoints_only_when_changed() {
        let mut polls = Polls::default();
        let seq = polls.next_seq();
        polls.insert(Poll::new("p1".into(), seq, req(2), GroupId(3), 1, 0));
        assert_eq!(
            polls.check_new("s"),
            Err(PollError::AlreadyOpen("s".into()))
        );
        assert!(polls.check_new("t").is_ok());
        let p = polls.by_seq(seq).unwrap();
        assert!(p.needs_checkpoint(), "never checkpointed");
        p.checkpointed = Some(p.counts());
        assert!(!p.needs_checkpoint());
        p.take_tally(0, vec![0, 1], vec![], false);
        assert!(p.needs_checkpoint());
        assert_eq!(polls.ids_in(PollState::Open), vec!["p1".to_owned()]);
        assert_eq!(polls.latest_on("s").unwrap().id, "p1");
    }
}
