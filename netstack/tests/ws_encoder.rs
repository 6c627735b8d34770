//! Encoders: byte-exact frames at the length-encoding boundaries, RFC 6455 examples, close
//! reason truncation, the word-at-a-time mask against a byte-wise reference, and round trips
//! through the decoder.

mod common;

use common::{decode, Ev, Rng};
use netstack::ws::{
    apply_mask, encode_client_frame, encode_close, encode_frame, header_len, parse_close, Limits,
    OpCode,
};

#[test]
fn rfc_examples() {
    // RFC 6455 section 5.7.
    let mut out = Vec::new();
    encode_frame(OpCode::Text, b"Hello", &mut out);
    assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_frame(OpCode::Pong, b"Hello", &mut out);
    assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_client_frame(
        OpCode::Text,
        true,
        b"Hello",
        [0x37, 0xfa, 0x21, 0x3d],
        &mut out,
    );
    assert_eq!(
        out,
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
    out.clear();
    encode_client_frame(OpCode::Text, false, b"Hel", [0; 4], &mut out);
    assert_eq!(out[0], 0x01);
    out.clear();
    encode_client_frame(OpCode::Continuation, true, b"lo", [0; 4], &mut out);
    assert_eq!(out[0], 0x80);
}

#[test]
fn byte_exact_frames_at_length_boundaries() {
    let cases: [(usize, &[u8]); 5] = [
        (0, &[0x82, 0x00]),
        (125, &[0x82, 0x7d]),
        (126, &[0x82, 0x7e, 0x00, 0x7e]),
        (65535, &[0x82, 0x7e, 0xff, 0xff]),
        (65536, &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]),
    ];
    for (len, header) in cases {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut out = Vec::new();
        encode_frame(OpCode::Binary, &payload, &mut out);
        assert_eq!(&out[..header.len()], header, "len {len}");
        assert_eq!(&out[header.len()..], &payload[..], "len {len}");
        assert_eq!(header_len(len), header.len(), "len {len}");

        // The client form: same length field with the mask bit, then the key.
        let mut client = Vec::new();
        encode_client_frame(OpCode::Binary, true, &payload, [1, 2, 3, 4], &mut client);
        assert_eq!(client[1], header[1] | 0x80, "len {len}");
        assert_eq!(&client[2..header.len()], &header[2..], "len {len}");
        assert_eq!(&client[header.len()..header.len() + 4], &[1, 2, 3, 4]);
        assert_eq!(client.len(), header.len() + 4 + len);
    }
}

#[test]
fn encoders_append() {
    let mut out = vec![0xAA];
    encode_frame(OpCode::Ping, b"", &mut out);
    encode_close(1000, "", &mut out);
    assert_eq!(out, [0xAA, 0x89, 0x00, 0x88, 0x02, 0x03, 0xE8]);
}

#[test]
fn close_reason_is_truncated_at_a_char_boundary() {
    for (reason, kept) in [
        ("a".repeat(200), 123),
        ("é".repeat(100), 122),  // 2-byte chars: 61 fit
        ("€".repeat(100), 123),  // 3-byte chars: 41 fit exactly
        ("😀".repeat(100), 120), // 4-byte chars: 30 fit
        ("short".to_string(), 5),
    ] {
        let mut out = Vec::new();
        encode_close(1001, &reason, &mut out);
        assert_eq!(out[0], 0x88);
        assert_eq!(usize::from(out[1]), 2 + kept, "{reason}");
        let close = parse_close(&out[2..]).unwrap().unwrap();
        assert_eq!(close.code, 1001);
        assert_eq!(close.reason, &reason[..kept]);
    }
}

#[test]
fn word_mask_matches_bytewise_reference() {
    let mut rng = Rng(42);
    for len in 0..70 {
        for offset in 0..9 {
            let key = rng.mask();
            let data = rng.bytes(len);
            let mut fast = data.clone();
            apply_mask(&mut fast, key, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[(i + offset) % 4])
                .collect();
            assert_eq!(fast, slow, "len {len} offset {offset}");
        }
    }
    // Unmasking in pieces equals unmasking at once.
    let key = [9, 8, 7, 6];
    let data = rng.bytes(100);
    let mut whole = data.clone();
    apply_mask(&mut whole, key, 0);
    let mut pieces = data;
    let (a, rest) = pieces.split_at_mut(13);
    let (b, c) = rest.split_at_mut(30);
    apply_mask(a, key, 0);
    apply_mask(b, key, 13);
    apply_mask(c, key, 43);
    assert_eq!(pieces, whole);
}

#[test]
fn client_frames_round_trip_through_the_decoder() {
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };
    let mut rng = Rng(3);
    for len in [0, 1, 125, 126, 65535, 65536, 100_000] {
        let bytes = rng.bytes(len);
        let text = rng.text(len / 3);
        let mut stream = Vec::new();
        encode_client_frame(OpCode::Binary, true, &bytes, rng.mask(), &mut stream);
        encode_client_frame(OpCode::Text, true, text.as_bytes(), rng.mask(), &mut stream);
        assert_eq!(
            decode(&stream, limits).events,
            vec![Ev::Binary(bytes), Ev::Text(text)],
            "len {len}"
        );
    }
    let mut stream = Vec::new();
    encode_client_frame(OpCode::Ping, true, b"ping", rng.mask(), &mut stream);
    encode_client_frame(OpCode::Pong, true, b"pong", rng.mask(), &mut stream);
    let mut close = Vec::new();
    encode_close(4000, "bye", &mut close);
    encode_client_frame(OpCode::Close, true, &close[2..], rng.mask(), &mut stream);
    assert_eq!(
        decode(&stream, limits).events,
        vec![
            Ev::Ping(b"ping".to_vec()),
            Ev::Pong(b"pong".to_vec()),
            Ev::Close(Some((4000, "bye".into())))
        ]
    );
}

#[test]
fn server_frames_are_not_client_frames() {
    let mut out = Vec::new();
    encode_frame(OpCode::Text, b"x", &mut out);
    assert_eq!(
        decode(&out, Limits::default()).error,
        Some(netstack::ws::ProtocolError::Unmasked)
    );
}
