//! ovation: an edge server for live broadcasts.
//!
//! This crate is the binary's library half: configuration ([`config`]), the application core
//! ([`app`]) that mirrors viewer profiles, keeps groups, runs polls and keeps durable state in
//! its store (written on a thread of its own), the operator API
//! ([`api`]), RTMP ingest ([`ingest`]: publishers' connections, on the application core), and
//! process assembly ([`server`]) that starts the shards (crate `shards`) and the
//! application core on their executors and joins them with lock-free channels.
//! [`recorder`] writes recordings of live streams on a thread of its own; [`rebroadcast`]
//! plays a recording out as a live stream; [`relay`] pulls a stream live on another edge of
//! a cluster from that edge (its origin) and serves it here. [`limits`]
//! checks at startup that the host's limits fit the configuration, and [`panics`] makes a
//! panic in any thread end the process.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod config;
pub mod ingest;
pub mod limits;
pub mod panics;
pub mod rebroadcast;
pub mod recorder;
pub mod relay;
pub mod server;
pub mod vast;
