//! Going live end to end, with real clients: ffmpeg publishes a test pattern with a tone over
//! RTMP to the real server, a viewer WebSocket follows the stream's state, and ffprobe and a
//! raw HTTP client read the live HLS the shards serve on the viewer port.
//!
//! Every wait is bounded (`MEDIA_WAIT`); every ffmpeg runs with `-t` and is killed when its
//! handle drops. Needs `ffmpeg` and `ffprobe` on PATH (Debian package `ffmpeg`; CI installs it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::hls::{read_one_response, request as http, split_response, target};
use common::media::*;
use common::*;
use serde_json::{json, Value};

/// Upper bound of every wait on media (ffmpeg start, segments, ends).
/// `EXT-X-MEDIA-SEQUENCE` and the segment URIs of a playlist.
fn parse_playlist(text: &str) -> (u64, Vec<String>) {
    let seq = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {text}"));
    let uris = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    (seq, uris)
}

fn create_stream(server: &Server, id: &str) -> (String, Value) {
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({ "id": id })));
    assert_eq!(status, 201, "{body}");
    let key = body["stream_key"].as_str().expect("stream_key").to_owned();
    assert_eq!(
        key.len(),
        33,
        "128 bits as two groups of 16 hex digits: {key}"
    );
    assert_eq!(
        body["publish_url"],
        format!("rtmp://{}/live", server.rtmp),
        "{body}"
    );
    (key, body)
}

fn stream_of(server: &Server, id: &str) -> Value {
    let (status, body) = server.api("GET", "/api/streams", None);
    assert_eq!(status, 200);
    body["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id).cloned())
        .unwrap_or_else(|| panic!("no stream {id} in {body}"))
}

/// A viewer whose reads wait up to `MEDIA_WAIT` (a broadcast takes a while to change).
fn patient_viewer(server: &Server) -> Ws {
    let (mut ws, _) = connect(&server.url(""), None);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(MEDIA_WAIT)).unwrap();
    }
    ws
}

