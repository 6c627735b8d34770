//! Churn: what the server keeps for viewers that came and went.
//!
//! Clients connect, complete the WebSocket handshake, read the `welcome` and leave (with a
//! reset, so no TIME_WAIT piles up on the client side), over and over. Every departed viewer
//! is kept for the resume window so that it can come back with its votes; this measures that
//! the server's memory stays bounded while that happens, by sampling the server's RSS and its
//! `resume` counters every `--sample-every` cycles. `--compare DIR` runs an ovation binary
//! from another build (an older commit, say) the same way, in the same run, for a side by
//! side table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

use crate::server::{Paths, Server, ServerKind, API_TOKEN};

#[derive(Parser, Debug)]
#[command(
    name = "bench-churn",
    about = "Server memory under connect-and-leave churn"
)]
pub struct Args {
    /// Directory holding the `ovation` binary to measure.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Another build's directory, measured the same way in the same run.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Connect-and-leave cycles per server.
    #[arg(long, default_value_t = 100_000)]
    pub cycles: u64,
    /// Client threads.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Cycles between two memory samples.
    #[arg(long, default_value_t = 10_000)]
    pub sample_every: u64,
}

/// One memory sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub cycles: u64,
    pub rss: u64,
    /// The server's `resume` counters in `/api/stats`, when it reports them.
    pub resume: Option<serde_json::Value>,
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = vec![("this build".to_owned(), args.bin_dir.clone())];
    if let Some(dir) = &args.compare {
        runs.push((format!("{}", dir.display()), dir.clone()));
    }
    let mut results = Vec::new();
    for (name, dir) in &runs {
        eprintln!("bench-churn: {name}: {} cycles", args.cycles);
        let samples = run(dir, &args).with_context(|| format!("churn against {name}"))?;
        results.push((name.clone(), samples));
    }
    print_table(&args, &results);
    Ok(())
}

fn run(bin_dir: &std::path::Path, args: &Args) -> anyhow::Result<Vec<Sample>> {
    let paths = Paths {
        root: PathBuf::from("."),
        bin_dir: bin_dir.to_path_buf(),
    };
    let server = Server::start(&paths, ServerKind::Ovation, Duration::from_secs(30))?;
    let mut samples = vec![sample(&server, 0)?];
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut next = args.sample_every.min(args.cycles);
    while next > 0 {
        let target = next;
        let threads: Vec<_> = (0..args.threads)
            .map(|t| {
                let (done, failed) = (done.clone(), failed.clone());
                let viewer = server.viewer;
                std::thread::spawn(move || loop {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    if n >= target {
                        done.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                    if cycle(viewer, t).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            let _ = t.join();
        }
        samples.push(sample(&server, target)?);
        next = if target >= args.cycles {
            0
        } else {
            (target + args.sample_every).min(args.cycles)
        };
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "bench-churn: {} cycles in {secs:.1} s ({:.0}/s), {failed} failed",
        args.cycles,
        args.cycles as f64 / secs
    );
    if failed * 100 > args.cycles {
        bail!("{failed} of {} cycles failed", args.cycles);
    }
    let _ = server.stop(Duration::from_secs(10));
    Ok(samples)
}

/// One viewer: handshake, welcome, reset.
fn cycle(viewer: SocketAddr, thread: usize) -> std::io::Result<()> {
    let timeout = Duration::from_secs(10);
    let tcp = TcpStream::connect_timeout(&viewer, timeout)?;
    let sock = socket2::SockRef::from(&tcp);
    sock.set_linger(Some(Duration::ZERO))?;
    tcp.set_read_timeout(Some(timeout))?;
    let mut tcp = tcp;
    let request = format!(
        "GET /v1/viewer?churn={thread} HTTP/1.1\r\nHost: {viewer}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !contains(&buf, b"\"welcome\"") {
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if !buf.starts_with(b"HTTP/1.1 101") && buf.len() >= 12 {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn sample(server: &Server, cycles: u64) -> anyhow::Result<Sample> {
    // The departures of the last batch reach the application core within moments: wait
    // (bounded) until the server counts no open connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.connections(Duration::from_secs(5))? > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = crate::http::request(
        server.api,
        "GET",
        "/api/stats",
        API_TOKEN,
        None,
        Duration::from_secs(5),
    )?;
    let resume = stats.json().and_then(|v| v.get("resume").cloned());
    Ok(Sample {
        cycles,
        rss: crate::procfs::read_rss(server.pid)?,
        resume,
    })
}

fn print_table(args: &Args, results: &[(String, Vec<Sample>)]) {
    println!(
        "### Churn: {} connect-and-leave cycles, {} client threads\n",
        args.cycles, args.threads
    );
    let mut head = String::from("| cycles |");
    let mut rule = String::from("|---:|");
    for (name, _) in results {
        head.push_str(&format!(" {name}: RSS MB | {name}: resume |"));
        rule.push_str("---:|---|");
    }
    println!("{head}\n{rule}");
    let rows = results.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
    for i in 0..rows {
        let cycles = results
            .iter()
            .find_map(|(_, s)| s.get(i))
            .map_or(0, |s| s.cycles);
        let mut line = format!("| {cycles} |");
        for (_, samples) in results {
            match samples.get(i) {
                Some(s) => line.push_str(&format!(
                    " {:.1} | {} |",
                    s.rss as f64 / 1e6,
                    s.resume
                        .as_ref()
                        .map_or("-".to_owned(), |r| r.to_string().replace('|', "/"))
                )),
                None => line.push_str(" | |"),
            }
        }
        println!("{line}");
    }
    println!();
    for (name, samples) in results {
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            let growth = last.rss as f64 - first.rss as f64;
            println!(
                "- {name}: {:.1} MB -> {:.1} MB, {:.0} bytes per departed viewer",
                first.rss as f64 / 1e6,
                last.rss as f64 / 1e6,
                growth / last.cycles.max(1) as f64
            );
        }
    }
}
