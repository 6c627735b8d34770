//! Fuzzes the RTMP server session: handshake, chunk stream, AMF0 commands and the publish
//! flow. See `media::fuzzing::rtmp_session` for the input layout and the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| media::fuzzing::rtmp_session(data));
