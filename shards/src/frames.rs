//! Server messages into WebSocket frames: the one place the shards encode a
//! [`ServerMessage`]. The frame itself is `netstack::ws::encode_frame`; once netstack offers
//! a `ws::text_frame`, [`text_frame`] becomes a call to it.

use netstack::ws::{self, OpCode};
use protocol::ServerMessage;

use crate::proto::Frame;

/// Encodes a text message as one frame.
pub fn text_frame(json: &str) -> Frame {
    let mut buf = Vec::with_capacity(ws::header_len(json.len()) + json.len());
    ws::encode_frame(OpCode::Text, json.as_bytes(), &mut buf);
    buf.into()
}

/// Encodes a server message as one text frame.
pub fn encode(message: &ServerMessage) -> Frame {
    text_frame(&message.to_json())
}

/// The `error` frame for `code` and `message`.
pub fn error(code: &str, message: &str) -> Frame {
    encode(&ServerMessage::error(code, message))
}
