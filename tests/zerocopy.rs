//! The zero-copy sender against the plain one, end to end: the same publish served by a
//! server with `zerocopy = on` (threshold 1 byte, so every live segment body goes out with
//! `IORING_OP_SEND_ZC`, and every recorded segment with `sendfile` from its file) and by one
//! with `zerocopy = off`, and by one with `zerocopy = auto` (live segments with `sendfile`
//! from unlinked files in its data directory); each serves every live and recorded segment byte for byte
//! as recorded, and the shard counters show which path carried the bytes. A client vanishing
//! while a recorded segment is being sent leaves no descriptor open in the server. Needs
//! `ffmpeg` (Debian package; CI installs it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

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

/// What one server served: the live segments, the same segments from the recording, the
/// recorded files, and the stats after.
struct Served {
    live: Vec<Vec<u8>>,
    recorded: Vec<Vec<u8>>,
    files: Vec<Vec<u8>>,
    stats: Value,
    /// The server's descriptors of live segment files, after the fetches: unlinked files in
    /// its data directory (`... (deleted)`) and memfds (`/memfd:...`).
    unlinked: usize,
    memfds: usize,
}

/// Publishes 4 s to `server` as stream `id`; the ended recording's entry.
fn publish_and_record(server: &Server, id: &str) -> Value {
    let (status, body) = server.api("POST", "/api/streams", Some(&json!({ "id": id })));
    assert_eq!(status, 201);
    let key = body["stream_key"].as_str().unwrap();
    let (ok, err) = Publisher::start(server.rtmp, key, 4).wait();
    assert!(ok, "ffmpeg: {err}");
    wait_for("the recording to end", || {
        let (_, body) = server.api("GET", &format!("/api/streams/{id}/recordings"), None);
        body["recordings"]
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|r| r["ended"] == true)
    })
}

fn start(flags: &[&str]) -> Server {
    let mut args = vec![
        "--shards",
        "2",
        "--hls-segment-ms",
        "1000",
        "--hls-window",
        "10",
    ];
    args.extend_from_slice(flags);
    Server::start(&args)
}

/// Publishes 4 s to a fresh server started with `flags`, then fetches every segment live
/// and from the recording, each set on one keep-alive connection.
fn serve_once(flags: &[&str]) -> Served {
    let server = start(flags);
    let rec = publish_and_record(&server, "z");
    let n = rec["segments"].as_u64().unwrap();
    assert!(n >= 3, "{rec}");
    let id = rec["id"].as_str().unwrap();
    let ok = |(status, body): (u16, Vec<u8>)| {
        assert_eq!(status, 200);
        body
    };
    let live: Vec<String> = (0..n).map(|i| format!("/hls/z/{i}.ts")).collect();
    let live: Vec<Vec<u8>> = get_all(server.viewer, &live).into_iter().map(ok).collect();
    let from_rec: Vec<String> = (0..n).map(|i| format!("/hls/z/rec/{id}/{i}.ts")).collect();
    let recorded: Vec<Vec<u8>> = get_all(server.viewer, &from_rec)
        .into_iter()
        .map(ok)
        .collect();
    let dir = server.data_dir.join("recordings/z").join(id);
    let files = (0..n)
        .map(|i| std::fs::read(dir.join(format!("{i}.ts"))).unwrap())
        .collect();
    // A shard counts a body's bytes once its last send returned, which may be a moment after
    // the client read them: wait (bounded) until every byte served is counted.
    let served: u64 = total(&live) + total(&recorded);
    let stats = wait_for("every body byte counted", || {
        let (_, stats) = server.api("GET", "/api/stats", None);
        let counted: u64 = [
            "hls_bytes_zerocopy",
            "hls_bytes_sendfile",
            "hls_bytes_plain",
        ]
        .iter()
        .map(|name| counter(&stats, name))
        .sum();
        (counted >= served).then_some(stats)
    });
    // The ended stream's window (and its segments' files) stays on the shards.
    let fds = fd_targets(server.child.id());
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    let unlinked = fds
        .iter()
        .filter(|t| t.starts_with(&data_dir) && t.ends_with(" (deleted)"))
        .count();
    let memfds = fds.iter().filter(|t| t.starts_with("/memfd:")).count();
    Served {
        live,
        recorded,
        files,
        stats,
        unlinked,
        memfds,
    }
}

