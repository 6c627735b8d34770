//! Fuzzes the server-side request parser: arbitrary bytes, fed in arbitrary pieces, under
//! arbitrary (small) limits. Must never panic; every call consumes no more than it was given;
//! a request's body respects the limit; and the requests parsed do not depend on how the
//! bytes were split (the same stream fed whole gives the same requests or the same error).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::http::server::{Limits, Request, RequestError, RequestParser, Step};

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    /// Where the stream is cut into pieces (positions taken modulo its length).
    cuts: Vec<u16>,
    max_head: u16,
    max_headers: u8,
    max_body: u16,
}

fn run(limits: Limits, pieces: &[&[u8]]) -> Result<Vec<Request>, RequestError> {
    let mut parser = RequestParser::new(limits);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let (step, used) = parser.next(&buf)?;
            assert!(used <= buf.len());
            buf.drain(..used);
            match step {
                Step::Request(r) => {
                    assert!(r.body.len() <= limits.max_body);
                    out.push(r);
                }
                Step::Continue => {}
                Step::Partial => break,
            }
        }
    }
    Ok(out)
}

fuzz_target!(|input: Input| {
    let limits = Limits {
        max_head: usize::from(input.max_head).max(16),
        max_headers: usize::from(input.max_headers),
        max_body: usize::from(input.max_body),
    };
    let bytes = &input.bytes;
    let mut cuts: Vec<usize> = input
        .cuts
        .iter()
        .map(|&c| usize::from(c) % (bytes.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts {
        pieces.push(&bytes[at..c]);
        at = c;
    }
    pieces.push(&bytes[at..]);
    let split = run(limits, &pieces);
    let whole = run(limits, &[bytes]);
    assert_eq!(split, whole);
});
