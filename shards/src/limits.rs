//! Abuse limits per source address, shared by every shard of the process: a cap on the
//! connections one address holds at once, and a token bucket on the handshakes it may start.
//!
//! Reuseport spreads one address's connections over every shard, so the state is global:
//! striped mutexes keyed by address, each held for a hash lookup and a few arithmetic
//! operations per accept and per close. Time is passed in (`now`), so the logic is tested
//! without sleeping. Entries of addresses that hold no connection are dropped once their
//! bucket has refilled (when a stripe grows past its bound), so memory stays bounded by the
//! addresses active in the last `burst / rate` seconds.
//!
//! Limits apply to the TCP source address: behind a proxy or a carrier NAT many people share
//! one, so set them with that in mind (0 turns a limit off).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const STRIPES: usize = 64;
/// A stripe holding this many entries drops its idle ones on the next insert; the next sweep
/// waits until it holds twice what the sweep left (amortised O(1) per insert, even when an
/// attacker's addresses are all active).
const STRIPE_SOFT_MAX: usize = 4096;

#[derive(Debug, Default)]
struct Stripe {
    map: HashMap<IpAddr, Entry>,
    /// Sweep when `map` reaches this many entries (at least `STRIPE_SOFT_MAX`).
    sweep_at: usize,
}

/// The verdict on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead: a seat for this address is taken, give it back with [`AddressLimits::release`].
    Yes,
    /// The address holds `max_per_address` connections already (503).
    Capped,
    /// The address starts handshakes faster than its rate (429); a token is due in this many
    /// seconds.
    Limited { retry_after_s: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    tokens: f64,
    at: Instant,
}

/// Per-address limits; see the module docs.
#[derive(Debug)]
pub struct AddressLimits {
    /// Most connections one address may hold; 0 is no cap.
    max_per_address: u32,
    /// Handshakes per second one address may start (refill rate); 0 is no limit.
    rate: f64,
    /// Handshakes one address may start at once (bucket size).
    burst: f64,
    stripes: Box<[Mutex<Stripe>]>,
}

impl AddressLimits {
    pub fn new(max_per_address: u32, rate_per_s: u32, burst: u32) -> AddressLimits {
        AddressLimits {
            max_per_address,
            rate: f64::from(rate_per_s),
            burst: f64::from(burst.max(1)),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }

    /// Whether any limit is on.
    pub fn active(&self) -> bool {
        self.max_per_address > 0 || self.rate > 0.0
    }

    fn stripe(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Stripe> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(ip) as usize;
        match self.stripes[h % STRIPES].lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A new connection from `ip` at `now`.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Admit {
        let mut guard = self.stripe(ip);
        let stripe = &mut *guard;
        let full = stripe.map.len() >= stripe.sweep_at.max(STRIPE_SOFT_MAX);
        if full && !stripe.map.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            stripe
                .map
                .retain(|_, e| e.open > 0 || refilled(e, now, rate, burst) < burst);
            stripe.sweep_at = stripe.map.len() * 2;
        }
        let entry = stripe.map.entry(ip).or_insert(Entry {
            open: 0,
            tokens: self.burst,
            at: now,
        });
        if self.max_per_address > 0 && entry.open >= self.max_per_address {
            return Admit::Capped;
        }
        if self.rate > 0.0 {
            entry.tokens = refilled(entry, now, self.rate, self.burst);
            entry.at = now;
            if entry.tokens < 1.0 {
                let wait = ((1.0 - entry.tokens) / self.rate).ceil().max(1.0);
                return Admit::Limited {
                    retry_after_s: wait as u64,
                };
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Admit::Yes
    }

    /// A connection from `ip` admitted earlier ended.
    pub fn release(&self, ip: IpAddr) {
        let mut stripe = self.stripe(ip);
        if let Some(e) = stripe.map.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
        }
    }

    /// Connections `ip` holds (for tests and stats).
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.stripe(ip).map.get(&ip).map_or(0, |e| e.open)
    }
}

fn refilled(e: &Entry, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
    (e.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn the_cap_counts_open_connections_per_address() {
        let l = AddressLimits::new(2, 0, 1);
        let t = Instant::now();
        assert_eq!(l.admit(A, t), Admit::Yes);
        assert_eq!(l.admit(A, t), Admit::Yes);
        assert_eq!(l.admit(A, t), Admit::Capped);
        assert_eq!(l.admit(B, t), Admit::Yes, "another address is not affected");
        l.release(A);
        assert_eq!(l.open(A), 1);
        assert_eq!(l.admit(A, t), Admit::Yes);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = AddressLimits::new(0, 2, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit(A, t), Admit::Yes);
        }
        assert_eq!(l.admit(A, t), Admit::Limited { retry_after_s: 1 });
        // Half a second at 2/s refills one token.
        assert_eq!(l.admit(A, t + Duration::from_millis(500)), Admit::Yes);
        assert!(matches!(
            l.admit(A, t + Duration::from_millis(500)),
            Admit::Limited { .. }
        ));
        // Refused attempts take no token: after a full refill the burst is back.
        let later = t + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(l.admit(A, later), Admit::Yes);
        }
    }

    #[test]
    fn idle_addresses_are_forgotten_when_a_stripe_fills() {
        let l = AddressLimits::new(0, 10, 10);
        let t = Instant::now();
        let n = (STRIPES * STRIPE_SOFT_MAX * 2) as u32;
        for i in 0..n {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            l.admit(ip, t);
            l.release(ip);
        }
        // Five seconds later those buckets are full again: the next sweeps forget them.
        let later = t + Duration::from_secs(5);
        for i in 0..n {
            l.admit(IpAddr::V4(std::net::Ipv4Addr::from(u32::MAX - i)), later);
        }
        let total: usize = l.stripes.iter().map(|s| s.lock().unwrap().map.len()).sum();
        // Without forgetting there would be 2n entries.
        assert!(total <= n as usize * 5 / 4, "{total} entries of {}", 2 * n);
    }
}