fn total(bodies: &[Vec<u8>]) -> u64 {
    bodies.iter().map(|s| s.len() as u64).sum()
}

#[test]
fn zero_copy_and_plain_sends_serve_byte_identical_segments() {
    let zc = serve_once(&["--zerocopy", "on", "--zerocopy-threshold-bytes", "1"]);
    assert!(
        zc.live == zc.files,
        "zero-copy bodies differ from the segments"
    );
    assert!(
        zc.recorded == zc.files,
        "sendfile bodies differ from the recorded files"
    );
    let plain = serve_once(&["--zerocopy", "off"]);
    assert!(
        plain.live == plain.files,
        "plain bodies differ from the segments"
    );
    assert!(
        plain.recorded == plain.files,
        "plain recorded bodies differ from the files"
    );

    let (live, recorded) = (total(&zc.live), total(&zc.recorded));
    let zc_bytes = counter(&zc.stats, "hls_bytes_zerocopy");
    let sendfile = counter(&zc.stats, "hls_bytes_sendfile");
    let zc_plain = counter(&zc.stats, "hls_bytes_plain");
    eprintln!(
        "live {live} bytes: {zc_bytes} zero-copy; recorded {recorded} bytes: {sendfile} sendfile; \
         {zc_plain} plain in all"
    );
    // sendfile exists on every Linux: recorded bodies take it (a full socket sends one byte
    // plainly, which loopback with an eager reader rarely sees).
    assert!(
        sendfile > 0 && sendfile <= recorded,
        "sendfile carried {sendfile}"
    );
    // Where the kernel lacks SEND_ZC, `on` falls back to plain sends (and says so).
    if zc_bytes == 0 {
        eprintln!("IORING_OP_SEND_ZC unavailable here: only the fallback was exercised");
    }
    assert_eq!(
        zc_bytes + sendfile + zc_plain,
        live + recorded,
        "every body byte counted once"
    );
    assert_eq!(counter(&plain.stats, "hls_bytes_zerocopy"), 0);
    assert_eq!(counter(&plain.stats, "hls_bytes_sendfile"), 0);
    assert_eq!(
        counter(&plain.stats, "hls_bytes_plain"),
        total(&plain.live) + total(&plain.recorded)
    );
}

/// `zerocopy = auto` (the default): live segments go out with `sendfile` from the unlinked
/// file the application core makes of each in the data directory (a memfd only where its
/// file system lacks `O_TMPFILE`), recorded ones from their files; the same bytes as
/// recorded, and no `SEND_ZC` at all.
#[test]
fn auto_sends_live_segments_from_unlinked_files() {
    let auto = serve_once(&["--zerocopy", "auto", "--zerocopy-threshold-bytes", "1"]);
    eprintln!(
        "live segment files held: {} unlinked in the data directory, {} memfds",
        auto.unlinked, auto.memfds
    );
    assert!(
        auto.unlinked + auto.memfds > 0,
        "the window's segments have files"
    );
    // The test's data directory is under the temp dir: a memfd here means O_TMPFILE failed.
    let tmpfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(std::env::temp_dir())
        .is_ok();
    if tmpfile {
        assert_eq!(auto.memfds, 0, "O_TMPFILE works here: no memfd");
    }
    assert!(auto.live == auto.files, "sendfile live bodies differ");
    assert!(
        auto.recorded == auto.files,
        "sendfile recorded bodies differ"
    );
    let (live, recorded) = (total(&auto.live), total(&auto.recorded));
    let sendfile = counter(&auto.stats, "hls_bytes_sendfile");
    let plain = counter(&auto.stats, "hls_bytes_plain");
    eprintln!("live {live} + recorded {recorded} bytes: {sendfile} sendfile, {plain} plain");
    assert_eq!(counter(&auto.stats, "hls_bytes_zerocopy"), 0);
    assert_eq!(
        sendfile + plain,
        live + recorded,
        "every body byte counted once"
    );
    // Each waiting byte goes plainly; everything else leaves from the files.
    assert!(
        sendfile > live,
        "live segments took sendfile too ({sendfile} of {live} + {recorded})"
    );
}

