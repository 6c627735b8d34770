//! The shard's clocks: the only place shard code reads the time. Logic takes the time as a
//! parameter (`now` in ticks, `unix_ms` at a handshake), so it can be driven in memory.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shard clock counts ticks of 100 ms from the shard's start.
pub const TICKS_PER_SEC: u32 = 10;

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Seconds since the Unix epoch, as telemetry stamps its reports (saturating in 2106).
pub fn unix_s() -> u32 {
    (unix_ms() / 1000).min(u32::MAX as u64) as u32
}

/// Monotonic microseconds since the first call in this process: one clock every shard reads
/// the same, for the few values shards compare with each other (accept stealing).
pub fn process_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A monotonic clock in shard ticks, counted from its creation.
#[derive(Debug, Clone, Copy)]
pub struct Ticks {
    start: Instant,
}

impl Ticks {
    pub fn start() -> Ticks {
        Ticks {
            start: Instant::now(),
        }
    }

    /// Ticks since start (saturating at `u32::MAX`, about 13 years).
    pub fn now(&self) -> u32 {
        let ms = self.start.elapsed().as_millis() as u64;
        (ms / (1000 / TICKS_PER_SEC as u64)).min(u32::MAX as u64) as u32
    }
}

/// A duration in ticks, at least one.
pub fn ticks(d: Duration) -> u32 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let t = ms.saturating_mul(TICKS_PER_SEC as u64) / 1000;
    t.clamp(1, u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_at_least_one_tick() {
        assert_eq!(ticks(Duration::from_millis(1)), 1);
        assert_eq!(ticks(Duration::from_secs(5)), 50);
        assert_eq!(ticks(Duration::from_secs(u64::MAX / 1000)), u32::MAX);
    }
}
