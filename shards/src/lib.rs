//! ovation's shard runtime: everything that runs on one pinned core.
//!
//! A shard owns a slice of the viewer connections: its own `SO_REUSEPORT` listener, the
//! handshake and WebSocket session of each viewer, the viewer profiles, and a membership bitmap
//! per group, so one "send to group G" command from the application core fans out without
//! asking anyone. It talks to the application core only through the typed messages in
//! [`proto`] over lock-free channels.
//!
//! - [`profile`]: viewer profiles, User-Agent classification, group predicates.
//! - [`bitset`]: the shard-local group membership bitmaps.
//! - [`polls`]: vote validation and the shard's signed share of each poll's count.
//! - [`proto`]: shard <-> application core messages.
//! - [`config`], [`stats`]: settings and live counters.
//! - [`sync`]: single-threaded wake-up primitives shared by shard and application-core tasks.
//! - `shard` and `conn`: the runtime (accept, handshake, drivers, fan-out, keepalive, drain).

#![forbid(unsafe_code)]

pub mod bitset;
pub mod config;
mod conn;
pub mod polls;
pub mod profile;
pub mod proto;
mod shard;
pub mod stats;
pub mod sync;

pub use config::ShardConfig;
pub use shard::{run, ShardSpec};
pub use stats::{ShardStats, StatsSnapshot};
