//! What ovation's patched glommio (`vendor/glommio`, see its `OVATION.md`) changes, checked
//! through glommio's public API:
//!
//! - a sleeping executor is woken by another thread's send: the sleeper raises its flag and
//!   issues a SeqCst fence instead of the process-wide `membarrier`, and the sender fences
//!   before it reads the flag. A lost wake-up leaves an executor asleep, so the ping-pongs
//!   below would stop; every wait is bounded, so they fail instead of hanging. (They also
//!   caught the third change's bug: with timers kept, a round preempted before it ran
//!   anything parked with tasks queued, and the first ping-pong stalled.)
//! - a receiver wakes a sleeping sender only when the sender may be waiting for room (the
//!   channel was full): upstream woke it on every message taken, for nothing. A sender that
//!   waits for room must still be woken every time, and one that sleeps for its own reasons
//!   must not be woken by each message it sent.
//! - after a wake-up by its eventfd, an executor runs the woken task before it arms the
//!   eventfd's read again, and submits the poll that links its rings in the same system call
//!   that waits. Both must still leave it asleep between messages, woken by every one: the
//!   ping-pongs hang on a lost wake-up, and the sleepy sender's count of sleeps falls to
//!   nothing if the executor spins.
//! - the main ring posts a completion that arrives while its thread runs at the thread's
//!   next entry into the kernel (`IORING_SETUP_COOP_TASKRUN`), where upstream interrupted
//!   the thread's CPU. An executor that never sleeps must still see every read complete.
//! - timers: a timer still pending is kept across scheduling rounds when it fires no later
//!   than the timer that is needed. Every timer must still fire, never early, in the order
//!   of its deadline, however the rounds before it armed the ring, and a kept timer that
//!   fires just as its executor goes to sleep must still wake it.
//! - channels (upstream defects, fixed): a task that polls a channel again and again while
//!   it waits holds one registration, not one per poll (the clones overflowed the task's
//!   reference count and panicked its thread), and a sender waiting for room in a full
//!   channel ends with `Closed` when the receiver goes (it spun for ever).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Placement};

/// Bound on every wait for a test's threads: far beyond what the work needs, there only so a
/// lost wake-up fails the test instead of hanging it.
const BOUND: Duration = Duration::from_secs(120);

/// Runs `f` on a new glommio executor thread; its result arrives on the returned channel.
fn on_executor<T, F, Fut>(name: &str, f: F) -> mpsc::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .spawn(move || async move {
            let _ = tx.send(f().await);
        })
        .expect("spawn executor");
    rx
}

#[test]
fn cross_thread_sends_wake_a_sleeping_executor_every_time() {
    const ROUNDS: u64 = 20_000;
    let (ping_tx, ping_rx) = shared_channel::new_bounded::<u64>(1);
    let (pong_tx, pong_rx) = shared_channel::new_bounded::<u64>(1);
    let echo = on_executor("echo", move || async move {
        let rx = ping_rx.connect().await;
        let tx = pong_tx.connect().await;
        let mut n = 0;
        while let Some(v) = rx.recv().await {
            tx.send(v + 1).await.expect("pong");
            n += 1;
        }
        n
    });
    let driver = on_executor("driver", move || async move {
        let tx = ping_tx.connect().await;
        let rx = pong_rx.connect().await;
        for i in 0..ROUNDS {
            tx.send(i).await.expect("ping");
            // Each side waits for the other with nothing else to do, so it goes to sleep
            // between most messages: every round trip is two sleeps and two wake-ups.
            assert_eq!(rx.recv().await, Some(i + 1));
        }
        ROUNDS
    });
    assert_eq!(driver.recv_timeout(BOUND).expect("driver finished"), ROUNDS);
    assert_eq!(echo.recv_timeout(BOUND).expect("echo finished"), ROUNDS);
}

#[test]
fn a_thread_that_is_not_an_executor_wakes_one_too() {
    // Wakers called from a plain thread take glommio's foreign-wake path (the same path the
    // cluster bus's tokio thread uses to reach the application core).
    const ROUNDS: u64 = 5_000;
    let (to_ex, from_thread) = flume::bounded::<u64>(4);
    let (to_thread, from_ex) = flume::bounded::<u64>(4);
    let echo = on_executor("echo", move || async move {
        let mut n = 0;
        while let Ok(v) = from_thread.recv_async().await {
            to_thread
                .send_async(v * 2)
                .await
                .expect("send to the thread");
            n += 1;
        }
        n
    });
    let mut sum = 0;
    for i in 1..=ROUNDS {
        to_ex.send(i).expect("send to the executor");
        if i % 7 == 0 {
            // Let the executor run dry and go to sleep now and then.
            thread::sleep(Duration::from_micros(100));
        }
        sum += from_ex.recv_timeout(BOUND).expect("echo from the executor");
    }
    drop(to_ex);
    assert_eq!(sum, ROUNDS * (ROUNDS + 1));
    assert_eq!(echo.recv_timeout(BOUND).expect("echo finished"), ROUNDS);
}

