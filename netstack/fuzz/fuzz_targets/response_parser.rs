//! Fuzzes the client-side response parser (an edge reading another edge's answer): arbitrary
//! bytes under an arbitrary body limit. Must never panic; a complete answer's body respects
//! the limit; and once a prefix of the bytes gives a complete answer, every longer prefix
//! gives the same one (more bytes never change an answer already framed).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use netstack::http::client::parse_response;

#[derive(Arbitrary, Debug)]
struct Input {
    bytes: Vec<u8>,
    max_body: u16,
}

fuzz_target!(|input: Input| {
    let max = usize::from(input.max_body);
    let mut first = None;
    for end in 0..=input.bytes.len() {
        let prefix = &input.bytes[..end];
        let _ = parse_response(prefix, true, max);
        match parse_response(prefix, false, max) {
            Ok(Some(answer)) => {
                assert!(answer.body.len() <= max);
                match &first {
                    None => first = Some(answer),
                    Some(f) => assert_eq!(f, &answer),
                }
            }
            Ok(None) => assert!(first.is_none(), "an answer became incomplete"),
            Err(_) => {}
        }
    }
});
