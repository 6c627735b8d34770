use super::*;
use crate::rtmp::handshake::{client, PACKET};
use crate::rtmp::ChunkError;

/// The client side of a conversation: encodes commands, decodes the server's answers.
struct Client {
    enc: ChunkEncoder,
    dec: ChunkDecoder,
}

impl Client {
    fn new() -> Self {
        Client {
            enc: ChunkEncoder::default(),
            dec: ChunkDecoder::new(Limits::default()),
        }
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0Value]) -> Vec<u8> {
        let mut body = Vec::new();
        for v in values {
            amf0::encode(v, &mut body);
        }
        let mut wire = Vec::new();
        let csid = if stream_id == 0 { 3 } else { 8 };
        self.enc
            .write(csid, 0, chunk::COMMAND_AMF0, stream_id, &body, &mut wire);
        wire
    }

    fn media(&mut self, type_id: u8, timestamp: u32, data: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let csid = if type_id == chunk::AUDIO { 4 } else { 6 };
        self.enc.write(csid, timestamp, type_id, 1, data, &mut wire);
        wire
    }

    /// The server's messages, commands decoded to AMF0.
    fn read(&mut self, bytes: &[u8]) -> Vec<(u8, u32, Vec<Amf0Value>, Vec<u8>)> {
        let mut msgs = Vec::new();
        self.dec.push(bytes, &mut msgs).unwrap();
        msgs.into_iter()
            .map(|m| {
                let values = if m.type_id == chunk::COMMAND_AMF0 {
                    amf0::decode_all(&m.payload, 16).unwrap()
                } else {
                    Vec::new()
                };
                (m.type_id, m.stream_id, values, m.payload)
            })
            .collect()
    }
}

fn s(v: &str) -> Amf0Value {
    Amf0Value::String(v.into())
}

fn n(v: f64) -> Amf0Value {
    Amf0Value::Number(v)
}

fn code_of(values: &[Amf0Value]) -> Option<&str> {
    values.get(3)?.property("code")?.as_str()
}

/// ffmpeg's publish sequence up to the publish command, as one byte stream.
fn ffmpeg_prelude(c: &mut Client, key: &str) -> Vec<u8> {
    let mut wire = client::c0c1(Some(772));
    wire.extend_from_slice(&[0u8; PACKET]);
    let mut sc = Vec::new();
    c.enc.set_chunk_size(4096, &mut sc);
    wire.extend_from_slice(&sc);
    let connect = Amf0Value::Object(vec![
        ("app".into(), s("live")),
        ("type".into(), s("nonprivate")),
        ("flashVer".into(), s("FMLE/3.0 (compatible; Lavf61.7.100)")),
        ("tcUrl".into(), s("rtmp://127.0.0.1:1935/live")),
    ]);
    wire.extend(c.command(0, &[s("connect"), n(1.0), connect]));
    wire.extend(c.command(0, &[s("releaseStream"), n(2.0), Amf0Value::Null, s(key)]));
    wire.extend(c.command(0, &[s("FCPublish"), n(3.0), Amf0Value::Null, s(key)]));
    wire.extend(c.command(0, &[s("createStream"), n(4.0), Amf0Value::Null]));
    wire.extend(c.command(
        1,
        &[s("publish"), n(5.0), Amf0Value::Null, s(key), s("live")],
    ));
    wire
}

fn events(session: &mut ServerSession) -> Vec<Event> {
    std::iter::from_fn(|| session.poll_event()).collect()
}

#[test]
fn publish_flow_split_at_every_position_gives_the_same_answers() {
    let mut reference: Option<(Vec<Event>, Vec<u8>)> = None;
    let wire = ffmpeg_prelude(&mut Client::new(), "KEY");
    for cut in (0..=wire.len())
        .step_by(7)
        .chain([1, 1537, 3073, wire.len() - 1])
    {
        let mut session = ServerSession::new(SessionConfig::default());
        session.handle_input(&wire[..cut]).unwrap();
        session.handle_input(&wire[cut..]).unwrap();
        let got = (events(&mut session), session.take_output());
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "cut at {cut}"),
        }
    }
    let (events, _) = reference.unwrap();
    assert_eq!(
        events,
        vec![
            Event::Connected { app: "live".into() },
            Event::PublishRequested {
                app: "live".into(),
                name: "KEY".into(),
                stream_id: 1
            }
        ]
    );
}

