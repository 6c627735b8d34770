//! Decoder behaviour: every opcode and every protocol violation with its close code, length
//! encodings, fragmentation, incremental UTF-8, split-at-every-position equivalence, random
//! streams, heap release and zero copy.

mod common;

use std::ops::ControlFlow;

use common::{decode, decode_bytewise, decode_with_cuts, Ev, Outcome, Rng};
use netstack::ws::{encode_client_frame, Decoder, Limits, OpCode, ProtocolError};

/// The masking key of the RFC 6455 section 5.7 examples.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_client_frame(opcode, fin, payload, MASK, &mut out);
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A masked frame built by hand: first byte, length field bytes (7-bit plus extension), then
/// mask and masked payload. For headers the encoder would never produce.
fn raw(b0: u8, len_field: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0, 0x80 | len_field[0]];
    out.extend_from_slice(&len_field[1..]);
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    netstack::ws::apply_mask(&mut out[start..], MASK, 0);
    out
}

fn big_limits() -> Limits {
    Limits {
        max_frame: 1 << 20,
        max_message: 4 << 20,
    }
}

fn ok(events: Vec<Ev>) -> Outcome {
    Outcome {
        events,
        error: None,
    }
}

/// Decodes `stream` whole, byte by byte, and cut at every position, asserts all three agree,
/// and returns the outcome.
fn decode_all_ways(stream: &[u8], limits: Limits) -> Outcome {
    let whole = decode(stream, limits);
    assert_eq!(decode_bytewise(stream, limits), whole, "bytewise");
    for cut in 0..=stream.len() {
        assert_eq!(
            decode_with_cuts(stream, &[cut], limits),
            whole,
            "cut at {cut}"
        );
    }
    whole
}

fn error_of(stream: &[u8], limits: Limits) -> ProtocolError {
    decode_all_ways(stream, limits)
        .error
        .expect("stream should be rejected")
}

#[test]
fn rfc_masked_hello_example() {
    let frame = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_eq!(
        decode_all_ways(&frame, Limits::default()),
        ok(vec![Ev::Text("Hello".into())])
    );
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    // RFC 6455 section 5.7 single-frame unmasked text: legal from a server, not from a client.
    let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let err = error_of(&frame, Limits::default());
    assert_eq!(err, ProtocolError::Unmasked);
    assert_eq!(err.close_code(), 1002);
}

#[test]
fn every_opcode_is_delivered_in_order() {
    let mut stream = Vec::new();
    stream.extend(client(OpCode::Text, true, b"hi"));
    stream.extend(client(OpCode::Binary, true, &[0, 1, 2, 255]));
    stream.extend(client(OpCode::Text, true, b""));
    stream.extend(client(OpCode::Binary, true, b""));
    stream.extend(client(OpCode::Ping, true, b"p"));
    stream.extend(client(OpCode::Pong, true, b""));
    stream.extend(client(OpCode::Text, false, b"frag"));
    stream.extend(client(OpCode::Continuation, true, b"ment"));
    stream.extend(client(OpCode::Close, true, b""));
    stream.extend(client(OpCode::Close, true, &close_payload(1000, "bye")));
    stream.extend(client(OpCode::Close, true, &close_payload(4999, "")));
    assert_eq!(
        decode_all_ways(&stream, Limits::default()),
        ok(vec![
            Ev::Text("hi".into()),
            Ev::Binary(vec![0, 1, 2, 255]),
            Ev::Text(String::new()),
            Ev::Binary(vec![]),
            Ev::Ping(b"p".to_vec()),
            Ev::Pong(vec![]),
            Ev::Text("fragment".into()),
            Ev::Close(None),
            Ev::Close(Some((1000, "bye".into()))),
            Ev::Close(Some((4999, String::new()))),
        ])
    );
}

#[test]
fn reserved_bits_are_protocol_errors() {
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        let err = error_of(&raw(0x81 | rsv, &[1], b"x"), Limits::default());
        assert_eq!(err, ProtocolError::ReservedBits, "rsv {rsv:#x}");
        assert_eq!(err.close_code(), 1002);
    }
}

