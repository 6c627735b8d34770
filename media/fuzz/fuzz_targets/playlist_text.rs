//! Fuzzes the media playlist reader (an origin edge's window as another edge reads it). See
//! `media::fuzzing::playlist_text` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media::fuzzing::playlist_text(data));