#[test]
fn timers_fire_in_deadline_order_and_never_early_whatever_armed_the_ring() {
    let done = on_executor("timers", || async {
        // Rounds that arm the preemption timer: busy tasks that yield.
        let busy = glommio::spawn_local(async {
            let until = Instant::now() + Duration::from_millis(30);
            while Instant::now() < until {
                glommio::yield_if_needed().await;
                futures_lite::future::yield_now().await;
            }
        });
        // Timers of mixed lengths started together, some shorter than the executor's
        // preemption timer (100 ms by default) and some longer.
        let lengths_ms = [150u64, 3, 40, 1, 120, 7, 2, 60, 15, 110];
        let woke_order = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for ms in lengths_ms {
            let woke_order = woke_order.clone();
            tasks.push(glommio::spawn_local(async move {
                // The deadline as this task sets it: the order to expect even if the
                // thread is descheduled between two tasks' first polls.
                let set = Instant::now();
                sleep(Duration::from_millis(ms)).await;
                let woke = set.elapsed();
                assert!(
                    woke >= Duration::from_millis(ms),
                    "a {ms} ms timer fired after {woke:?}"
                );
                woke_order
                    .borrow_mut()
                    .push((set + Duration::from_millis(ms), ms));
            }));
        }
        busy.await;
        for t in tasks {
            t.await;
        }
        let order = woke_order.take();
        // Then sleeps one after another on an otherwise idle executor: each one goes to
        // sleep with the previous round's timer still armed or just fired.
        for ms in [5u64, 1, 20, 2, 1, 50, 3] {
            let t = Instant::now();
            sleep(Duration::from_millis(ms)).await;
            assert!(t.elapsed() >= Duration::from_millis(ms));
        }
        order
    });
    let order = done.recv_timeout(BOUND).expect("timers finished");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    let ms = |v: &[(Instant, u64)]| v.iter().map(|&(_, ms)| ms).collect::<Vec<_>>();
    assert_eq!(ms(&order), ms(&sorted), "timers woke out of deadline order");
}

#[test]
fn a_sender_waiting_for_room_is_woken_every_time() {
    // A small channel the receiver drains in spurts, sleeping between them: the sender fills
    // it and goes to sleep waiting for room over and over. A lost wake-up leaves it asleep.
    for capacity in [2, 8, 64] {
        let at = format!("capacity {capacity}");
        sender_fills_a_slow_receiver(capacity, 100_000, 97, BOUND, &at);
    }
}

#[test]
fn a_receiver_sleeping_between_spurts_is_woken_by_its_timer_every_time() {
    // The receiver sleeps 50 us after every 7th item. Each sleep can meet a latency-ring
    // timer kept from an earlier round that fires while the executor goes to sleep: glommio
    // change 1 once kept such a timer, saw its completion taken a moment later, and slept
    // with no timer armed. The receiver then never woke, and the sender waited for room
    // forever. Without the fix these 30 runs hung in 4 of 4 tries (test build, glommio
    // optimized as the root Cargo.toml sets it), by run 10 at the latest. Bound 20 s each.
    const RUNS: usize = 30;
    for run in 0..RUNS {
        let at = format!("run {run} of {RUNS}");
        sender_fills_a_slow_receiver(2, 20_000, 7, Duration::from_secs(20), &at);
    }
}

