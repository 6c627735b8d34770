//! The `shard_sched` setting: the scheduling policy of the shard threads, read from
//! `/proc/PID/task/*/stat` of a real server. `batch` puts both shard executors under
//! `SCHED_BATCH` from the start, `normal` never does, and `storms` (the default) does so while
//! a shard takes a connect storm and puts it back under `SCHED_OTHER` once the storm is over.
//! The application core's thread keeps the normal policy throughout.
mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The shard threads of `pid` under `SCHED_BATCH`; asserts that no other thread is.
fn batch_shards(pid: u32) -> BTreeSet<String> {
    let threads = threads_of(pid);
    for t in &threads {
        assert!(
            t.name.starts_with("shard-") || t.policy != SCHED_BATCH,
            "only shard threads change policy: {threads:?}"
        );
    }
    threads
        .into_iter()
        .filter(|t| t.name.starts_with("shard-") && t.policy == SCHED_BATCH)
        .map(|t| t.name)
        .collect()
}

/// Connects until both shards have answered one viewer (hashing, not steering, spreads them),
/// so both threads have run their accept loops; returns the viewers.
fn one_viewer_on_each_shard(server: &Server) -> Vec<Ws> {
    let mut seen = [false; 2];
    let mut keep = Vec::new();
    for _ in 0..64 {
        let (ws, welcome) = connect(&server.url(""), None);
        seen[welcome["shard"].as_u64().unwrap() as usize] = true;
        keep.push(ws);
        if seen == [true, true] {
            return keep;
        }
    }
    panic!("both shards answered: {seen:?}");
}

#[test]
fn batch_puts_both_shard_executors_under_sched_batch() {
    let server = Server::start(&["--shards", "2", "--shard-sched", "batch"]);
    // Each shard sets its policy when its thread starts, which may be just after the ready
    // line: wait (bounded) for both.
    let deadline = Instant::now() + WAIT;
    loop {
        let batch = batch_shards(server.child.id());
        if batch.len() == 2 {
            assert_eq!(
                batch.into_iter().collect::<Vec<_>>(),
                ["shard-0-1", "shard-1-2"].map(String::from),
                "both shard executors"
            );
            break;
        }
        assert!(Instant::now() < deadline, "under SCHED_BATCH: {batch:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Viewers are served as before.
    let (_ws, welcome) = connect(&server.url(""), None);
    assert_eq!(welcome["type"], "welcome");
}

#[test]
fn normal_leaves_every_thread_under_the_normal_policy() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--cpu-steering",
        "false",
        "--shard-sched",
        "normal",
    ]);
    // A quick run of connects would be a storm under `storms`.
    let viewers = one_viewer_on_each_shard(&server);
    let more: Vec<Ws> = (0..64).map(|_| connect(&server.url(""), None).0).collect();
    let batch = batch_shards(server.child.id());
    assert!(batch.is_empty(), "under SCHED_BATCH: {batch:?}");
    drop((viewers, more));
}

/// The default: a shard goes under `SCHED_BATCH` when a storm of connects starts (its accept
/// loop gathers: connects keep arriving within a millisecond of its last look) and back under
/// `SCHED_OTHER` 500 ms after the storm's last connect.
#[test]
fn storms_batch_a_shard_for_a_connect_storm_and_no_longer() {
    let server = Server::start(&["--shards", "2"]);
    assert!(
        batch_shards(server.child.id()).is_empty(),
        "no connect yet, but a shard is under SCHED_BATCH"
    );
    // The storm: four threads connect one viewer after another, as fast as the server
    // answers, until a shard is seen under SCHED_BATCH (bounded).
    let url = server.url("");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && held.len() < 500 {
                    held.push(connect(&url, None).0);
                }
                held
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    let seen = loop {
        let batch = batch_shards(server.child.id());
        if !batch.is_empty() || Instant::now() > deadline {
            break batch;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let held: Vec<Vec<Ws>> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let storm: usize = held.iter().map(Vec::len).sum();
    assert!(
        !seen.is_empty(),
        "no shard under SCHED_BATCH during a storm of {storm} connects"
    );
    // The storm is over: every shard goes back to the normal policy (500 ms after its last
    // connect), and the viewers are still served.
    let deadline = Instant::now() + WAIT;
    loop {
        let batch = batch_shards(server.child.id());
        if batch.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still under SCHED_BATCH after the storm: {batch:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_ws, welcome) = connect(&server.url(""), None);
    assert_eq!(welcome["type"], "welcome");
    drop(held);
}

#[test]
fn a_bad_shard_sched_setting_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .args(["serve", "--shard-sched", "fifo", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run ovation");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("shard_sched must be normal, storms or batch"),
        "{err}"
    );
}
