//! ovation's viewer wire protocol, as types: pure data and parsing, no sockets, no clock.
//!
//! Owns: every message a viewer sends ([`ViewerMessage`], parsed by
//! [`parse_viewer_message`] with today's error codes), every message the server sends a
//! viewer or a broadcaster ([`ServerMessage`], [`BroadcasterMessage`], encoded to JSON by
//! [`ServerMessage::to_json`] with keys in alphabetical order), the viewer id and its bit
//! layout ([`ViewerId`]), and the small pure helpers both the shards and the application
//! core need (`field` normalisation, lowercase hex). docs/protocol.md describes the wire
//! format; a test checks every example there against these types.
//!
//! Must not touch: I/O of any kind. Framing (WebSocket) is `netstack`'s; the shards and the
//! application core wrap the JSON from here into text frames.

#![forbid(unsafe_code)]

mod id;
mod server;
mod viewer;

pub use id::{hex, ViewerId, MAX_COUNTER, MAX_EPOCH, MAX_SHARD};
pub use server::{
    AdBreak, BroadcasterMessage, BroadcasterWelcome, ConfigMessage, Endpoint, ErrorMessage,
    GroupMessage, PollMessage, RemediationMessage, Results, ResultsBreakdown, ServerKind,
    ServerMessage, StreamMessage, StreamState, Voted, Welcome,
};
pub use viewer::{
    field, parse_viewer_message, Hello, ProtocolError, Telemetry, ViewerKind, ViewerMessage,
    MAX_FIELD_LEN,
};