#[test]
fn a_broadcast_goes_live_plays_slides_reconnects_and_ends() {
    let server = Server::start(&["--shards", "2", "--hls-window", "3"]);
    let (key, created) = create_stream(&server, "main");
    assert_eq!(created["state"], "offline");

    let mut viewer = patient_viewer(&server);
    send_json(&mut viewer, &json!({"type": "watch", "stream": "main"}));
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "offline"})
    );
    let first = next_of_type(&mut viewer, "endpoint");
    let offline = http(
        server.viewer,
        "GET",
        &target(first["url"].as_str().unwrap()),
    );
    assert_eq!(offline.status, 503, "{}", offline.head);
    assert!(offline.head.contains("Retry-After: 2"), "{}", offline.head);

    // Live: the audience hears it, then gets a fresh endpoint.
    let ffmpeg = Publisher::start(server.rtmp, &key, 14);
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "live"})
    );
    let endpoint = next_json(&mut viewer);
    assert_eq!(endpoint["type"], "endpoint", "{endpoint}");
    let url = endpoint["url"].as_str().unwrap().to_owned();
    let session = endpoint["session"].as_str().unwrap().to_owned();
    // The session's own playlist, signed (tests/sessions.rs checks the signature).
    assert!(
        url.starts_with(&format!(
            "http://{}/hls/main/index.m3u8?session={session}&exp=",
            server.viewer
        )) && url.contains("&sig="),
        "{url}"
    );
    let listed = stream_of(&server, "main");
    assert_eq!(listed["state"], "live", "{listed}");
    assert_eq!(listed["live"], true);
    assert!(listed["publisher"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));

    // The first segment appears; ffprobe reads H.264 and AAC from the live playlist.
    let playlist = wait_for("a first segment", || {
        let r = http(server.viewer, "GET", &target(&url));
        (r.status == 200).then_some(r)
    });
    assert!(playlist
        .head
        .contains("Content-Type: application/vnd.apple.mpegurl"));
    assert!(playlist.head.contains("Cache-Control: max-age=1"));
    assert!(playlist.head.contains("Access-Control-Allow-Origin: *"));
    let text = playlist.text();
    assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:"), "{text}");
    assert!(
        text.contains(&format!("0.ts?session={session}\n")),
        "the session stays in segment URIs: {text}"
    );
    let probe = ffprobe(&url);
    let found = String::from_utf8_lossy(&probe.stdout);
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(found.contains("codec_name=h264"), "{found}");
    assert!(found.contains("codec_name=aac"), "{found}");

    // Keep-alive: a segment, HEAD and a preflight on one connection, pipelined.
    let mut conn = TcpStream::connect(server.viewer).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let host = server.viewer;
    write!(
        conn,
        "GET /hls/main/0.ts?session={session} HTTP/1.1\r\nHost: {host}\r\n\r\n\
         HEAD /hls/main/0.ts HTTP/1.1\r\nHost: {host}\r\n\r\n\
         OPTIONS /hls/main/index.m3u8 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let seg = split_response(&raw);
    assert_eq!(seg.status, 200, "{}", seg.head);
    assert!(seg.head.contains("Content-Type: video/mp2t"));
    assert!(seg.head.contains("immutable"));
    let len: usize = seg
        .head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .expect("length");
    assert!(len > 188 && len % 188 == 0, "whole TS packets: {len}");
    assert_eq!(seg.body[0], 0x47, "TS sync byte");
    let rest = split_response(&seg.body[len..]);
    assert_eq!(rest.status, 200, "HEAD: {}", rest.head);
    assert!(rest.head.contains(&format!("Content-Length: {len}")));
    let preflight = split_response(&rest.body);
    assert_eq!(preflight.status, 204, "{}", preflight.head);
    assert!(preflight
        .head
        .contains("Access-Control-Allow-Methods: GET, HEAD, OPTIONS"));

    // The window slides: the media sequence advances and segment 0 leaves (404).
    let slid = wait_for("the window to slide", || {
        let text = http(server.viewer, "GET", &target(&url)).text();
        let (seq, uris) = parse_playlist(&text);
        (seq >= 1).then_some((seq, uris))
    });
    assert!(slid.1.len() <= 3, "window of 3: {:?}", slid.1);
    assert_eq!(http(server.viewer, "GET", "/hls/main/0.ts").status, 404);
    let bitrate = wait_for("a bitrate", || {
        let s = stream_of(&server, "main");
        (s["bitrate_kbps"].as_u64() > Some(0)).then_some(s)
    });
    assert!(bitrate["bitrate_kbps"].as_u64() < Some(10_000), "{bitrate}");

    // Kill the publisher: the stream ends and the audience hears it.
    drop(ffmpeg);
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "ended"})
    );
    let ended = http(server.viewer, "GET", &target(&url)).text();
    assert!(ended.ends_with("#EXT-X-ENDLIST\n"), "{ended}");
    let (seq_before, uris_before) = parse_playlist(&ended);
    let last_before: u64 = uris_before
        .last()
        .and_then(|u| u.split('.').next())
        .and_then(|n| n.parse().ok())
        .expect("a segment");

    // A restarted publisher continues the same stream after a discontinuity.
    let again = Publisher::start(server.rtmp, &key, 4);
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "live"})
    );
    assert_eq!(next_json(&mut viewer)["type"], "endpoint");
    let continued = wait_for("a segment after the reconnect", || {
        let text = http(server.viewer, "GET", &target(&url)).text();
        text.contains("#EXT-X-DISCONTINUITY\n").then_some(text)
    });
    let (seq_after, _) = parse_playlist(&continued);
    assert!(seq_after >= seq_before, "{continued}");
    let after = continued.split("#EXT-X-DISCONTINUITY\n").nth(1).unwrap();
    assert!(
        after.contains(&format!("{}.ts", last_before + 1)),
        "sequence numbers go on: {continued}"
    );
    assert!(!continued.contains("#EXT-X-ENDLIST"), "{continued}");

    // ffmpeg stops by itself (-t): the stream ends again.
    let (ok, err) = again.wait();
    assert!(ok, "ffmpeg failed: {err}");
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "main", "state": "ended"})
    );
    assert_eq!(stream_of(&server, "main")["state"], "ended");
    let stats = server.api("GET", "/api/stats", None).1;
    assert_eq!(stats["ingest"]["refused_key"], 0, "{stats}");
    assert!(stats["ingest"]["segments"].as_u64() >= Some(5), "{stats}");
}

