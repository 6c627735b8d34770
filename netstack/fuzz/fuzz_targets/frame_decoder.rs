//! Fuzzes the WebSocket frame decoder: arbitrary bytes, cut into arbitrary pieces, under
//! arbitrary (mostly small) limits. Must never panic; every event must respect the limits
//! and RFC 6455; the outcome must not depend on the cuts; heap must be bounded by the limits
//! and released when idle.

#![no_main]

use std::ops::ControlFlow;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::ws::{is_valid_close_code, Decoder, Event, Limits, ProtocolError};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Use `Limits::default()` instead of the small limits below.
    default_limits: bool,
    max_frame: u16,
    max_message: u16,
    /// Piece lengths to cut `data` into, used in a cycle (0 means "one byte").
    pieces: Vec<u8>,
    data: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn check(event: &Event<'_>, limits: &Limits) -> Ev {
    match event {
        Event::Text(s) => {
            assert!(s.len() <= limits.max_message);
            Ev::Text((*s).to_owned())
        }
        Event::Binary(b) => {
            assert!(b.len() <= limits.max_message);
            Ev::Binary(b.to_vec())
        }
        Event::Ping(b) => {
            assert!(b.len() <= 125);
            Ev::Ping(b.to_vec())
        }
        Event::Pong(b) => {
            assert!(b.len() <= 125);
            Ev::Pong(b.to_vec())
        }
        Event::Close(c) => Ev::Close(c.as_ref().map(|c| {
            assert!(is_valid_close_code(c.code));
            assert!(c.reason.len() <= 123);
            (c.code, c.reason.to_owned())
        })),
    }
}

/// Feeds `data` cut into `pieces`; returns the events and the first error. Also checks that
/// the heap held stays within what the limits allow.
fn run(data: &[u8], pieces: &[u8], limits: Limits) -> (Vec<Ev>, Option<ProtocolError>) {
    let mut dec = Decoder::new(limits);
    let mut events = Vec::new();
    let mut rest = data.to_vec();
    let mut i = 0;
    while !rest.is_empty() {
        let n = match pieces.get(i % pieces.len().max(1)) {
            Some(&p) => usize::from(p).max(1),
            None => rest.len(),
        }
        .min(rest.len());
        i += 1;
        let tail = rest.split_off(n);
        let mut piece = std::mem::replace(&mut rest, tail);
        let result = dec.feed(&mut piece, &mut |e| {
            events.push(check(&e, &limits));
            ControlFlow::Continue(())
        });
        // Buffers never exceed twice the message limit (Vec growth) plus bookkeeping.
        assert!(dec.heap_bytes() <= 2 * limits.max_message.max(125) + 1024);
        if let Err(e) = result {
            assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
            assert!(dec.is_idle() && dec.heap_bytes() == 0);
            // Feeding an out-of-sync decoder must not panic either.
            let _ = dec.feed(&mut rest, &mut |_| ControlFlow::Continue(()));
            return (events, Some(e));
        }
        if dec.is_idle() {
            assert_eq!(dec.heap_bytes(), 0);
        }
    }
    (events, None)
}

fuzz_target!(|input: Input| {
    let limits = if input.default_limits {
        Limits::default()
    } else {
        Limits {
            max_frame: usize::from(input.max_frame),
            max_message: usize::from(input.max_message),
        }
    };
    let cut = run(&input.data, &input.pieces, limits);
    let whole = run(&input.data, &[], limits);
    assert_eq!(cut, whole, "outcome depends on how the input was cut");
});
