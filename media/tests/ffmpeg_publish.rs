//! Real ffmpeg publishes over RTMP to the sans-IO session, driven by a tiny blocking TCP loop
//! on 127.0.0.1:0; the stream is segmented, written to a temp dir, and ffprobe reads the
//! playlist back. A wrong stream key is refused and ffmpeg exits non-zero.
//!
//! Needs `ffmpeg` and `ffprobe` on PATH (Debian package `ffmpeg`; CI installs it).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use media::playlist::{LivePlaylist, UriTemplate};
use media::rtmp::handshake::HandshakeKind;
use media::rtmp::{Event, ServerSession, SessionConfig};
use media::segmenter::{Segmenter, SegmenterConfig};

const KEY: &str = "k3y-0123456789abcdef";
/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(60);

fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is not installed or not on PATH: this test runs real ffmpeg/ffprobe \
         (Debian: apt-get install ffmpeg; CI installs it)"
    );
}

fn spawn_ffmpeg(port: u16, key: &str, secs: u32) -> Child {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-g", "25", "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{port}/live/{key}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Waits for the child with a deadline; kills it if the deadline passes.
fn wait_bounded(child: Child) -> (ExitStatus, String) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => {
            let output = output.expect("wait for ffmpeg");
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            (output.status, stderr)
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("ffmpeg did not exit within {WAIT:?}");
        }
    }
}

fn accept_bounded(listener: TcpListener) -> TcpStream {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(s, _)| s));
    });
    let stream = rx
        .recv_timeout(WAIT)
        .expect("ffmpeg connected in time")
        .expect("accept");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[derive(Default)]
struct Served {
    requested: Vec<(String, String)>,
    refused: bool,
    unpublished: bool,
    media_errors: Vec<String>,
    segments: usize,
    handshake: Option<HandshakeKind>,
}

/// Where a publish goes: one segmenter and playlist that outlive a connection, as a
/// stream outlives a publisher that reconnects; files are written to `dir`.
struct Sink {
    dir: PathBuf,
    segmenter: Segmenter,
    playlist: LivePlaylist,
    uris: UriTemplate,
}

impl Sink {
    fn new(dir: PathBuf) -> Self {
        Sink {
            dir,
            segmenter: Segmenter::new(SegmenterConfig::default()),
            playlist: LivePlaylist::new(6, 2),
            uris: UriTemplate::new("seg-{seq}.ts").unwrap(),
        }
    }

    fn store(&mut self, seg: Option<media::segmenter::Segment>) -> usize {
        let Some(seg) = seg else { return 0 };
        std::fs::write(self.dir.join(format!("seg-{}.ts", seg.sequence)), &seg.data).unwrap();
        self.playlist.push(seg);
        self.write_playlist();
        1
    }

    fn write_playlist(&self) {
        let text = self.playlist.render(&self.uris, &[]);
        std::fs::write(self.dir.join("index.m3u8"), text).unwrap();
    }
}

/// Runs one connection to its end; media goes to `sink` if given. The segment in progress
/// is closed at the end, as a publisher may come back (`Segmenter::restart`).
fn serve(mut sock: TcpStream, mut sink: Option<&mut Sink>) -> Served {
    let mut session = ServerSession::new(SessionConfig {
        epoch_ms: now_ms() as u32,
        ..SessionConfig::default()
    });
    let mut served = Served::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read from ffmpeg: {e}"),
        };
        let result = session.handle_input(&buf[..n]);
        served.handshake = session.handshake_kind();
        while let Some(event) = session.poll_event() {
            match event {
                Event::PublishRequested { app, name, .. } => {
                    served.requested.push((app, name.clone()));
                    if name == KEY {
                        session.accept_publish();
                    } else {
                        session.reject_publish("stream key refused");
                        served.refused = true;
                    }
                }
                Event::Media {
                    kind,
                    timestamp,
                    data,
                } => {
                    if let Some(sink) = sink.as_deref_mut() {
                        match sink.segmenter.push(kind, timestamp, &data, now_ms()) {
                            Ok(seg) => served.segments += sink.store(seg),
                            Err(e) => served.media_errors.push(e.to_string()),
                        }
                    }
                }
                Event::Unpublished { .. } => served.unpublished = true,
                Event::Connected { .. } | Event::Metadata { .. } => {}
            }
        }
        let reply = session.take_output();
        if !reply.is_empty() && sock.write_all(&reply).is_err() {
            break;
        }
        if served.refused {
            let _ = sock.shutdown(std::net::Shutdown::Both);
            return served;
        }
        result.expect("ffmpeg's stream is valid RTMP");
    }
    session.close();
    while let Some(event) = session.poll_event() {
        served.unpublished |= matches!(event, Event::Unpublished { .. });
    }
    if let Some(sink) = sink {
        let seg = sink.segmenter.restart();
        served.segments += sink.store(seg);
    }
    served
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ovation-media-{name}-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn wrong_key_is_refused_and_ffmpeg_exits_non_zero() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = spawn_ffmpeg(port, "not-the-key", 5);
    let served = serve(accept_bounded(listener), None);
    let (status, stderr) = wait_bounded(child);
    assert_eq!(
        served.requested,
        vec![("live".to_owned(), "not-the-key".to_owned())]
    );
    assert!(served.refused);
    assert!(!status.success(), "ffmpeg must fail on a refused key");
    assert!(
        stderr.contains("BadName") || stderr.contains("refused"),
        "ffmpeg reports the refusal: {stderr}"
    );
}