#[test]
fn wrong_keys_second_publishers_and_garbage_are_refused_and_the_live_stream_goes_on() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--rtmp-handshake-timeout-ms",
        "1000",
        "--rtmp-idle-timeout-ms",
        "3000",
    ]);
    let (key, _) = create_stream(&server, "s");
    let _live = Publisher::start(server.rtmp, &key, 20);
    let playlist = "/hls/s/index.m3u8";
    wait_for("the stream to be live with a segment", || {
        (http(server.viewer, "GET", playlist).status == 200).then_some(())
    });

    let (ok, err) = Publisher::start(server.rtmp, "0123456789abcdef-0123456789abcdef", 2).wait();
    assert!(!ok, "a wrong key must fail ffmpeg");
    assert!(err.contains("BadName") || err.contains("unknown"), "{err}");
    let (ok, _) = Publisher::start(server.rtmp, &key, 2).wait();
    assert!(!ok, "a second publisher on a live stream is refused");

    // Garbage, an HTTP request and a stalled handshake on the RTMP port: each is closed.
    for junk in [&b"\x07garbage bytes"[..], b"GET / HTTP/1.1\r\n\r\n", b""] {
        let mut s = TcpStream::connect(server.rtmp).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(junk).unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    // A valid C0 then an oversized garbage C1 stream: the handshake answers, the chunk stream
    // that follows is nonsense.
    let mut s = TcpStream::connect(server.rtmp).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut bytes = vec![3u8];
    bytes.extend((0..1536 * 2 + 4096).map(|i| (i * 7 % 251) as u8));
    let _ = s.write_all(&bytes);
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);

    // An unsupported codec (Sorenson Spark video) on another stream: refused, counted, ended.
    let (odd_key, _) = create_stream(&server, "odd");
    let (ok, _) = Publisher::start_with(server.rtmp, &odd_key, 3, &["-c:v", "flv"]).wait();
    assert!(!ok, "ffmpeg fails when its publish is cut for the codec");
    assert_eq!(stream_of(&server, "odd")["state"], "ended");

    let stats = server.wait_stats("refusals counted", |s| {
        s["ingest"]["refused_key"] == 1
            && s["ingest"]["refused_busy"] == 1
            && s["ingest"]["refused_codec"] == 1
            && s["ingest"]["closed_bad"].as_u64() >= Some(3)
    });
    assert_eq!(stats["ingest"]["live"], 1, "{stats}");

    // The live stream keeps producing segments.
    let before = parse_playlist(&http(server.viewer, "GET", playlist).text());
    wait_for("a new segment after the garbage", || {
        let now = parse_playlist(&http(server.viewer, "GET", playlist).text());
        (now.1.last() != before.1.last()).then_some(())
    });
    assert_eq!(stream_of(&server, "s")["state"], "live");
}

#[test]
fn the_stream_directory_and_keys_survive_a_restart() {
    let mut server = Server::start(&["--shards", "1"]);
    let (key, _) = create_stream(&server, "kept");
    let (status, rotated) = server.api("POST", "/api/streams/kept/key", None);
    assert_eq!(status, 200, "{rotated}");
    let new_key = rotated["stream_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(
        server.api("POST", "/api/streams/nope/key", None).0,
        404,
        "rotating an unknown stream"
    );
    server.keep_data = true;
    assert!(server.terminate().success());
    let dir = server.data_dir.clone();
    drop(server);

    let server = Server::start_in(&["--shards", "1"], dir);
    let kept = stream_of(&server, "kept");
    assert_eq!(kept["state"], "offline", "{kept}");
    assert!(
        kept.get("stream_key").is_none(),
        "keys are never shown again"
    );
    let stored = std::fs::read(server.data_dir.join("ovation.redb")).unwrap();
    assert!(
        !stored
            .windows(new_key.len())
            .any(|w| w == new_key.as_bytes()),
        "only the key's hash is stored"
    );

    let (ok, _) = Publisher::start(server.rtmp, &key, 2).wait();
    assert!(!ok, "the rotated-out key is refused after the restart");
    let publisher = Publisher::start(server.rtmp, &new_key, 3);
    wait_for("the kept stream to serve a segment", || {
        (http(server.viewer, "GET", "/hls/kept/index.m3u8").status == 200).then_some(())
    });
    let (ok, err) = publisher.wait();
    assert!(ok, "{err}");
}

