//! Helpers shared by the netstack integration tests: owned events, a deterministic PRNG,
//! drivers that feed a byte stream to a decoder in chosen pieces, and an in-memory stream.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{self, Cursor, Read, Write};
use std::ops::ControlFlow;

use netstack::ws::{Decoder, Event, Limits, ProtocolError};

/// An owned copy of an [`Event`], so tests can collect and compare them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Self {
        match e {
            Event::Text(s) => Ev::Text(s.to_owned()),
            Event::Binary(b) => Ev::Binary(b.to_vec()),
            Event::Ping(b) => Ev::Ping(b.to_vec()),
            Event::Pong(b) => Ev::Pong(b.to_vec()),
            Event::Close(c) => Ev::Close(c.map(|c| (c.code, c.reason.to_owned()))),
        }
    }
}

/// What decoding a stream produced: the events delivered, then the first error if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub events: Vec<Ev>,
    pub error: Option<ProtocolError>,
}

/// Feeds `stream` cut at the (sorted) positions in `cuts`, stopping at the first error.
pub fn decode_with_cuts(stream: &[u8], cuts: &[usize], limits: Limits) -> Outcome {
    let mut dec = Decoder::new(limits);
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let mut piece = stream[start..end].to_vec();
        start = end;
        let res = dec.feed(&mut piece, &mut |e| {
            events.push(Ev::from(e));
            ControlFlow::Continue(())
        });
        if let Err(error) = res {
            return Outcome {
                events,
                error: Some(error),
            };
        }
    }
    Outcome {
        events,
        error: None,
    }
}

/// Feeds the whole stream at once.
pub fn decode(stream: &[u8], limits: Limits) -> Outcome {
    decode_with_cuts(stream, &[], limits)
}

/// Feeds the stream one byte at a time.
pub fn decode_bytewise(stream: &[u8], limits: Limits) -> Outcome {
    let cuts: Vec<usize> = (1..stream.len()).collect();
    decode_with_cuts(stream, &cuts, limits)
}

/// splitmix64: small, deterministic, good enough to generate test streams.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A random string of `chars` chars mixing 1-, 2-, 3- and 4-byte code points.
    pub fn text(&mut self, chars: usize) -> String {
        const POOL: [char; 8] = ['a', 'Z', ' ', 'é', 'ß', '€', '中', '😀'];
        (0..chars).map(|_| POOL[self.below(POOL.len())]).collect()
    }
}

/// An in-memory duplex stream for driving tungstenite: reads from `input` (WouldBlock once
/// drained, like a non-blocking socket), writes to `output`.
#[derive(Default)]
pub struct Mem {
    pub input: Cursor<Vec<u8>>,
    pub output: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.read(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
