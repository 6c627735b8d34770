//! `App`'s poll lifecycle across the shards: opening (audience group, `OpenPoll`, the poll
//! message cast once), coalesced live results with cast backpressure, closing and the final
//! count, checkpoints to the store, and the shutdown handshake that lets final results reach
//! viewers before they are closed.

use shards::proto::{GroupId, ShardCommand};

use super::polls::{self, Poll, PollError, PollRequest, PollState};
use super::{random_hex, App, GroupKind};

impl App {
    /// Opens a poll (FIG. 6, 600-608): its audience group is defined on every shard, the
    /// shards start counting, and the poll message, assembled once, is cast to the audience.
    /// Its definition is checkpointed at once.
    pub fn create_poll(&mut self, req: PollRequest, now_ms: u64) -> Result<&Poll, PollError> {
        if !self.streams.contains(&req.stream) {
            return Err(PollError::UnknownStream(req.stream));
        }
        self.polls.check_new(&req.stream)?;
        let id = format!("p{}", random_hex(8));
        let closes_at_ms = now_ms + req.duration_s * 1000;
        self.open_poll(id.clone(), req, now_ms, closes_at_ms);
        self.cluster_poll_opened(&id);
        self.polls
            .get(&id)
            .ok_or_else(|| PollError::NotFound(id.clone()))
    }

    /// Opens poll `id` on this edge's shards (created here, or on another edge of the
    /// cluster with the same id and deadline).
    pub(super) fn open_poll(
        &mut self,
        id: String,
        req: PollRequest,
        now_ms: u64,
        closes_at_ms: u64,
    ) {
        let seq = self.polls.next_seq();
        let audience = self.define_group(
            format!("poll:{id}"),
            format!("audience of poll {id}"),
            GroupKind::Poll,
            polls::audience(&req),
            now_ms,
        );
        let choices = req.choices.len() as u8;
        let breakdown = req.breakdown;
        self.broadcast(|| ShardCommand::OpenPoll {
            id: id.as_str().into(),
            seq,
            choices,
            audience,
            breakdown,
        });
        let mut poll = Poll::new(id.clone(), seq, req, audience, self.shards(), now_ms);
        poll.closes_at_ms = closes_at_ms;
        self.cast_frame(audience, poll.poll_frame());
        if let Some(store) = &self.store {
            store.put_poll(&id, &poll.to_json());
            poll.checkpointed = Some(poll.counts());
        }
        self.poll_opened.raise();
        self.polls.insert(poll);
    }

    /// Stops voting: every shard sends its final tally, and the last one completes the poll.
    pub fn close_poll(&mut self, id: &str, now_ms: u64) -> Result<PollState, PollError> {
        let poll = self
            .polls
            .get_mut(id)
            .ok_or_else(|| PollError::NotFound(id.to_owned()))?;
        if poll.state == PollState::Open {
            poll.state = PollState::Closing;
            poll.closing_since_ms = Some(now_ms);
            let seq = poll.seq;
            self.broadcast(|| ShardCommand::ClosePoll { seq });
            self.edges
                .publish(cluster::Msg::PollClose { id: id.to_owned() });
        }
        Ok(poll_state(self.polls.get(id)))
    }

    /// Closes every open poll (at shutdown, before the shards stop: see
    /// [`App::shutdown_settled`]).
    pub fn close_open_polls(&mut self, now_ms: u64) {
        // Shutting down: final counts do not wait for other edges.
        self.edges.draining = true;
        for id in self.polls.ids_in(PollState::Open) {
            let _ = self.close_poll(&id, now_ms);
        }
    }

    /// Whether any poll is open (live results and deadlines need the ticker).
    pub fn has_open_polls(&self) -> bool {
        self.polls.any_in(PollState::Open)
    }

    /// At shutdown: every closing poll has its final count and every cast (the final results
    /// above all) has been written by every shard. Only then may the shards close viewers.
    pub fn shutdown_settled(&self) -> bool {
        !self.polls.any_in(PollState::Closing) && !self.groups.any_cast_in_flight()
    }

    /// Raised on progress towards [`App::shutdown_settled`].
    pub fn progress(&self) -> std::rc::Rc<shards::sync::Signal> {
        self.progress.clone()
    }

    /// Raised when a poll opens.
    pub fn poll_opened(&self) -> std::rc::Rc<shards::sync::Signal> {
        self.poll_opened.clone()
    }

