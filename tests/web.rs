//! The browser pages: the viewer page (`/watch/{stream}`, viewer port) and the broadcaster
//! console (`/console`, API address).
//!
//! - `pages_are_served_where_their_users_are`: plain HTTP checks of both routes (always run).
//! - `viewer_page_and_console_in_chromium`: `web/tests/e2e.mjs` drives Debian's chromium with
//!   playwright-core against a real server and a real ffmpeg publisher: the console creates
//!   the stream and shows its key, the page plays it and reports telemetry, the console runs
//!   a poll with a breakdown, pushes a message and a configuration, and the page survives a
//!   dropped connection (resume), shows the broadcast end, and comes back after a server
//!   restart (offline, then playing once the broadcaster publishes again). Before it starts,
//!   this test encodes a two-second ad with ffmpeg (the publisher's codecs); the script
//!   registers it (`POST /api/ads`) as the stream's default program, the console starts an ad
//!   break, the page shows its Ad indicator and plays through, and the console's beacons
//!   match the API. It prints page weight, time to first frame and time from break start to
//!   the ad's first frame, and writes the screenshots in the target directory
//!   (`OVATION_SCREENSHOTS_DIR=docs/screenshots` refreshes the committed ones). Needs chromium, node and
//!   `npm ci` in web/: under `CI=true` their absence fails the test; locally it is skipped
//!   with the reason.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::media::{encode_ad, wait_for, Publisher};
use common::{ready_field, ready_line, Server, TOKEN};

/// The whole browser run, restart included, ends within this.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let raw = common::raw_api_call(addr, "GET", path, b"", None);
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    (
        String::from_utf8_lossy(&raw[..at]).into_owned(),
        raw[at + 4..].to_vec(),
    )
}

#[test]
fn pages_are_served_where_their_users_are() {
    let server = Server::start(&["--shards", "1"]);
    let (head, body) = get(server.viewer, "/watch/main");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/html"), "{head}");
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("data-viewer-path=\"/v1/viewer\""), "{page}");
    let (head, body) = get(server.api, "/console");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let port = format!("data-viewer-port=\"{}\"", server.viewer.port());
    assert!(String::from_utf8_lossy(&body).contains(&port));
    // The player library is the same file on both ports.
    let (_, on_viewer) = get(server.viewer, "/web/hls.min.js");
    let (_, on_api) = get(server.api, "/web/hls.min.js");
    assert!(on_viewer.len() > 100_000);
    assert_eq!(on_viewer, on_api);
    // Each page only where its user is; the API keeps its token check, the viewer port its
    // WebSocket and HLS answers.
    let (head, _) = get(server.api, "/watch/main");
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = get(server.viewer, "/console");
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let (head, _) = get(server.viewer, "/watch/no%20such");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = get(server.viewer, "/hls/main/index.m3u8");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (status, _) = server.api("GET", "/api/stats", None);
    assert_eq!(status, 200);
    // Page requests are not counted as HLS requests.
    let stats = server.wait_stats("the HLS request counted", |s| {
        s["shards"][0]["counters"]["hls_requests"].as_u64() >= Some(1)
    });
    assert_eq!(stats["shards"][0]["counters"]["hls_requests"], 1, "{stats}");
}

/// Where the browser run needs its tools: `Some(web dir)`, or `None` (skip, locally).
fn browser_tools() -> Option<PathBuf> {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing = [
        (!Path::new("/usr/bin/chromium").exists())
            .then_some("/usr/bin/chromium (apt-get install chromium)"),
        (!node).then_some("node (apt-get install nodejs)"),
        (!web.join("node_modules/playwright-core").exists())
            .then_some("web/node_modules/playwright-core (cd web && npm ci)"),
    ];
    let missing: Vec<&str> = missing.into_iter().flatten().collect();
    if missing.is_empty() {
        return Some(web);
    }
    let why = format!("the browser test needs {}", missing.join(", "));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    None
}

const FLAGS: &[&str] = &["--shards", "2", "--shutdown-grace-ms", "2000"];