#[test]
fn ffmpeg_publish_is_segmented_into_a_playlist_ffprobe_reads() {
    let dir = temp_dir("publish");
    let mut sink = Sink::new(dir.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = spawn_ffmpeg(port, KEY, 5);
    let served = serve(accept_bounded(listener), Some(&mut sink));
    sink.playlist.end();
    sink.write_playlist();
    let (status, stderr) = wait_bounded(child);
    assert!(status.success(), "ffmpeg failed: {stderr}");
    assert_eq!(served.requested, vec![("live".to_owned(), KEY.to_owned())]);
    assert!(served.media_errors.is_empty(), "{:?}", served.media_errors);
    // ffmpeg always sends the digest form of C1.
    assert!(
        matches!(served.handshake, Some(HandshakeKind::Digest { .. })),
        "{:?}",
        served.handshake
    );
    assert!(
        served.unpublished,
        "FCUnpublish/deleteStream or close ends the publish"
    );
    // 5 s with a keyframe every second and a 2 s target: 2 s, 2 s, 1 s.
    assert!(
        (3..=4).contains(&served.segments),
        "segments: {}",
        served.segments
    );

    let playlist = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    assert!(playlist.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n"));
    assert!(playlist.contains("#EXT-X-TARGETDURATION:2\n"), "{playlist}");
    assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
    assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:"));
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));

    eprintln!("{playlist}");
    let duration = probe_h264_aac(&dir.join("index.m3u8"));
    assert!((4.0..=6.5).contains(&duration), "duration {duration}");
    decodes_clean(&dir.join("index.m3u8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_publisher_that_reconnects_continues_the_playlist_after_a_discontinuity() {
    let dir = temp_dir("reconnect");
    let mut sink = Sink::new(dir.clone());
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let child = spawn_ffmpeg(port, KEY, 3);
        let served = serve(accept_bounded(listener), Some(&mut sink));
        let (status, stderr) = wait_bounded(child);
        assert!(status.success(), "ffmpeg failed: {stderr}");
        assert!(served.media_errors.is_empty(), "{:?}", served.media_errors);
    }
    sink.playlist.end();
    sink.write_playlist();
    let playlist = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    eprintln!("{playlist}");
    // 3 s each: 2 s + 1 s, then a discontinuity and 2 s + 1 s again, sequence numbers going on.
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "{playlist}"
    );
    assert_eq!(playlist.matches("#EXTINF:").count(), 4, "{playlist}");
    let second = playlist.split("#EXT-X-DISCONTINUITY\n").nth(1).unwrap();
    assert!(second.contains("seg-2.ts") && second.contains("seg-3.ts"));
    let duration = probe_h264_aac(&dir.join("index.m3u8"));
    assert!((5.0..=7.5).contains(&duration), "duration {duration}");
    decodes_clean(&dir.join("index.m3u8"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// ffprobe reports H.264 and AAC; returns the duration it reports.
fn probe_h264_aac(playlist: &Path) -> f64 {
    let probe = ffprobe(playlist);
    let text = String::from_utf8_lossy(&probe.stdout);
    eprintln!("ffprobe:\n{text}");
    assert!(
        probe.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(text.contains("codec_name=h264"), "{text}");
    assert!(text.contains("codec_name=aac"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.trim().parse().ok())
        .unwrap_or_else(|| panic!("no duration in {text}"))
}

/// A full decode reports nothing at error level (no continuity, PES or AAC errors).
fn decodes_clean(playlist: &Path) {
    let decode = run_bounded(
        Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-i"])
            .arg(playlist)
            .args(["-f", "null", "-"]),
    );
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && errors.trim().is_empty(),
        "{errors}"
    );
}

fn ffprobe(path: &Path) -> Output {
    require_tool("ffprobe");
    run_bounded(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name:format=duration",
            ])
            .args(["-of", "default=noprint_wrappers=1"])
            .arg(path),
    )
}

fn run_bounded(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(WAIT)
        .expect("tool finished in time")
        .expect("tool output")
}
