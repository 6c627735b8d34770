//! The server session: bytes in, bytes out and events, no I/O and no clock.
//!
//! The caller feeds what it reads with [`ServerSession::handle_input`], writes whatever
//! [`ServerSession::take_output`] returns, and drains [`ServerSession::poll_event`]. A
//! `publish` becomes [`Event::PublishRequested`]; the caller checks the stream key and answers
//! with [`ServerSession::accept_publish`] (`NetStream.Publish.Start`) or
//! [`ServerSession::reject_publish`] (`NetStream.Publish.BadName`, then close).

use std::collections::VecDeque;

use super::chunk::{self, ChunkDecoder, ChunkEncoder, Message};
use super::handshake::{Handshake, HandshakeKind, Progress};
use super::{Limits, SessionError};
use crate::amf0::{self, Amf0Value};
use crate::MediaKind;

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
const CSID_STATUS: u32 = 5;

/// Settings for one session.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig {
    /// Bounds on what the peer controls.
    pub limits: Limits,
    /// Our outgoing chunk size, announced right after connect.
    pub chunk_size: u32,
    /// The window we ask the peer to acknowledge, and the bandwidth we announce.
    pub window_ack_size: u32,
    /// Goes into S1's time field (the caller's clock, milliseconds).
    pub epoch_ms: u32,
    /// Seeds S1/S2 filler bytes.
    pub seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            epoch_ms: 0,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// What a session reports to its caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `connect` succeeded for an application name (the first path segment of the URL).
    Connected {
        /// Application name, e.g. `live`.
        app: String,
    },
    /// The peer asks to publish; answer with `accept_publish` or `reject_publish`.
    PublishRequested {
        /// Application name from `connect`.
        app: String,
        /// Publishing name: the stream key, as OBS and ffmpeg send it.
        name: String,
        /// Message stream the publish came on.
        stream_id: u32,
    },
    /// `@setDataFrame`/`onMetaData` and other data messages on the publishing stream.
    Metadata {
        /// The AMF0 values of the data message.
        values: Vec<Amf0Value>,
    },
    /// An FLV audio or video tag body.
    Media {
        /// Audio or video.
        kind: MediaKind,
        /// RTMP timestamp, milliseconds (wraps at 2^32).
        timestamp: u32,
        /// The FLV tag body (parse with [`crate::flv`]).
        data: Vec<u8>,
    },
    /// The accepted publish ended (FCUnpublish, deleteStream, closeStream, or `close`).
    Unpublished {
        /// Application name.
        app: String,
        /// Publishing name.
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Publish {
    stream_id: u32,
    name: String,
    accepted: bool,
}

/// One RTMP server connection's protocol state.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    handshake: Option<Handshake>,
    handshake_kind: Option<HandshakeKind>,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: Vec<u8>,
    events: VecDeque<Event>,
    messages: Vec<Message>,
    bytes_in: u64,
    acked: u64,
    peer_window: u32,
    app: Option<String>,
    streams: Vec<u32>,
    next_stream: u32,
    publish: Option<Publish>,
    closed: bool,
}

impl ServerSession {
    /// A session waiting for C0+C1.
    pub fn new(config: SessionConfig) -> Self {
        ServerSession {
            handshake: Some(Handshake::new(config.epoch_ms, config.seed)),
            handshake_kind: None,
            decoder: ChunkDecoder::new(config.limits),
            encoder: ChunkEncoder::default(),
            config,
            out: Vec::new(),
            events: VecDeque::new(),
            messages: Vec::new(),
            bytes_in: 0,
            acked: 0,
            peer_window: 0,
            app: None,
            streams: Vec::new(),
            next_stream: 1,
            publish: None,
            closed: false,
        }
    }

