//! `App`'s durable votes in a cluster (JetStream): an anonymous vote is counted by its shard
//! at once, but answered `voted` only once the viewer's record (its stream, tags and current
//! choice in each poll) is stored in the `ovation_viewers` key-value bucket. When an edge is
//! killed, its viewers reconnect to another edge with their resume token; that edge reads the
//! record and resumes them with their votes (a change then moves the vote, as between
//! shards). An identified person's vote (a token's `sub`) is stored under (person, poll) and
//! answered once stored too. A poll's final count is read from the stored records: every
//! acknowledged vote once, at its latest choice (a person once, whichever edges they voted
//! on), whatever happened to the edge that took it.

use cluster::{BusEvent, Durable};
use protocol::ServerMessage;
use shards::profile::Profile;
use shards::proto::{Admission, PollSeq, Restore, ShardCommand, ViewerRef};

use super::edges::{
    record_key, PendingClaim, PendingVote, ViewerRecord, MAX_TOKEN, RECORDS_PRUNE_MS,
};
use super::polls::PollState;
use super::{mirror, App};

impl App {
    /// A vote a shard counted and left for us to answer: store the record, then answer.
    pub(super) fn durable_vote(&mut self, at: ViewerRef, poll: &str, choice: u8) {
        let viewer = self.mirror.at(at);
        let (Some(v), true) = (viewer, self.edges.bus().has_store()) else {
            return self.answer_vote(at, poll, choice);
        };
        let token = self.mirror.token(at.viewer, v.nonce);
        let p = &v.profile;
        let edge = self.edges.edge().to_owned();
        let durable = &mut self.edges.durable;
        let record = durable.records.entry(token.clone()).or_default();
        record.edge = edge;
        record.stream = p.stream.as_deref().map(str::to_owned);
        record.tags = p.tags().iter().map(|t| t.to_string()).collect();
        record.app_version = p.app_version.as_deref().map(str::to_owned);
        record.hardware = p.hardware.as_deref().map(str::to_owned);
        record.region = p.region.as_deref().map(str::to_owned);
        record.sub = p.sub().map(str::to_owned);
        record.votes.insert(poll.to_owned(), choice);
        let record = record.clone();
        self.store_vote(at, poll.to_owned(), choice, record_key(&token), &record);
    }

    /// An identified person's vote, counted once per `sub` in the poll's live count here.
    /// `durable` (a cluster with JetStream): also stored under (person, poll) and answered
    /// only once stored, so an edge killed after the answer loses no vote, and the final
    /// (read from the store) counts each person once, at their latest choice, whichever edges
    /// they voted on. Live results count a person once per edge they voted on.
    pub(super) fn person_vote(
        &mut self,
        at: ViewerRef,
        sub: Box<str>,
        seq: PollSeq,
        choice: u8,
        durable: bool,
    ) {
        let Some(poll) = self.polls.by_seq(seq) else {
            if durable {
                let closed = ServerMessage::error("poll_closed", "this poll is closed");
                self.send_to(at, shards::frames::encode(&closed));
            }
            return;
        };
        let id = poll.id.clone();
        poll.person_vote(sub.clone(), choice);
        if !durable {
            return;
        }
        if !self.edges.bus().has_store() {
            return self.answer_vote(at, &id, choice);
        }
        let record = ViewerRecord {
            edge: self.edges.edge().to_owned(),
            sub: Some(sub.to_string()),
            votes: [(id.clone(), choice)].into(),
            ..ViewerRecord::default()
        };
        let key = record_key(&format!("person\0{sub}\0{id}"));
        self.store_vote(at, id, choice, key, &record);
    }

    /// Stores `record` under `key` for a vote of `at`, answered once it is stored.
    fn store_vote(
        &mut self,
        at: ViewerRef,
        poll: String,
        choice: u8,
        key: String,
        record: &ViewerRecord,
    ) {
        let value = serde_json::to_vec(record).unwrap_or_default();
        let durable = &mut self.edges.durable;
        let ticket = durable.ticket();
        *durable.unstored.entry(poll.clone()).or_default() += 1;
        durable
            .votes
            .insert(ticket, PendingVote { at, poll, choice });
        self.edges
            .bus()
            .durable(Durable::Put { ticket, key, value });
    }

    /// Forgets the records of voters who are neither connected here nor within the resume
    /// window (every `RECORDS_PRUNE_MS`): they stay in the store, where another edge or the
    /// final count reads them; this edge's memory holds only viewers it may still serve.
    pub(super) fn prune_voter_records(&mut self, now_ms: u64) {
        let durable = &mut self.edges.durable;
        if now_ms.saturating_sub(durable.records_pruned_ms) < RECORDS_PRUNE_MS {
            return;
        }
        durable.records_pruned_ms = now_ms;
        let mirror = &self.mirror;
        durable.records.retain(|token, _| mirror.knows_token(token));
    }

    fn answer_vote(&self, at: ViewerRef, poll: &str, choice: u8) {
        let frame = shards::frames::encode(&protocol::ServerMessage::voted(poll, choice));
        self.send_to(at, frame);
    }

    /// A resume token this edge does not know: another edge of the cluster may have issued
    /// it. Returns whether the claim now waits for the stored record.
    pub(super) fn cluster_claim(
        &mut self,
        at: ViewerRef,
        resume: &str,
        profile: &Profile,
        token: &str,
    ) -> bool {
        if !self.edges.bus().has_store() || token.is_empty() || token.len() > MAX_TOKEN {
            return false;
        }
        let ticket = self.edges.durable.ticket();
        self.edges.durable.claims.insert(
            ticket,
            PendingClaim {
                at,
                resume: resume.into(),
                profile: profile.clone(),
                token: token.into(),
            },
        );
        self.edges.bus().durable(Durable::Get {
            ticket,
            key: record_key(token),
        });
        true
    }

