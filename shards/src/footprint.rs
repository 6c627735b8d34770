//! What one connected viewer's fixed state weighs on its shard, for the memory accounting of
//! `bench-footprint` and the budget test below: the sizes of the structures every viewer
//! holds, whatever it does. Heap a viewer's strings take and the allocator's overhead are
//! measured by the benchmark (they are not sizes). An open viewer has no task and no runtime
//! socket object: the shard's reactor watches its socket from the shard's own io_uring, whose
//! armed poll is kernel memory.
//!
//! Not here because not every viewer pays it: a viewer that has reported telemetry has an
//! entry in its shard's side table of latest reports (`telemetry::Partials`: a 32-byte map
//! entry and 8 bytes a group it reported in, at least 32 on the heap); one that never reports
//! has none, and `Conn` holds nothing for it.

use std::mem::size_of;

/// One line of the accounting: what, and its bytes per viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub bytes: usize,
}

/// Bytes of an `Rc`'s allocation around a `T`: two counters and the value.
fn rc_box<T>() -> usize {
    2 * size_of::<usize>() + size_of::<T>()
}

/// The shard's fixed per-viewer structures.
pub fn shard_parts() -> Vec<Part> {
    vec![
        Part {
            name: "Conn in its Rc (socket handle, decoder, queue, state, profile inline)",
            bytes: rc_box::<crate::conn::Conn>(),
        },
        Part {
            name: "of which Profile inline",
            bytes: size_of::<crate::profile::Profile>(),
        },
        Part {
            name: "connection table entry (slab)",
            // slab's entry: the `Rc` or a vacant slot's next index, with its tag.
            bytes: size_of::<std::rc::Rc<crate::conn::Conn>>() + size_of::<usize>(),
        },
    ]
}

/// Budgets of the per-viewer structures: a regression guard, since every byte here is
/// multiplied by the number of connected viewers. Raise one deliberately, with a reason.
/// Issue 18 took Conn from 592 to 464 bytes and Profile from 208 to 160 (interned strings,
/// the send queue and the votes boxed only while in use), then Profile to 96
/// (`crate::compact`: packed peer address, the parameter list interned, tags and person
/// behind one optional pointer, a two-byte country) and Conn to 208: that profile, a bare
/// descriptor instead of glommio's stream (120 B), no waker, the decoder's limits as u32s
/// and a split header's bytes boxed, the TLS session and the identity in one optional box,
/// the votes in a `Cell`, the viewer id read from the profile. 208 matters: in its `Rc`
/// that is 224 B, one of mimalloc's size classes (the next is 256).
pub const CONN_BUDGET: usize = 208;
pub const PROFILE_BUDGET: usize = 96;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_viewer_structures_fit_their_budgets() {
        let conn = size_of::<crate::conn::Conn>();
        let profile = size_of::<crate::profile::Profile>();
        assert!(conn <= CONN_BUDGET, "Conn is {conn} B");
        assert!(profile <= PROFILE_BUDGET, "Profile is {profile} B");
        assert!(size_of::<netstack::ws::Decoder>() <= 64);
        // A reporting viewer's entry in the telemetry side table (the module doc).
        let entry = size_of::<(crate::proto::Slot, crate::proto::LatestReports)>();
        assert_eq!(entry, 32, "side-table entry is {entry} B");
    }
}

#[cfg(test)]
mod channel_sizes {
    /// Channel slots are allocated and touched when a shard starts, so their size times the
    /// channel capacity is resident from the first second (see `src/server.rs`).
    #[test]
    fn channel_messages_stay_small() {
        let event = std::mem::size_of::<crate::proto::ShardEvent>();
        let command = std::mem::size_of::<crate::proto::ShardCommand>();
        println!("ShardEvent {event} B, ShardCommand {command} B");
        assert!(event <= 96, "ShardEvent is {event} B");
        assert!(command <= 96, "ShardCommand is {command} B");
    }
}