#[test]
fn accepted_publish_answers_each_command_and_carries_media() {
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    session
        .handle_input(&ffmpeg_prelude(&mut c, "KEY"))
        .unwrap();
    let out = session.take_output();
    // S0 S1 S2, then chunked answers.
    assert_eq!(out[0], 3);
    let answers = c.read(&out[1 + 2 * PACKET..]);
    let types: Vec<u8> = answers.iter().map(|a| a.0).collect();
    assert_eq!(
        &types[..2],
        &[chunk::WINDOW_ACK_SIZE, chunk::SET_PEER_BANDWIDTH]
    );
    let results: Vec<&Vec<Amf0Value>> = answers
        .iter()
        .filter(|a| a.0 == chunk::COMMAND_AMF0)
        .map(|a| &a.2)
        .collect();
    assert_eq!(
        results.len(),
        4,
        "connect, releaseStream, FCPublish, createStream"
    );
    assert_eq!(results[0][0], s("_result"));
    assert_eq!(code_of(results[0]), Some("NetConnection.Connect.Success"));
    assert_eq!(results[3][1], n(4.0));
    assert_eq!(results[3][3], n(1.0), "createStream returns stream 1");

    assert!(events(&mut session).len() == 2);
    assert!(session.accept_publish());
    assert!(session.is_publishing());
    let answers = c.read(&session.take_output());
    let status = answers.iter().find(|a| a.0 == chunk::COMMAND_AMF0).unwrap();
    assert_eq!(status.1, 1, "onStatus goes on the publishing stream");
    assert_eq!(status.2[0], s("onStatus"));
    assert_eq!(code_of(&status.2), Some("NetStream.Publish.Start"));

    let mut wire = c.media(chunk::VIDEO, 0, &[0x17, 0, 0, 0, 0, 1]);
    wire.extend(c.media(chunk::AUDIO, 23, &[0xAF, 1, 2]));
    let mut meta = Vec::new();
    for v in [
        s("@setDataFrame"),
        s("onMetaData"),
        Amf0Value::EcmaArray(vec![]),
    ] {
        amf0::encode(&v, &mut meta);
    }
    c.enc.write(4, 0, chunk::DATA_AMF0, 1, &meta, &mut wire);
    session.handle_input(&wire).unwrap();
    let evs = events(&mut session);
    assert_eq!(
        evs[0],
        Event::Media {
            kind: MediaKind::Video,
            timestamp: 0,
            data: vec![0x17, 0, 0, 0, 0, 1]
        }
    );
    assert_eq!(
        evs[1],
        Event::Media {
            kind: MediaKind::Audio,
            timestamp: 23,
            data: vec![0xAF, 1, 2]
        }
    );
    assert!(matches!(&evs[2], Event::Metadata { values } if values[1] == s("onMetaData")));

    let mut wire = c.command(0, &[s("FCUnpublish"), n(6.0), Amf0Value::Null, s("KEY")]);
    wire.extend(c.command(0, &[s("deleteStream"), n(7.0), Amf0Value::Null, n(1.0)]));
    session.handle_input(&wire).unwrap();
    assert_eq!(
        events(&mut session),
        vec![Event::Unpublished {
            app: "live".into(),
            name: "KEY".into()
        }]
    );
    assert!(!session.is_publishing());
}

#[test]
fn rejected_publish_answers_bad_name_and_closes() {
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    session
        .handle_input(&ffmpeg_prelude(&mut c, "WRONG"))
        .unwrap();
    let out = session.take_output();
    c.read(&out[1 + 2 * PACKET..]);
    assert!(session.reject_publish("bad stream key"));
    let answers = c.read(&session.take_output());
    assert_eq!(code_of(&answers[0].2), Some("NetStream.Publish.BadName"));
    assert_eq!(
        answers[0].2[3].property("level"),
        Some(&s("error")),
        "ffmpeg exits non-zero on an error-level status"
    );
    assert_eq!(session.handle_input(&[0]), Err(SessionError::Closed));
    // Closing a refused session reports no unpublish.
    session.close();
    assert!(events(&mut session)
        .iter()
        .all(|e| !matches!(e, Event::Unpublished { .. })));
}

#[test]
fn media_before_accept_and_commands_before_connect_are_errors() {
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    session
        .handle_input(&ffmpeg_prelude(&mut c, "KEY"))
        .unwrap();
    let err = session.handle_input(&c.media(chunk::VIDEO, 0, &[0x17]));
    assert_eq!(err, Err(SessionError::NotPublishing(1)));

    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = client::c0c1(None);
    wire.extend_from_slice(&[0u8; PACKET]);
    wire.extend(c.command(1, &[s("publish"), n(5.0), Amf0Value::Null, s("K")]));
    assert_eq!(
        session.handle_input(&wire),
        Err(SessionError::NotConnected("publish".into()))
    );
}

