//! Issue 10 item 2: viewers filling every seat neither lock the operator out nor leave new
//! viewers hanging. Real server, real sockets on loopback; every wait bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{api_call, Raw, Server, TOKEN, WAIT};

/// Opens `n` viewers (each welcomed).
fn fill(addr: SocketAddr, n: usize) -> Vec<Raw> {
    (0..n)
        .map(|i| {
            let (raw, welcome) = Raw::upgrade(addr);
            assert_eq!(welcome["type"], "welcome", "viewer {i}");
            raw
        })
        .collect()
}

/// One upgrade attempt: the response head and body, read to EOF (bounded).
fn attempt(addr: SocketAddr) -> String {
    let mut raw = Raw::connect(addr);
    raw.stream
        .write_all(Raw::request(addr, "/v1/viewer", "").as_bytes())
        .unwrap();
    String::from_utf8_lossy(&raw.read_to_end()).into_owned()
}

fn assert_full(answer: &str) {
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && answer.ends_with("\r\n\r\nserver is full\n"),
        "{answer:?}"
    );
}

#[test]
fn at_max_connections_new_viewers_get_503_and_the_api_answers() {
    let server = Server::start(&["--max-connections", "200"]);
    let viewers = fill(server.viewer, 200);
    assert_full(&attempt(server.viewer));

    // A burst over the cap: every socket is answered 503 or closed, none is left hanging
    // (a hang would end the bounded read with a timeout panic).
    let burst: Vec<Raw> = (0..40).map(|_| Raw::connect(server.viewer)).collect();
    let mut answered = 0;
    for mut raw in burst {
        let req = Raw::request(server.viewer, "/v1/viewer", "");
        if raw.stream.write_all(req.as_bytes()).is_err() {
            continue; // closed unanswered before the request was written
        }
        let answer = String::from_utf8_lossy(&raw.read_to_end()).into_owned();
        if !answer.is_empty() {
            assert_full(&answer);
            answered += 1;
        }
    }
    assert!(answered > 0, "some of the burst got the 503");

    let (status, stats) = server.api("GET", "/api/stats", None);
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["connections"], 200, "{stats}");

    // A seat freed is a seat taken again.
    drop(viewers);
    server.wait_stats("viewers to leave", |s| s["connections"] == 0);
    let _again = fill(server.viewer, 1);
}

/// The server under `prlimit --nofile=N:N`, with its stderr kept.
struct Limited {
    child: Child,
    viewer: SocketAddr,
    api: SocketAddr,
    stderr: Arc<Mutex<String>>,
    data_dir: std::path::PathBuf,
}

impl Limited {
    fn start(nofile: u64, extra: &[&str]) -> Limited {
        let data_dir = std::env::temp_dir().join(format!(
            "ovation-limits-test-{}-{nofile}",
            std::process::id()
        ));
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ovation"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
                "--rtmp-listen",
                "127.0.0.1:0",
            ])
            .args(["--api-token", TOKEN, "--log", "warn"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env_remove("OVATION_API_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn prlimit ovation");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let line = common::ready_line(&mut child);
        let field = |name: &str| -> SocketAddr {
            common::ready_field(&line, name)
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .parse()
                .expect("address")
        };
        Limited {
            viewer: field("viewer"),
            api: field("api"),
            child,
            stderr,
            data_dir,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `ovation config` under `prlimit --nofile=N:N`: the effective max_connections.
fn configured_max(nofile: u64) -> u64 {
    let out = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ovation"))
        .arg("config")
        .env_remove("OVATION_API_TOKEN")
        .output()
        .expect("run ovation config");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("max_connections = "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("max_connections in {text}"))
}

#[test]
fn a_default_start_derives_the_cap_from_the_descriptor_limit_and_keeps_a_reserve() {
    // 1024 descriptors: 64 reserved, 960 viewers; 256: 64 reserved, 192 viewers.
    assert_eq!(configured_max(1024), 960);
    assert_eq!(configured_max(256), 192);

    let server = Limited::start(256, &[]);
    let viewers = fill(server.viewer, 192);
    assert_full(&attempt(server.viewer));
    // The operator API still has descriptors: eight calls open at once, all answered.
    let mut calls: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.api).expect("connect api"))
        .collect();
    for call in &mut calls {
        call.set_read_timeout(Some(WAIT)).unwrap();
        let req = format!(
            "GET /api/stats HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        call.write_all(req.as_bytes()).expect("write api request");
    }
    for mut call in calls {
        let mut answer = Vec::new();
        call.read_to_end(&mut answer).expect("read api answer");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, stats) = api_call(server.api, "GET", "/api/stats", None, Some(TOKEN));
        assert_eq!(status, 200, "{stats}");
        if stats["connections"] == 192 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_full(&attempt(server.viewer));
    drop(viewers);

    // No warning about descriptors or anything sized by max_connections (the host's
    // memlock may still be reported: it does not depend on the connection count).
    let log = server.stderr();
    for needle in [
        "RLIMIT_NOFILE",
        "nr_open",
        "file-max",
        "somaxconn",
        "accept failed",
    ] {
        assert!(!log.contains(needle), "{needle} in the log:\n{log}");
    }
}

/// Past the descriptor limit (an operator set max_connections above what it allows, and was
/// warned), a connection the shard cannot accept is accepted on the shard's spare
/// descriptor and closed at once: clients never wait in the backlog for nothing.
#[test]
fn past_the_descriptor_limit_connections_are_closed_not_left_hanging() {
    let server = Limited::start(128, &["--max-connections", "1000"]);
    let mut viewers = Vec::new();
    let mut closed = 0;
    for _ in 0..200 {
        let mut raw = Raw::connect(server.viewer);
        let req = Raw::request(server.viewer, "/v1/viewer", "");
        if raw.stream.write_all(req.as_bytes()).is_err() {
            closed += 1;
            continue;
        }
        // Bounded: a connection left hanging fails here with a read timeout.
        let head = raw.read_head();
        if head.starts_with("HTTP/1.1 101") {
            viewers.push(raw);
        } else {
            assert!(
                head.is_empty() || head.starts_with("HTTP/1.1 503"),
                "{head:?}"
            );
            closed += 1;
        }
        if closed >= 5 {
            break;
        }
    }
    assert!(closed >= 5, "{} viewers, {closed} closed", viewers.len());
    assert!(
        viewers.len() < 128,
        "{} viewers under 128 descriptors",
        viewers.len()
    );
    assert!(
        server.stderr().contains("RLIMIT_NOFILE"),
        "the operator was warned"
    );
}
