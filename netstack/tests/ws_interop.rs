//! Cross-check against an independent RFC 6455 implementation (tungstenite): frames its
//! client writes decode with our decoder; frames our encoders write decode in tungstenite
//! (client role for server frames, server role for our client frames); and malformed streams
//! both implementations must refuse are refused by ours.

mod common;

use std::io::{self, Cursor};

use common::{decode, decode_bytewise, decode_with_cuts, Ev, Mem, Rng};
use netstack::ws::{encode_client_frame, encode_close, encode_frame, Limits, OpCode};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

fn tungstenite(role: Role, input: Vec<u8>) -> WebSocket<Mem> {
    let config = WebSocketConfig {
        max_message_size: Some(1 << 24),
        max_frame_size: Some(1 << 24),
        ..WebSocketConfig::default()
    };
    let mem = Mem {
        input: Cursor::new(input),
        output: Vec::new(),
    };
    WebSocket::from_raw_socket(mem, role, Some(config))
}

/// Reads every message tungstenite can decode from its input, then the error it stops at
/// (`None` when it stopped only because the input ran out).
fn read_all(ws: &mut WebSocket<Mem>) -> (Vec<Ev>, Option<String>) {
    let mut events = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(s)) => events.push(Ev::Text(s)),
            Ok(Message::Binary(b)) => events.push(Ev::Binary(b)),
            Ok(Message::Ping(b)) => events.push(Ev::Ping(b)),
            Ok(Message::Pong(b)) => events.push(Ev::Pong(b)),
            Ok(Message::Close(c)) => events.push(Ev::Close(
                c.map(|c| (u16::from(c.code), c.reason.into_owned())),
            )),
            Ok(Message::Frame(_)) => unreachable!("read never yields raw frames"),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return (events, None)
            }
            Err(tungstenite::Error::ConnectionClosed) => return (events, None),
            Err(e) => return (events, Some(e.to_string())),
        }
    }
}

fn big_limits() -> Limits {
    Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    }
}

#[test]
fn tungstenite_client_messages_decode_here() {
    let mut ws = tungstenite(Role::Client, Vec::new());
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::Text("héllo wörld 😀".into())).unwrap();
    ws.send(Message::Binary(big.clone())).unwrap();
    ws.send(Message::Text("x".repeat(300))).unwrap();
    ws.send(Message::Ping(b"are you there".to_vec())).unwrap();
    ws.send(Message::Pong(Vec::new())).unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "navigating away".into(),
    }))
    .unwrap();
    let _ = ws.flush();
    let stream = ws.get_ref().output.clone();
    let expected = vec![
        Ev::Text("héllo wörld 😀".into()),
        Ev::Binary(big),
        Ev::Text("x".repeat(300)),
        Ev::Ping(b"are you there".to_vec()),
        Ev::Pong(vec![]),
        Ev::Close(Some((1001, "navigating away".into()))),
    ];
    let out = decode(&stream, big_limits());
    assert_eq!(out.error, None);
    assert_eq!(out.events, expected);
    assert_eq!(decode_bytewise(&stream, big_limits()).events, expected);
}