    /// The final count: pushed at once, stored durably, and the poll's state freed everywhere.
    pub(super) fn finish_poll(&mut self, id: &str, now_ms: u64) {
        let Some(poll) = self.polls.get_mut(id) else {
            return;
        };
        poll.state = PollState::Closed;
        let counts = poll.counts();
        poll.pushed = Some(counts.clone());
        poll.pushes += 1;
        poll.checkpointed = Some(counts.clone());
        let message = poll.results_frame(&counts, true);
        let to_broadcasters = poll.broadcaster_frame(&counts, true);
        let (audience, seq, stream) = (poll.audience, poll.seq, poll.stream.clone());
        let stored = poll.to_json();
        tracing::info!(
            poll = id,
            total = counts.iter().sum::<u64>(),
            final_ms = poll
                .closing_since_ms
                .map_or(0, |t| now_ms.saturating_sub(t)),
            "poll closed"
        );
        self.push_results(Some(audience), true, &stream, &message, to_broadcasters);
        if let Some(store) = &self.store {
            store.put_poll(id, &stored);
        }
        self.groups.remove(audience);
        self.telemetry.forget(audience);
        self.broadcast(|| ShardCommand::DropGroup { id: audience });
        self.broadcast(|| ShardCommand::DropPoll { seq });
        self.polls.retire_seq(seq);
        self.progress.raise();
    }

    /// Sends a results message to the poll's audience (a cast, when `audience` is given)
    /// and, when `broadcasters`, to the stream's broadcasters (`with_breakdown` instead of
    /// `frame` for a poll with a breakdown).
    fn push_results(
        &mut self,
        audience: Option<GroupId>,
        broadcasters: bool,
        stream: &str,
        frame: &shards::proto::Frame,
        with_breakdown: Option<shards::proto::Frame>,
    ) {
        if let Some(audience) = audience {
            self.cast_frame(audience, frame.clone());
        }
        if broadcasters {
            let frame = with_breakdown.unwrap_or_else(|| frame.clone());
            self.broadcasters.retain(|(_, sink)| !sink.is_closed());
            for (s, sink) in &self.broadcasters {
                if s == stream {
                    sink.push(frame.clone());
                }
            }
        }
    }

    /// Runs every results interval: pushes the counts of open polls that changed since the
    /// last push (so a vote storm yields at most one push per interval, and none while the
    /// previous cast is still being written), closes polls whose time is up, checkpoints
    /// changed polls at most once per `poll_checkpoint_ms`, and forgets departed viewers past
    /// the resume window.
    pub fn tick(&mut self, now_ms: u64) {
        self.clock_ms = now_ms;
        self.tick_sessions(now_ms);
        self.push_beacons();
        for id in self.polls.ids_in(PollState::Open) {
            let mut push = None;
            let mut due = false;
            let in_flight = |g| self.groups.cast_in_flight(g);
            if let Some(poll) = self.polls.get(&id) {
                let counts = poll.counts();
                // Results are snapshots. While the last cast to the audience is still being
                // written, a newer one would only queue behind it (and delay the close), so
                // the audience waits; broadcasters are few and get every change.
                let to_audience =
                    poll.pushed.as_ref() != Some(&counts) && !in_flight(poll.audience);
                let breakdown = poll.breakdown_counts();
                let to_broadcasters = poll.broadcast.as_ref() != Some(&counts)
                    || poll.broadcast_breakdown != breakdown;
                if to_audience || to_broadcasters {
                    let message = poll.results_frame(&counts, false);
                    let audience = to_audience.then_some(poll.audience);
                    let with_breakdown = poll.broadcaster_frame(&counts, false);
                    push = Some((
                        audience,
                        to_broadcasters,
                        poll.stream.clone(),
                        (message, with_breakdown),
                        (counts, breakdown),
                    ));
                }
                due = poll.closes_at_ms <= now_ms;
            }
            if let Some((audience, broadcasters, stream, frames, (counts, breakdown))) = push {
                if let Some(poll) = self.polls.get_mut(&id) {
                    if audience.is_some() {
                        poll.pushed = Some(counts.clone());
                        poll.pushes += 1;
                    }
                    if broadcasters {
                        poll.broadcast = Some(counts);
                        poll.broadcast_breakdown = breakdown;
                    }
                }
                self.push_results(audience, broadcasters, &stream, &frames.0, frames.1);
            }
            if due {
                let _ = self.close_poll(&id, now_ms);
            }
        }
        self.cluster_publish_tallies(now_ms);
        if now_ms.saturating_sub(self.last_checkpoint_ms) >= self.config.poll_checkpoint_ms {
            self.checkpoint(now_ms);
        }
        self.mirror.expire(now_ms, self.departed_limits().window_ms);
        self.prune_voter_records(now_ms);
        self.evaluate_remediations(now_ms);
    }

    /// Writes every open poll whose counts changed since its last checkpoint.
    pub fn checkpoint(&mut self, now_ms: u64) {
        self.last_checkpoint_ms = now_ms;
        let Some(store) = &self.store else {
            return;
        };
        for poll in self.polls.iter_mut().filter(|p| p.needs_checkpoint()) {
            store.put_poll(&poll.id, &poll.to_json());
            poll.checkpointed = Some(poll.counts());
        }
    }
}

fn poll_state(poll: Option<&Poll>) -> PollState {
    poll.map_or(PollState::Closed, |p| p.state)
}
