//! The servers under test: ovation and the three peers of bench/peers. Each is started on
//! port 0, recognised as ready by the one line it prints on stdout, asked for its connection
//! count through its operator API, and stopped with SIGTERM (SIGKILL after a bound).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rustix::process::{kill_process, Pid, Signal};

use crate::http;

/// Bearer token given to ovation (peers ignore the header). Test traffic stays on loopback.
pub const API_TOKEN: &str = "ovation-bench-token-0000";

/// Lines of a server's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerKind {
    Ovation,
    Fastwebsockets,
    TokioTungstenite,
    Ws,
}

impl ServerKind {
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Ovation,
        ServerKind::Fastwebsockets,
        ServerKind::TokioTungstenite,
        ServerKind::Ws,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Ovation => "ovation",
            ServerKind::Fastwebsockets => "fastwebsockets",
            ServerKind::TokioTungstenite => "tokio-tungstenite",
            ServerKind::Ws => "ws",
        }
    }

    /// Accepts the names above, and `ws-node` (the peer's directory name) for `ws`.
    pub fn parse(s: &str) -> Option<ServerKind> {
        match s.trim() {
            "ws-node" | "node" => Some(ServerKind::Ws),
            s => ServerKind::ALL.into_iter().find(|k| k.name() == s),
        }
    }

    pub fn is_peer(self) -> bool {
        self != ServerKind::Ovation
    }

    /// The directory under bench/peers, for peers.
    pub fn peer_dir(self) -> Option<&'static str> {
        match self {
            ServerKind::Ovation => None,
            ServerKind::Fastwebsockets => Some("fastwebsockets"),
            ServerKind::TokioTungstenite => Some("tokio-tungstenite"),
            ServerKind::Ws => Some("ws-node"),
        }
    }
}

/// Where the executables are.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The repository root (bench/peers is found under it).
    pub root: PathBuf,
    /// Where `ovation` and `loadgen` were built (target/release).
    pub bin_dir: PathBuf,
}

impl Paths {
    pub fn loadgen(&self) -> PathBuf {
        self.bin_dir.join("loadgen")
    }

    fn peers(&self) -> PathBuf {
        self.root.join("bench").join("peers")
    }

    /// The program and its arguments (before the listen addresses).
    fn program(&self, kind: ServerKind) -> (PathBuf, Vec<String>) {
        match kind {
            ServerKind::Ovation => (self.bin_dir.join("ovation"), vec!["serve".into()]),
            ServerKind::Fastwebsockets | ServerKind::TokioTungstenite => {
                let dir = kind.peer_dir().unwrap_or_default();
                let bin = self
                    .peers()
                    .join(dir)
                    .join("target/release")
                    .join(format!("peer-{dir}"));
                (bin, Vec::new())
            }
            ServerKind::Ws => (
                PathBuf::from("node"),
                vec![self.peers().join("ws-node/server.js").display().to_string()],
            ),
        }
    }

    /// Whether `kind` can be started; the error says what is missing.
    pub fn check(&self, kind: ServerKind) -> Result<(), String> {
        match kind {
            ServerKind::Ws => {
                let ok = Command::new("node")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err("node is not on PATH".into());
                }
                let ws = self.peers().join("ws-node/node_modules/ws");
                if !ws.is_dir() {
                    return Err(format!(
                        "{} is missing (run bench/peers/build.sh ws-node)",
                        ws.display()
                    ));
                }
                Ok(())
            }
            _ => {
                let (bin, _) = self.program(kind);
                if bin.is_file() {
                    Ok(())
                } else {
                    Err(format!("{} is not built", bin.display()))
                }
            }
        }
    }

    /// The command that starts `kind`, as a reader could paste it.
    pub fn display_command(&self, kind: ServerKind) -> String {
        let (bin, mut args) = self.program(kind);
        args.extend(listen_args(kind, Path::new("DATA_DIR")));
        let args: Vec<String> = args
            .into_iter()
            .map(|a| if a == API_TOKEN { "$TOKEN".into() } else { a })
            .collect();
        let line = format!("{} {}", bin.display(), args.join(" "));
        // Run from the repository root (`--root .`), paths read best without the `./`.
        line.replace(" ./", " ").trim_start_matches("./").to_owned()
    }
}

