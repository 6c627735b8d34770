//! ovation's media core, sans-IO: it takes bytes and time and returns bytes and events, so
//! the same code runs on the glommio shards, the application core, in tests and under a fuzzer.
//!
//! - [`rtmp`]: RTMP ingest: the handshake (simple and digest), the chunk stream, and a server
//!   session that runs the publish command flow and emits FLV audio/video tag bodies.
//! - [`amf0`]: AMF0 values, the encoding of RTMP commands.
//! - [`flv`]: FLV tag bodies: AVC (H.264) video and AAC audio, other codecs refused by name.
//! - [`ts`]: an MPEG-TS muxer for H.264 + AAC (Annex B, ADTS, PES, PAT/PMT, PCR).
//! - [`segmenter`]: cuts the stream into MPEG-TS segments at keyframes.
//! - [`playlist`]: the sliding-window live HLS media playlist (RFC 8216).
//! - [`playlist_parse`]: reading a rendered media playlist back (an origin edge's window).
//!
//! Owns no sockets, threads or clocks: time comes in as parameters.
#![forbid(unsafe_code)]

pub mod amf0;
pub mod flv;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod playlist;
pub mod playlist_parse;
pub mod rtmp;
pub mod segmenter;
pub mod ts;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// An FLV audio tag (RTMP message type 8).
    Audio,
    /// An FLV video tag (RTMP message type 9).
    Video,
}
