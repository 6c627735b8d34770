//! Cluster harness: a real `nats-server -js` and real `haproxy` spawned by the test on free
//! loopback ports with generated configuration in a temp directory, and ovation edges on
//! distinct 127.0.0.x addresses joined over NATS. Every wait is bounded; every process is
//! killed when its handle drops.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{api_call, ready_field, ready_line, TOKEN, WAIT};

/// Whether a Debian server binary is installed. Missing: under CI (`CI=true`) the test
/// fails, naming the package; locally it is skipped with a printed reason.
pub fn have(binary: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{binary} is missing: .ci/run must install the Debian package {package}");
        }
        eprintln!("SKIPPED: {binary} not installed (Debian package {package})");
    }
    found
}

/// A loopback port free at the time of asking (bound and released).
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits (bounded) until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ovation-{what}-{}-{}",
        std::process::id(),
        super::unique()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `nats-server` with JetStream, its store in a temp directory.
pub struct Nats {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nats {
    pub fn start() -> Nats {
        let dir = temp_dir("nats");
        let port = free_port("127.0.0.1");
        Self::start_on(port, dir)
    }

    /// Starts (or restarts) on a known port and store directory.
    pub fn start_on(port: u16, dir: PathBuf) -> Nats {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let nats = Nats { child, port, dir };
        wait_listening(nats.addr(), "nats-server");
        nats
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// kill -9, keeping the store directory (for a restart on the same port).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts again on the same port with the same store (after [`Nats::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let again = Nats::start_on(self.port, self.dir.clone());
        let mut again = std::mem::ManuallyDrop::new(again);
        std::mem::swap(&mut self.child, &mut again.child);
        // `again` now holds the dead child; its directory is ours, so it is not dropped.
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One ovation edge on its own loopback address.
pub struct Edge {
    pub child: Child,
    pub id: String,
    pub viewer: SocketAddr,
    pub api: SocketAddr,
    /// RTMP ingest.
    pub rtmp: SocketAddr,
    pub agent: Option<SocketAddr>,
    pub data_dir: PathBuf,
}

impl Edge {
    /// Starts edge `id` on `ip`, joined to `nats` (None: a single edge), with `extra` flags.
    pub fn start(id: &str, ip: &str, nats: Option<&str>, extra: &[&str]) -> Edge {
        let data_dir = temp_dir(&format!("edge-{id}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ovation"));
        cmd.arg("serve")
            .args(["--listen", &format!("{ip}:0")])
            .args(["--api-listen", &format!("{ip}:0")])
            .args(["--rtmp-listen", &format!("{ip}:0")])
            .args(["--agent-listen", &format!("{ip}:0")])
            .args(["--api-token", TOKEN, "--shards", "1"])
            // OVATION_TEST_LOG=info shows the edges' logs when a test needs explaining.
            .args([
                "--log",
                &std::env::var("OVATION_TEST_LOG").unwrap_or("error".into()),
            ])
            .args(["--record", "false", "--edge-id", id])
            .args([
                "--cluster-announce-ms",
                "100",
                "--cluster-final-wait-ms",
                "3000",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env_remove("OVATION_API_TOKEN")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = nats {
            cmd.args(["--cluster-nats-url", url]);
        }
        let mut child = cmd.spawn().expect("spawn ovation");
        let line = ready_line(&mut child);
        let field = |name: &str| -> SocketAddr {
            ready_field(&line, name)
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .parse()
                .unwrap()
        };
        assert_eq!(ready_field(&line, "edge"), Some(id), "{line}");
        Edge {
            id: id.to_owned(),
            viewer: field("viewer"),
            api: field("api"),
            rtmp: field("rtmp"),
            agent: ready_field(&line, "agent").map(|a| a.parse().unwrap()),
            child,
            data_dir,
        }
    }

    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        api_call(self.api, method, path, body, Some(TOKEN))
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/viewer", self.viewer)
    }

    /// Polls `GET path` until `pred` holds (bounded); returns the last answer.
    pub fn wait(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.api("GET", path, None);
            if status == 200 && pred(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "edge {}: timed out waiting for {what}: {status} {body}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until this edge lists `n` live edges (itself included).
    pub fn wait_edges(&self, n: usize) -> Value {
        self.wait("/api/cluster", &format!("{n} live edges"), |c| {
            c["edges"].as_array().is_some_and(|e| e.len() == n)
        })
    }

    /// The agent-check answer.
    pub fn agent_says(&self) -> String {
        let addr = self.agent.expect("agent address");
        let s = TcpStream::connect(addr).expect("connect agent");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("agent line");
        line
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `haproxy` in the foreground with a generated configuration.
pub struct HaProxy {
    pub child: Child,
    pub front: SocketAddr,
    /// The admin socket (`show stat`, `show servers state`).
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl HaProxy {
    /// Starts haproxy with `config` (which may use `{front}` and `{socket}`), front end on a
    /// free port of `ip`.
    pub fn start(ip: &str, config: &str) -> HaProxy {
        let dir = temp_dir("haproxy");
        let front: SocketAddr = format!("{ip}:{}", free_port(ip)).parse().unwrap();
        let socket = dir.join("admin.sock");
        let text = config
            .replace("{front}", &front.to_string())
            .replace("{socket}", &socket.display().to_string());
        let path = dir.join("haproxy.cfg");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write haproxy.cfg");
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy refused the configuration: {}\n{text}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy");
        wait_listening(front, "haproxy");
        HaProxy {
            child,
            front,
            socket,
            dir,
        }
    }

    /// One command on the admin socket; its answer.
    pub fn admin(&self, command: &str) -> String {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        let deadline = Instant::now() + WAIT;
        let mut s = loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "haproxy admin socket: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