#[test]
fn reserved_opcodes_are_protocol_errors() {
    for op in (3..=7).chain(0xB..=0xF) {
        let err = error_of(&raw(0x80 | op, &[0], b""), Limits::default());
        assert_eq!(err, ProtocolError::UnknownOpcode(op));
        assert_eq!(err.close_code(), 1002);
    }
}

#[test]
fn control_frames_must_have_fin() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let err = error_of(&client(op, false, b""), Limits::default());
        assert_eq!(err, ProtocolError::FragmentedControl, "{op:?}");
        assert_eq!(err.close_code(), 1002);
    }
}

#[test]
fn control_payload_is_limited_to_125_bytes() {
    let max = vec![7u8; 125];
    assert_eq!(
        decode_all_ways(&client(OpCode::Ping, true, &max), Limits::default()),
        ok(vec![Ev::Ping(max.clone())])
    );
    for op in [0x88, 0x89, 0x8A] {
        let err = error_of(&raw(op, &[126, 0, 126], &[0; 126]), Limits::default());
        assert_eq!(err, ProtocolError::ControlTooLong);
        assert_eq!(err.close_code(), 1002);
    }
    // Rejected from the first two bytes, without waiting for the rest.
    let mut dec = Decoder::new(Limits::default());
    let res = dec.feed(&mut [0x89, 0xFE], &mut |_| ControlFlow::Continue(()));
    assert_eq!(res, Err(ProtocolError::ControlTooLong));
}

#[test]
fn continuation_without_a_message_is_a_protocol_error() {
    let err = error_of(&client(OpCode::Continuation, true, b"x"), Limits::default());
    assert_eq!(err, ProtocolError::UnexpectedContinuation);
    assert_eq!(err.close_code(), 1002);
    // Also after a message has completed.
    let mut stream = client(OpCode::Text, false, b"a");
    stream.extend(client(OpCode::Continuation, true, b"b"));
    stream.extend(client(OpCode::Continuation, true, b"c"));
    let out = decode_all_ways(&stream, Limits::default());
    assert_eq!(out.events, vec![Ev::Text("ab".into())]);
    assert_eq!(out.error, Some(ProtocolError::UnexpectedContinuation));
}

#[test]
fn new_message_during_a_fragmented_one_is_a_protocol_error() {
    for op in [OpCode::Text, OpCode::Binary] {
        let mut stream = client(OpCode::Binary, false, b"a");
        stream.extend(client(op, true, b"b"));
        let err = error_of(&stream, Limits::default());
        assert_eq!(err, ProtocolError::ExpectedContinuation);
        assert_eq!(err.close_code(), 1002);
    }
}

#[test]
fn frame_over_max_frame_is_rejected_from_its_header() {
    let limits = Limits {
        max_frame: 1000,
        max_message: 10_000,
    };
    let at_limit = client(OpCode::Binary, true, &[1; 1000]);
    assert_eq!(decode(&at_limit, limits).error, None);

    let over = client(OpCode::Binary, true, &[1; 1001]);
    // Only the 8 header bytes are fed: the payload is never buffered.
    let mut dec = Decoder::new(limits);
    let res = dec.feed(&mut over[..8].to_vec(), &mut |_| ControlFlow::Continue(()));
    assert_eq!(res, Err(ProtocolError::FrameTooBig));
    assert_eq!(ProtocolError::FrameTooBig.close_code(), 1009);
    assert_eq!(dec.heap_bytes(), 0);

    // A 64-bit length of 1 TiB with default limits: the length alone decides.
    let huge = [0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0];
    assert_eq!(
        decode_all_ways(&huge, Limits::default()).error,
        Some(ProtocolError::FrameTooBig)
    );
}