fn listen_args(kind: ServerKind, data_dir: &Path) -> Vec<String> {
    match kind {
        ServerKind::Ovation => vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--api-listen".into(),
            "127.0.0.1:0".into(),
            "--rtmp-listen".into(),
            "127.0.0.1:0".into(),
            "--api-token".into(),
            API_TOKEN.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ],
        _ => vec![
            "--viewer-addr".into(),
            "127.0.0.1:0".into(),
            "--api-addr".into(),
            "127.0.0.1:0".into(),
        ],
    }
}

/// The listen addresses in a ready line: `ovation ready viewer=A api=B shards=N ...` or a
/// peer's `listening viewer=A api=B`.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = line.trim();
    if !(line.starts_with("ovation ready ") || line.starts_with("listening ")) {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<SocketAddr>().ok())
    };
    Some((field("viewer=")?, field("api=")?))
}

/// A started server.
pub struct Server {
    pub kind: ServerKind,
    pub pid: u32,
    pub viewer: SocketAddr,
    pub api: SocketAddr,
    child: Child,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    data_dir: Option<PathBuf>,
}

/// How a server stopped.
#[derive(Debug)]
pub struct Stopped {
    pub status: Option<ExitStatus>,
    /// It did not exit within the grace period after SIGTERM and was killed.
    pub killed: bool,
}

impl Stopped {
    /// A problem to report, if the stop was not clean.
    pub fn problem(&self, grace: Duration) -> Option<String> {
        if self.killed {
            return Some(format!("did not exit within {grace:?} of SIGTERM; killed"));
        }
        match self.status {
            Some(s) if s.success() => None,
            Some(s) => Some(format!("exited with {s} after SIGTERM")),
            None => Some("exit status unknown".into()),
        }
    }
}

impl Server {
    /// Starts `kind` on port 0 and waits (at most `timeout`) for its ready line.
    pub fn start(paths: &Paths, kind: ServerKind, timeout: Duration) -> anyhow::Result<Server> {
        Server::start_with(paths, kind, timeout, &[])
    }

    /// [`Server::start`] with `extra` arguments after the listen arguments (settings to
    /// compare, such as `--wake-shards-ahead false`).
    pub fn start_with(
        paths: &Paths,
        kind: ServerKind,
        timeout: Duration,
        extra: &[String],
    ) -> anyhow::Result<Server> {
        let (bin, mut args) = paths.program(kind);
        let data_dir = (kind == ServerKind::Ovation).then(fresh_data_dir);
        if let Some(dir) = &data_dir {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        args.extend(listen_args(
            kind,
            data_dir.as_deref().unwrap_or(Path::new("")),
        ));
        args.extend(extra.iter().cloned());
        let mut child = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} ({})", kind.name(), bin.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().context("server stdout")?;
        let stderr = child.stderr.take().context("server stderr")?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        drain_stderr(stderr, stderr_tail.clone());
        let ready = watch_stdout(stdout);
        let mut server = Server {
            kind,
            pid,
            viewer: "127.0.0.1:0".parse().map_err(|e| anyhow!("{e}"))?,
            api: "127.0.0.1:0".parse().map_err(|e| anyhow!("{e}"))?,
            child,
            stderr_tail,
            data_dir,
        };
        match ready.recv_timeout(timeout) {
            Ok((viewer, api)) => {
                server.viewer = viewer;
                server.api = api;
                Ok(server)
            }
            Err(_) => {
                let exited = server.child.try_wait().ok().flatten();
                let tail = server.stderr_tail();
                server.stop(Duration::from_secs(2));
                match exited {
                    Some(s) => bail!(
                        "{} exited ({s}) before its ready line; stderr: {tail}",
                        kind.name()
                    ),
                    None => bail!(
                        "{} printed no ready line within {timeout:?}; stderr: {tail}",
                        kind.name()
                    ),
                }
            }
        }
    }