#[test]
fn acknowledges_the_peer_window_and_answers_pings() {
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = ffmpeg_prelude(&mut c, "KEY");
    c.enc.write(
        2,
        0,
        chunk::WINDOW_ACK_SIZE,
        0,
        &1000u32.to_be_bytes(),
        &mut wire,
    );
    c.enc
        .write(2, 0, chunk::USER_CONTROL, 0, &[0, 6, 0, 0, 1, 2], &mut wire);
    session.handle_input(&wire).unwrap();
    let out = session.take_output();
    let answers = c.read(&out[1 + 2 * PACKET..]);
    let ack = answers
        .iter()
        .find(|a| a.0 == chunk::ACKNOWLEDGEMENT)
        .unwrap();
    assert_eq!(ack.3, (wire.len() as u32).to_be_bytes());
    let pong = answers.iter().find(|a| a.0 == chunk::USER_CONTROL).unwrap();
    assert_eq!(pong.3, vec![0, 7, 0, 0, 1, 2]);
}

#[test]
fn garbage_and_oversized_input_are_typed_errors() {
    let mut session = ServerSession::new(SessionConfig::default());
    assert!(matches!(
        session.handle_input(b"\x16\x03\x01 TLS hello"),
        Err(SessionError::Handshake(_))
    ));

    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = client::c0c1(None);
    wire.extend_from_slice(&[0u8; PACKET]);
    wire.extend_from_slice(&[0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, chunk::VIDEO, 1, 0, 0, 0]);
    assert!(matches!(
        session.handle_input(&wire),
        Err(SessionError::Chunk(ChunkError::MessageTooLong { .. }))
    ));
    let _ = c.read(&[]);

    // A command that is not AMF0.
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = client::c0c1(None);
    wire.extend_from_slice(&[0u8; PACKET]);
    c.enc
        .write(3, 0, chunk::COMMAND_AMF0, 0, &[0x02, 0xFF, 0xFF], &mut wire);
    assert!(matches!(
        session.handle_input(&wire),
        Err(SessionError::Amf(_))
    ));

    // createStream beyond the limit.
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = ffmpeg_prelude(&mut c, "KEY");
    for i in 0..Limits::default().max_streams {
        wire.extend(c.command(
            0,
            &[s("createStream"), n(10.0 + f64::from(i)), Amf0Value::Null],
        ));
    }
    assert_eq!(
        session.handle_input(&wire),
        Err(SessionError::TooManyStreams(Limits::default().max_streams))
    );
}

#[test]
fn deterministic_random_input_never_panics() {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let prelude = ffmpeg_prelude(&mut Client::new(), "KEY");
    for _ in 0..300 {
        let mut session = ServerSession::new(SessionConfig::default());
        let mut wire = prelude.clone();
        // Mutate a few bytes past the handshake, then append noise.
        for _ in 0..(next() % 8) {
            let i = 1 + 2 * PACKET + (next() as usize % (wire.len() - 2 * PACKET - 1));
            wire[i] = next() as u8;
        }
        wire.extend((0..next() % 512).map(|_| next() as u8));
        let _ = session.handle_input(&wire);
        let _ = session.accept_publish();
        let _ = session.handle_input(&[0xC6, 1, 2, 3]);
        events(&mut session);
    }
}

#[test]
fn amf3_command_messages_with_amf0_bodies_are_understood() {
    let mut c = Client::new();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut wire = client::c0c1(None);
    wire.extend_from_slice(&[0u8; PACKET]);
    let mut body = vec![0]; // AMF3 format byte, then AMF0 values
    let app = Amf0Value::Object(vec![("app".into(), s("live/"))]);
    for v in [s("connect"), n(1.0), app] {
        amf0::encode(&v, &mut body);
    }
    c.enc.write(3, 0, chunk::COMMAND_AMF3, 0, &body, &mut wire);
    session.handle_input(&wire).unwrap();
    assert_eq!(
        events(&mut session),
        vec![Event::Connected { app: "live".into() }],
        "a trailing slash on the app name is dropped"
    );
    assert_eq!(
        session.handshake_kind(),
        Some(crate::rtmp::handshake::HandshakeKind::Simple)
    );
}
