//! The zero-copy sender against the plain one, end to end: the same publish served by a
//! server with `zerocopy = on` (threshold 1 byte, so every segment body goes out with
//! `IORING_OP_SEND_ZC`) and by one with `zerocopy = off`; each serves every live segment
//! byte for byte as recorded from the same shared buffer, and the shard counters show which
//! path carried the bytes. Needs `ffmpeg` (Debian package; CI installs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use common::media::*;
use common::*;
use serde_json::{json, Value};

/// Several `GET`s on one keep-alive connection: each body.
fn get_all(addr: SocketAddr, targets: &[String]) -> Vec<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    for t in targets {
        write!(s, "GET {t} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..at]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|n| n.parse().ok())
                    .expect("Content-Length");
                if raw.len() >= at + 4 + len {
                    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                    out.push((status, raw[at + 4..at + 4 + len].to_vec()));
                    raw.drain(..at + 4 + len);
                    break;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = s.read(&mut chunk).expect("read");
            assert!(n > 0, "closed mid-response");
            raw.extend_from_slice(&chunk[..n]);
        }
    }
    out
}

fn counter(stats: &Value, name: &str) -> u64 {
    stats["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["counters"][name].as_u64().unwrap())
        .sum()
}

/// Publishes 4 s to a fresh server started with `flags`; returns the served live segments
/// (sequence, bytes) and the recorded ones, and the stats after.
fn serve_once(flags: &[&str]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Value) {
    let mut args = vec![
        "--shards",
        "2",
        "--hls-segment-ms",
        "1000",
        "--hls-window",
        "10",
    ];
    args.extend_from_slice(flags);
    let server = Server::start(&args);
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({"id": "z"})));
    assert_eq!(status, 201);
    let key = body["stream_key"].as_str().unwrap();
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440", "-t", "4"])
        .args(["-c:v", "libx264", "-g", "25", "-preset", "ultrafast"])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://{}/live/{key}", server.rtmp))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ffmpeg (Debian: apt-get install ffmpeg)");
    assert!(status.success());
    let rec = wait_for("the recording to end", || {
        let (_, body) = server.api("GET", "/api/streams/z/recordings", None);
        body["recordings"]
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|r| r["ended"] == true)
    });
    let n = rec["segments"].as_u64().unwrap();
    assert!(n >= 3, "{rec}");
    let targets: Vec<String> = (0..n).map(|i| format!("/hls/z/{i}.ts")).collect();
    let served: Vec<Vec<u8>> = get_all(server.viewer, &targets)
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200);
            body
        })
        .collect();
    let dir = server
        .data_dir
        .join("recordings/z")
        .join(rec["id"].as_str().unwrap());
    let recorded: Vec<Vec<u8>> = (0..n)
        .map(|i| std::fs::read(dir.join(format!("{i}.ts"))).unwrap())
        .collect();
    let (_, stats) = server.api("GET", "/api/stats", None);
    (served, recorded, stats)
}

#[test]
fn zero_copy_and_plain_sends_serve_byte_identical_segments() {
    let (zc_served, zc_recorded, zc_stats) =
        serve_once(&["--zerocopy", "on", "--zerocopy-threshold-bytes", "1"]);
    assert!(
        zc_served == zc_recorded,
        "zero-copy bodies differ from the segments"
    );
    let (plain_served, plain_recorded, plain_stats) = serve_once(&["--zerocopy", "off"]);
    assert!(
        plain_served == plain_recorded,
        "plain bodies differ from the segments"
    );

    let total: u64 = zc_served.iter().map(|s| s.len() as u64).sum();
    let zc = counter(&zc_stats, "hls_bytes_zerocopy");
    // Where the kernel lacks SEND_ZC, `on` falls back to plain sends (and says so).
    let supported = zc > 0;
    eprintln!("zero-copy bytes {zc} of {total}");
    if supported {
        assert_eq!(
            zc + counter(&zc_stats, "hls_bytes_plain"),
            total,
            "every body byte counted once"
        );
    } else {
        eprintln!("IORING_OP_SEND_ZC unavailable here: only the fallback was exercised");
    }
    assert_eq!(counter(&plain_stats, "hls_bytes_zerocopy"), 0);
    assert_eq!(
        counter(&plain_stats, "hls_bytes_plain"),
        plain_served.iter().map(|s| s.len() as u64).sum::<u64>()
    );
}

#[test]
fn a_bad_zerocopy_setting_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .args([
            "serve",
            "--zerocopy",
            "sometimes",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run ovation");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zerocopy must be auto, on or off"), "{err}");
}
