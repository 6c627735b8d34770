//! `bench-tls`: TLS viewers beside plain ones, in the same run on the same binary: server
//! bytes per idle viewer, connect rate, and group-cast fan-out (messages delivered per second).
//!
//! Each mode gets a fresh server process (one shard, so the figures are one core's), so the
//! allocator's retained memory from one mode does not hide the other's. Clients are blocking
//! sockets on a few threads in this process: rustls' client under tungstenite for `wss`,
//! tungstenite alone for `ws`. The certificate is made at run time (rcgen), ECDSA P-256.
//!
//! ```sh
//! cargo build --release -p ovation -p ovation-bench
//! target/release/bench-tls --n 6000
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::WebSocket;

const TOKEN: &str = "bench-tls-token-0123456789";

#[derive(Parser, Debug)]
struct Args {
    /// Viewers per mode (fewer than a few thousand lets fixed costs blur the per-viewer bytes).
    #[arg(long, default_value_t = 6000)]
    n: usize,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Casts in the fan-out burst.
    #[arg(long, default_value_t = 20)]
    casts: usize,
    /// Payload bytes of each cast.
    #[arg(long, default_value_t = 200)]
    payload: usize,
    /// The ovation binary.
    #[arg(long, default_value = "target/release/ovation")]
    ovation: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    Tls,
}

/// What one mode measured.
#[derive(Debug)]
struct Figures {
    idle_bytes_per_viewer: f64,
    connects_per_s: f64,
    fanout_msgs_per_s: f64,
}

