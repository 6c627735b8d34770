//! Accept stealing: a shard takes the connections its neighbour leaves waiting.
//!
//! Shard 0 is starved on purpose: its threads are put under `SCHED_IDLE` (`chrt -i`, which
//! needs no privilege for one's own process) and a busy loop (`taskset`, killed after at most
//! 5 s) holds its CPU, so shard 0 gets a fraction of a percent of that CPU. The test thread,
//! pinned to the same CPU, connects: with CPU steering each connection lands in shard 0's
//! backlog, which shard 0 barely looks at. Shard 1, on the other CPU, takes them once they
//! have waited 2 ms. With stealing off (`--accept-stealing false`) this test fails: shard 0
//! answers every connection, hundreds of milliseconds late each.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A busy loop pinned to one CPU, killed on drop.
struct Hog(Child);

impl Hog {
    /// Starts the loop and waits (bounded) until it runs.
    fn start(cpu: usize) -> Hog {
        let child = Command::new("timeout")
            .args(["-s", "KILL", "5", "taskset", "-c", &cpu.to_string()])
            .args(["sh", "-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn timeout");
        let hog = Hog(child);
        let deadline = Instant::now() + WAIT;
        while !hog.looping() {
            assert!(Instant::now() < deadline, "the busy loop did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        hog
    }

    /// Whether `timeout`'s child has become the shell loop.
    fn looping(&self) -> bool {
        let pid = self.0.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| {
            c.split_whitespace().any(|child| {
                std::fs::read_to_string(format!("/proc/{child}/comm")).is_ok_and(|n| n == "sh\n")
            })
        })
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        // `timeout` passes TERM on to the loop, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Connections made while shard 0 is starved, per round.
const CONNECTS: u64 = 16;
/// Rounds of starvation tried before the test gives up on shard 1 taking any.
const ROUNDS: usize = 3;

#[test]
fn connections_a_starved_shard_leaves_waiting_are_taken_by_its_neighbour() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs 2 CPUs");
        return;
    }
    // SCHED_BATCH (asked for here) tells when shard 0's executor has started; see below.
    let server = Server::start(&["--shards", "2", "--shard-sched", "batch"]);
    assert!(server.steering, "CPU steering is on by default");
    // Shard 0's executor puts itself under SCHED_BATCH when it starts, which may be just
    // after the ready line: wait (bounded) for that, so SCHED_IDLE is not overwritten. Under
    // `batch` a shard never sets its policy again (under `storms`, the default, the test's
    // own connects could start a storm and lift the starvation).
    let deadline = Instant::now() + WAIT;
    let shard0 = loop {
        let shard0: Vec<ThreadInfo> = threads_of(server.child.id())
            .into_iter()
            .filter(|t| t.name.starts_with("shard-0"))
            .collect();
        if shard0.iter().any(|t| t.policy == SCHED_BATCH) {
            break shard0;
        }
        assert!(
            Instant::now() < deadline,
            "shard 0 never started: {shard0:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let cpu: usize = shard0[0]
        .cpus
        .parse()
        .expect("shard 0 is pinned to one CPU");
    for ThreadInfo { tid, .. } in &shard0 {
        let idle = Command::new("chrt").args(["-i", "-p", "0", tid]).status();
        assert!(idle.is_ok_and(|s| s.success()), "chrt -i on thread {tid}");
    }
    // Under EEVDF a SCHED_IDLE thread still runs in slivers, and in one CI run shard 0 took
    // every one of 16 connects within 2 ms of its arrival (then answered each about 20 ms
    // later). A starvation that leaked like that is tried again, at most ROUNDS times;
    // without stealing every round fails the same way.
    let mut shards = Vec::new();
    let mut viewers = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..ROUNDS {
        let hog = Hog::start(cpu);
        let connecting = Instant::now();
        let url = server.url("");
        let (round, ws) = std::thread::spawn(move || {
            netstack::sys::pin_current_thread(cpu).expect("pin to shard 0's CPU");
            let mut shards = Vec::new();
            let mut viewers = Vec::new();
            for _ in 0..CONNECTS {
                let (ws, welcome) = connect(&url, None);
                shards.push(welcome["shard"].as_u64().expect("shard"));
                viewers.push(ws);
            }
            (shards, viewers)
        })
        .join()
        .expect("connecting thread");
        // For the message below, should shard 1 take nothing: what the starvation looked like.
        seen.push(format!(
            "connects took {:?}; the busy loop still ran: {}; shard 0's threads then: {:?}",
            connecting.elapsed(),
            hog.looping(),
            threads_of(server.child.id())
                .into_iter()
                .filter(|t| t.name.starts_with("shard-0"))
                .collect::<Vec<_>>()
        ));
        drop(hog);
        shards.extend(round);
        viewers.extend(ws);
        if shards.contains(&1) {
            break;
        }
    }
    let taken = shards.iter().filter(|&&s| s == 1).count() as u64;
    // Shard 0 still gets a sliver of its CPU, and it may take a few of them itself (it has
    // been seen to take 6 of 10 right after its policy changed); without stealing it
    // takes every one.
    assert!(
        taken > 0,
        "with shard 0 starved, shard 1 took none of {} connections in {ROUNDS} rounds: \
         {shards:?} ({seen:?})",
        shards.len()
    );
    let connected = shards.len() as u64;
    let stats = server.wait_stats("the viewers", |s| s["connections"] == connected);
    let from_neighbour: u64 = stats["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| {
            s["counters"]["accepted_from_neighbour"]
                .as_u64()
                .expect("counter")
        })
        .sum();
    assert_eq!(from_neighbour, taken, "{stats}");
    drop(viewers);
}
