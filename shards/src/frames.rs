//! Server messages into WebSocket frames: the one place the shards (and the application
//! core) encode a [`ServerMessage`]; the frame itself is `netstack::ws::text_frame`.

use netstack::ws;
use protocol::ServerMessage;

use crate::proto::Frame;

/// Encodes a text message as one frame.
pub fn text_frame(json: &str) -> Frame {
    ws::text_frame(json)
}

/// Encodes a server message as one text frame.
pub fn encode(message: &ServerMessage) -> Frame {
    text_frame(&message.to_json())
}

/// The `error` frame for `code` and `message`.
pub fn error(code: &str, message: &str) -> Frame {
    encode(&ServerMessage::error(code, message))
}
