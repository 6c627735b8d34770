//! What a panic does in `ovation serve`: it ends the process.
//!
//! Every thread of the server holds state the others rely on. A shard owns its viewers'
//! sockets and its share of every group; the application core sends each shard its commands
//! and keeps their mirror. A thread that unwound and ended left the others running half a
//! server: the dead shard's viewers gone while the API still answered 202 to casts for them,
//! its commands queued for ever, its viewers never reported as gone. So the first panic, in
//! any thread, is reported as usual and then aborts the process, and the supervisor starts
//! it again (`tuning/ovation.service`: `Restart=on-failure`); viewers reconnect. A panic is
//! a defect either way: nothing a peer sends may cause one.

/// Makes every later panic, in any thread, end the process after the usual report (the
/// message, where, and the backtrace when `RUST_BACKTRACE` asks for one).
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "a thread panicked ({info}); ending the process"
        );
        std::process::abort();
    }));
}
