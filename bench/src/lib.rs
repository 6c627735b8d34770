//! ovation-bench: the benchmark suite that runs ovation and its peer servers under the same
//! load generator and prints one markdown table per scenario (`bench/run`, binary
//! `bench-suite`), plus the hot-path microbenchmarks in `benches/hot_paths.rs`.
//!
//! Owns: starting and stopping the servers under test, driving `loadgen` per scenario,
//! reading the server's memory from `/proc`, taking medians over repeats, and rendering the
//! results as markdown and JSON. It owns no server or load-generation logic itself.
//!
//! Layout, top-down:
//! - [`suite`]: the command line and the scenario x server x repeat loop.
//! - [`scenario`]: one scenario run against one fresh server process, and its checks.
//! - [`server`]: how each server is started, recognised as ready, and stopped.
//! - [`loadgen`]: the loadgen command line and the subset of its JSON report used here.
//! - [`report`]: metric definitions, medians over repeats, the markdown and JSON output.
//! - [`http`]: a blocking HTTP/1.1 client for the operator APIs (stats, poll probe).
//! - [`procfs`]: parsing of `/proc` files (RSS, socket memory, machine facts).
//! - [`stats`]: medians and maxima over repeats.
//! - [`footprint`]: where an idle viewer's bytes go, and one API group-cast's latency (binary
//!   `bench-footprint`).
//! - [`wake_floor`]: the same wake-ups as that group-cast with no work, timed beside it.
//! - [`churn`]: server memory under connect-and-leave churn (binary `bench-churn`).
//! - [`publish_delay`]: live HLS publish-to-playlist delay (binary `bench-publish-delay`).
//! - [`quality`]: server CPU per telemetry report and per remediation evaluation
//!   (binary `bench-quality`).
//! - [`media_load`]: HLS to N players, ovation (`zerocopy` auto, on and off, and from its
//!   recording) vs nginx (binary `bench-media`).
#![forbid(unsafe_code)]

pub mod churn;
pub mod footprint;
pub mod http;
pub mod loadgen;
pub mod media_load;
pub mod procfs;
pub mod publish_delay;
pub mod quality;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod suite;
pub mod wake_floor;
