//! Test harness: runs the real `ovation` binary on 127.0.0.1:0 and talks to it over loopback.
//!
//! Every wait is bounded: reads have timeouts, the ready line has a deadline, and the server
//! process is killed when the handle drops.
#![allow(dead_code)]

pub mod cluster;
pub mod hls;
pub mod media;
pub mod mmdb;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789abcdef";
/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub child: Child,
    pub viewer: SocketAddr,
    pub api: SocketAddr,
    /// The RTMP ingest address.
    pub rtmp: SocketAddr,
    /// The RTMPS listener, when the test asked for one (`--rtmps-listen`).
    pub rtmps: Option<SocketAddr>,
    /// The TLS viewer listener, when the test asked for one (`--tls-listen`).
    pub tls: Option<SocketAddr>,
    pub shards: usize,
    pub steering: bool,
    pub data_dir: std::path::PathBuf,
    /// Leave the data directory behind on drop (for restart tests).
    pub keep_data: bool,
}

impl Server {
    /// Starts the server with extra flags on top of port-0 addresses and a known token.
    pub fn start(extra: &[&str]) -> Server {
        let data_dir =
            std::env::temp_dir().join(format!("ovation-test-{}-{}", std::process::id(), unique()));
        Self::start_in(extra, data_dir)
    }

    pub fn start_in(extra: &[&str], data_dir: std::path::PathBuf) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovation"));
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .args(["--rtmp-listen", "127.0.0.1:0"])
            .args(["--api-token", TOKEN, "--log", "error"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env_remove("OVATION_API_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn ovation");
        let line = ready_line(&mut child);
        let field = |name: &str| -> String {
            ready_field(&line, name)
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .to_owned()
        };
        Server {
            viewer: field("viewer").parse().unwrap(),
            api: field("api").parse().unwrap(),
            rtmp: field("rtmp").parse().unwrap(),
            rtmps: ready_field(&line, "rtmps").map(|a| a.parse().unwrap()),
            tls: ready_field(&line, "tls").map(|a| a.parse().unwrap()),
            shards: field("shards").parse().unwrap(),
            steering: field("steering") == "true",
            child,
            data_dir,
            keep_data: false,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/v1/viewer{}", self.viewer, query)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Calls the operator API with the test token.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        api_call(self.api, method, path, body, Some(TOKEN))
    }

    /// Polls `GET /api/stats` until `pred` holds (bounded).
    pub fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, stats) = self.api("GET", "/api/stats", None);
            assert_eq!(status, 200);
            if pred(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {stats}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Linux scheduling policy numbers as `/proc` shows them.
pub const SCHED_BATCH: u32 = 3;

/// One thread of a process, as `/proc/PID/task/TID` shows it.
#[derive(Debug, Clone)]
pub struct ThreadInfo {
    pub tid: String,
    pub name: String,
    /// Scheduling policy (`stat` field 41: 0 normal, [`SCHED_BATCH`], 5 `SCHED_IDLE`).
    pub policy: u32,
    /// The CPUs it may run on (`Cpus_allowed_list`, e.g. `0` or `0-3`).
    pub cpus: String,
}

/// The threads of process `pid` (a thread that ends while they are read is left out).
pub fn threads_of(pid: u32) -> Vec<ThreadInfo> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let (Ok(stat), Ok(status)) = (
            std::fs::read_to_string(task.path().join("stat")),
            std::fs::read_to_string(task.path().join("status")),
        ) else {
            continue;
        };
        // The name is in parentheses and may hold spaces; the fields after it start at 3.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let Some(policy) = rest.split_whitespace().nth(41 - 3) else {
            continue;
        };
        out.push(ThreadInfo {
            tid: task.file_name().to_string_lossy().into_owned(),
            name: head.split_once('(').map_or("", |(_, n)| n).to_owned(),
            policy: policy.parse().expect("policy field"),
            cpus: status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        });
    }
    out
}

/// The `ovation ready ...` line a started server prints first on stdout (waited for, bounded);
/// the rest of stdout is drained so the server never blocks on it.
pub fn ready_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("ovation printed its ready line")
}

/// The value of `name=` in a ready line.
pub fn ready_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// One HTTP/1.1 request with `Connection: close`; returns status and JSON body.
pub fn api_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let raw = raw_api_call(addr, method, path, body.as_bytes(), token);
    parse_response(&raw)
}

