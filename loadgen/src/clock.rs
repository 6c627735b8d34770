//! CLOCK_MONOTONIC in nanoseconds.
//!
//! `std::time::Instant` reads the same clock on Linux but keeps its value opaque, and group-cast
//! latency needs a number that crosses process boundaries: the publisher writes it into the
//! payload (`{"t":<ns>,"seq":N}`) and every receiving process subtracts it from its own reading.
//! CLOCK_MONOTONIC is system-wide, so readings from different processes on one host compare.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on CLOCK_MONOTONIC (time since boot, not counting suspend).
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    // The monotonic clock is never negative; fall back to 0 rather than wrap if it ever were.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_never_goes_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0);
        assert!(b >= a);
    }
}
