//! Fuzzes FLV tag parsing and the segmenter/playlist behind it. See
//! `media::fuzzing::flv_tags` for the input layout and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media::fuzzing::flv_tags(data));
