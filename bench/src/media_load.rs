//! Media load: the same live stream served to N HLS players by ovation (`zerocopy = auto`,
//! then `on`, then `off`), by ovation from the recording it is making (segment files sent
//! with `sendfile`) and by nginx (`sendfile on`, serving the very segment files ovation
//! records), in one run: segments/s and bytes/s served, p50/p99 segment fetch time, server
//! CPU seconds per GB served and server RSS.
//!
//! A source file (720p, ~3 Mbit/s, a keyframe a second) is encoded once, then ffmpeg
//! publishes it with `-re -c copy` (little CPU) to a fresh ovation over RTMP. Players are
//! `loadgen hls` (one keep-alive connection each, reloads at the player's pace, every new
//! segment fetched and timed). nginx runs from a generated config in a temp dir, on a free
//! loopback port, one worker, with no root paths. On loopback the kernel copies every send
//! into the receiver anyway, so zero-copy cannot show a gain here: the table shows what the
//! machine can (CPU per GB, latency, memory), not NIC DMA savings.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::Value;

use crate::http;
use crate::procfs;

const TOKEN: &str = "ovation-bench-token-0000";

#[derive(Parser, Debug)]
#[command(
    name = "bench-media",
    about = "HLS to N players: ovation (zerocopy auto/on/off, recording) vs nginx"
)]
pub struct Args {
    /// Directory holding the `ovation` and `loadgen` binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Players per phase.
    #[arg(long, default_value_t = 2000)]
    pub players: usize,
    /// Seconds each phase plays.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Segment target duration (ms).
    #[arg(long, default_value_t = 1000)]
    pub segment_ms: u64,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub server: String,
    pub players: usize,
    pub segments_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub cpu_s_per_gb: f64,
    pub rss_mb: f64,
}

/// Server CPU seconds per GB served (`inf` when nothing was served).
pub fn cpu_per_gb(cpu_s: f64, bytes: u64) -> f64 {
    if bytes == 0 {
        return f64::INFINITY;
    }
    cpu_s / (bytes as f64 / 1e9)
}

/// The markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| server | players | segments/s | MB/s | p50 fetch ms | p99 fetch ms | errors | CPU s/GB | RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {} | {:.2} | {:.1} |\n",
            r.server,
            r.players,
            r.segments_per_s,
            r.mb_per_s,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.cpu_s_per_gb,
            r.rss_mb
        ));
    }
    out
}

fn source(dir: &Path, secs: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join("source.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-b:v",
            "3M",
        ])
        .args([
            "-x264-params",
            "nal-hrd=cbr",
            "-minrate",
            "3M",
            "-maxrate",
            "3M",
            "-bufsize",
            "1M",
        ])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(&path)
        .status()
        .context("running ffmpeg (Debian: apt-get install ffmpeg)")?;
    if !status.success() {
        bail!("ffmpeg could not encode the source");
    }
    Ok(path)
}

fn start_ovation(
    args: &Args,
    data: &Path,
    zerocopy: &str,
) -> anyhow::Result<(Reaped, [SocketAddr; 3])> {
    let bin = args.bin_dir.join("ovation");
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--shards",
            "1",
            "--log",
            "warn",
            "--zerocopy",
            zerocopy,
        ])
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .args(["--rtmp-listen", "127.0.0.1:0", "--api-token", TOKEN])
        .args([
            "--hls-segment-ms",
            &args.segment_ms.to_string(),
            "--hls-window",
            "6",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let reaped = Reaped(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |name: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name}= in the ready line {line:?}"))
    };
    Ok((reaped, [field("viewer")?, field("api")?, field("rtmp")?]))
}

fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<Value> {
    let r = http::request(addr, method, path, TOKEN, body, Duration::from_secs(10))?;
    Ok(serde_json::from_slice(&r.body)?)
}

fn publish(file: &Path, rtmp: SocketAddr, key: &str) -> anyhow::Result<Reaped> {
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .arg("-i")
        .arg(file)
        .args(["-c", "copy", "-f", "flv"])
        .arg(format!("rtmp://{rtmp}/live/{key}"))
        .stdin(Stdio::null())
        .spawn()
        .context("ffmpeg publish")?;
    Ok(Reaped(child))
}

/// Runs the players against `url`; the JSON report.
fn players(args: &Args, url: &str) -> anyhow::Result<Value> {
    let out = Command::new(args.bin_dir.join("loadgen"))
        .args(["hls", "--url", url, "--players", &args.players.to_string()])
        .args(["--secs", &args.secs.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running loadgen hls")?;
    if !out.status.success() {
        bail!("loadgen hls failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(
        text.lines().last().unwrap_or_default(),
    )?)
}

/// CPU seconds and RSS bytes of `pids` together.
fn usage(pids: &[u32]) -> (f64, u64) {
    let cpu = pids
        .iter()
        .filter_map(|p| procfs::read_cpu_seconds(*p).ok())
        .sum();
    let rss = pids.iter().filter_map(|p| procfs::read_rss(*p).ok()).sum();
    (cpu, rss)
}

fn measured(
    name: &str,
    args: &Args,
    url: &str,
    pids: &dyn Fn() -> Vec<u32>,
) -> anyhow::Result<Row> {
    let (cpu0, _) = usage(&pids());
    let r = players(args, url)?;
    let (cpu1, rss) = usage(&pids());
    let bytes = r["segment_bytes"].as_u64().unwrap_or(0);
    Ok(Row {
        server: name.to_owned(),
        players: args.players,
        segments_per_s: r["segments_per_s"].as_f64().unwrap_or(0.0),
        mb_per_s: r["bytes_per_s"].as_f64().unwrap_or(0.0) / 1e6,
        p50_ms: r["fetch_ms"]["p50"].as_f64().unwrap_or(0.0),
        p99_ms: r["fetch_ms"]["p99"].as_f64().unwrap_or(0.0),
        errors: r["errors"].as_u64().unwrap_or(0),
        cpu_s_per_gb: cpu_per_gb(cpu1 - cpu0, bytes),
        rss_mb: rss as f64 / 1e6,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn nginx_conf(dir: &Path, root: &Path, port: u16) -> String {
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n\
           client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {r};\n  }}\n}}\n",
        d = dir.display(),
        r = root.display(),
    )
}