    /// The last lines the server wrote to stderr, joined.
    pub fn stderr_tail(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        if tail.is_empty() {
            "(empty)".into()
        } else {
            tail
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `connections` from `GET /api/stats` (ovation and every peer serve it).
    pub fn connections(&self, timeout: Duration) -> anyhow::Result<u64> {
        let r = http::request(self.api, "GET", "/api/stats", API_TOKEN, None, timeout)?;
        if r.status != 200 {
            bail!("GET /api/stats answered {}", r.status);
        }
        r.json()
            .and_then(|v| v.get("connections")?.as_u64())
            .context("GET /api/stats has no numeric \"connections\"")
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(mut self, grace: Duration) -> Stopped {
        if let Ok(Some(status)) = self.child.try_wait() {
            return self.finish(Some(status), false);
        }
        let pid = i32::try_from(self.pid).ok().and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return self.finish(Some(status), false),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                _ => break,
            }
        }
        let _ = self.child.kill();
        let status = self.child.wait().ok();
        self.finish(status, true)
    }

    fn finish(mut self, status: Option<ExitStatus>, killed: bool) -> Stopped {
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        Stopped { status, killed }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A server is never left running behind the suite (e.g. on an early error return).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn fresh_data_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "ovation-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Reads stdout in a thread: sends the addresses of the first ready line, then keeps
/// draining so the server never blocks on a full pipe.
fn watch_stdout(stdout: impl Read + Send + 'static) -> mpsc::Receiver<(SocketAddr, SocketAddr)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(addrs) = parse_ready_line(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addrs);
                }
            }
        }
    });
    rx
}

fn drain_stderr(stderr: impl Read + Send + 'static, tail: Arc<Mutex<VecDeque<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut t) = tail.lock() {
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines() {
        assert_eq!(
            parse_ready_line(
                "ovation ready viewer=127.0.0.1:40411 api=127.0.0.1:38695 shards=2 steering=false"
            ),
            Some((
                "127.0.0.1:40411".parse().unwrap(),
                "127.0.0.1:38695".parse().unwrap()
            ))
        );
        assert_eq!(
            parse_ready_line("listening viewer=127.0.0.1:1 api=[::1]:2\n"),
            Some(("127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()))
        );
        assert_eq!(parse_ready_line("listening viewer=127.0.0.1:1"), None);
        assert_eq!(parse_ready_line("listening viewer=x api=127.0.0.1:2"), None);
        assert_eq!(
            parse_ready_line("2024 INFO ovation serving viewer=127.0.0.1:1 api=127.0.0.1:2"),
            None
        );
    }

    #[test]
    fn names_round_trip() {
        for k in ServerKind::ALL {
            assert_eq!(ServerKind::parse(k.name()), Some(k));
        }
        assert_eq!(ServerKind::parse("ws-node"), Some(ServerKind::Ws));
        assert_eq!(ServerKind::parse("nginx"), None);
        assert!(!ServerKind::Ovation.is_peer() && ServerKind::Ws.is_peer());
    }

    #[test]
    fn commands_shown_without_the_token() {
        let paths = Paths {
            root: PathBuf::from("/repo"),
            bin_dir: PathBuf::from("/repo/target/release"),
        };
        let ovation = paths.display_command(ServerKind::Ovation);
        assert!(ovation.starts_with("/repo/target/release/ovation serve --listen 127.0.0.1:0"));
        assert!(ovation.contains("--api-token $TOKEN"));
        assert_eq!(
            paths.display_command(ServerKind::Ws),
            "node /repo/bench/peers/ws-node/server.js --viewer-addr 127.0.0.1:0 --api-addr 127.0.0.1:0"
        );
        let relative = Paths {
            root: PathBuf::from("."),
            bin_dir: PathBuf::from("target/release"),
        };
        assert_eq!(
            relative.display_command(ServerKind::Ws),
            "node bench/peers/ws-node/server.js --viewer-addr 127.0.0.1:0 --api-addr 127.0.0.1:0"
        );
        assert!(relative
            .display_command(ServerKind::Fastwebsockets)
            .starts_with(
                "bench/peers/fastwebsockets/target/release/peer-fastwebsockets --viewer-addr"
            ));
        assert!(relative
            .display_command(ServerKind::Ovation)
            .starts_with("target/release/ovation serve "));
        assert!(paths
            .display_command(ServerKind::TokioTungstenite)
            .starts_with(
                "/repo/bench/peers/tokio-tungstenite/target/release/peer-tokio-tungstenite "
            ));
    }
}