    /// Feeds bytes read from the peer. After an error the session is closed: write any
    /// pending output, then close the connection.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let result = self.input(data);
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    fn input(&mut self, data: &[u8]) -> Result<(), SessionError> {
        self.bytes_in += data.len() as u64;
        let mut rest = std::borrow::Cow::Borrowed(data);
        if let Some(hs) = &mut self.handshake {
            let progress = hs.push(data, &mut self.out)?;
            self.handshake_kind = hs.kind();
            match progress {
                Progress::Pending => return Ok(()),
                Progress::Done(tail) => {
                    self.handshake = None;
                    rest = std::borrow::Cow::Owned(tail);
                }
            }
        }
        let mut messages = std::mem::take(&mut self.messages);
        let decoded = self.decoder.push(&rest, &mut messages);
        // Messages completed before a framing error are still handled, in order.
        let mut result = Ok(());
        for msg in messages.drain(..) {
            result = self.dispatch(msg);
            if result.is_err() {
                break;
            }
        }
        messages.clear();
        self.messages = messages;
        result?;
        decoded?;
        if self.peer_window > 0 && self.bytes_in - self.acked >= u64::from(self.peer_window) {
            self.acked = self.bytes_in;
            // The sequence number wraps at 2^32 on long sessions, as the spec allows.
            let seq = (self.bytes_in & 0xFFFF_FFFF) as u32;
            self.control(chunk::ACKNOWLEDGEMENT, &seq.to_be_bytes());
        }
        Ok(())
    }

    /// Bytes to send to the peer (handshake replies, control messages, command answers).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes held for the peer: unparsed input plus partly received messages. Bounded by
    /// `max_buffered + max_chunk_size` plus a chunk header (and 1537 during the handshake).
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Whether the handshake is still running: the caller's handshake timeout applies
    /// (a peer that stalls here holds at most 1,537 bytes).
    pub fn is_handshaking(&self) -> bool {
        self.handshake.is_some()
    }

