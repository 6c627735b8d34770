//! Where an idle viewer's bytes go (`bench-footprint`).
//!
//! Two halves, printed side by side:
//! - **in process**, each piece built `--local-n` times under mimalloc (the server's
//!   allocator) and weighed by the growth of this process's RSS: the shard's fixed structures
//!   (their sizes, from `shards::footprint`), the heap of a profile made from the loadgen's
//!   viewer mix, the shard reactor's armed poll on the socket (kernel memory: this shows it
//!   costs user space nothing: an open viewer has no glommio task or socket object), and one
//!   entry of the application core's mirror (its maps included);
//! - **the real server**: a fresh `ovation` holding `--n` idle loadgen viewers, its RSS slope
//!   from N/2 to N (the suite's idle scenario).
//!
//! What the slope has beyond the pieces is the allocator's rounding and everything not listed
//! (the connection table, bitmaps, the Joined event's transient copies kept in freed pages).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::procfs;
use crate::scenario::{self, Scenario, Settings};
use crate::server::{Paths, ServerKind};
use crate::wake_floor::{Floor, Relay};

#[derive(Parser, Debug)]
#[command(name = "bench-footprint", about = "Where an idle viewer's bytes go")]
pub struct Args {
    /// Directory holding the `ovation` and `loadgen` binaries.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Idle viewers held by the real server.
    #[arg(long, default_value_t = 15_000)]
    pub n: u64,
    /// Copies of each piece built in process (both ends of each socket are in this process,
    /// so at most about 9,000 under a 20,000-descriptor limit).
    #[arg(long, default_value_t = 8_000)]
    pub local_n: usize,
    /// Skip the real server (in-process pieces only).
    #[arg(long)]
    pub no_server: bool,
    /// Group-casts timed from the API request to one idle viewer's receipt, on a fresh
    /// server holding that one viewer (0: skip).
    #[arg(long, default_value_t = 200)]
    pub casts: usize,
    /// An argument for the server the casts are timed on, after its listen arguments;
    /// repeat for more (`--server-arg=--wake-shards-ahead --server-arg=false` times the
    /// casts without heads-ups).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// One piece and its bytes per viewer.
#[derive(Debug, Clone)]
pub struct Piece {
    pub name: String,
    pub bytes: f64,
    /// Counted in the sum (false for "of which" lines).
    pub counted: bool,
    pub how: &'static str,
}

fn rss() -> u64 {
    procfs::read_rss(std::process::id()).unwrap_or(0)
}

/// RSS growth per item while `build` makes `n` of them (kept alive in a vector filled
/// beforehand, so the vector itself is not weighed: a vector only reserved would have its
/// pages touched, and counted, as the items go in).
fn weigh<T>(n: usize, mut build: impl FnMut(usize) -> T) -> (f64, Vec<Option<T>>) {
    let mut kept: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let before = rss();
    for (i, slot) in kept.iter_mut().enumerate() {
        *slot = Some(build(i));
    }
    let after = rss();
    ((after as f64 - before as f64) / n as f64, kept)
}

/// The handshake data of loadgen viewer `i` (its default mix and one stream), made before
/// the weighing so that its temporaries are not counted as the profile's heap.
struct Handshake {
    viewer: loadgen::profile::Profile,
    query: Vec<(String, String)>,
    hello: Option<String>,
}

fn handshake(i: usize) -> Handshake {
    let mix = loadgen::plan::BehaviourMix::parse("idle:100").expect("a valid mix");
    let viewer = loadgen::profile::Profile::for_viewer(1, i as u64, 1, &mix);
    let query = vec![
        ("stream".to_owned(), "s1".to_owned()),
        ("region".to_owned(), viewer.region_code().to_owned()),
    ];
    let hello = viewer.hello();
    Handshake {
        viewer,
        query,
        hello,
    }
}

/// The profile the shard makes for viewer `i` from its handshake and `hello`.
fn handshake_profile(i: usize, h: &Handshake) -> shards::profile::Profile {
    let id = shards::profile::ViewerId::compose(0, 0, i as u32 + 1);
    let mut profile = shards::profile::Profile::from_handshake(
        id,
        "127.0.0.2:40000".parse().expect("an address"),
        Some(h.viewer.user_agent()),
        Some(h.viewer.accept_language()),
        &h.query,
        1_700_000_000_000,
    );
    if let Some(hello) = &h.hello {
        if let Ok(protocol::ViewerMessage::Hello(m)) = protocol::parse_viewer_message(hello) {
            profile.apply_hello(&m);
        }
    }
    profile
}

/// The pieces weighed in this process.
pub fn local_pieces(n: usize) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    for part in shards::footprint::shard_parts() {
        pieces.push(Piece {
            counted: !part.name.starts_with("of which"),
            name: part.name.to_owned(),
            bytes: part.bytes as f64,
            how: "size_of",
        });
    }
    // Profile heap: the strings and vectors of a handshake profile (inline part excluded).
    let handshakes: Vec<Handshake> = (0..n).map(handshake).collect();
    let (heap, weighed) = weigh(n, |i| handshake_profile(i, &handshakes[i]));
    pieces.push(Piece {
        name: "profile heap (strings, params) on the shard".into(),
        bytes: heap,
        counted: true,
        how: "RSS growth",
    });