/// Starts the server on these exact addresses (a restart keeps the ports the page uses).
fn start_on(viewer: SocketAddr, api: SocketAddr, rtmp: SocketAddr, dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .arg("serve")
        .args([
            "--listen",
            &viewer.to_string(),
            "--api-listen",
            &api.to_string(),
        ])
        .args(["--rtmp-listen", &rtmp.to_string()])
        .args(["--api-token", TOKEN, "--log", "error", "--data-dir"])
        .arg(dir)
        .args(FLAGS)
        .env_remove("OVATION_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ovation");
    let line = ready_line(&mut child);
    let field = |name: &str| ready_field(&line, name).unwrap_or_else(|| panic!("{name}: {line}"));
    Server {
        viewer: field("viewer").parse().unwrap(),
        api: field("api").parse().unwrap(),
        rtmp: field("rtmp").parse().unwrap(),
        rtmps: None,
        tls: None,
        shards: field("shards").parse().unwrap(),
        steering: field("steering") == "true",
        child,
        data_dir: dir.to_owned(),
        keep_data: true,
    }
}

/// Waits (bounded) until `stream` is in `state` (`live`: with a segment to serve).
fn wait_state(server: &Server, stream: &str, state: &str) {
    wait_for(&format!("{stream} to be {state}"), || {
        let (_, v) = server.api("GET", "/api/streams", None);
        let s = v["streams"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == stream)?
            .clone();
        (s["state"] == state && (state != "live" || !s["last_segment"].is_null())).then_some(())
    });
}

#[test]
fn viewer_page_and_console_in_chromium() {
    let Some(web) = browser_tools() else { return };
    common::media::require_tool("ffmpeg");
    // The ad the console's break plays: two one-second segments, read by the script.
    let ad_dir = std::env::temp_dir().join(format!(
        "ovation-web-ad-{}-{}",
        std::process::id(),
        common::unique()
    ));
    assert_eq!(encode_ad(&ad_dir, "spot", "smptebars", 2).len(), 2);
    let mut server = Server::start(FLAGS);
    server.keep_data = true;
    let dir = server.data_dir.clone();
    let (viewer, api, rtmp) = (server.viewer, server.api, server.rtmp);
    // Into the target directory, so a test run leaves the tree clean; the committed copies in
    // docs/screenshots/ are refreshed with OVATION_SCREENSHOTS_DIR=docs/screenshots.
    let shots = match std::env::var_os("OVATION_SCREENSHOTS_DIR") {
        Some(d) => Path::new(env!("CARGO_MANIFEST_DIR")).join(d),
        None => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    eprintln!("web: screenshots in {}", shots.display());
    let mut node = Command::new("node")
        .arg(web.join("tests/e2e.mjs"))
        .current_dir(&web)
        .env("OVATION_VIEWER", format!("http://{viewer}"))
        .env("OVATION_API", format!("http://{api}"))
        .env("OVATION_TOKEN", TOKEN)
        .env("OVATION_SCREENSHOTS", &shots)
        .env("OVATION_AD_DIR", ad_dir.join("spot"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let mut to_node = node.stdin.take().expect("node stdin");
    let from_node = node.stdout.take().expect("node stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from_node).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + RUN_LIMIT;
    let mut publisher: Option<Publisher> = None;
    let mut passed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                panic!("the browser run did not finish within {RUN_LIMIT:?}");
            }
        };
        println!("{line}");
        passed |= line == "web: all checks passed";
        if let Some(key) = line.strip_prefix("@@ publish ") {
            publisher = Some(Publisher::start(server.rtmp, key, 600));
            wait_state(&server, "main", "live");
        } else if line == "@@ stop" {
            drop(publisher.take());
            wait_state(&server, "main", "ended");
        } else if line == "@@ restart" {
            assert!(server.terminate().success(), "the server stops cleanly");
            drop(server);
            server = start_on(viewer, api, rtmp, &dir);
            wait_state(&server, "main", "offline");
        } else {
            continue;
        }
        writeln!(to_node, "ok").expect("answer node");
    }
    let status = node.wait().expect("node exit");
    drop(publisher);
    let _ = std::fs::remove_dir_all(&ad_dir);
    let (status_api, _) = server.api("GET", "/api/stats", None);
    assert_eq!(status_api, 200, "the server is still serving");
    server.keep_data = false;
    assert!(
        status.success() && passed,
        "the browser checks failed: {status}"
    );
}