    /// The handshake form the client used, once its C1 is in.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.handshake_kind
    }

    /// Whether an accepted publish is running.
    pub fn is_publishing(&self) -> bool {
        self.publish.as_ref().is_some_and(|p| p.accepted)
    }

    /// Answers a pending publish with `NetStream.Publish.Start`. Returns false if no
    /// publish was waiting for an answer.
    pub fn accept_publish(&mut self) -> bool {
        let Some(p) = self.publish.as_mut().filter(|p| !p.accepted) else {
            return false;
        };
        p.accepted = true;
        let (stream_id, name) = (p.stream_id, p.name.clone());
        // User Control: Stream Begin.
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&stream_id.to_be_bytes());
        self.control(chunk::USER_CONTROL, &begin);
        self.status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            &format!("{name} is now published."),
        );
        true
    }

    /// Answers a pending publish with `NetStream.Publish.BadName` and closes the session;
    /// the caller writes the output and closes the connection. Returns false if no publish
    /// was waiting for an answer.
    pub fn reject_publish(&mut self, description: &str) -> bool {
        let Some(p) = self.publish.take_if(|p| !p.accepted) else {
            return false;
        };
        self.status(
            p.stream_id,
            "error",
            "NetStream.Publish.BadName",
            description,
        );
        self.closed = true;
        true
    }

    /// The connection is gone: ends an accepted publish ([`Event::Unpublished`]).
    pub fn close(&mut self) {
        self.unpublish();
        self.closed = true;
    }

    fn dispatch(&mut self, msg: Message) -> Result<(), SessionError> {
        match msg.type_id {
            chunk::WINDOW_ACK_SIZE => {
                let b = msg.payload.get(..4).ok_or_else(|| bad("Window Ack Size"))?;
                self.peer_window = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            }
            // Ping Request (6) gets a Ping Response (7) with the same timestamp.
            chunk::USER_CONTROL if msg.payload.len() >= 6 && msg.payload[..2] == [0, 6] => {
                let mut pong = vec![0, 7];
                pong.extend_from_slice(&msg.payload[2..6]);
                self.control(chunk::USER_CONTROL, &pong);
            }
            chunk::COMMAND_AMF0 => self.command(msg.stream_id, &msg.payload)?,
            // AMF3 command/data: a format byte, then AMF0 values for everything used here.
            chunk::COMMAND_AMF3 => {
                self.command(msg.stream_id, msg.payload.get(1..).unwrap_or(&[]))?
            }
            chunk::DATA_AMF0 | chunk::DATA_AMF3 => {
                let body = if msg.type_id == chunk::DATA_AMF3 {
                    msg.payload.get(1..).unwrap_or(&[])
                } else {
                    &msg.payload
                };
                self.require_publishing(msg.stream_id)?;
                let values = amf0::decode_all(body, self.config.limits.max_amf_depth)?;
                self.events.push_back(Event::Metadata { values });
            }
            chunk::AUDIO | chunk::VIDEO => {
                self.require_publishing(msg.stream_id)?;
                if !msg.payload.is_empty() {
                    let kind = if msg.type_id == chunk::AUDIO {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    self.events.push_back(Event::Media {
                        kind,
                        timestamp: msg.timestamp,
                        data: msg.payload,
                    });
                }
            }
            // Other user control events, acknowledgements, Set Peer Bandwidth, aggregates and
            // unknown types: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn require_publishing(&self, stream_id: u32) -> Result<(), SessionError> {
        match &self.publish {
            Some(p) if p.accepted && p.stream_id == stream_id => Ok(()),
            _ => Err(SessionError::NotPublishing(stream_id)),
        }
    }

    fn command(&mut self, stream_id: u32, body: &[u8]) -> Result<(), SessionError> {
        let values = amf0::decode_all(body, self.config.limits.max_amf_depth)?;
        let name = values
            .first()
            .and_then(Amf0Value::as_str)
            .ok_or_else(|| bad("command"))?
            .to_owned();
        let txn = values.get(1).and_then(Amf0Value::as_number).unwrap_or(0.0);
        // Arguments after the command object (usually null).
        let arg = |i: usize| values.get(3 + i);
        if name != "connect" && self.app.is_none() {
            return Err(SessionError::NotConnected(name));
        }
        match name.as_str() {
            "connect" => {
                let app = values
                    .get(2)
                    .and_then(|o| o.property("app"))
                    .and_then(Amf0Value::as_str)
                    .ok_or_else(|| bad("connect"))?
                    .trim_end_matches('/')
                    .to_owned();
                self.connect_reply(txn);
                self.app = Some(app.clone());
                self.events.push_back(Event::Connected { app });
            }
            "releaseStream" | "FCPublish" => self.result(txn, Amf0Value::Undefined),
            "createStream" => {
                if self.streams.len() >= self.config.limits.max_streams as usize {
                    return Err(SessionError::TooManyStreams(self.config.limits.max_streams));
                }
                let id = self.next_stream;
                self.next_stream += 1;
                self.streams.push(id);
                self.result(txn, Amf0Value::Number(f64::from(id)));
            }
            "publish" => {
                if !self.streams.contains(&stream_id) {
                    return Err(SessionError::UnknownStream(stream_id));
                }
                if self.publish.is_some() {
                    return Err(SessionError::AlreadyPublishing);
                }
                let name = arg(0)
                    .and_then(Amf0Value::as_str)
                    .ok_or_else(|| bad("publish"))?
                    .to_owned();
                self.publish = Some(Publish {
                    stream_id,
                    name: name.clone(),
                    accepted: false,
                });
                let app = self.app.clone().unwrap_or_default();
                self.events.push_back(Event::PublishRequested {
                    app,
                    name,
                    stream_id,
                });
            }
            "FCUnpublish" => {
                if let Some(p) = self.publish.as_ref().filter(|p| p.accepted) {
                    let id = p.stream_id;
                    self.status(
                        id,
                        "status",
                        "NetStream.Unpublish.Success",
                        "Stopped publishing.",
                    );
                }
                self.unpublish();
            }
            "deleteStream" => {
                let id = arg(0).and_then(Amf0Value::as_number).unwrap_or(0.0) as u32;
                if self.publish.as_ref().is_some_and(|p| p.stream_id == id) {
                    self.unpublish();
                }
                self.streams.retain(|&s| s != id);
            }
            "closeStream" => {
                if self
                    .publish
                    .as_ref()
                    .is_some_and(|p| p.stream_id == stream_id)
                {
                    self.unpublish();
                }
            }
            _ => {
                // Unknown commands (play, _checkbw, getStreamLength...): an error answer if
                // the peer waits for one, otherwise nothing.
                if txn != 0.0 {
                    self.command_reply("_error", txn, Amf0Value::Null, error_info(&name));
                }
            }
        }
        Ok(())
    }

    fn unpublish(&mut self) {
        if let Some(p) = self.publish.take() {
            if p.accepted {
                let app = self.app.clone().unwrap_or_default();
                self.events
                    .push_back(Event::Unpublished { app, name: p.name });
            }
        }
    }

    fn connect_reply(&mut self, txn: f64) {
        self.control(
            chunk::WINDOW_ACK_SIZE,
            &self.config.window_ack_size.to_be_bytes(),
        );
        let mut bw = self.config.window_ack_size.to_be_bytes().to_vec();
        bw.push(2); // dynamic
        self.control(chunk::SET_PEER_BANDWIDTH, &bw);
        let size = self
            .config
            .chunk_size
            .clamp(128, self.config.limits.max_chunk_size);
        self.encoder.set_chunk_size(size, &mut self.out);
        let props = Amf0Value::Object(vec![
            ("fmsVer".into(), Amf0Value::String("FMS/3,0,1,123".into())),
            ("capabilities".into(), Amf0Value::Number(31.0)),
        ]);
        let info = Amf0Value::Object(vec![
            ("level".into(), Amf0Value::String("status".into())),
            (
                "code".into(),
                Amf0Value::String("NetConnection.Connect.Success".into()),
            ),
            (
                "description".into(),
                Amf0Value::String("Connection succeeded.".into()),
            ),
            ("objectEncoding".into(), Amf0Value::Number(0.0)),
        ]);
        self.command_reply("_result", txn, props, info);
    }

    fn result(&mut self, txn: f64, value: Amf0Value) {
        self.command_reply("_result", txn, Amf0Value::Null, value);
    }

    fn command_reply(&mut self, name: &str, txn: f64, object: Amf0Value, info: Amf0Value) {
        let mut body = Vec::new();
        amf0::encode(&Amf0Value::String(name.into()), &mut body);
        amf0::encode(&Amf0Value::Number(txn), &mut body);
        amf0::encode(&object, &mut body);
        amf0::encode(&info, &mut body);
        self.encoder.write(
            CSID_COMMAND,
            0,
            chunk::COMMAND_AMF0,
            0,
            &body,
            &mut self.out,
        );
    }

    fn status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let mut body = Vec::new();
        amf0::encode(&Amf0Value::String("onStatus".into()), &mut body);
        amf0::encode(&Amf0Value::Number(0.0), &mut body);
        amf0::encode(&Amf0Value::Null, &mut body);
        amf0::encode(
            &Amf0Value::Object(vec![
                ("level".into(), Amf0Value::String(level.into())),
                ("code".into(), Amf0Value::String(code.into())),
                ("description".into(), Amf0Value::String(description.into())),
            ]),
            &mut body,
        );
        self.encoder.write(
            CSID_STATUS,
            0,
            chunk::COMMAND_AMF0,
            stream_id,
            &body,
            &mut self.out,
        );
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        self.encoder
            .write(CSID_CONTROL, 0, type_id, 0, payload, &mut self.out);
    }
}

fn bad(what: &str) -> SessionError {
    SessionError::BadCommand(what.to_owned())
}

fn error_info(command: &str) -> Amf0Value {
    Amf0Value::Object(vec![
        ("level".into(), Amf0Value::String("error".into())),
        (
            "code".into(),
            Amf0Value::String("NetConnection.Call.Failed".into()),
        ),
        (
            "description".into(),
            Amf0Value::String(format!("{command} is not supported")),
        ),
    ])
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
