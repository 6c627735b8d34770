//! ovation-loadgen: simulated viewers for ovation and the peer servers.
//!
//! The `loadgen` binary opens many WebSocket control connections at a set rate, spread across
//! loopback source addresses and, past one process's descriptor limit, across worker processes.
//! It drives viewer behaviours (idle, watch, vote, telemetry), publishes timestamped group-casts
//! and poll storms through the operator API, and measures with hdrhistogram.
//!
//! Layout, top-down:
//! - [`cli`]: the command line and its validation into a [`plan::RunPlan`].
//! - [`plan`]: pure arithmetic: process split, source-IP round robin, behaviour mix.
//! - [`profile`]: the deterministic viewer profile mix (User-Agents, regions, streams).
//! - [`coordinator`]: the parent: spawns workers, synchronises phases, publishes, runs the poll.
//! - [`worker`]: one process's (or thread's) share of the viewers, paced by a token bucket.
//! - [`viewer`]: one simulated viewer connection.
//! - [`wire`]: the coordinator <-> worker line protocol.
//! - [`stats`]: counters and histograms, their serialized form and merging.
//! - [`report`]: the merged figures, the readable summary and the JSON schema.
//! - [`api`]: a minimal HTTP/1.1 client for the operator API.
//! - [`broadcaster`]: the broadcaster's WebSocket view of a poll storm's final results.
//! - [`clock`]: CLOCK_MONOTONIC nanoseconds, shared by publisher and receivers.
//! - [`hls`]: HLS player mode (`loadgen hls`): N players of a live playlist, fetches timed.
#![forbid(unsafe_code)]

pub mod api;
pub mod broadcaster;
pub mod cli;
pub mod clock;
pub mod coordinator;
pub mod hls;
pub mod plan;
pub mod profile;
pub mod report;
pub mod stats;
pub mod viewer;
pub mod wire;
pub mod worker;
