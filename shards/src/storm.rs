//! Storm scheduling (`shard_sched = "storms"`, the default): the scheduling policy of a
//! shard's thread follows its connect storms. A pinned shard shares its CPU with whatever
//! else runs there (on the bench host, the load generator). Under `SCHED_OTHER` each of its
//! wake-ups preempts that task, so during a storm the shard runs in slices too short to take
//! more than a few connects; under `SCHED_BATCH` it keeps its fair share, but waits for the
//! running task's slice to end and then takes what gathered in one round. Outside storms the
//! normal policy keeps segment and cast wake-ups prompt (`SCHED_BATCH` throughout cost the
//! live HLS path CPU: `bench/RESULTS.md`, seventh and eighth rounds).

use std::time::{Duration, Instant};

/// With `shard_sched = "storms"`: how long a shard stays under `SCHED_BATCH` after the last
/// connect of a storm. A storm from one client comes in bursts (the client alternates between
/// connecting and reading its welcomes), with gaps of 50-100 ms on a shard; 500 ms spans them.
pub(crate) const STORM_LINGER: Duration = Duration::from_millis(500);

/// Storm scheduling (`shard_sched = "storms"`): the plain accept loop puts its shard's thread
/// under `SCHED_BATCH` when a connect storm starts (the loop begins to gather) and back under
/// `SCHED_OTHER` once no connect has come for [`STORM_LINGER`]. One `sched_setscheduler`
/// call each way per storm.
pub(crate) struct StormSched {
    /// Off for the other policies, and after the kernel refused the policy once.
    enabled: bool,
    shard: u16,
    /// Under `SCHED_BATCH` since a storm began: when it last brought a connect.
    last: Option<Instant>,
}

impl StormSched {
    pub(crate) fn new(enabled: bool, shard: u16) -> StormSched {
        StormSched {
            enabled,
            shard,
            last: None,
        }
    }

    /// A drain took connects: a storm goes on (or, with `gathering`, starts).
    pub(crate) fn connects(&mut self, gathering: bool) {
        if self.last.is_none() {
            if !(gathering && self.enabled) {
                return;
            }
            if let Err(e) = netstack::sys::set_current_thread_batch(true) {
                tracing::warn!(shard = self.shard, error = %e, "cannot set SCHED_BATCH; storm scheduling off");
                self.enabled = false;
                return;
            }
        }
        self.last = Some(Instant::now());
    }

    /// Under `SCHED_BATCH`: how long until the storm counts as over.
    pub(crate) fn lingers(&self) -> Option<Duration> {
        Some(STORM_LINGER.saturating_sub(self.last?.elapsed()))
    }

    /// The storm is over: back to the normal policy.
    pub(crate) fn over(&mut self) {
        if self.last.take().is_some() {
            if let Err(e) = netstack::sys::set_current_thread_batch(false) {
                tracing::warn!(shard = self.shard, error = %e, "cannot restore SCHED_OTHER; storm scheduling off");
                self.enabled = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on a thread of its own, which starts from the normal policy: the policy is
    /// per thread, and inherited, so neither the test runner's policy nor the test's change
    /// leaks across.
    fn on_a_normal_thread(body: impl FnOnce() + Send + 'static) {
        std::thread::spawn(|| {
            netstack::sys::set_current_thread_batch(false).expect("SCHED_OTHER");
            body();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_storm_batches_the_thread_until_it_is_over() {
        on_a_normal_thread(|| {
            let mut storm = StormSched::new(true, 0);
            // Connects that do not gather (a lone connect after a quiet spell) start nothing.
            storm.connects(false);
            assert_eq!(storm.lingers(), None);
            assert!(!netstack::sys::current_thread_is_batch());
            // A gathering drain starts a storm; later drains keep it going, gathering or not.
            storm.connects(true);
            assert!(netstack::sys::current_thread_is_batch());
            storm.connects(false);
            let left = storm.lingers().expect("a storm");
            assert!(left <= STORM_LINGER && left > Duration::ZERO, "{left:?}");
            storm.over();
            assert_eq!(storm.lingers(), None);
            assert!(!netstack::sys::current_thread_is_batch());
        });
    }

    #[test]
    fn a_disabled_storm_never_touches_the_policy() {
        on_a_normal_thread(|| {
            let mut storm = StormSched::new(false, 0);
            storm.connects(true);
            assert_eq!(storm.lingers(), None);
            assert!(!netstack::sys::current_thread_is_batch());
        });
    }
}