    // The mirror entry: one join per viewer into the application core's mirror.
    let profiles: Vec<_> = (0..n)
        .map(|i| handshake_profile(i, &handshakes[i]))
        .collect();
    // Tokens as shards mint them (the viewer's id and a nonce): the mirror keeps the nonce.
    let tokens: Vec<Box<str>> = profiles
        .iter()
        .map(|p| shards::proto::resume::mint(p.viewer, p.viewer.0.wrapping_mul(0x9E37_79B9)))
        .collect();
    let mut mirror = ovation::app::mirror::Mirror::default();
    let mut profiles = profiles.into_iter();
    let mut tokens = tokens.into_iter();
    let before = rss();
    for i in 0..n {
        let (Some(profile), Some(token)) = (profiles.next(), tokens.next()) else {
            break;
        };
        let at = shards::proto::ViewerRef {
            shard: 0,
            slot: i as u32,
            viewer: profile.viewer,
        };
        mirror.join(at, token, profile);
    }
    let after = rss();
    pieces.push(Piece {
        name: "application core: mirror entry (maps, profile copy, resume token)".into(),
        bytes: (after as f64 - before as f64) / n as f64,
        counted: true,
        how: "RSS growth",
    });

    pieces.push(Piece {
        name: "shard reactor: the socket's armed multishot poll (kernel memory; user space)".into(),
        bytes: reactor_piece(n)?,
        counted: true,
        how: "RSS growth",
    });
    // Freed only now: memory freed before a later piece would be reused by it, unweighed.
    drop((mirror, weighed, handshakes));
    Ok(pieces)
}

/// The reactor's share: `n` accepted sockets each watched by a multishot poll on one ring, as
/// a shard watches its open viewers. The armed polls are kernel memory, so this process's
/// RSS should not grow with them (the sockets' descriptors are preallocated here).
fn reactor_piece(n: usize) -> anyhow::Result<f64> {
    let mut poller = netstack::sys::poller::Poller::new(1024, 8192)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut clients = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    for i in 0..n {
        // Spread over source addresses: this machine's ephemeral ports are shared with
        // every other benchmark's TIME_WAIT sockets.
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        let source = std::net::SocketAddr::from(([127, 0, 1, 2 + (i % 250) as u8], 0));
        client.bind(&source.into())?;
        client.connect(&addr.into())?;
        clients.push(client);
        accepted.push(listener.accept()?.0);
    }
    use std::os::fd::AsRawFd;
    let before = rss();
    for (i, s) in accepted.iter().enumerate() {
        poller.watch_read(s.as_raw_fd(), i as u64)?;
    }
    poller.submit()?;
    let cost = (rss() as f64 - before as f64) / n as f64;
    drop(poller);
    drop(accepted);
    drop(clients);
    Ok(cost)
}

/// The real server's RSS per idle viewer, N/2 -> N, and its RSS before the viewers.
pub fn server_slope(args: &Args) -> anyhow::Result<(f64, f64, f64)> {
    let paths = Paths {
        root: PathBuf::from("."),
        bin_dir: args.bin_dir.clone(),
    };
    let settings = Settings {
        n: args.n,
        connect_rate: scenario::MAX_RATE,
        setup_rate: 5000.0,
        fanout_count: 1,
        fanout_interval: Duration::from_millis(10),
        latency_count: 1,
        latency_interval: Duration::from_millis(250),
        poll_choices: 2,
        loadgen_processes: None,
        server_start_timeout: Duration::from_secs(20),
        stop_grace: Duration::from_secs(10),
    };
    let r = scenario::run_once(&paths, ServerKind::Ovation, Scenario::Idle, &settings);
    if !r.problems.is_empty() {
        anyhow::bail!("idle run: {}", r.problems.join("; "));
    }
    let get = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
    Ok((
        get("rss_marginal_per_conn"),
        get("rss_per_conn"),
        get("rss_before_mib"),
    ))
}

