//! HAProxy's agent-check (HAProxy configuration manual, 5.2 `agent-check`): HAProxy connects
//! to `agent_listen`, and the edge answers one line, such as `up 73% maxconn:9000\n`, then
//! closes. The weight falls as connections near capacity or the CPU is busy; a draining edge
//! answers `drain` (no new viewers, the current ones stay) and one that cannot serve `down`.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the answer is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Viewer connections open now.
    pub connections: usize,
    /// The most the edge takes (`max_connections`).
    pub capacity: usize,
    /// Busy CPU of this process over the last interval, 0.0 to 1.0 of the machine.
    pub cpu: f64,
    /// Shutting down: finish the current viewers, take no new ones.
    pub draining: bool,
    /// Unable to serve (no shard listening).
    pub down: bool,
}

impl Load {
    /// Percent of capacity in use, 0 to 100: the larger of connections and CPU.
    pub fn percent(&self) -> u8 {
        let conns = if self.capacity == 0 {
            1.0
        } else {
            self.connections as f64 / self.capacity as f64
        };
        let used = conns.max(self.cpu).clamp(0.0, 1.0);
        (used * 100.0).round() as u8
    }
}

/// The agent's one-line answer. The weight is the headroom (100% when idle, at least 1% while
/// there is any room, so HAProxy keeps a little traffic flowing to measure); `maxconn` is the
/// room left, so HAProxy queues rather than overfills an edge.
pub fn reply(load: &Load) -> String {
    if load.down {
        return "down\n".into();
    }
    if load.draining {
        return "drain\n".into();
    }
    let room = load.capacity.saturating_sub(load.connections);
    let weight = if room == 0 {
        0
    } else {
        (100 - load.percent() as u32).max(1)
    };
    format!("up {weight}% maxconn:{}\n", load.capacity.max(1))
}

/// The live figures an agent thread reads.
#[derive(Debug, Default)]
pub struct LoadSource {
    pub connections: Arc<AtomicUsize>,
    pub capacity: usize,
    pub draining: AtomicBool,
    /// Set once every shard listens.
    pub ready: AtomicBool,
}

/// CPU time of this process (user + system) in clock ticks, from `/proc/self/stat`.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ") state".
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Measures this process's share of the machine's CPU between two calls.
struct CpuMeter {
    last: Option<(Instant, u64)>,
    cpus: f64,
}

impl CpuMeter {
    fn new() -> CpuMeter {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        CpuMeter { last: None, cpus }
    }

    fn sample(&mut self) -> f64 {
        // Linux reports these in USER_HZ, 100 per second on every architecture it supports.
        const TICKS_PER_SECOND: f64 = 100.0;
        let now = (Instant::now(), process_ticks().unwrap_or(0));
        let busy = match self.last {
            Some((t, ticks)) => {
                let wall = now.0.duration_since(t).as_secs_f64();
                if wall < 0.05 {
                    return 0.0;
                }
                let used = now.1.saturating_sub(ticks) as f64 / TICKS_PER_SECOND;
                used / wall / self.cpus
            }
            None => 0.0,
        };
        self.last = Some(now);
        busy.clamp(0.0, 1.0)
    }
}

/// Answers agent checks on `listener` on a thread of its own, one line per connection.
pub fn serve(listener: TcpListener, source: Arc<LoadSource>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("agent-check".into())
        .spawn(move || {
            let mut cpu = CpuMeter::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let load = Load {
                    connections: source.connections.load(Ordering::Relaxed),
                    capacity: source.capacity,
                    cpu: cpu.sample(),
                    draining: source.draining.load(Ordering::Relaxed),
                    down: !source.ready.load(Ordering::Relaxed),
                };
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = stream.write_all(reply(&load).as_bytes());
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(connections: usize, cpu: f64) -> Load {
        Load {
            connections,
            capacity: 1000,
            cpu,
            draining: false,
            down: false,
        }
    }

    #[test]
    fn weight_is_the_headroom_of_connections_or_cpu() {
        assert_eq!(reply(&load(0, 0.0)), "up 100% maxconn:1000\n");
        assert_eq!(reply(&load(270, 0.1)), "up 73% maxconn:1000\n");
        assert_eq!(reply(&load(100, 0.6)), "up 40% maxconn:1000\n");
        assert_eq!(reply(&load(999, 0.0)), "up 1% maxconn:1000\n");
        assert_eq!(reply(&load(1000, 0.0)), "up 0% maxconn:1000\n");
        assert_eq!(reply(&load(5000, 2.0)), "up 0% maxconn:1000\n");
    }

    #[test]
    fn draining_and_down_win_over_load() {
        let mut l = load(10, 0.0);
        l.draining = true;
        assert_eq!(reply(&l), "drain\n");
        l.down = true;
        assert_eq!(reply(&l), "down\n");
    }

    #[test]
    fn the_agent_answers_over_tcp() {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(LoadSource {
            capacity: 10,
            ..LoadSource::default()
        });
        source.connections.store(5, Ordering::Relaxed);
        serve(listener, source.clone()).unwrap();
        let ask = || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        assert_eq!(ask(), "down\n", "not ready yet");
        source.ready.store(true, Ordering::Relaxed);
        let answer = ask();
        assert!(
            answer.starts_with("up ") && answer.ends_with(" maxconn:10\n"),
            "{answer}"
        );
        source.draining.store(true, Ordering::Relaxed);
        assert_eq!(ask(), "drain\n");
    }
}
