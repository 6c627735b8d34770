//! ovation's wire layer.
//!
//! - [`http`]: HTTP/1.1 server side: the sans-IO request parser (pipelining, chunked bodies,
//!   limits) and response writer, the WebSocket upgrade handshake, query strings.
//! - [`ws`]: the WebSocket (RFC 6455) server-side codec: incremental frame decoder with
//!   message reassembly and UTF-8 validation, and an encoder whose output is shared by every
//!   receiver of a broadcast.
//! - [`tls`]: TLS as a sans-IO session over rustls' unbuffered connection (ciphertext in,
//!   plaintext and records out) and a certificate store reloaded without a restart.
//! - [`sys`]: the only module allowed `unsafe` (the crate denies it elsewhere): socket
//!   options and syscalls the safe wrappers (std, socket2) do not cover, such as reuseport CPU
//!   steering with classic BPF, each through one `syscall!` macro.
//!
//! The codecs are pure: no sockets, no clock. They are tested in memory and fuzzed.

#![deny(unsafe_code)]

pub mod http;
#[allow(unsafe_code)]
pub mod sys;
pub mod tls;
pub mod ws;