pub fn raw_api_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect api");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read api response");
    out
}

pub fn parse_response(raw: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body.trim()).unwrap_or(Value::Null);
    (status, json)
}

/// Reads one response with a `Content-Length` body from `s`, keeping extra bytes in `buf`.
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, Value) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
                return (status, head, json);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).expect("read a response within the wait");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

// ---- independent WebSocket client (tungstenite) ----

pub type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Connects with tungstenite, optionally with a User-Agent, and returns the socket and the
/// parsed welcome message.
pub fn connect(url: &str, user_agent: Option<&str>) -> (Ws, Value) {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(ua) = user_agent {
        req.headers_mut()
            .insert("User-Agent", ua.parse().expect("header value"));
    }
    let (mut ws, resp) = tungstenite::connect(req).expect("websocket connect");
    assert_eq!(resp.status(), 101);
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next text message, parsed; skips pings/pongs.
pub fn next_json(ws: &mut Ws) -> Value {
    // Pings keep arriving on a quiet connection, so the read timeout alone never fires while
    // the awaited text does not come: bound the whole wait (longer than any read timeout the
    // tests set, MEDIA_WAIT being the longest).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no text message within 120 s (only pings)"
        );
        let message = match ws.read() {
            // A blocking read with a timeout is not restarted after a stop/continue of the
            // test process (seen once under CI); tungstenite keeps any partial frame, so
            // reading again is safe.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            other => other.expect("read message"),
        };
        match message {
            tungstenite::Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Reads text messages until one has `"type": kind` (bounded by the read timeout).
pub fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = next_json(ws);
        if v["type"] == kind {
            return v;
        }
        assert!(Instant::now() < deadline, "no {kind} message");
    }
}

pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(tungstenite::Message::Text(v.to_string()))
        .expect("send");
}

// ---- raw client: exact bytes on the wire, for protocol violations ----

pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// One server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, 1, "text frame expected: {self:?}");
        serde_json::from_slice(&self.payload).expect("json")
    }
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn request(addr: SocketAddr, path: &str, extra_headers: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        )
    }

    /// Connects and completes the upgrade; returns the client and the welcome frame.
    pub fn upgrade(addr: SocketAddr) -> (Raw, Value) {
        let mut raw = Raw::connect(addr);
        raw.stream
            .write_all(Self::request(addr, "/v1/viewer", "").as_bytes())
            .unwrap();
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let welcome = raw.frame().json();
        (raw, welcome)
    }

    /// Reads an HTTP response head (and keeps what follows).
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i + 4]).into_owned();
                self.buf.drain(..i + 4);
                return head;
            }
            if !self.fill() {
                return String::from_utf8_lossy(&self.buf).into_owned();
            }
        }
    }

    /// Reads everything until EOF (bounded by the read timeout).
    pub fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Whether the server closed the TCP connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// The next complete server frame.
    pub fn frame(&mut self) -> ServerFrame {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            assert!(self.fill(), "connection closed while waiting for a frame");
        }
    }

    /// Frames until a close frame; returns its code.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            let f = self.frame();
            if f.opcode == 8 {
                return f.close_code();
            }
        }
    }

    /// Sends a masked client frame.
    pub fn send(&mut self, opcode: netstack::ws::OpCode, fin: bool, payload: &[u8]) {
        let mut out = Vec::new();
        netstack::ws::encode_client_frame(opcode, fin, payload, [0x37, 0xfa, 0x21, 0x3d], &mut out);
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
}

fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frames are never masked");
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    at += len;
    Some((
        ServerFrame {
            fin: buf[0] & 0x80 != 0,
            opcode: buf[0] & 0x0f,
            payload,
        },
        at,
    ))
}

/// A WebSocket viewer whose connection starts with `preamble` (a PROXY protocol header, as a
/// trusted balancer sends it), with the parsed welcome.
pub fn connect_proxied(server: &Server, query: &str, preamble: &[u8]) -> (Ws, Value) {
    let mut tcp = TcpStream::connect(server.viewer).expect("connect viewer port");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(preamble).unwrap();
    let (mut ws, resp) = tungstenite::client(
        server.url(query),
        tungstenite::stream::MaybeTlsStream::Plain(tcp),
    )
    .expect("upgrade");
    assert_eq!(resp.status(), 101);
    let welcome = next_json(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}
