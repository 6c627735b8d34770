//! The task that serves every open viewer connection of the shard from the shard's reactor
//! (`crate::reactor`: its io_uring, wake-ups and doorbell), and a connection's end. An
//! `impl Shard` block of the parent module (`tests/module_graph.rs` lists it); it holds no
//! state of its own.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::future;
use netstack::sys::poller::Event;

use crate::conn::{Conn, Drive, State};
use crate::proto::{ShardEvent, Slot};
use crate::reactor::{doorbell, from_token, BATCH};
use crate::stats::ShardStats;

use super::Shard;

impl Shard {
    /// Serves every open viewer connection of this shard until the task is dropped.
    pub(crate) async fn serve_connections(self: Rc<Self>) {
        let mut events: Vec<Event> = Vec::with_capacity(BATCH);
        let (mut woken, mut again, mut next_again) = (Vec::new(), Vec::new(), Vec::new());
        let mut bell = doorbell(&self.reactor);
        loop {
            let submitted = self.reactor.submit();
            if let Err(e) = submitted {
                tracing::warn!(shard = self.index, error = %e, "io_uring submit failed");
            }
            let more = self.reactor.reap(&mut events);
            self.reactor.wakeups.take(&mut woken);
            let busy = more || !events.is_empty() || !woken.is_empty() || !again.is_empty();
            for event in events.drain(..) {
                self.on_socket(event, &mut next_again);
            }
            for slot in again.drain(..) {
                if let Some(conn) = self.conn_at(slot) {
                    self.drive_conn(&conn, true, &mut next_again);
                }
            }
            for slot in woken.drain(..) {
                match self.conn_at(slot) {
                    Some(conn) if conn.queued.get() => {
                        self.drive_conn(&conn, false, &mut next_again)
                    }
                    _ => {}
                }
            }
            std::mem::swap(&mut again, &mut next_again);
            if busy {
                glommio::yield_if_needed().await;
                continue;
            }
            // A wait that the wake-ups win leaves the bell's poll armed for the next one.
            let rang = future::or(async { Some(bell.readable().await) }, async {
                self.reactor.wakeups.signal.wait().await;
                None
            })
            .await;
            if let Some(Err(e)) = rang {
                // The poll itself failed: look at the ring again shortly instead.
                tracing::warn!(shard = self.index, error = %e, "reactor doorbell");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// Takes a connection out of the table and every group, and tells the application core.
    pub fn finish(&self, conn: &Conn) {
        if conn.state.get() == State::Done {
            return;
        }
        conn.state.set(State::Done);
        self.reactor.unwatch(conn);
        self.core.borrow_mut().leave(conn.slot);
        let removed = {
            let mut conns = self.conns.borrow_mut();
            let ours = conns
                .get(conn.slot as usize)
                .is_some_and(|c| std::ptr::eq(&**c, conn));
            ours.then(|| conns.remove(conn.slot as usize))
        };
        if removed.is_some() {
            ShardStats::sub(&self.stats.connections, 1);
            self.open_total.fetch_sub(1, Ordering::Relaxed);
            if let Some(limits) = self.config.addresses.as_ref().filter(|l| l.active()) {
                limits.release(conn.profile.borrow().peer.ip());
            }
            self.emit(ShardEvent::Left {
                at: conn.at(self.index),
                votes: conn.votes.take().take(),
                reports: self.core.borrow_mut().take_reports(conn.slot),
            });
        }
        if self.draining.get() && self.conns.borrow().is_empty() {
            self.drained.notify();
        }
    }

    /// The open connection in `slot`, if any.
    fn conn_at(&self, slot: Slot) -> Option<Rc<Conn>> {
        self.conns.borrow().get(slot as usize).cloned()
    }

    /// One completion of the ring.
    fn on_socket(&self, event: Event, again: &mut Vec<Slot>) {
        if self.reactor.on_listener(&event) {
            return; // a listener's: its accept loop was signalled
        }
        if self.reactor.on_task_event(&event) {
            return; // a plain HLS connection's task was woken
        }
        let (slot, serial, write) = from_token(event.token);
        let Some(conn) = self.conn_at(slot).filter(|c| c.serial == serial) else {
            return; // an earlier connection of this slot
        };
        if write {
            conn.write_watched.set(false);
            return self.drive_conn(&conn, false, again);
        }
        if !event.armed && conn.state.get() != State::Done {
            // The kernel ended the multishot watch. After a readiness event (it may end one,
            // e.g. under memory pressure) arm it again: the socket is read below, so nothing
            // is missed meanwhile. After an error the socket cannot be watched: drop it
            // rather than re-arm a watch that fails again at once.
            if event.result < 0 || self.reactor.watch(&conn).is_err() {
                conn.abort(&self.env(self.now()));
            }
        }
        self.drive_conn(&conn, true, again);
    }

    fn drive_conn(&self, conn: &Rc<Conn>, readable: bool, again: &mut Vec<Slot>) {
        let now = self.now();
        let env = self.env(now);
        let mut scratch = self.scratch.borrow_mut();
        let done = conn.drive(
            &env,
            &mut scratch,
            &mut |c, message| self.on_message(c, message, now),
            readable,
        );
        drop(scratch);
        match done {
            Drive::Done => self.finish(conn),
            Drive::Again => again.push(conn.slot),
            Drive::Wait { want_write: false } => {}
            Drive::Wait { want_write: true } => {
                if conn.write_watched.replace(true) {
                    return;
                }
                if self.reactor.watch_write(conn).is_err() {
                    conn.write_watched.set(false);
                    self.finish(conn);
                }
            }
        }
    }
}