    /// The answers of the store.
    pub(super) fn on_durable(&mut self, event: BusEvent, now_ms: u64) {
        match event {
            BusEvent::Stored { ticket, ok } => {
                let Some(vote) = self.edges.durable.votes.remove(&ticket) else {
                    return;
                };
                if !ok {
                    if !self.edges.durable.warned {
                        tracing::warn!(poll = vote.poll, "votes could not be stored (JetStream): this poll's final comes from the tallies (logged once)");
                        self.edges.durable.warned = true;
                    }
                    self.edges.durable.failed.insert(vote.poll.clone());
                }
                self.answer_vote(vote.at, &vote.poll, vote.choice);
                let durable = &mut self.edges.durable;
                let left = durable.unstored.get_mut(&vote.poll).map_or(0, |n| {
                    *n = n.saturating_sub(1);
                    *n
                });
                if left == 0 {
                    durable.unstored.remove(&vote.poll);
                    if durable.held_finals.remove(&vote.poll) {
                        self.send_final_tally(&vote.poll, now_ms);
                    }
                }
            }
            BusEvent::Found { ticket, value } => {
                let Some(claim) = self.edges.durable.claims.remove(&ticket) else {
                    return;
                };
                let record = value
                    .and_then(|v| serde_json::from_slice::<ViewerRecord>(&v).ok())
                    .filter(|r| r.sub.as_deref() == claim.profile.sub());
                match record {
                    Some(record) => self.resume_from_record(claim, record),
                    None => self.admit_new(claim.at, claim.resume, claim.profile),
                }
            }
            BusEvent::Scanned { ticket, values } => {
                let Some(poll) = self.edges.durable.scans.remove(&ticket) else {
                    return;
                };
                self.edges.durable.scanning.remove(&poll);
                match (values, self.polls.get_mut(&poll)) {
                    (Some(values), Some(p)) => {
                        let mut counts = vec![0u64; p.choices.len()];
                        for v in values {
                            let Ok(r) = serde_json::from_slice::<ViewerRecord>(&v) else {
                                continue;
                            };
                            if let Some(c) = r.votes.get(&poll).map(|&c| c as usize) {
                                if let Some(n) = counts.get_mut(c) {
                                    *n += 1;
                                }
                            }
                        }
                        p.durable_counts = Some(counts);
                    }
                    _ => tracing::warn!(poll, "stored votes unreadable: final from the tallies"),
                }
                self.finish_poll(&poll, now_ms);
            }
            _ => {}
        }
    }

    /// Resumes a viewer of another edge from its stored record: its stream, tags and its
    /// votes in polls open here (held, not counted again: a change moves them).
    fn resume_from_record(&mut self, claim: PendingClaim, mut record: ViewerRecord) {
        let votes = record
            .votes
            .iter()
            .filter_map(|(id, &choice)| {
                let p = self.polls.get(id)?;
                (p.state == PollState::Open).then_some((p.seq, choice))
            })
            .collect();
        let restore = Restore {
            stream: record.stream.as_deref().map(Into::into),
            tags: record.tags.iter().map(|t| t.as_str().into()).collect(),
            app_version: record.app_version.as_deref().map(Into::into),
            hardware: record.hardware.as_deref().map(Into::into),
            region: record.region.as_deref().map(Into::into),
            votes,
            // Another edge's telemetry windows are its own: counted afresh here.
            reports: Vec::new(),
        };
        let at = claim.at;
        let profile = mirror::resumed_profile(claim.profile, at.viewer, &restore);
        self.command(
            at.shard,
            ShardCommand::Admit {
                to: at,
                admission: Admission {
                    viewer: at.viewer,
                    resume: claim.token.clone(),
                    restore: Some(Box::new(restore)),
                },
            },
        );
        self.join(at, claim.token.clone(), profile.clone());
        record.edge = self.edges.edge().to_owned();
        self.edges.durable.records.insert(claim.token, record);
        self.offer_poll_for(at, &profile);
    }

    /// The final count of `poll` once every edge's final tally is in: read from the stored
    /// votes (anonymous viewers' records and identified people's votes) when every vote here
    /// was stored, otherwise the merged tallies.
    pub(super) fn final_count(&mut self, poll: &str, now_ms: u64) {
        let durable = &self.edges.durable;
        if durable.scanning.contains(poll) {
            return;
        }
        let scan =
            self.edges.bus().has_store() && !self.edges.draining && !durable.failed.contains(poll);
        if !scan {
            return self.finish_poll(poll, now_ms);
        }
        let durable = &mut self.edges.durable;
        let ticket = durable.ticket();
        durable.scanning.insert(poll.to_owned());
        durable.scans.insert(ticket, poll.to_owned());
        self.edges.bus().durable(Durable::Scan { ticket });
    }

    /// Whether this edge's final tally of `poll` waits for votes to be stored.
    pub(super) fn hold_final(&mut self, poll: &str) -> bool {
        let durable = &mut self.edges.durable;
        if durable.unstored.get(poll).is_some_and(|n| *n > 0) {
            durable.held_finals.insert(poll.to_owned());
            return true;
        }
        durable.held_finals.contains(poll)
    }
}