#[test]
fn tungstenite_fragmented_frames_decode_here() {
    let mut rng = Rng(11);
    for round in 0..50 {
        let chars = rng.below(400);
        let text = rng.text(chars);
        let bytes = text.as_bytes();
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut cuts: Vec<usize> = (0..3).map(|_| rng.below(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        let mut start = 0;
        for (i, &end) in cuts.iter().enumerate() {
            let op = if i == 0 { Data::Text } else { Data::Continue };
            let fin = i + 1 == cuts.len();
            let mut frame = Frame::message(bytes[start..end].to_vec(), TOpCode::Data(op), fin);
            frame.header_mut().mask = Some(rng.mask());
            frame.format(&mut stream).unwrap();
            start = end;
            if !fin {
                let n = rng.below(20);
                let payload = rng.bytes(n);
                let mut ping = Frame::ping(payload.clone());
                ping.header_mut().mask = Some(rng.mask());
                ping.format(&mut stream).unwrap();
                expected.push(Ev::Ping(payload));
            }
        }
        expected.push(Ev::Text(text.clone()));
        let cut = rng.below(stream.len() + 1);
        let out = decode_with_cuts(&stream, &[cut], Limits::default());
        assert_eq!(out.error, None, "round {round}");
        assert_eq!(out.events, expected, "round {round}");
    }
}

#[test]
fn our_server_frames_decode_in_tungstenite_client() {
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
    let mut stream = Vec::new();
    encode_frame(OpCode::Text, "héllo 😀".as_bytes(), &mut stream);
    encode_frame(OpCode::Binary, &big, &mut stream);
    encode_frame(OpCode::Text, "y".repeat(126).as_bytes(), &mut stream);
    encode_frame(OpCode::Binary, &[], &mut stream);
    encode_frame(OpCode::Ping, b"ping", &mut stream);
    encode_frame(OpCode::Pong, b"pong", &mut stream);
    encode_close(1000, &"reason é".repeat(30), &mut stream);
    let mut ws = tungstenite(Role::Client, stream);
    let (events, error) = read_all(&mut ws);
    assert_eq!(error, None);
    let mut truncated = "reason é".repeat(30);
    truncated.truncate(123);
    while !truncated.is_char_boundary(truncated.len()) {
        truncated.pop();
    }
    assert_eq!(
        events,
        vec![
            Ev::Text("héllo 😀".into()),
            Ev::Binary(big),
            Ev::Text("y".repeat(126)),
            Ev::Binary(vec![]),
            Ev::Ping(b"ping".to_vec()),
            Ev::Pong(b"pong".to_vec()),
            Ev::Close(Some((1000, truncated))),
        ]
    );
}

#[test]
fn our_client_frames_decode_in_tungstenite_server() {
    let mut rng = Rng(5);
    let mut stream = Vec::new();
    encode_client_frame(
        OpCode::Text,
        false,
        "fr".as_bytes(),
        rng.mask(),
        &mut stream,
    );
    encode_client_frame(OpCode::Ping, true, b"mid", rng.mask(), &mut stream);
    encode_client_frame(
        OpCode::Continuation,
        true,
        "ag €".as_bytes(),
        rng.mask(),
        &mut stream,
    );
    let big = rng.bytes(66_000);
    encode_client_frame(OpCode::Binary, true, &big, rng.mask(), &mut stream);
    let mut close = Vec::new();
    encode_close(3000, "app", &mut close);
    encode_client_frame(OpCode::Close, true, &close[2..], rng.mask(), &mut stream);
    let mut ws = tungstenite(Role::Server, stream);
    let (events, error) = read_all(&mut ws);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Ev::Ping(b"mid".to_vec()),
            Ev::Text("frag €".into()),
            Ev::Binary(big),
            Ev::Close(Some((3000, "app".into()))),
        ]
    );
}

/// Streams that violate RFC 6455: tungstenite (server role) and our decoder both refuse each.
#[test]
fn both_implementations_refuse_the_same_violations() {
    let m = [1, 2, 3, 4];
    let frame = |op, fin, payload: &[u8]| {
        let mut v = Vec::new();
        encode_client_frame(op, fin, payload, m, &mut v);
        v
    };
    let concat = |parts: &[Vec<u8>]| parts.concat();
    let mut unmasked = Vec::new();
    encode_frame(OpCode::Text, b"x", &mut unmasked);
    let mut rsv = frame(OpCode::Text, true, b"x");
    rsv[0] |= 0x40;
    let mut reserved_op = frame(OpCode::Binary, true, b"x");
    reserved_op[0] = 0x83;
    let mut close_1005 = 1005u16.to_be_bytes().to_vec();
    close_1005.extend_from_slice(b"r");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", unmasked),
        ("rsv1", rsv),
        ("reserved opcode", reserved_op),
        ("fragmented ping", frame(OpCode::Ping, false, b"")),
        ("long ping", frame(OpCode::Ping, true, &[0; 126])),
        (
            "orphan continuation",
            frame(OpCode::Continuation, true, b"x"),
        ),
        (
            "text inside fragmented message",
            concat(&[
                frame(OpCode::Text, false, b"a"),
                frame(OpCode::Text, true, b"b"),
            ]),
        ),
        ("invalid utf-8", frame(OpCode::Text, true, &[0xC3, 0x28])),
        (
            "utf-8 cut at message end",
            concat(&[
                frame(OpCode::Text, false, &[0xE2, 0x82]),
                frame(OpCode::Continuation, true, b""),
            ]),
        ),
        ("close code 1005", frame(OpCode::Close, true, &close_1005)),
        (
            "close payload of one byte",
            frame(OpCode::Close, true, &[3]),
        ),
    ];
    for (name, stream) in cases {
        let ours = decode(&stream, Limits::default());
        assert!(ours.error.is_some(), "{name}: we accepted it");
        let mut ws = tungstenite(Role::Server, stream);
        let (events, theirs) = read_all(&mut ws);
        // tungstenite refuses a forbidden close code by substituting 1002 in its reply.
        let refused_close = events.contains(&Ev::Close(Some((1002, "Protocol violation".into()))));
        assert!(
            theirs.is_some() || refused_close,
            "{name}: tungstenite accepted it"
        );
    }
}