/// Where each of `pid`'s descriptors points (`socket:[inode]`, a file's path, ...).
fn fd_targets(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

/// The inode of the server's end of the loopback TCP connection `server_port` <->
/// `client_port` (from `/proc/net/tcp`), if it still exists.
fn server_socket_inode(server_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
        (port(f.get(1)?)? == server_port && port(f.get(2)?)? == client_port)
            .then(|| f.get(9).map(|s| s.to_string()))
            .flatten()
    })
}

/// A client asks for a recorded segment many times over (pipelined) and never reads, so the
/// server is stuck part way through a `sendfile`d body, holding the connection's socket and
/// the segment's file; then the client vanishes (a reset: it leaves unread data). Both
/// descriptors are closed in the server (the file once the shard's cache of recorded files
/// lets it go, within about a second), and it goes on serving.
#[test]
fn a_client_vanishing_mid_sendfile_leaks_no_descriptor() {
    let server = start(&["--zerocopy", "on"]);
    let rec = publish_and_record(&server, "v");
    let id = rec["id"].as_str().unwrap().to_owned();
    let target = format!("/hls/v/rec/{id}/0.ts");
    let path = server.data_dir.join("recordings/v").join(&id).join("0.ts");
    let file = std::fs::read(&path).expect("0.ts on disk");
    let size = file.len() as u64;
    assert!(size > 0);
    let pid = server.child.id();
    let path = path.to_string_lossy().into_owned();
    let sent_before = counter(
        &server.api("GET", "/api/stats", None).1,
        "hls_bytes_sendfile",
    );

    // 64 MiB or more of answers queued behind a reader that never reads.
    let asks = (64 * 1024 * 1024 / size + 1).min(20_000);
    let mut s = TcpStream::connect(server.viewer).expect("connect");
    let client_port = s.local_addr().unwrap().port();
    let mut requests = Vec::new();
    for _ in 0..asks {
        write!(requests, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    s.write_all(&requests).unwrap();
    // The server has sent part of it with sendfile and holds the socket and the file.
    let socket = wait_for("sendfile to carry bytes and stall", || {
        let (_, stats) = server.api("GET", "/api/stats", None);
        let sent = counter(&stats, "hls_bytes_sendfile") - sent_before;
        let inode = server_socket_inode(server.viewer.port(), client_port)?;
        let socket = format!("socket:[{inode}]");
        let fds = fd_targets(pid);
        (sent > 0 && fds.contains(&socket) && fds.contains(&path)).then_some(socket)
    });
    let (_, stats) = server.api("GET", "/api/stats", None);
    let carried = counter(&stats, "hls_bytes_sendfile") + counter(&stats, "hls_bytes_plain");
    assert!(
        carried < asks * size,
        "the client read nothing: the server is mid-body"
    );
    drop(s); // unread data: the kernel resets the connection

    wait_for("the server to close the socket and the file", || {
        let fds = fd_targets(pid);
        (!fds.contains(&socket) && !fds.contains(&path)).then_some(())
    });
    let again = get_all(server.viewer, std::slice::from_ref(&target));
    assert!(again[0].1 == file, "still served byte for byte");

    // An empty segment file (a crash can leave one) is answered at once, and the connection
    // goes on: no head is left waiting for a body.
    std::fs::write(std::path::Path::new(&path).with_file_name("999.ts"), b"").unwrap();
    let empty = format!("/hls/v/rec/{id}/999.ts");
    let both = get_all(server.viewer, &[empty, target]);
    assert_eq!((both[0].0, both[0].1.len()), (200, 0));
    assert!(both[1].1 == file);
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