/// Reads from `tcp` until `needle` has arrived; returns what was read.
fn read_until(tcp: &mut std::net::TcpStream, needle: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let n = tcp.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Microseconds from writing `POST /api/groups/global/messages` (one keep-alive API
/// connection) to the frame's arrival at one idle viewer, `casts` times, on a fresh server.
/// After each cast, one round of the wake-up [`Relay`] (its shard stand-in on each CPU in
/// turn), so both see the machine in the same state.
pub fn cast_latency(args: &Args) -> anyhow::Result<(Vec<f64>, Floor, Vec<RoleCpu>)> {
    use std::io::Write;
    use std::time::Instant;
    let paths = Paths {
        root: PathBuf::from("."),
        bin_dir: args.bin_dir.clone(),
    };
    let server = crate::server::Server::start_with(
        &paths,
        ServerKind::Ovation,
        Duration::from_secs(20),
        &args.server_args,
    )?;
    let timeout = Some(Duration::from_secs(5));
    let mut viewer = std::net::TcpStream::connect(server.viewer)?;
    viewer.set_nodelay(true)?;
    viewer.set_read_timeout(timeout)?;
    write!(
        viewer,
        "GET /v1/viewer HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.viewer
    )?;
    read_until(&mut viewer, b"\"welcome\"")?;
    let mut api = std::net::TcpStream::connect(server.api)?;
    api.set_nodelay(true)?;
    api.set_read_timeout(timeout)?;
    let mut micros = Vec::with_capacity(args.casts);
    let mut relay = Relay::start()?;
    let mut floor = Floor::new(relay.cpus());
    let sched_before = procfs::read_thread_sched(server.pid)?;
    for i in 0..args.casts {
        let body = format!("{{\"payload\":{{\"seq\":{i},\"mark\":\"m{i}z\"}}}}");
        let request = format!(
            "POST /api/groups/global/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.api,
            crate::server::API_TOKEN,
            body.len()
        );
        let started = Instant::now();
        api.write_all(request.as_bytes())?;
        read_until(&mut viewer, format!("m{i}z").as_bytes())?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        // The API's answer (sent once the cast is written), before the next request.
        read_until(&mut api, b"\r\n\r\n")?;
        std::thread::sleep(Duration::from_millis(5));
        let cpu = i % relay.cpus();
        let us = relay
            .round(cpu)
            .ok_or_else(|| anyhow::anyhow!("a wake-up relay thread ended"))?;
        floor.add(cpu, us);
        std::thread::sleep(Duration::from_millis(5));
    }
    let sched_after = procfs::read_thread_sched(server.pid)?;
    let _ = server.stop(Duration::from_secs(10));
    let roles = role_cpu(&sched_before, &sched_after, micros.len());
    Ok((micros, floor, roles))
}

/// The server's threads over the casts, by role, per cast.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleCpu {
    pub role: &'static str,
    /// CPU time on the role's threads, microseconds per cast.
    pub cpu_us: f64,
    /// Times the role's threads were put on a CPU, per cast.
    pub runs: f64,
}

/// Sums each thread's growth between two readings into its role (`app-core-*` is the
/// application core, `shard-*` the shards), divided by `casts`. Threads absent from the first
/// reading count from zero.
pub fn role_cpu(
    before: &[(u32, procfs::ThreadSched)],
    after: &[(u32, procfs::ThreadSched)],
    casts: usize,
) -> Vec<RoleCpu> {
    const ROLES: [&str; 3] = ["application core", "shards", "other threads"];
    let mut sums = [(0u64, 0u64); 3];
    for (tid, now) in after {
        let was = before.iter().find(|(t, _)| t == tid).map(|(_, s)| s);
        let (run, slices) = was.map_or((0, 0), |w| (w.run_ns, w.slices));
        let i = if now.name.starts_with("app-core") {
            0
        } else if now.name.starts_with("shard-") {
            1
        } else {
            2
        };
        sums[i].0 += now.run_ns.saturating_sub(run);
        sums[i].1 += now.slices.saturating_sub(slices);
    }
    let n = casts.max(1) as f64;
    ROLES
        .iter()
        .zip(sums)
        .map(|(role, (run, slices))| RoleCpu {
            role,
            cpu_us: run as f64 / 1000.0 / n,
            runs: slices as f64 / n,
        })
        .collect()
}

/// The wake-up floor beside the cast: what the same three wake-ups cost with no work.
fn write_floor(out: &mut impl Write, cast_p50_ms: f64, floor: &Floor) -> std::io::Result<()> {
    let Some(pooled) = floor.pooled_p50() else {
        return Ok(());
    };
    let per_cpu: Vec<String> = floor
        .by_cpu
        .iter()
        .enumerate()
        .filter_map(|(cpu, v)| Some(format!("CPU {cpu} {:.3}", Floor::p50(v)? / 1000.0)))
        .collect();
    writeln!(
        out,
        "The same three wake-ups with no work (client -> unpinned thread -> thread pinned to a \
         CPU -> client), one round after each cast: p50 {:.3} ms ({}); the cast's p50 is \
         {:.2}x this floor, {:.3} ms above it.",
        pooled / 1000.0,
        per_cpu.join(", "),
        cast_p50_ms * 1000.0 / pooled,
        cast_p50_ms - pooled / 1000.0
    )
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let casts = if args.casts > 0 && !args.no_server {
        let (mut us, floor, roles) = cast_latency(&args)?;
        us.sort_by(f64::total_cmp);
        Some((us, floor, roles))
    } else {
        None
    };
    let pieces = local_pieces(args.local_n)?;
    let slope = if args.no_server {
        None
    } else {
        Some(server_slope(&args)?)
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "### Bytes per idle viewer ({} built in process; server: {} idle loadgen viewers)\n",
        args.local_n, args.n
    )?;
    writeln!(out, "| piece | bytes per viewer | measured by |")?;
    writeln!(out, "|---|---:|---|")?;
    let mut sum = 0.0;
    for p in &pieces {
        if p.counted {
            sum += p.bytes;
        }
        writeln!(out, "| {} | {:.0} | {} |", p.name, p.bytes, p.how)?;
    }
    writeln!(out, "| **sum of the pieces** | **{sum:.0}** | |")?;
    if let Some((marginal, from_zero, before_mib)) = slope {
        writeln!(
            out,
            "| server RSS slope, N/2 -> N (shard + application core) | {marginal:.0} | RSS |"
        )?;
        writeln!(
            out,
            "| slope beyond the pieces (allocator rounding, tables, other) | {:.0} | difference |",
            marginal - sum
        )?;
        writeln!(
            out,
            "| server RSS 0 -> N, per viewer | {from_zero:.0} | RSS |"
        )?;
        writeln!(
            out,
            "| server RSS before any viewer, MiB | {before_mib:.1} | RSS |"
        )?;
    }
    if let Some((us, floor, roles)) = casts.filter(|(u, _, _)| !u.is_empty()) {
        let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize] / 1000.0;
        writeln!(
            out,
            "\nAPI group-cast to one idle viewer ({} casts, one keep-alive API connection{}): \
             p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            us.len(),
            if args.server_args.is_empty() {
                String::new()
            } else {
                format!("; server run with {}", args.server_args.join(" "))
            },
            at(0.5),
            at(0.9),
            at(0.99)
        )?;
        write_floor(&mut out, at(0.5), &floor)?;
        let roles: Vec<String> = roles
            .iter()
            .map(|r| format!("{} {:.0} us on {:.1} runs", r.role, r.cpu_us, r.runs))
            .collect();
        writeln!(
            out,
            "Server CPU per cast (each thread's schedstat over the casts; a run is one time a \
             thread was put on a CPU; the relay rounds and 10 ms of sleep per cast are in the \
             same span): {}.",
            roles.join(", ")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::ThreadSched;

    fn t(tid: u32, name: &str, run_ns: u64, slices: u64) -> (u32, ThreadSched) {
        let name = name.to_owned();
        (
            tid,
            ThreadSched {
                name,
                run_ns,
                slices,
            },
        )
    }

    #[test]
    fn role_cpu_sums_each_threads_growth_into_its_role() {
        let before = [
            t(1, "ovation", 5_000, 3),
            t(2, "shard-0-1", 1_000_000, 10),
            t(3, "shard-1-2", 2_000_000, 20),
            t(4, "app-core-3", 3_000_000, 30),
        ];
        let after = [
            t(1, "ovation", 5_000, 3),
            t(2, "shard-0-1", 1_600_000, 30),
            t(3, "shard-1-2", 2_400_000, 40),
            t(4, "app-core-3", 4_000_000, 70),
            // Started during the casts: counted from zero.
            t(9, "blocking-1", 200_000, 2),
        ];
        let roles = role_cpu(&before, &after, 10);
        let get = |role: &str| roles.iter().find(|r| r.role == role).unwrap();
        assert_eq!(get("application core").cpu_us, 100.0);
        assert_eq!(get("application core").runs, 4.0);
        assert_eq!(get("shards").cpu_us, 100.0);
        assert_eq!(get("shards").runs, 4.0);
        assert_eq!(get("other threads").cpu_us, 20.0);
        assert_eq!(get("other threads").runs, 0.2);
    }
}
