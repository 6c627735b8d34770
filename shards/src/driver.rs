//! The task that serves one viewer connection: it lends the connection the shard's read
//! buffer and environment, hands parsed messages to the shard, and takes the connection out
//! of the shard's table when it ends.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::conn::{Conn, State};
use crate::shard::Shard;

/// The future that serves one connection until it ends.
pub(crate) struct Driver {
    pub conn: Rc<Conn>,
    pub shard: Rc<Shard>,
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let conn = &*self.conn;
        let shard = &*self.shard;
        let now = shard.now();
        let env = shard.env(now);
        let mut scratch = shard.scratch.borrow_mut();
        let done = conn.drive(cx, &env, &mut scratch, &mut |c, message| {
            shard.on_message(c, message, now)
        });
        drop(scratch);
        if done.is_ready() {
            shard.finish(conn);
        }
        done
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A driver dropped by executor shutdown still leaves the table consistent.
        if self.conn.state.get() != State::Done {
            self.shard.finish(&self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_driver_task_holds_two_rcs() {
        assert_eq!(std::mem::size_of::<super::Driver>(), 16);
    }
}
