//! ovation's shard runtime: everything that runs on one pinned core.
//!
//! A shard owns a slice of the viewer connections: its own `SO_REUSEPORT` listener, the
//! handshake and WebSocket session of each viewer, the viewer profiles, and a membership bitmap
//! per group, so one "send to group G" command from the application core fans out without
//! asking anyone. It talks to the application core only through the typed messages in
//! [`proto`] over lock-free channels.
//!
//! - [`profile`]: viewer profiles, User-Agent classification, group predicates; [`sym`]: the
//!   interned strings of their fields; [`compact`]: the packed peer address, query parameters
//!   and rare fields that keep a profile at 96 bytes.
//! - [`proxy`]: PROXY protocol v1/v2 and `X-Forwarded-For` from trusted balancers (pure);
//!   [`geo`]: the country of an address (a MaxMind-format database).
//! - [`bitset`]: the shard-local group membership bitmaps.
//! - [`polls`]: vote validation and the shard's signed share of each poll's count.
//! - [`proto`]: shard <-> application core messages.
//! - [`telemetry`]: telemetry folded per group on the shard (pure), reported as deltas.
//! - [`config`], [`stats`]: settings and live counters; [`footprint`]: the per-viewer
//!   structures' sizes and budgets.
//! - [`identity`]: viewer tokens (JWT); [`limits`]: per-address connection cap and handshake
//!   rate, shared by every shard.
//! - [`sync`]: single-threaded wake-up primitives shared by shard and application-core tasks.
//! - [`clock`]: the only place shard code reads the time; [`frames`]: server messages (from
//!   the `protocol` crate) into WebSocket frames.
//! - The runtime, in dependency order (no two modules import each other; a test checks):
//!   `runtime` (the shard's tasks and command loop) -> `accept` (accept loop, descriptor
//!   seats, the inline answer of a plain upgrade; `storm` switches its thread's scheduling
//!   policy for connect storms) -> `handshake` (reading and checking the
//!   first request, the 101 and welcome, the join; the handshake task) -> `shard` (the shard's state and command handling; `shard::serve`
//!   serves every open connection from the shard's own io_uring, `reactor`) -> `logic` (pure groups, polls, votes) and `conn` (one viewer's socket,
//!   decoding and parsing into `protocol::ViewerMessage`); `tls` (the upgrade through TLS,
//!   and sealing shared frames into one viewer's records) sits beside `conn`. `handshake` also
//!   hands a plain `GET` under `/hls/` to `hls` (one HLS keep-alive connection), which answers
//!   from the shard's [`hls_window`]s (pure: each stream's live window and the HTTP answers;
//!   [`hls_cache`] keeps each window's rendered playlist until the window changes), per
//!   viewing session through [`hls_session`] (signed URLs checked with [`session_sign`]),
//!   with ad breaks spliced in by [`hls_ads`].

#![forbid(unsafe_code)]

mod accept;
pub mod bitset;
pub mod clock;
pub mod compact;
pub mod config;
mod conn;
pub mod footprint;
pub mod frames;
pub mod geo;
mod handshake;
mod hls;
pub mod hls_ads;
pub mod hls_cache;
pub mod hls_file_cache;
pub mod hls_files;
pub mod hls_session;
pub mod hls_window;
pub mod identity;
pub mod limits;
mod logic;
pub mod polls;
pub mod profile;
pub mod proto;
pub mod proxy;
mod reactor;
mod runtime;
pub mod sender;
pub mod session_sign;
mod shard;
pub mod stats;
mod storm;
pub mod sym;
pub mod sync;
pub mod telemetry;
mod tls;

pub use accept::{accept_neighbours, Drained, Neighbour, Stealing, REFUSALS_PER_SHARD};
pub use config::{ShardConfig, ShardSched};
pub use runtime::{run, ShardSpec};
pub use stats::{ShardStats, StatsSnapshot};