#[test]
fn message_over_max_message_is_rejected_from_the_fragment_header() {
    let limits = Limits {
        max_frame: 100,
        max_message: 250,
    };
    let mut fits = client(OpCode::Binary, false, &[1; 100]);
    fits.extend(client(OpCode::Continuation, false, &[2; 100]));
    fits.extend(client(OpCode::Continuation, true, &[3; 50]));
    let out = decode(&fits, limits);
    assert_eq!(out.error, None);
    assert_eq!(out.events.len(), 1);

    let mut over = client(OpCode::Text, false, &[b'a'; 100]);
    over.extend(client(OpCode::Continuation, false, &[b'b'; 100]));
    over.extend(client(OpCode::Continuation, true, &[b'c'; 51]));
    let err = error_of(&over, limits);
    assert_eq!(err, ProtocolError::MessageTooBig);
    assert_eq!(err.close_code(), 1009);

    // A single frame can be within max_frame yet over max_message.
    let limits = Limits {
        max_frame: 100,
        max_message: 10,
    };
    assert_eq!(
        decode(&client(OpCode::Text, true, &[b'a'; 11]), limits).error,
        Some(ProtocolError::MessageTooBig)
    );
}

#[test]
fn invalid_utf8_text_is_1007() {
    for bad in [
        &[0xFF][..],
        &[b'a', 0xC0, 0x80],
        &[0xED, 0xA0, 0x80],
        &[0xE2, 0x82],
    ] {
        let err = error_of(&client(OpCode::Text, true, bad), Limits::default());
        assert_eq!(err, ProtocolError::InvalidUtf8, "{bad:x?}");
        assert_eq!(err.close_code(), 1007);
    }
    // Binary messages are not validated.
    assert_eq!(
        decode(&client(OpCode::Binary, true, &[0xFF]), Limits::default()),
        ok(vec![Ev::Binary(vec![0xFF])])
    );
}

#[test]
fn close_codes_valid_for_receipt() {
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    let invalid = [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 6000, 65535,
    ];
    for code in valid {
        let out = decode(
            &client(OpCode::Close, true, &close_payload(code, "r")),
            Limits::default(),
        );
        assert_eq!(out, ok(vec![Ev::Close(Some((code, "r".into())))]));
    }
    for code in invalid {
        let err = error_of(
            &client(OpCode::Close, true, &close_payload(code, "")),
            Limits::default(),
        );
        assert_eq!(err, ProtocolError::InvalidCloseCode(code));
        assert_eq!(err.close_code(), 1002);
    }
}

#[test]
fn close_payload_problems() {
    let err = error_of(&client(OpCode::Close, true, &[3]), Limits::default());
    assert_eq!(err, ProtocolError::InvalidClosePayload);
    assert_eq!(err.close_code(), 1002);

    let mut payload = close_payload(1000, "ok");
    payload.push(0xFF);
    let err = error_of(&client(OpCode::Close, true, &payload), Limits::default());
    assert_eq!(err, ProtocolError::InvalidUtf8);
    assert_eq!(err.close_code(), 1007);
}

#[test]
fn non_minimal_and_oversized_length_encodings() {
    // 16-bit form carrying 125.
    let err = error_of(&raw(0x82, &[126, 0, 125], &[0; 125]), big_limits());
    assert_eq!(err, ProtocolError::NonMinimalLength);
    assert_eq!(err.close_code(), 1002);
    // 64-bit form carrying 65535 and 5.
    for len in [65535u64, 5] {
        let mut field = vec![127];
        field.extend_from_slice(&len.to_be_bytes());
        let err = error_of(&raw(0x82, &field, &[]), big_limits());
        assert_eq!(err, ProtocolError::NonMinimalLength);
    }
    // 64-bit form with the most significant bit set.
    let mut field = vec![127];
    field.extend_from_slice(&(1u64 << 63 | 70_000).to_be_bytes());
    let err = error_of(&raw(0x82, &field, &[]), big_limits());
    assert_eq!(err, ProtocolError::InvalidLength);
    assert_eq!(err.close_code(), 1002);
}

