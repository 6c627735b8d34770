//! `bench-cluster`: group-cast latency through one edge against across three edges (posted
//! to edge 1, timed to the last viewer on every edge), and acknowledged votes per second
//! over three edges (each vote stored in JetStream before its `voted`). Needs `nats-server`
//! on PATH and the `ovation` binary built beside this one (`cargo build --release --bins`).
//! Prints one figure per line; the processes it starts are killed when it ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use serde_json::{json, Value};

const TOKEN: &str = "ovation-bench-token-0000";
const VIEWERS_PER_EDGE: usize = 20;
const CASTS: usize = 50;
const VOTE_ROUNDS: usize = 20;

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Edge {
    _proc: Proc,
    viewer: SocketAddr,
    api: SocketAddr,
}

fn ovation_bin() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("ovation");
    bin.exists()
        .then_some(bin)
        .ok_or_else(|| anyhow!("build the ovation binary first (cargo build --bins)"))
}

fn start_edge(
    id: &str,
    ip: &str,
    nats: Option<&str>,
    dir: &std::path::Path,
) -> anyhow::Result<Edge> {
    let mut cmd = Command::new(ovation_bin()?);
    cmd.arg("serve")
        .args([
            "--listen",
            &format!("{ip}:0"),
            "--api-listen",
            &format!("{ip}:0"),
        ])
        .args(["--rtmp-listen", &format!("{ip}:0"), "--api-token", TOKEN])
        .args([
            "--log",
            "error",
            "--record",
            "false",
            "--edge-id",
            id,
            "--shards",
            "1",
        ])
        .args(["--cluster-announce-ms", "100"])
        .arg("--data-dir")
        .arg(dir.join(id))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(url) = nats {
        cmd.args(["--cluster-nats-url", url]);
    }
    let mut child = cmd.spawn().context("starting ovation")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| anyhow!("{name} in {line:?}"))?
            .parse()
            .context("address")
    };
    Ok(Edge {
        viewer: field("viewer")?,
        api: field("api")?,
        _proc: Proc(child),
    })
}

fn api(addr: SocketAddr, method: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let json = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(json.trim()).unwrap_or(Value::Null))
}

fn viewer(edge: &Edge) -> anyhow::Result<Ws> {
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/v1/viewer", edge.viewer))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
    }
    ws.send(tungstenite::Message::Text(
        json!({"type":"watch","stream":"s"}).to_string(),
    ))?;
    until(&mut ws, |m| m["type"] == "endpoint")?;
    Ok(ws)
}

fn until(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    loop {
        if let tungstenite::Message::Text(t) = ws.read()? {
            let v: Value = serde_json::from_str(&t)?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }
}

/// Median and 99th percentile of casts posted to `edges[0]`, in microseconds, until every
/// viewer has the message.
fn cast_latency(edges: &[Edge], viewers: &mut [Ws]) -> anyhow::Result<(u128, u128)> {
    let mut times = Vec::with_capacity(CASTS);
    for n in 0..CASTS {
        let start = Instant::now();
        api(
            edges[0].api,
            "POST",
            "/api/groups/global/messages",
            &json!({"payload": n}),
        )?;
        for ws in viewers.iter_mut() {
            until(ws, |m| m["type"] == "message" && m["payload"] == n)?;
        }
        times.push(start.elapsed().as_micros());
    }
    times.sort_unstable();
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ovation-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let nats = Proc(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server (Debian package nats-server)")?,
    );
    let url = format!("nats://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "nats-server did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }

    // One edge, no NATS.
    let single = [start_edge("single", "127.0.0.1", None, &dir)?];
    api(single[0].api, "POST", "/api/streams", &json!({"id": "s"}))?;
    let mut viewers: Vec<Ws> = (0..VIEWERS_PER_EDGE * 3)
        .map(|_| viewer(&single[0]))
        .collect::<Result<_, _>>()?;
    let (p50, p99) = cast_latency(&single, &mut viewers)?;
    println!(
        "cast latency, 1 edge, {} viewers: p50 {p50} us, p99 {p99} us",
        viewers.len()
    );
    drop(viewers);

    // Three edges over NATS.
    let edges: Vec<Edge> = [
        ("b1", "127.0.0.1"),
        ("b2", "127.0.0.2"),
        ("b3", "127.0.0.3"),
    ]
    .iter()
    .map(|(id, ip)| start_edge(id, ip, Some(&url), &dir))
    .collect::<Result<_, _>>()?;
    api(edges[0].api, "POST", "/api/streams", &json!({"id": "s"}))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for e in &edges {
        while api(e.api, "GET", "/api/streams", &Value::Null)?["streams"][0]["id"] != "s" {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the stream never reached every edge"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut viewers: Vec<Ws> = Vec::new();
    for e in &edges {
        for _ in 0..VIEWERS_PER_EDGE {
            viewers.push(viewer(e)?);
        }
    }
    let (p50, p99) = cast_latency(&edges, &mut viewers)?;
    println!(
        "cast latency, 3 edges over NATS, {} viewers: p50 {p50} us, p99 {p99} us",
        viewers.len()
    );

    let poll = api(
        edges[0].api,
        "POST",
        "/api/polls",
        &json!({"stream": "s", "question": "q", "choices": ["a", "b"], "duration_s": 600}),
    )?;
    let id = poll["id"].as_str().context("poll id")?.to_owned();
    for ws in viewers.iter_mut() {
        until(ws, |m| m["type"] == "poll")?;
    }
    let start = Instant::now();
    for round in 0..VOTE_ROUNDS {
        for ws in viewers.iter_mut() {
            let vote = json!({"type": "vote", "poll": id, "choice": round % 2});
            ws.send(tungstenite::Message::Text(vote.to_string()))?;
        }
        for ws in viewers.iter_mut() {
            until(ws, |m| m["type"] == "voted" || m["type"] == "error")?;
        }
    }
    let votes = VOTE_ROUNDS * viewers.len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "acknowledged votes over 3 edges (stored in JetStream): {votes} in {secs:.2} s = {:.0} votes/s",
        votes as f64 / secs
    );
    drop((viewers, edges, single, nats));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    run()
}
