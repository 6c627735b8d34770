//! WebSocket (RFC 6455) codec for the server role.
//!
//! - [`Decoder`]: an incremental frame decoder. It unmasks client frames in place, reassembles
//!   fragmented messages, validates UTF-8 incrementally and enforces [`Limits`]. A frame that
//!   arrives whole inside one `feed` call is delivered borrowing the caller's buffer (zero copy);
//!   only frames split across calls and fragmented messages are copied, into buffers that are
//!   freed as soon as the message completes, so an idle connection holds no decoder heap.
//! - Encoders: [`encode_frame`] / [`encode_close`] write unmasked server frames (encode once,
//!   send the same bytes to every receiver of a broadcast); [`encode_client_frame`] writes
//!   masked client frames for tests and the load generator.
//!
//! The decoder lives in `decoder`, the encoders in `encode`; both are re-exported here.
//!
//! No extension (permessage-deflate) and no subprotocol is ever negotiated, so RSV bits are
//! always a protocol error.

/// Close status codes (RFC 6455 section 7.4.1) the server sends.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// A data type the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// Message data inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message that violates the endpoint's policy.
    pub const POLICY: u16 = 1008;
    /// A frame or message too big to process.
    pub const TOO_BIG: u16 = 1009;
    /// An unexpected condition inside the server.
    pub const INTERNAL: u16 = 1011;
    /// Temporary overload: try again later.
    pub const TRY_AGAIN: u16 = 1013;
}

/// Largest payload of a control frame (Close, Ping, Pong).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Frame opcode (RFC 6455 section 5.2); the reserved opcodes are not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: a later fragment of a Text or Binary message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: connection close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit wire value; `None` for the reserved values 3-7 and 0xB-0xF.
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong are control frames: never fragmented, payload at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Size limits on received data, in payload bytes.
///
/// `max_frame` bounds a single data frame and is checked from the frame header, before any of
/// its payload is buffered. `max_message` bounds the sum of a message's fragments. Control
/// frames are bounded by the protocol itself ([`MAX_CONTROL_PAYLOAD`]), not by these limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest data frame payload accepted.
    pub max_frame: usize,
    /// Largest (reassembled) message accepted.
    pub max_message: usize,
}

impl Default for Limits {
    /// 64 KiB frames, 256 KiB messages.
    fn default() -> Self {
        Self {
            max_frame: 64 * 1024,
            max_message: 256 * 1024,
        }
    }
}

/// The payload of a Close frame that carried a status code.
#[derive(Debug, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// Status code, valid for receipt (see [`is_valid_close_code`]).
    pub code: u16,
    /// UTF-8 reason, possibly empty.
    pub reason: &'a str,
}

/// A complete message or control frame produced by [`Decoder::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A whole text message, UTF-8 validated.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping; the caller answers with a Pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame; `None` when it carried no status code.
    Close(Option<CloseFrame<'a>>),
}

/// A violation of RFC 6455 by the peer (or of our [`Limits`]); the connection must be closed
/// with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A client frame arrived without a masking key (RFC 6455 section 5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// RSV1, RSV2 or RSV3 set, but no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A reserved opcode (3-7, 0xB-0xF).
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    /// A Continuation frame while no fragmented message is in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A data frame whose payload exceeds `Limits::max_frame`.
    #[error("frame payload exceeds the frame size limit")]
    FrameTooBig,
    /// A message whose total payload exceeds `Limits::max_message`.
    #[error("message exceeds the message size limit")]
    MessageTooBig,
    /// Invalid UTF-8 in a text message or a close reason.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close status code that must not be received (e.g. 1005, 1006, 2000, 5000).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close payload of exactly one byte (too short for a status code).
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A payload length encoded in more bytes than needed (RFC 6455 section 5.2: MUST be minimal).
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// A 64-bit payload length with its most significant bit set.
    #[error("64-bit payload length with the most significant bit set")]
    InvalidLength,
}

impl ProtocolError {
    /// The status code to close the connection with: 1007 for invalid UTF-8, 1009 for size
    /// limits, 1002 for everything else.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            Self::FrameTooBig | Self::MessageTooBig => close_code::TOO_BIG,
            _ => close_code::PROTOCOL,
        }
    }
}

/// Whether a received close frame may carry `code` (RFC 6455 section 7.4 and the IANA
/// registry): 1000-1003, 1007-1014 and the application/private range 3000-4999.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

mod decoder;
mod encode;

pub use decoder::{parse_close, Decoder};
pub use encode::{
    apply_mask, encode_client_frame, encode_close, encode_frame, header_len, text_frame,
};
