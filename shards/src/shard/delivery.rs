//! What reaches viewers from the shard's commands: the answer to a resume claim (the welcome
//! after `Admit`) and group-casts written to every member. An `impl Shard` block of the parent
//! module (`tests/module_graph.rs` lists it); it holds no state of its own.

use std::rc::Rc;

use crate::conn::Conn;
use crate::frames;
use crate::polls::ViewerVotes;
use crate::proto::{Admission, Frame, GroupId, ShardEvent, Slot, ViewerRef};
use crate::stats::ShardStats;

use super::{Shard, FANOUT_CHUNK};

impl Shard {
    /// The application core's answer to a resume claim.
    pub(super) fn admit(&self, to: ViewerRef, admission: Admission, now: u32) {
        let Some(conn) = self.conn(to).filter(|c| c.pending.get()) else {
            // Gone before the answer: hand the identity back so its votes are not lost.
            if let Some(restore) = admission.restore {
                self.emit(ShardEvent::Left {
                    at: ViewerRef {
                        viewer: admission.viewer,
                        ..to
                    },
                    votes: restore.votes,
                    reports: restore.reports,
                });
            }
            return;
        };
        let resumed = admission.restore.is_some();
        {
            let mut p = conn.profile.borrow_mut();
            p.viewer = admission.viewer;
            if let Some(r) = admission.restore {
                p.stream = r.stream;
                p.rare.set_tags(r.tags);
                p.app_version = r.app_version.or(p.app_version.take());
                p.hardware = r.hardware.or(p.hardware.take());
                if p.region.is_none() {
                    p.region = r.region;
                }
                conn.votes.set(ViewerVotes::new(r.votes));
                self.core.borrow_mut().restore_reports(conn.slot, r.reports);
            }
        }
        conn.pending.set(false);
        let welcome = self.welcome(admission.viewer, &admission.resume, resumed);
        conn.send(&self.env(now), &frames::encode(&welcome));
        self.profile_changed(&conn);
    }

    /// Writes `frames` to every member of `group`, a chunk of members at a time, yielding
    /// between chunks when other tasks wait, so a cast to a million viewers does not freeze the
    /// shard. Several frames (casts that queued up) go to each member in one `sendmsg`.
    pub async fn fan_out(&self, group: GroupId, frames: &[Frame]) {
        ShardStats::add(&self.stats.casts, frames.len() as u64);
        let mut next: Slot = 0;
        let mut chunk: Vec<Rc<Conn>> = Vec::with_capacity(FANOUT_CHUNK);
        // One clock read per cast (only a slow consumer's close deadline uses it).
        let env = self.env(self.now());
        loop {
            {
                let core = self.core.borrow();
                let Some(members) = core.members(group) else {
                    return;
                };
                let conns = self.conns.borrow();
                for slot in members.iter_from(next).take(FANOUT_CHUNK) {
                    if let Some(c) = conns.get(slot as usize) {
                        chunk.push(c.clone());
                    }
                    next = slot + 1;
                }
            }
            if chunk.is_empty() {
                return;
            }
            for conn in chunk.drain(..) {
                conn.send_batch(&env, frames);
            }
            glommio::yield_if_needed().await;
        }
    }
}