#[test]
fn close_code_of_every_error() {
    use ProtocolError::*;
    let table = [
        (Unmasked, 1002),
        (ReservedBits, 1002),
        (UnknownOpcode(3), 1002),
        (FragmentedControl, 1002),
        (ControlTooLong, 1002),
        (UnexpectedContinuation, 1002),
        (ExpectedContinuation, 1002),
        (FrameTooBig, 1009),
        (MessageTooBig, 1009),
        (InvalidUtf8, 1007),
        (InvalidCloseCode(5), 1002),
        (InvalidClosePayload, 1002),
        (NonMinimalLength, 1002),
        (InvalidLength, 1002),
    ];
    for (err, code) in table {
        assert_eq!(err.close_code(), code, "{err}");
    }
}

#[test]
fn any_masking_key_unmasks() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(301).collect();
    let mut rng = Rng(7);
    let keys = [[0; 4], [0xFF; 4], [1, 2, 3, 4], rng.mask(), rng.mask()];
    for key in keys {
        let mut frame = Vec::new();
        encode_client_frame(OpCode::Binary, true, &payload, key, &mut frame);
        assert_eq!(
            decode_bytewise(&frame, Limits::default()),
            ok(vec![Ev::Binary(payload.clone())]),
            "{key:x?}"
        );
        let cuts: Vec<usize> = (3..frame.len()).step_by(7).collect();
        assert_eq!(
            decode_with_cuts(&frame, &cuts, Limits::default()),
            ok(vec![Ev::Binary(payload.clone())])
        );
    }
}

#[test]
fn seven_sixteen_and_sixty_four_bit_lengths() {
    for (len, len7, header) in [
        (0, 0, 6),
        (1, 1, 6),
        (125, 125, 6),
        (126, 126, 8),
        (127, 126, 8),
        (65535, 126, 8),
        (65536, 127, 14),
        (70_000, 127, 14),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let frame = client(OpCode::Binary, true, &payload);
        assert_eq!(frame[1] & 0x7F, len7, "len {len}");
        assert_eq!(frame.len(), header + len, "len {len}");
        let expected = ok(vec![Ev::Binary(payload)]);
        assert_eq!(decode(&frame, big_limits()), expected, "len {len}");
        assert_eq!(decode_bytewise(&frame, big_limits()), expected, "len {len}");
    }
}

#[test]
fn control_frames_between_fragments_are_delivered_immediately() {
    let mut stream = client(OpCode::Text, false, b"Hel");
    stream.extend(client(OpCode::Ping, true, b"x"));
    stream.extend(client(OpCode::Continuation, false, b"lo"));
    stream.extend(client(OpCode::Pong, true, b""));
    stream.extend(client(OpCode::Continuation, false, b""));
    stream.extend(client(OpCode::Close, true, &close_payload(1001, "")));
    stream.extend(client(OpCode::Continuation, true, b" world"));
    assert_eq!(
        decode_all_ways(&stream, Limits::default()),
        ok(vec![
            Ev::Ping(b"x".to_vec()),
            Ev::Pong(vec![]),
            Ev::Close(Some((1001, String::new()))),
            Ev::Text("Hello world".into()),
        ])
    );

    // The ping is delivered before the message's last fragment has arrived.
    let mut first = client(OpCode::Text, false, b"Hel");
    first.extend(client(OpCode::Ping, true, b"x"));
    let out = decode(&first, Limits::default());
    assert_eq!(out, ok(vec![Ev::Ping(b"x".to_vec())]));
}

#[test]
fn utf8_split_across_fragments_is_accepted_at_every_position() {
    let text = "€uro 😀 ßé 中";
    let bytes = text.as_bytes();
    for split in 0..=bytes.len() {
        let mut stream = client(OpCode::Text, false, &bytes[..split]);
        stream.extend(client(OpCode::Continuation, true, &bytes[split..]));
        assert_eq!(
            decode(&stream, Limits::default()),
            ok(vec![Ev::Text(text.into())]),
            "split {split}"
        );
    }
    // One byte per fragment.
    let mut stream = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Text
        } else {
            OpCode::Continuation
        };
        stream.extend(client(op, i + 1 == bytes.len(), &[*b]));
    }
    assert_eq!(
        decode_all_ways(&stream, Limits::default()),
        ok(vec![Ev::Text(text.into())])
    );
}