/// Without a publisher: an HLS connection holds a seat of `max_connections` like a viewer,
/// answers keep-alive until it idles out, and refuses what it does not serve.
#[test]
fn hls_connections_take_seats_idle_out_and_refuse_bad_requests() {
    // An HLS keep-alive connection holding the only seat of a server whose stream is known to
    // its shard (the shard learns of a new stream just after the API answers: until then the
    // playlist is 404, so wait for the 503 "offline"; a refused seat is retried the same way).
    fn hold_the_seat(server: &Server) -> TcpStream {
        wait_for("an HLS connection on the offline stream", || {
            let mut hls = TcpStream::connect(server.viewer).unwrap();
            hls.set_read_timeout(Some(WAIT)).unwrap();
            write!(
                hls,
                "GET /hls/quiet/index.m3u8?session=s1 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .ok()?;
            let first = read_one_response(&mut hls);
            (first.status == 503 && first.text() == "the stream is offline\n").then(|| {
                assert!(
                    first.head.contains("Connection: keep-alive"),
                    "{}",
                    first.head
                );
                hls
            })
        })
    }
    let flags = |idle_ms: &'static str| {
        [
            "--shards",
            "1",
            "--max-connections",
            "1",
            "--hls-idle-timeout-ms",
            idle_ms,
        ]
    };

    // The one seat is held: a viewer upgrade is refused while the HLS connection is open (the
    // idle timeout is far beyond this check, however slow the machine).
    let server = Server::start(&flags("60000"));
    create_stream(&server, "quiet");
    let _hls = hold_the_seat(&server);
    let mut raw = Raw::connect(server.viewer);
    raw.send_bytes(Raw::request(server.viewer, "/v1/viewer", "").as_bytes());
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    drop(server);

    // Idle past hls_idle_timeout_ms: the server closes it and the seat comes back.
    let server = Server::start(&flags("300"));
    create_stream(&server, "quiet");
    let mut hls = hold_the_seat(&server);
    let mut buf = [0u8; 4096];
    let idle = hls.read(&mut buf);
    assert!(
        matches!(idle, Ok(0)),
        "the server closes an idle HLS connection: {idle:?}"
    );
    let (_viewer, welcome) = wait_for("the seat to come back", || {
        let mut raw = Raw::connect(server.viewer);
        raw.send_bytes(Raw::request(server.viewer, "/v1/viewer", "").as_bytes());
        let head = raw.read_head();
        head.starts_with("HTTP/1.1 101").then(|| {
            let w = raw.frame().json();
            (raw, w)
        })
    });
    assert_eq!(welcome["type"], "welcome");
}

#[test]
fn hls_answers_unknown_streams_methods_and_malformed_requests() {
    let server = Server::start(&["--shards", "1"]);
    create_stream(&server, "s");
    assert_eq!(
        http(server.viewer, "GET", "/hls/nope/index.m3u8").status,
        404
    );
    assert_eq!(http(server.viewer, "GET", "/hls/s/7.ts").status, 404);
    let post = http(server.viewer, "POST", "/hls/s/index.m3u8");
    assert_eq!(post.status, 405);
    assert!(post.head.contains("Allow: GET, HEAD, OPTIONS"));
    let mut s = TcpStream::connect(server.viewer).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /hls/s/index.m3u8 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let bad = split_response(&raw);
    assert_eq!(bad.status, 400, "{}", bad.head);
    assert!(bad.head.contains("Connection: close"));
    // The viewer WebSocket on the same port is unaffected.
    let (_ws, welcome) = connect(&server.url(""), None);
    assert_eq!(welcome["type"], "welcome");
}