struct Server {
    child: Child,
    viewer: SocketAddr,
    tls: Option<SocketAddr>,
    api: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &Args, dir: &std::path::Path) -> anyhow::Result<Server> {
    let mut child = Command::new(&args.ovation)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--tls-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"))
        .args(["--shards", "1", "--api-token", TOKEN, "--log", "error"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.ovation.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .with_context(|| format!("{name} in {line:?}"))?
            .parse()
            .context("address")
    };
    Ok(Server {
        viewer: field("viewer")?,
        tls: field("tls").ok(),
        api: field("api")?,
        child,
    })
}

fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Waits (bounded) until the server counts `n` open viewers.
fn wait_connections(server: &Server, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("\"connections\":{n},");
    while Instant::now() < deadline {
        if api(server.api, "GET", "/api/stats", "")?.contains(&want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the server never counted {n} viewers")
}

trait Viewer: Send {
    /// Reads until `count` text messages of type "message" arrived.
    fn read_messages(&mut self, count: usize) -> anyhow::Result<()>;
}

impl<S: Read + Write + Send> Viewer for WebSocket<S> {
    fn read_messages(&mut self, count: usize) -> anyhow::Result<()> {
        let mut got = 0;
        while got < count {
            if let tungstenite::Message::Text(t) = self.read()? {
                if t.contains("\"type\":\"message\"") {
                    got += 1;
                }
            }
        }
        Ok(())
    }
}

fn connect(
    mode: Mode,
    addr: SocketAddr,
    tls: &Arc<ClientConfig>,
) -> anyhow::Result<Box<dyn Viewer>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://localhost:{}/v1/viewer", addr.port());
    let welcome = |t: &str| t.contains("\"type\":\"welcome\"");
    match mode {
        Mode::Plain => {
            let (mut ws, _) = tungstenite::client(url, tcp)?;
            match ws.read()? {
                tungstenite::Message::Text(t) if welcome(&t) => Ok(Box::new(ws)),
                other => bail!("no welcome: {other:?}"),
            }
        }
        Mode::Tls => {
            let name = ServerName::try_from("localhost")?;
            let conn = ClientConnection::new(tls.clone(), name)?;
            let (mut ws, _) = tungstenite::client(url, StreamOwned::new(conn, tcp))?;
            match ws.read()? {
                tungstenite::Message::Text(t) if welcome(&t) => Ok(Box::new(ws)),
                other => bail!("no welcome: {other:?}"),
            }
        }
    }
}

fn run_mode(
    args: &Args,
    dir: &std::path::Path,
    mode: Mode,
    tls: &Arc<ClientConfig>,
) -> anyhow::Result<Figures> {
    let server = start(args, dir)?;
    let addr = match mode {
        Mode::Plain => server.viewer,
        Mode::Tls => server.tls.context("no tls= in the ready line")?,
    };
    let pid = server.child.id();
    // Settle the process (API socket, first shard allocations) before the baseline.
    api(server.api, "GET", "/api/stats", "")?;
    let base = ovation_bench::procfs::read_rss(pid)?;

    let per_thread = args.n.div_ceil(args.threads);
    let started = Instant::now();
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let tls = tls.clone();
            let count = per_thread.min(args.n.saturating_sub(t * per_thread));
            std::thread::spawn(move || -> anyhow::Result<Vec<Box<dyn Viewer>>> {
                (0..count).map(|_| connect(mode, addr, &tls)).collect()
            })
        })
        .collect();
    let mut groups = Vec::new();
    for h in handles {
        groups.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    let connect_s = started.elapsed().as_secs_f64();
    wait_connections(&server, args.n)?;
    let idle = ovation_bench::procfs::read_rss(pid)?;

    // Fan-out: the casts go out back to back; each thread reads every message on its sockets.
    let payload = format!("{{\"payload\":\"{}\"}}", "x".repeat(args.payload));
    let casts = args.casts;
    let started = Instant::now();
    let readers: Vec<_> = groups
        .into_iter()
        .map(|mut viewers| {
            std::thread::spawn(move || -> anyhow::Result<()> {
                for v in viewers.iter_mut() {
                    v.read_messages(casts)?;
                }
                Ok(())
            })
        })
        .collect();
    for _ in 0..casts {
        let r = api(server.api, "POST", "/api/groups/global/messages", &payload)?;
        if !r.starts_with("HTTP/1.1 202") {
            bail!("cast refused: {r}");
        }
    }
    for r in readers {
        r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    }
    let fanout_s = started.elapsed().as_secs_f64();
    Ok(Figures {
        idle_bytes_per_viewer: (idle.saturating_sub(base)) as f64 / args.n as f64,
        connects_per_s: args.n as f64 / connect_s,
        fanout_msgs_per_s: (args.n * casts) as f64 / fanout_s,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("ovation-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(cert.der().to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    let plain = run_mode(&args, &dir, Mode::Plain, &client)?;
    let tls = run_mode(&args, &dir, Mode::Tls, &client)?;
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "bench-tls: {} viewers, 1 shard, {} casts of {} bytes, {} client threads\n",
        args.n, args.casts, args.payload, args.threads
    );
    println!("| figure | plain (ws) | TLS (wss) | TLS/plain |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |name: &str, p: f64, t: f64| {
        println!("| {name} | {p:.0} | {t:.0} | {:.2} |", t / p);
    };
    row(
        "server bytes per idle viewer",
        plain.idle_bytes_per_viewer,
        tls.idle_bytes_per_viewer,
    );
    row(
        "connects per second",
        plain.connects_per_s,
        tls.connects_per_s,
    );
    row(
        "fan-out messages delivered per second",
        plain.fanout_msgs_per_s,
        tls.fanout_msgs_per_s,
    );
    let extra = tls.idle_bytes_per_viewer - plain.idle_bytes_per_viewer;
    let ratio = tls.fanout_msgs_per_s / plain.fanout_msgs_per_s;
    println!(
        "\nidle TLS viewer: {extra:.0} bytes above plain (target <= 4096: {}); TLS fan-out {ratio:.2}x plain (target >= 0.5: {})",
        if extra <= 4096.0 { "met" } else { "MISSED" },
        if ratio >= 0.5 { "met" } else { "MISSED" },
    );
    Ok(())
}
