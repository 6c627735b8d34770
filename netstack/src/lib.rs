//! ovation's wire layer.
//!
//! - [`http`]: the HTTP/1.1 upgrade handshake (request parsing, responses, query strings).
//! - [`ws`]: the WebSocket (RFC 6455) server-side codec: incremental frame decoder with
//!   message reassembly and UTF-8 validation, and an encoder whose output is shared by every
//!   receiver of a broadcast.
//! - [`sys`]: the only module with `unsafe`: socket options and syscalls the safe wrappers
//!   (std, socket2) do not cover, such as reuseport CPU steering with classic BPF.
//!
//! The codecs are pure: no sockets, no clock. They are tested in memory and fuzzed.

pub mod http;
pub mod sys;
pub mod ws;
