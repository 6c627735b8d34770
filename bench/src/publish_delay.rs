//! Publish-to-playlist delay: how long after the last byte of a segment reaches the server a
//! player polling the live playlist sees that segment listed.
//!
//! ffmpeg publishes a test pattern with a tone in real time (`-re`, a keyframe every second)
//! to a fresh ovation over RTMP. A tight loop (every `--poll-ms`) asks the operator API for
//! the stream's `last_segment` (its sequence and the wall time the server completed it: the
//! arrival of the keyframe that closes it, i.e. the segment's last byte in) and fetches the
//! live playlist from the viewer port. For each sequence seen both ways, the delay is the
//! time the playlist first listed it minus its completion time (one host, one clock). The
//! error of each figure is at most one poll period; the report prints it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

use crate::http;

const TOKEN: &str = "ovation-bench-token-0000";

#[derive(Parser, Debug)]
#[command(
    name = "bench-publish-delay",
    about = "Publish-to-playlist delay of live HLS (ffmpeg over RTMP into ovation)"
)]
pub struct Args {
    /// Directory holding the `ovation` binary to measure.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Seconds ffmpeg publishes.
    #[arg(long, default_value_t = 30)]
    pub secs: u32,
    /// Segment target duration given to the server (`--hls-segment-ms`).
    #[arg(long, default_value_t = 1000)]
    pub segment_ms: u64,
    /// Pause between two polls, in milliseconds.
    #[arg(long, default_value_t = 1)]
    pub poll_ms: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Kills the child when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Addrs {
    viewer: SocketAddr,
    api: SocketAddr,
    rtmp: SocketAddr,
}

fn start_server(args: &Args, data_dir: &std::path::Path) -> anyhow::Result<(Reaped, Addrs)> {
    let bin = args.bin_dir.join("ovation");
    let mut child = Command::new(&bin)
        .args(["serve", "--shards", "1", "--log", "warn"])
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--rtmp-listen", "127.0.0.1:0", "--api-token", TOKEN])
        .args(["--hls-segment-ms", &args.segment_ms.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let reaped = Reaped(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("no ready line within 30 s")?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name}= in the ready line {line:?}"))
    };
    let addrs = Addrs {
        viewer: field("viewer")?,
        api: field("api")?,
        rtmp: field("rtmp")?,
    };
    Ok((reaped, addrs))
}

/// The sequence numbers listed in the playlist at `addr`, or none (not serving yet).
fn listed(addr: SocketAddr, path: &str) -> anyhow::Result<Vec<u64>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let _ = s.set_nodelay(true);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    if !raw.starts_with("HTTP/1.1 200") {
        return Ok(Vec::new());
    }
    Ok(raw
        .lines()
        .filter_map(|l| l.split_once(".ts").map(|(n, _)| n))
        .filter_map(|n| n.parse().ok())
        .collect())
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data_dir =
        std::env::temp_dir().join(format!("ovation-publish-delay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let (server, addrs) = start_server(&args, &data_dir)?;
    let timeout = Duration::from_secs(5);
    let created = http::request(
        addrs.api,
        "POST",
        "/api/streams",
        TOKEN,
        Some(r#"{"id":"bench"}"#),
        timeout,
    )?;
    let body: serde_json::Value = serde_json::from_slice(&created.body)?;
    let Some(key) = body["stream_key"].as_str() else {
        bail!("no stream_key in {body}");
    };
    let gop = (25 * args.segment_ms / 1000).max(1).to_string();
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", &args.secs.to_string()])
        .args(["-c:v", "libx264", "-g", &gop, "-preset", "ultrafast"])
        .args(["-tune", "zerolatency", "-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://{}/live/{key}", addrs.rtmp))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting ffmpeg (is it installed?)")?;
    let mut ffmpeg = Reaped(ffmpeg);

    let mut completed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let (mut polls, started) = (0u64, Instant::now());
    let deadline = started + Duration::from_secs(u64::from(args.secs) + 30);
    while Instant::now() < deadline {
        if ffmpeg.0.try_wait()?.is_some() {
            break;
        }
        polls += 1;
        for seq in listed(addrs.viewer, "/hls/bench/index.m3u8")? {
            seen.entry(seq).or_insert_with(unix_ms);
        }
        let streams = http::request(addrs.api, "GET", "/api/streams", TOKEN, None, timeout)?;
        let v: serde_json::Value = serde_json::from_slice(&streams.body)?;
        if let Some(last) = v["streams"][0]["last_segment"].as_object() {
            if let (Some(seq), Some(ms)) =
                (last["sequence"].as_u64(), last["completed_ms"].as_u64())
            {
                completed.entry(seq).or_insert(ms);
            }
        }
        std::thread::sleep(Duration::from_millis(args.poll_ms));
    }
    let period_ms = started.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64;
    drop(ffmpeg);
    drop(server);
    let _ = std::fs::remove_dir_all(&data_dir);

    let mut delays: Vec<i64> = completed
        .iter()
        .filter_map(|(seq, done)| seen.get(seq).map(|s| *s as i64 - *done as i64))
        .collect();
    if delays.is_empty() {
        bail!("no segment was seen both completed and listed (completed {completed:?}, listed {seen:?})");
    }
    delays.sort_unstable();
    let pick = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
    println!(
        "publish-to-playlist delay over {} segments ({} ms target, ffmpeg -re 640x360@25 x264 ultrafast zerolatency + AAC, 1 shard)",
        delays.len(),
        args.segment_ms
    );
    println!(
        "p50 {} ms  p99 {} ms  max {} ms  (min {} ms; poll period {period_ms:.1} ms, the error bound of each figure)",
        pick(0.5),
        pick(0.99),
        delays[delays.len() - 1],
        delays[0]
    );
    Ok(())
}
