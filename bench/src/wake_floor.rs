//! The machine's price for the wake-ups one group-cast crosses, measured beside the casts.
//!
//! An API group-cast to an idle viewer wakes three sleeping threads: the application core (by
//! its API socket), the viewer's shard (by its channel), and the client (by its socket). The
//! relay wakes them in turn; the server, with `wake_shards_ahead`, wakes a shard on another
//! CPU than the core's as the request begins, so that wake-up overlaps the core's work. On an
//! idle machine each wake-up may have to bring a halted CPU back, and what that
//! costs belongs to the machine, not to the server: on the 2-core VM of `bench/RESULTS.md` a
//! wake-up that crosses to an idle CPU took about 0.09 ms, and one on the waker's CPU about
//! 0.02 ms (`bench/cast-hops`).
//!
//! [`Relay`] passes a token through the same three wake-ups with no work at all, over the same
//! kinds of link: the caller (the client) writes one byte on a loopback TCP socket read by an
//! unpinned thread (the core), which wakes a thread pinned to one CPU (the shard) through a
//! channel, which writes the byte back to the caller on a second loopback TCP socket. Its
//! round trip is the floor a cast's latency stands on at that moment, so `bench-footprint`
//! runs one round after each cast and prints both.
//!
//! The shard stand-ins are pinned to CPUs 0 to N-1, N being the available parallelism: the
//! server's shards on a machine whose online CPUs are those. A stand-in that cannot be pinned
//! (a narrower cpuset) runs unpinned.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::channel;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads that relay a token: caller -> (loopback TCP) -> core stand-in -> (channel) -> one
/// pinned shard stand-in per CPU -> (loopback TCP) -> caller.
pub struct Relay {
    /// The caller's end of the request socket (the API connection's stand-in).
    to_core: Option<TcpStream>,
    /// The caller's end of the delivery socket (the viewer connection's stand-in).
    back: TcpStream,
    threads: Vec<JoinHandle<()>>,
    cpus: usize,
}

/// A connected pair of loopback TCP sockets, Nagle off on both.
fn tcp_pair() -> std::io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(listener.local_addr()?)?;
    let (b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    b.set_nodelay(true)?;
    Ok((a, b))
}

impl Relay {
    /// Starts the core stand-in (unpinned, like the application core) and one shard stand-in
    /// pinned to each CPU (like the shards).
    pub fn start() -> std::io::Result<Relay> {
        // The token is one byte: at most 256 stand-ins.
        let cpus = std::thread::available_parallelism().map_or(1, |n| usize::from(n).min(256));
        let (to_core, mut core_in) = tcp_pair()?;
        let (back, delivery) = tcp_pair()?;
        back.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut threads = Vec::with_capacity(cpus + 1);
        let mut to_shards = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            let (to_shard, shard_rx) = channel::<()>();
            let mut delivery = delivery.try_clone()?;
            to_shards.push(to_shard);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("floor-shard-{cpu}"))
                    .spawn(move || {
                        let _ = netstack::sys::pin_current_thread(cpu);
                        while shard_rx.recv().is_ok() {
                            if delivery.write_all(&[cpu as u8]).is_err() {
                                break;
                            }
                        }
                    })?,
            );
        }
        threads.push(
            std::thread::Builder::new()
                .name("floor-core".into())
                .spawn(move || {
                    let mut byte = [0u8; 1];
                    // Ends when the caller closes its end (read returns 0) or on an error.
                    while let Ok(1) = core_in.read(&mut byte) {
                        let cpu = usize::from(byte[0]);
                        if to_shards[cpu % to_shards.len()].send(()).is_err() {
                            break;
                        }
                    }
                })?,
        );
        Ok(Relay {
            to_core: Some(to_core),
            back,
            threads,
            cpus,
        })
    }

    /// CPUs a round can reach (one shard stand-in each).
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// One round trip through the shard stand-in on `cpu`, in microseconds (None if a relay
    /// thread is gone or the token did not come back within 5 s).
    pub fn round(&mut self, cpu: usize) -> Option<f64> {
        let cpu = cpu % self.cpus;
        let to_core = self.to_core.as_mut()?;
        let started = Instant::now();
        to_core.write_all(&[u8::try_from(cpu).ok()?]).ok()?;
        let mut byte = [0u8; 1];
        self.back.read_exact(&mut byte).ok()?;
        Some(started.elapsed().as_secs_f64() * 1e6)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Closing the request socket ends the core stand-in; its end closes the shards'
        // channels, and they end too.
        self.to_core = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Rounds taken with the shard stand-in on each CPU in turn: p50 per CPU and over all, in µs.
#[derive(Debug, Default, Clone)]
pub struct Floor {
    /// Microseconds, by the CPU the shard stand-in was on.
    pub by_cpu: Vec<Vec<f64>>,
}

impl Floor {
    pub fn new(cpus: usize) -> Floor {
        Floor {
            by_cpu: vec![Vec::new(); cpus],
        }
    }

    pub fn add(&mut self, cpu: usize, micros: f64) {
        if let Some(v) = self.by_cpu.get_mut(cpu) {
            v.push(micros);
        }
    }

    /// The median of `v` (None if empty).
    pub fn p50(v: &[f64]) -> Option<f64> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len().checked_sub(1)? / 2).copied()
    }

    /// The median over every round.
    pub fn pooled_p50(&self) -> Option<f64> {
        Floor::p50(&self.by_cpu.concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_returns_every_token_and_ends_its_threads() {
        let mut relay = Relay::start().unwrap();
        let cpus = relay.cpus();
        assert!(cpus >= 1);
        let mut floor = Floor::new(cpus);
        for i in 0..20 {
            let cpu = i % cpus;
            let us = relay.round(cpu).expect("the token came back");
            assert!(us > 0.0);
            floor.add(cpu, us);
        }
        assert_eq!(floor.by_cpu.iter().map(Vec::len).sum::<usize>(), 20);
        assert!(floor.pooled_p50().is_some());
        // Dropping joins every relay thread: a relay that did not end would hang here.
        drop(relay);
    }

    #[test]
    fn medians() {
        assert_eq!(Floor::p50(&[]), None);
        assert_eq!(Floor::p50(&[3.0]), Some(3.0));
        assert_eq!(Floor::p50(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(Floor::p50(&[4.0, 1.0, 3.0, 2.0]), Some(2.0));
    }
}
