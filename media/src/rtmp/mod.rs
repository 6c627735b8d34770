//! RTMP ingest, sans-IO: the handshake, the chunk stream, and a server session that runs the
//! publish command flow and hands out FLV tag bodies.

pub mod chunk;
pub mod handshake;
pub mod session;

use thiserror::Error;

use crate::amf0::Amf0Error;

pub use session::{Event, ServerSession, SessionConfig};

/// Bounds on everything a peer controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk size a peer may set (Set Chunk Size).
    pub max_chunk_size: u32,
    /// Largest message a peer may announce.
    pub max_message_len: u32,
    /// Most chunk streams a peer may open.
    pub max_chunk_streams: usize,
    /// Most bytes held in partly received messages over all chunk streams.
    pub max_buffered: usize,
    /// Deepest AMF0 nesting accepted in a command.
    pub max_amf_depth: usize,
    /// Most message streams a peer may create (createStream).
    pub max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_size: 65_536,
            // A 1080p keyframe at a high bitrate fits with room to spare.
            max_message_len: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_buffered: 16 * 1024 * 1024,
            max_amf_depth: 16,
            max_streams: 8,
        }
    }
}

/// Handshake failures.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// C0 asked for a version other than 3 (6 is encrypted RTMPE; anything else is not RTMP).
    #[error("unsupported RTMP version {0} in C0")]
    UnsupportedVersion(u8),
    /// Bytes fed to a finished handshake.
    #[error("handshake already complete")]
    AlreadyDone,
}

/// Chunk-stream failures.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A compressed header on a chunk stream that never had a full one.
    #[error("chunk type {fmt} on chunk stream {csid} with no previous header")]
    NoPreviousHeader {
        /// Chunk stream id.
        csid: u32,
        /// Header type (1 to 3).
        fmt: u8,
    },
    /// A new message header before the previous message on that chunk stream finished.
    #[error("new message header on chunk stream {csid} before the previous message finished")]
    InterruptedMessage {
        /// Chunk stream id.
        csid: u32,
    },
    /// A message longer than the limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLong {
        /// Announced length.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// Set Chunk Size with zero or a size above the limit.
    #[error("chunk size {size} outside 1..={max}")]
    ChunkSize {
        /// Requested size.
        size: u32,
        /// Limit.
        max: u32,
    },
    /// More chunk streams than the limit.
    #[error("more than {0} chunk streams")]
    TooManyChunkStreams(usize),
    /// Partly received messages hold more bytes than the limit.
    #[error("partly received messages exceed {0} bytes")]
    BufferedTooMuch(usize),
    /// A protocol control message too short to read.
    #[error("malformed {0} message")]
    BadControl(&'static str),
}

/// Why a session failed. Every variant closes the connection; none affects other sessions.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SessionError {
    /// Handshake failure.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// Chunk-stream failure.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A command or data message that is not valid AMF0.
    #[error("AMF0: {0}")]
    Amf(#[from] Amf0Error),
    /// A command whose arguments are missing or of the wrong type.
    #[error("malformed {0} command")]
    BadCommand(String),
    /// A command that needs `connect` first.
    #[error("{0} before connect")]
    NotConnected(String),
    /// A message on a message stream that was never created.
    #[error("unknown message stream {0}")]
    UnknownStream(u32),
    /// More createStream calls than the limit.
    #[error("more than {0} message streams")]
    TooManyStreams(u32),
    /// Audio or video on a stream that is not publishing.
    #[error("media on message stream {0}, which is not publishing")]
    NotPublishing(u32),
    /// A publish on a connection that already publishes.
    #[error("second publish on one connection")]
    AlreadyPublishing,
    /// The session failed or was closed earlier; it takes no more input.
    #[error("session closed")]
    Closed,
}
