//! The receive side of a viewer connection: received bytes (or TLS records) through the
//! decoder, the close handshake's answers, the rate limit, and each text message parsed and
//! handed on. An `impl Conn` block of the parent module (`tests/module_graph.rs` lists it).

use std::ops::ControlFlow;

use netstack::ws::{self, close_code, Event, OpCode};
use protocol::parse_viewer_message;

use super::{Conn, Env, OnMessage, State};
use crate::clock::TICKS_PER_SEC;
use crate::proto::Frame;
use crate::stats::ShardStats;

impl Conn {
    /// Feeds received bytes to the decoder and hands every complete, parsed viewer message to
    /// `on_message`.
    pub fn on_bytes(&self, env: &Env<'_>, data: &mut [u8], on_message: OnMessage<'_>) {
        self.last_rx.set(env.now);
        self.ping_sent.set(0);
        let result = {
            let mut decoder = self.decoder.borrow_mut();
            decoder.feed(data, &mut |event| self.on_event(env, event, on_message))
        };
        if let Err(err) = result {
            if self.is_open() {
                ShardStats::add(&env.stats.closed_protocol, 1);
                tracing::debug!(viewer = %self.viewer(), %err, "protocol error");
                self.close(env, err.close_code(), &err.to_string());
            }
        }
    }

    /// TLS records received: decrypts them, sends what the session has to say (alerts, key
    /// updates) and feeds the plaintext to the decoder. `Break` when the connection is over
    /// (a TLS error, or the peer's close_notify with nothing left to answer).
    pub(super) fn on_records(
        &self,
        env: &Env<'_>,
        data: &[u8],
        on_message: OnMessage<'_>,
    ) -> ControlFlow<()> {
        let (mut plain, mut wire) = (Vec::new(), Vec::new());
        let received = match self.tls() {
            Some(session) => session.borrow_mut().receive(data, &mut plain, &mut wire),
            None => return ControlFlow::Continue(()),
        };
        if !wire.is_empty() {
            self.send_wire(env, &[Frame::from(wire)]);
        }
        match received {
            Err(err) => {
                tracing::debug!(viewer = %self.viewer(), %err, "TLS error");
                ShardStats::add(&env.stats.closed_protocol, 1);
                ControlFlow::Break(())
            }
            Ok(received) => {
                if !plain.is_empty() {
                    self.on_bytes(env, &mut plain, on_message);
                }
                if received.peer_closed {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
        }
    }

    fn on_event(
        &self,
        env: &Env<'_>,
        event: Event<'_>,
        on_message: OnMessage<'_>,
    ) -> ControlFlow<()> {
        match event {
            Event::Close(frame) => {
                match self.state.get() {
                    State::Open => {
                        // Echo the peer's code (RFC 6455 5.5.1); no code means 1000.
                        let code = frame.map_or(close_code::NORMAL, |f| f.code);
                        self.close(env, code, "");
                        self.mark_peer_closed();
                    }
                    State::Closing { .. } => self.mark_peer_closed(),
                    State::Abort | State::Done => {}
                }
                return ControlFlow::Break(());
            }
            _ if !self.is_open() => {} // closing: data is read and dropped
            Event::Ping(payload) => {
                let mut frame = Vec::with_capacity(2 + payload.len());
                ws::encode_frame(OpCode::Pong, payload, &mut frame);
                self.send(env, &Frame::from(frame));
            }
            Event::Pong(_) => {}
            Event::Text(text) => {
                ShardStats::add(&env.stats.messages_in, 1);
                if self.rate_limited(env) {
                    self.send_error(env, "rate_limited", "too many messages; slow down");
                } else {
                    self.on_text(env, text, on_message);
                }
            }
            Event::Binary(_) => {
                ShardStats::add(&env.stats.messages_in, 1);
                if self.rate_limited(env) {
                    self.send_error(env, "rate_limited", "too many messages; slow down");
                } else {
                    self.send_error(env, "binary_not_supported", "messages are JSON text frames");
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn mark_peer_closed(&self) {
        if let State::Closing {
            deadline,
            write_shut,
            ..
        } = self.state.get()
        {
            self.state.set(State::Closing {
                deadline,
                peer_closed: true,
                write_shut,
            });
        }
    }

    fn rate_limited(&self, env: &Env<'_>) -> bool {
        let second = env.now / TICKS_PER_SEC;
        let (at, count) = self.rate.get();
        let count = if at == second { count + 1 } else { 1 };
        self.rate.set((second, count));
        count > env.config.max_messages_per_sec
    }

    /// One viewer text message: parsed here, refused here if it is not a message, handed on
    /// otherwise.
    fn on_text(&self, env: &Env<'_>, text: &str, on_message: OnMessage<'_>) {
        if self.pending.get() {
            return self.send_error(
                env,
                "resuming",
                "wait for the welcome before sending messages",
            );
        }
        match parse_viewer_message(text) {
            Ok(message) => on_message(self, message),
            Err(e) => self.send_error(env, e.code(), &e.to_string()),
        }
    }
}