/// Children of `pid` (nginx's workers).
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = &s[s.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails at once, before minutes of ovation phases, when a program the run needs is missing.
fn require(program: &str, version_flag: &str, package: &str) -> anyhow::Result<()> {
    let found = Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        bail!("`{program}` is not on PATH (Debian: apt-get install {package})");
    }
    Ok(())
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require("ffmpeg", "-version", "ffmpeg")?;
    require("nginx", "-v", "nginx")?;
    let tmp = std::env::temp_dir().join(format!("ovation-bench-media-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let file = source(&tmp, 3 * args.secs + 30)?;
    let mut rows = Vec::new();
    for zerocopy in ["auto", "on", "off"] {
        let data = tmp.join(format!("data-{zerocopy}"));
        let (server, [viewer, api_addr, rtmp]) = start_ovation(&args, &data, zerocopy)?;
        let pid = server.0.id();
        let created = api(api_addr, "POST", "/api/streams", Some(r#"{"id":"bench"}"#))?;
        let key = created["stream_key"]
            .as_str()
            .context("stream_key")?
            .to_owned();
        let _ffmpeg = publish(&file, rtmp, &key)?;
        let url = format!("http://{viewer}/hls/bench/index.m3u8");
        wait_for("three live segments", || {
            let s = api(api_addr, "GET", "/api/streams", None).ok()?;
            let seq = s["streams"][0]["last_segment"]["sequence"].as_u64()?;
            (seq >= 3).then_some(())
        })?;
        let name = format!("ovation zerocopy={zerocopy}");
        eprintln!("bench-media: {name}, {} players", args.players);
        rows.push(measured(&name, &args, &url, &|| vec![pid])?);
        let list = api(api_addr, "GET", "/api/streams/bench/recordings", None)?;
        let id = list["recordings"][0]["id"]
            .as_str()
            .context("recording")?
            .to_owned();
        if zerocopy == "auto" {
            // The recording being made, from its files: what nginx serves below.
            let url = format!("http://{viewer}/hls/bench/rec/{id}/index.m3u8");
            let name = "ovation recording, sendfile";
            eprintln!("bench-media: {name}, {} players", args.players);
            rows.push(measured(name, &args, &url, &|| vec![pid])?);
        }
        if zerocopy == "off" {
            let conf_dir = tmp.join("nginx");
            std::fs::create_dir_all(&conf_dir)?;
            let port = free_port()?;
            std::fs::write(
                conf_dir.join("nginx.conf"),
                nginx_conf(&conf_dir, &data, port),
            )?;
            let nginx = Reaped(
                Command::new("nginx")
                    .arg("-p")
                    .arg(&conf_dir)
                    .arg("-c")
                    .arg(conf_dir.join("nginx.conf"))
                    .stdin(Stdio::null())
                    .spawn()
                    .context("starting nginx (Debian: apt-get install nginx)")?,
            );
            let master = nginx.0.id();
            wait_for("nginx to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            })?;
            let url = format!("http://127.0.0.1:{port}/recordings/bench/{id}/index.m3u8");
            eprintln!("bench-media: nginx sendfile, {} players", args.players);
            let pids = move || {
                let mut p = children(master);
                p.push(master);
                p
            };
            let row = measured("nginx 1.22 sendfile", &args, &url, &pids);
            // SIGQUIT: the master stops its workers (a SIGKILL would orphan them).
            let _ = Command::new("kill")
                .args(["-QUIT", &master.to_string()])
                .status();
            let mut nginx = nginx;
            let _ = wait_for("nginx to stop", || nginx.0.try_wait().ok().flatten());
            rows.push(row?);
        }
        drop(server);
    }
    print!("{}", render(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)? + "\n")?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_config() {
        assert_eq!(cpu_per_gb(2.0, 4_000_000_000), 0.5);
        assert!(cpu_per_gb(1.0, 0).is_infinite());
        let conf = nginx_conf(Path::new("/tmp/x"), Path::new("/tmp/d"), 8088);
        assert!(conf.contains("sendfile on;") && conf.contains("listen 127.0.0.1:8088;"));
        assert!(
            !conf.contains("/var/") && !conf.contains("/etc/"),
            "no root paths"
        );
        let table = render(&[Row {
            server: "s".into(),
            players: 2,
            segments_per_s: 1.0,
            mb_per_s: 2.0,
            p50_ms: 0.5,
            p99_ms: 1.5,
            errors: 0,
            cpu_s_per_gb: 3.0,
            rss_mb: 4.0,
        }]);
        assert!(table.lines().count() == 3 && table.contains("| s | 2 |"));
    }
}