#[test]
fn invalid_utf8_is_reported_as_soon_as_seen() {
    // Invalid byte in a first fragment: no later fragment needed.
    let first = client(OpCode::Text, false, &[b'a', 0xFF]);
    assert_eq!(
        decode_all_ways(&first, Limits::default()).error,
        Some(ProtocolError::InvalidUtf8)
    );
    // A code point started in one fragment and broken in the next, which is not final.
    let mut stream = client(OpCode::Text, false, &[b'a', 0xE2]);
    stream.extend(client(OpCode::Continuation, false, b"A"));
    assert_eq!(
        decode_all_ways(&stream, Limits::default()).error,
        Some(ProtocolError::InvalidUtf8)
    );
    // A large unfragmented frame split across reads: the error comes with the bad byte, before
    // the rest of the frame arrives.
    let mut payload = vec![b'a'; 1000];
    payload[10] = 0xFF;
    let frame = client(OpCode::Text, true, &payload);
    let out = decode(&frame[..30], Limits::default());
    assert_eq!(out.error, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn message_ending_mid_code_point_is_invalid() {
    let mut stream = client(OpCode::Text, false, &[b'a', 0xE2, 0x82]);
    stream.extend(client(OpCode::Continuation, true, b""));
    assert_eq!(
        decode_all_ways(&stream, Limits::default()).error,
        Some(ProtocolError::InvalidUtf8)
    );
    // Still valid while the message continues.
    let head = client(OpCode::Text, false, &[b'a', 0xE2, 0x82]);
    assert_eq!(decode(&head, Limits::default()), ok(vec![]));
}

/// A mixed stream of about 1.2 KB, decoded cut at every position and byte by byte.
#[test]
fn every_split_position_gives_the_same_events() {
    let mut stream = Vec::new();
    stream.extend(client(OpCode::Text, true, "héllo €".as_bytes()));
    stream.extend(client(OpCode::Binary, true, &[9; 300]));
    stream.extend(client(OpCode::Text, false, "frag 😀".as_bytes()));
    stream.extend(client(OpCode::Ping, true, &[1; 125]));
    stream.extend(client(OpCode::Continuation, false, &[b'x'; 200]));
    stream.extend(client(OpCode::Continuation, true, "end ß".as_bytes()));
    stream.extend(client(OpCode::Binary, true, &[3; 130]));
    stream.extend(client(OpCode::Pong, true, b"pong"));
    stream.extend(client(OpCode::Binary, false, &[4; 200]));
    stream.extend(client(OpCode::Continuation, true, &[5; 200]));
    stream.extend(client(OpCode::Close, true, &close_payload(1000, "done")));
    let out = decode_all_ways(&stream, Limits::default());
    assert_eq!(out.error, None);
    assert_eq!(out.events.len(), 8);
    let text = format!("frag 😀{}end ß", "x".repeat(200));
    assert_eq!(out.events[2], Ev::Ping(vec![1; 125]));
    assert_eq!(out.events[3], Ev::Text(text));
    assert_eq!(out.events[7], Ev::Close(Some((1000, "done".into()))));

    // Cut at every pair of positions in a smaller stream.
    let small = &stream[..60];
    let whole = decode(small, Limits::default());
    for a in 0..=small.len() {
        for b in a..=small.len() {
            assert_eq!(decode_with_cuts(small, &[a, b], Limits::default()), whole);
        }
    }

    // A stream that ends in a violation fails the same way whatever the cuts.
    let mut bad = stream.clone();
    bad.extend(client(OpCode::Continuation, true, b"x"));
    let out = decode_all_ways(&bad, Limits::default());
    assert_eq!(out.events.len(), 8);
    assert_eq!(out.error, Some(ProtocolError::UnexpectedContinuation));
}

/// Encodes random messages (random opcode, size, fragmentation, interleaved control frames,
/// masks), feeds them in random pieces, and checks the events and that the decoder is idle.
#[test]
fn random_streams_round_trip() {
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let limits = Limits {
        max_frame: 80_000,
        max_message: 300_000,
    };
    for round in 0..300 {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..rng.below(12) + 1 {
            let size = match rng.below(10) {
                0 => 0,
                1..=5 => rng.below(126),
                6..=8 => rng.below(3000),
                _ => rng.below(70_000),
            };
            let message = if rng.below(2) == 0 {
                let s = rng.text(size / 2);
                (OpCode::Text, s.clone().into_bytes(), Ev::Text(s))
            } else {
                let b = rng.bytes(size);
                (OpCode::Binary, b.clone(), Ev::Binary(b))
            };
            let (opcode, payload, event) = message;
            // Cut into 1-4 fragments at arbitrary byte positions (even inside code points).
            let mut cuts: Vec<usize> = (0..rng.below(4))
                .map(|_| rng.below(payload.len() + 1))
                .collect();
            cuts.sort_unstable();
            cuts.push(payload.len());
            let mut start = 0;
            for (i, &end) in cuts.iter().enumerate() {
                let op = if i == 0 { opcode } else { OpCode::Continuation };
                let fin = i + 1 == cuts.len();
                encode_client_frame(op, fin, &payload[start..end], rng.mask(), &mut stream);
                start = end;
                if !fin && rng.below(3) == 0 {
                    let n = rng.below(126);
                    let ping = rng.bytes(n);
                    encode_client_frame(OpCode::Ping, true, &ping, rng.mask(), &mut stream);
                    expected.push(Ev::Ping(ping));
                }
            }
            expected.push(event);
        }
        let mut feed_cuts: Vec<usize> = (0..rng.below(20))
            .map(|_| rng.below(stream.len() + 1))
            .collect();
        feed_cuts.sort_unstable();

        let mut dec = Decoder::new(limits);
        let mut events = Vec::new();
        let mut start = 0;
        for &end in feed_cuts.iter().chain(std::iter::once(&stream.len())) {
            let mut piece = stream[start..end].to_vec();
            start = end;
            dec.feed(&mut piece, &mut |e| {
                events.push(Ev::from(e));
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        assert_eq!(events, expected, "round {round}");
        assert!(dec.is_idle(), "round {round}");
        assert_eq!(dec.heap_bytes(), 0, "round {round}");
    }
}

#[test]
fn decoder_holds_no_heap_between_messages() {
    let mut dec = Decoder::new(Limits::default());
    let mut sink = |_: netstack::ws::Event<'_>| ControlFlow::Continue(());
    assert!(dec.is_idle());
    assert_eq!(dec.heap_bytes(), 0);

    // A partial header is kept in a small box of its own (rare, so an idle decoder keeps
    // no inline room for it): not idle, a header's worth of heap.
    let frame = client(OpCode::Binary, true, &[1; 1000]);
    dec.feed(&mut frame[..3].to_vec(), &mut sink).unwrap();
    assert!(!dec.is_idle());
    assert!((1..=16).contains(&dec.heap_bytes()), "{}", dec.heap_bytes());
    // Part of the payload: buffered.
    dec.feed(&mut frame[3..500].to_vec(), &mut sink).unwrap();
    assert!(!dec.is_idle());
    assert!(dec.heap_bytes() >= 500 - 8);
    dec.feed(&mut frame[500..].to_vec(), &mut sink).unwrap();
    assert!(dec.is_idle());
    assert_eq!(dec.heap_bytes(), 0);

    // A fragmented message, with a control frame split across reads in the middle.
    let first = client(OpCode::Text, false, &[b'a'; 300]);
    dec.feed(&mut first.clone(), &mut sink).unwrap();
    assert!(!dec.is_idle());
    assert!(dec.heap_bytes() >= 300);
    let ping = client(OpCode::Ping, true, b"ping");
    dec.feed(&mut ping[..7].to_vec(), &mut sink).unwrap();
    dec.feed(&mut ping[7..].to_vec(), &mut sink).unwrap();
    assert!(!dec.is_idle());
    let last = client(OpCode::Continuation, true, &[b'b'; 300]);
    dec.feed(&mut last.clone(), &mut sink).unwrap();
    assert!(dec.is_idle());
    assert_eq!(dec.heap_bytes(), 0);

    // A control frame split across reads with no message in progress.
    dec.feed(&mut ping[..8].to_vec(), &mut sink).unwrap();
    assert!(dec.heap_bytes() > 0);
    dec.feed(&mut ping[8..].to_vec(), &mut sink).unwrap();
    assert!(dec.is_idle());
    assert_eq!(dec.heap_bytes(), 0);

    // After an error the buffers go too.
    dec.feed(&mut first.clone(), &mut sink).unwrap();
    assert!(dec.heap_bytes() > 0);
    assert!(dec.feed(&mut first.clone(), &mut sink).is_err());
    assert!(dec.is_idle());
    assert_eq!(dec.heap_bytes(), 0);
}

#[test]
fn break_stops_after_the_event() {
    let mut stream = client(OpCode::Close, true, &close_payload(1000, ""));
    stream.extend(client(OpCode::Text, true, b"ignored"));
    let mut dec = Decoder::new(Limits::default());
    let mut events = Vec::new();
    dec.feed(&mut stream, &mut |e| {
        events.push(Ev::from(e));
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(events, vec![Ev::Close(Some((1000, String::new())))]);
    assert!(dec.is_idle());

    // Break on a message assembled from fragments, also idle afterwards.
    let mut stream = client(OpCode::Binary, false, b"a");
    stream.extend(client(OpCode::Continuation, true, b"b"));
    stream.extend(client(OpCode::Text, true, b"ignored"));
    let mut events = Vec::new();
    dec.feed(&mut stream, &mut |e| {
        events.push(Ev::from(e));
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(events, vec![Ev::Binary(b"ab".to_vec())]);
    assert!(dec.is_idle());
}

#[test]
fn whole_frames_borrow_the_input_buffer() {
    let mut stream = client(OpCode::Text, true, b"zero copy");
    stream.extend(client(OpCode::Binary, true, &[1; 500]));
    stream.extend(client(OpCode::Ping, true, b"p"));
    let range = stream.as_ptr_range();
    let (start, end) = (range.start as usize, range.end as usize);
    let mut dec = Decoder::new(Limits::default());
    let mut borrowed = 0;
    dec.feed(&mut stream, &mut |e| {
        let bytes: &[u8] = match e {
            netstack::ws::Event::Text(s) => s.as_bytes(),
            netstack::ws::Event::Binary(b) | netstack::ws::Event::Ping(b) => b,
            _ => &[],
        };
        let p = bytes.as_ptr() as usize;
        assert!(p >= start && p + bytes.len() <= end, "event copied");
        borrowed += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(borrowed, 3);
    assert_eq!(dec.heap_bytes(), 0);
}

#[test]
fn decoder_is_small() {
    let size = std::mem::size_of::<Decoder>();
    println!("size_of::<Decoder>() = {size} bytes");
    assert!(size <= 64, "Decoder is {size} bytes");
}

#[test]
fn feeding_after_an_error_does_not_panic() {
    let mut dec = Decoder::new(Limits::default());
    let mut sink = |_: netstack::ws::Event<'_>| ControlFlow::Continue(());
    assert!(dec.feed(&mut [0x81, 0x05, 1, 2, 3], &mut sink).is_err());
    // The stream is out of sync; whatever happens, it is an Ok or an Err, not a panic.
    let _ = dec.feed(&mut client(OpCode::Text, true, b"x"), &mut sink);
    let _ = dec.feed(&mut [0xFF; 40], &mut sink);
}