/// One sender sends `items` into a channel of `capacity`; the receiver takes them in order
/// and sleeps 50 us after every `every`th. Fails, saying where the receiver was, when either
/// side is not done within `bound`.
fn sender_fills_a_slow_receiver(
    capacity: usize,
    items: u64,
    every: u64,
    bound: Duration,
    at: &str,
) {
    let sent = Arc::new(AtomicU64::new(0));
    let taken = Arc::new(AtomicU64::new(0));
    // Where the receiver is: 0 running, 1 waiting for an item, 2 in its timer sleep.
    let state = Arc::new(AtomicU64::new(0));
    let (tx, rx) = shared_channel::new_bounded::<u64>(capacity);
    let counted = sent.clone();
    let sender = on_executor("full-sender", move || async move {
        let tx = tx.connect().await;
        for i in 0..items {
            tx.send(i).await.expect("send");
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (counted, place) = (taken.clone(), state.clone());
    let receiver = on_executor("slow-receiver", move || async move {
        let rx = rx.connect().await;
        let mut expect = 0;
        loop {
            place.store(1, Ordering::Relaxed);
            let Some(v) = rx.recv().await else { break };
            place.store(0, Ordering::Relaxed);
            assert_eq!(v, expect, "in order, none lost");
            expect += 1;
            counted.store(expect, Ordering::Relaxed);
            if expect % every == 0 {
                place.store(2, Ordering::Relaxed);
                sleep(Duration::from_micros(50)).await;
                place.store(0, Ordering::Relaxed);
            }
        }
        expect
    });
    let stuck = || {
        let place = match state.load(Ordering::Relaxed) {
            0 => "running",
            1 => "waiting for an item",
            _ => "in its timer sleep",
        };
        format!(
            "{at}: stuck with {} sent and {} taken, the receiver {place}",
            sent.load(Ordering::Relaxed),
            taken.load(Ordering::Relaxed)
        )
    };
    assert!(sender.recv_timeout(bound).is_ok(), "sender: {}", stuck());
    let got = receiver
        .recv_timeout(bound)
        .unwrap_or_else(|_| panic!("receiver: {}", stuck()));
    assert_eq!(got, items, "{at}");
}

#[test]
fn an_idle_executor_sleeps_until_it_is_woken() {
    // After a burst of work the executor waits for one message, sent 500 ms later. It has no
    // timer of its own, so it should sleep through: once, or twice when the preemption timer
    // armed for the burst fires early (change 1 keeps it, and it fires at most once).
    // Before change 1 armed that timer only for waiting task queues, every poll armed a new
    // one and each park kept it: an idle executor woke every 100 ms, for ever.
    // The waker's 500 ms start only once the idle side has done its burst and counted, so a
    // slow start cannot make the message arrive before the idle span.
    let (tx, rx) = shared_channel::new_bounded::<u64>(4);
    let (ready_tx, ready_rx) = shared_channel::new_bounded::<()>(1);
    let idle = on_executor("idle", move || async move {
        let (rx, ready) = (rx.connect().await, ready_tx.connect().await);
        for _ in 0..1_000 {
            glommio::executor().yield_task_queue_now().await;
        }
        let before = own_sleeps();
        ready.try_send(()).expect("room for the one signal");
        let got = rx.recv().await;
        (got, own_sleeps() - before)
    });
    let _waker = on_executor("waker", move || async move {
        let (tx, ready) = (tx.connect().await, ready_rx.connect().await);
        ready.recv().await.expect("the idle side is ready");
        sleep(Duration::from_millis(500)).await;
        tx.send(7).await.expect("send");
    });
    let (got, sleeps) = idle.recv_timeout(BOUND).expect("woken by the message");
    assert_eq!(got, Some(7));
    assert!(
        (1..=3).contains(&sleeps),
        "{sleeps} sleeps over 500 ms idle: the executor woke for nothing"
    );
}

/// `voluntary_ctxt_switches` of the calling thread: each time it blocked, which for an
/// executor is each time it went to sleep.
fn own_sleeps() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

#[test]
fn taking_a_message_does_not_wake_a_sender_that_sleeps_for_its_own_reasons() {
    // The application core sends one command and goes to sleep; the shard takes it. Upstream
    // the take woke the core again for nothing: two sleeps per message instead of one.
    const ROUNDS: u64 = 400;
    let (tx, rx) = shared_channel::new_bounded::<u64>(64);
    let receiver = on_executor("taker", move || async move {
        let rx = rx.connect().await;
        let mut n = 0;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let sender = on_executor("sleepy-sender", move || async move {
        let tx = tx.connect().await;
        let before = own_sleeps();
        for i in 0..ROUNDS {
            tx.try_send(i).expect("room");
            sleep(Duration::from_millis(1)).await;
        }
        own_sleeps() - before
    });
    let sleeps = sender.recv_timeout(BOUND).expect("sender finished");
    assert_eq!(
        receiver.recv_timeout(BOUND).expect("receiver finished"),
        ROUNDS
    );
    // One sleep per round for its timer; a wake-up per message taken would make it two. An
    // executor that spun instead of sleeping (its eventfd never armed again, or a sleep that
    // does not wait) would make it none.
    assert!(
        (ROUNDS / 2..ROUNDS * 3 / 2).contains(&sleeps),
        "{sleeps} sleeps over {ROUNDS} one-millisecond timers"
    );
}

#[test]
fn socket_reads_complete_while_the_executor_never_sleeps() {
    // The main ring posts a completion that arrives while its thread runs at the thread's
    // next entry into the kernel, not by an interrupt (glommio change 7). Here a task that
    // always yields keeps the executor from ever sleeping, so every read's completion arrives
    // while it runs; an echo that lost one would stall, and the peer's bounded read fails.
    use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
    use std::cell::Cell;
    use std::io::{Read, Write};

    const ROUNDS: u64 = 2_000;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name("busy-echo")
        .preempt_timer(Duration::from_millis(1))
        .spawn(move || async move {
            let done = Rc::new(Cell::new(false));
            let spinning = done.clone();
            let spinner = glommio::spawn_local(async move {
                let mut yields = 0u64;
                while !spinning.get() {
                    future::yield_now().await;
                    yields += 1;
                }
                yields
            });
            let mut stream = glommio::net::TcpStream::connect(addr)
                .await
                .expect("connect");
            let mut buf = [0u8; 8];
            let mut echoed = 0u64;
            while stream.read_exact(&mut buf).await.is_ok() {
                stream.write_all(&buf).await.expect("echo");
                echoed += 1;
            }
            done.set(true);
            let _ = tx.send((echoed, spinner.await));
        })
        .expect("spawn executor");

    let (mut peer, _) = listener.accept().expect("accept");
    peer.set_read_timeout(Some(BOUND)).expect("timeout");
    let mut back = [0u8; 8];
    for i in 0..ROUNDS {
        peer.write_all(&i.to_le_bytes()).expect("send");
        peer.read_exact(&mut back).expect("echo within the bound");
        assert_eq!(u64::from_le_bytes(back), i);
    }
    drop(peer);
    let (echoed, yields) = rx.recv_timeout(BOUND).expect("executor finished");
    assert_eq!(echoed, ROUNDS);
    // The executor really stayed busy: its spinner ran between the reads.
    assert!(yields >= ROUNDS, "{yields} yields over {ROUNDS} reads");
}

#[test]
fn a_channel_polled_again_and_again_while_pending_keeps_one_waker_per_task() {
    // Each poll of a receive that finds the channel empty (or a send that finds it full)
    // registers the task's waker with the reactor, and only a message (or room) takes one
    // out. Upstream each such poll pushed another clone: a shard waiting awake for a command
    // (`stay_awake`, `future::poll_once` on every turn) piled up hundreds per heads-up, and at
    // 32,767 clones glommio's `i16` count of a task's references overflowed and the shard's
    // thread panicked (glommio change 10). Each side here is polled well past that count.
    const POLLS: u32 = 40_000;
    let done = on_executor("polled-often", || async {
        use futures_lite::future;
        let (tx, rx) = shared_channel::new_bounded::<u32>(1);
        let (tx, rx) = future::zip(tx.connect(), rx.connect()).await;
        for _ in 0..POLLS {
            assert!(future::poll_once(rx.recv()).await.is_none());
        }
        tx.try_send(1).expect("room");
        for i in 0..POLLS {
            assert!(
                future::poll_once(tx.send(i)).await.is_none(),
                "the channel is full"
            );
        }
        assert_eq!(rx.recv().await, Some(1));
        tx.try_send(2).expect("room again");
        rx.recv().await
    });
    assert_eq!(
        done.recv_timeout(BOUND)
            .expect("the executor finished (a panic drops its result)"),
        Some(2)
    );
}

#[test]
fn a_sender_waiting_for_room_hears_that_the_receiver_has_gone() {
    // The channel is full and its sender waits for room; then the receiver goes. The send
    // must end with `Closed`. Upstream it waited on: the reactor's room check reports the whole
    // capacity once the receiver is gone, so the sender's task was woken, found the buffer
    // still full, registered again and spun for ever (glommio change 11). Both ends live on
    // one executor, so the receiver goes only once the send has been polled and is waiting.
    use std::cell::Cell;
    for capacity in [1usize, 2, 4] {
        let done = on_executor("receiver-goes", move || async move {
            let (tx, rx) = shared_channel::new_bounded::<usize>(capacity);
            // Each end's `connect` waits for the other's.
            let (tx, rx) = futures_lite::future::zip(tx.connect(), rx.connect()).await;
            for i in 0..capacity {
                tx.try_send(i).expect("room");
            }
            let waiting = Rc::new(Cell::new(false));
            let sender = glommio::spawn_local({
                let waiting = waiting.clone();
                async move {
                    waiting.set(true);
                    tx.send(capacity).await.is_err()
                }
            });
            while !waiting.get() {
                futures_lite::future::yield_now().await;
            }
            // The sender task has run up to its first poll of the send, which found no room.
            drop(rx);
            sender.await
        });
        assert!(
            done.recv_timeout(BOUND)
                .expect("the send ended once the receiver had gone"),
            "capacity {capacity}: the send succeeded with no receiver"
        );
    }
}