/// A publisher that stops sending (ffmpeg frozen with SIGSTOP, its socket still open) ends its
/// stream after `rtmp_idle_timeout_ms`, and the audience hears it.
#[test]
fn a_silent_publisher_ends_its_stream() {
    let server = Server::start(&["--shards", "1", "--rtmp-idle-timeout-ms", "1500"]);
    let (key, _) = create_stream(&server, "frozen");
    let mut viewer = patient_viewer(&server);
    send_json(&mut viewer, &json!({"type": "watch", "stream": "frozen"}));
    assert_eq!(next_json(&mut viewer)["state"], "offline");
    assert_eq!(next_json(&mut viewer)["type"], "endpoint");
    let ffmpeg = Publisher::start(server.rtmp, &key, 30);
    assert_eq!(next_json(&mut viewer)["state"], "live");
    assert_eq!(next_json(&mut viewer)["type"], "endpoint");
    let stopped = Command::new("kill")
        .args(["-STOP", &ffmpeg.pid().to_string()])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    assert_eq!(
        next_json(&mut viewer),
        json!({"type": "stream", "stream": "frozen", "state": "ended"})
    );
    assert_eq!(stream_of(&server, "frozen")["state"], "ended");
    let stats = server.wait_stats("the timeout counted", |s| s["ingest"]["closed_bad"] == 1);
    assert_eq!(stats["ingest"]["live"], 0);
    drop(ffmpeg);
}

/// TLS end to end: ffmpeg publishes over RTMPS (`rtmps_listen`, the server's certificate made
/// here, self-signed), the stream goes live and plays over plain HTTP and over HTTPS from the
/// TLS viewer port; a plain RTMP client on the RTMPS port is dropped without disturbing it.
#[test]
fn a_broadcast_goes_live_over_rtmps_and_plays_over_https() {
    let dir = std::env::temp_dir().join(format!("ovation-rtmps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key_pair)
        .unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let server = Server::start(&[
        "--rtmps-listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let rtmps = server
        .rtmps
        .expect("the ready line names the RTMPS listener");
    let (key, _) = create_stream(&server, "secure");

    // ffmpeg's TLS client does not verify the certificate unless told to (-tls_verify 1).
    let publisher = Publisher::start_url(
        &format!("rtmps://{rtmps}/live/{key}"),
        8,
        &["-c:v", "libx264", "-g", "25"],
    );
    let playlist = wait_for("the RTMPS publish to go live with a segment", || {
        let s = stream_of(&server, "secure");
        (s["state"] == "live" && !s["last_segment"].is_null()).then_some(s)
    });
    assert_eq!(playlist["live"], true, "{playlist}");

    // A plain RTMP handshake on the TLS port is not TLS: the connection is dropped.
    let mut plain = TcpStream::connect(rtmps).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    let _ = plain.write_all(&c0c1);
    let mut buf = [0u8; 64];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        n == 0 || buf[0] != 3,
        "no RTMP answer on the RTMPS port: {:?}",
        &buf[..n]
    );

    let url = format!("http://{}/hls/secure/index.m3u8", server.viewer);
    let probe = ffprobe(&url);
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        codecs.contains("codec_name=h264") && codecs.contains("codec_name=aac"),
        "ffprobe over the RTMPS-fed stream: {codecs} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // The same playlist over HTTPS on the TLS viewer port (ffprobe does not verify the
    // self-signed certificate by default).
    let tls = server
        .tls
        .expect("the ready line names the TLS viewer listener");
    let probe = ffprobe(&format!("https://{tls}/hls/secure/index.m3u8"));
    let codecs = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        codecs.contains("codec_name=h264") && codecs.contains("codec_name=aac"),
        "ffprobe over HTTPS: {codecs} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(stream_of(&server, "secure")["state"], "live");
    let (ok, err) = publisher.wait();
    assert!(ok, "ffmpeg publishing over rtmps: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
