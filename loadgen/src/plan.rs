//! Pure run arithmetic: how viewers, rate and source addresses are divided among worker
//! processes, and which behaviour each viewer gets. No I/O here, so all of it is unit-tested.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Connections one worker process may hold. The host allows 20,000 descriptors per process;
/// the rest is headroom for stdio, the runtime's epoll and eventfd, and API sockets.
pub const MAX_CONNECTIONS_PER_PROCESS: u64 = 19_000;

/// Connections per process when `--processes` is not given (leaves room for bursts of
/// sockets in TIME_WAIT-free churn and keeps per-process memory moderate).
pub const DEFAULT_CONNECTIONS_PER_PROCESS: u64 = 18_000;

/// Upper bound on the sum of behaviour weights (the mix table has one slot per weight unit).
pub const MAX_TOTAL_WEIGHT: u32 = 10_000;

/// What a simulated viewer does once connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// Holds the connection and receives pushes; sends nothing.
    Idle,
    /// Sends `watch` for its stream and expects an `endpoint` answer.
    Watch,
    /// Watches its stream (the poll stream in `--poll` mode) and votes when a poll arrives.
    Vote,
    /// Sends periodic `telemetry` reports.
    Telemetry,
}

impl Behaviour {
    pub const ALL: [Behaviour; 4] = [
        Behaviour::Idle,
        Behaviour::Watch,
        Behaviour::Vote,
        Behaviour::Telemetry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Idle => "idle",
            Behaviour::Watch => "watch",
            Behaviour::Vote => "vote",
            Behaviour::Telemetry => "telemetry",
        }
    }

    fn parse(s: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Whether the viewer sends `watch` after the welcome.
    pub fn watches(self) -> bool {
        matches!(self, Behaviour::Watch | Behaviour::Vote)
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A weighted behaviour mix such as `idle:70,vote:30`.
///
/// Assignment is exact and interleaved rather than random: viewer `i` gets slot `i % W` of a
/// table built by smooth weighted round robin, so every run of W consecutive viewers holds each
/// behaviour exactly `weight` times and a 70/30 mix gives exactly 30 voters per 100 viewers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BehaviourMix {
    weights: Vec<(Behaviour, u32)>,
    table: Vec<Behaviour>,
}

impl BehaviourMix {
    /// Builds a mix; weights must be positive, behaviours distinct, total at most
    /// [`MAX_TOTAL_WEIGHT`].
    pub fn new(weights: Vec<(Behaviour, u32)>) -> Result<Self, String> {
        if weights.is_empty() {
            return Err("behaviour mix is empty".into());
        }
        let mut total: u32 = 0;
        for (i, (b, w)) in weights.iter().enumerate() {
            if *w == 0 {
                return Err(format!("behaviour {b} has weight 0; leave it out instead"));
            }
            if weights[..i].iter().any(|(other, _)| other == b) {
                return Err(format!("behaviour {b} is listed twice"));
            }
            total = total.saturating_add(*w);
        }
        if total > MAX_TOTAL_WEIGHT {
            return Err(format!(
                "behaviour weights add up to {total}, more than {MAX_TOTAL_WEIGHT}"
            ));
        }
        let table = smooth_round_robin(&weights, total);
        Ok(BehaviourMix { weights, table })
    }

    /// Parses `idle`, `vote`, or `idle:70,vote:30` (a bare name has weight 1).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("empty entry in behaviour mix {s:?}"));
            }
            let (name, weight) = match item.split_once(':') {
                Some((n, w)) => {
                    let w: u32 = w
                        .trim()
                        .parse()
                        .map_err(|_| format!("weight {w:?} of {n:?} is not a whole number"))?;
                    (n.trim(), w)
                }
                None => (item, 1),
            };
            let b = Behaviour::parse(name).ok_or_else(|| {
                format!("unknown behaviour {name:?} (expected idle, watch, vote or telemetry)")
            })?;
            weights.push((b, weight));
        }
        BehaviourMix::new(weights)
    }

    /// The behaviour of the viewer with global index `viewer`.
    pub fn behaviour_for(&self, viewer: u64) -> Behaviour {
        // The table is never empty: `new` rejects empty mixes and zero weights.
        let len = self.table.len() as u64;
        self.table[(viewer % len) as usize]
    }

    /// How many of viewers `0..n` get behaviour `b` (exact, from the table).
    pub fn count_in(&self, b: Behaviour, n: u64) -> u64 {
        let len = self.table.len() as u64;
        let per_cycle = self.table.iter().filter(|x| **x == b).count() as u64;
        let rest = self.table[..(n % len) as usize]
            .iter()
            .filter(|x| **x == b)
            .count() as u64;
        (n / len) * per_cycle + rest
    }

    pub fn weight_of(&self, b: Behaviour) -> u32 {
        self.weights
            .iter()
            .find(|(x, _)| *x == b)
            .map_or(0, |(_, w)| *w)
    }

    pub fn weights(&self) -> &[(Behaviour, u32)] {
        &self.weights
    }
}

impl fmt::Display for BehaviourMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (b, w)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}:{w}")?;
        }
        Ok(())
    }
}

/// nginx's smooth weighted round robin: spreads each behaviour evenly through the cycle.
fn smooth_round_robin(weights: &[(Behaviour, u32)], total: u32) -> Vec<Behaviour> {
    let mut current: Vec<i64> = vec![0; weights.len()];
    let mut table = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, (_, w)) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= i64::from(total);
        table.push(weights[best].0);
    }
    table
}

/// Splits `total` into `parts` shares that differ by at most one, larger shares first.
pub fn split_even(total: u64, parts: u32) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    let p = u64::from(parts);
    let base = total / p;
    let extra = total % p;
    (0..p).map(|i| base + u64::from(i < extra)).collect()
}

/// Default process count: one per [`DEFAULT_CONNECTIONS_PER_PROCESS`] connections.
pub fn default_processes(connections: u64) -> u32 {
    let p = connections.div_ceil(DEFAULT_CONNECTIONS_PER_PROCESS).max(1);
    u32::try_from(p).unwrap_or(u32::MAX)
}

/// One worker's share of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessShare {
    /// Worker index, 0-based.
    pub index: u32,
    /// Global index of this worker's first viewer (profiles are keyed by global index).
    pub first_viewer: u64,
    /// Number of viewers this worker opens.
    pub count: u64,
    /// Source addresses this worker binds to, round robin; empty means "let the kernel pick".
    pub source_ips: Vec<Ipv4Addr>,
    /// This worker's connection rate (connections per second).
    pub rate: f64,
}

/// Divides `connections` viewers, `rate` and the source addresses among `processes` workers.
///
/// Viewers go out in contiguous index ranges; the rate is shared in proportion to the viewers,
/// so all workers finish their connect phase together. With at least as many addresses as
/// workers, worker `p` takes addresses `p, p+P, p+2P, ...` so that no two workers share one
/// (easier to attribute in `ss` output); with fewer, every worker uses them all.
pub fn plan_processes(
    connections: u64,
    processes: u32,
    rate: f64,
    source_ips: &[Ipv4Addr],
) -> Vec<ProcessShare> {
    let counts = split_even(connections, processes);
    let mut first = 0;
    let mut shares = Vec::with_capacity(counts.len());
    for (i, count) in counts.into_iter().enumerate() {
        let index = i as u32;
        let ips = if source_ips.len() >= processes as usize {
            source_ips
                .iter()
                .skip(i)
                .step_by(processes as usize)
                .copied()
                .collect()
        } else {
            source_ips.to_vec()
        };
        let share_rate = if connections == 0 {
            rate
        } else {
            rate * count as f64 / connections as f64
        };
        shares.push(ProcessShare {
            index,
            first_viewer: first,
            count,
            source_ips: ips,
            rate: share_rate,
        });
        first += count;
    }
    shares
}

/// Source address for a worker's `local`-th connection: round robin over its addresses.
pub fn source_ip_for(local: u64, ips: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    if ips.is_empty() {
        None
    } else {
        Some(ips[(local % ips.len() as u64) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_even_differs_by_at_most_one() {
        assert_eq!(split_even(10, 3), vec![4, 3, 3]);
        assert_eq!(split_even(9, 3), vec![3, 3, 3]);
        assert_eq!(split_even(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_even(100_000, 6).iter().sum::<u64>(), 100_000);
        assert!(split_even(5, 0).is_empty());
    }

    #[test]
    fn default_processes_per_18k() {
        assert_eq!(default_processes(1), 1);
        assert_eq!(default_processes(18_000), 1);
        assert_eq!(default_processes(18_001), 2);
        assert_eq!(default_processes(100_000), 6);
    }

    #[test]
    fn plan_covers_every_viewer_once_and_shares_rate() {
        let ips: Vec<Ipv4Addr> = (2..=9).map(|d| Ipv4Addr::new(127, 0, 0, d)).collect();
        let plan = plan_processes(10, 3, 1000.0, &ips);
        assert_eq!(plan.len(), 3);
        assert_eq!(
            plan.iter()
                .map(|s| (s.first_viewer, s.count))
                .collect::<Vec<_>>(),
            vec![(0, 4), (4, 3), (7, 3)]
        );
        let rate: f64 = plan.iter().map(|s| s.rate).sum();
        assert!((rate - 1000.0).abs() < 1e-9);
        assert!((plan[0].rate - 400.0).abs() < 1e-9);
        // Disjoint address sets that together cover all addresses.
        assert_eq!(
            plan[0].source_ips,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 5),
                Ipv4Addr::new(127, 0, 0, 8)
            ]
        );
        let mut all: Vec<Ipv4Addr> = plan.iter().flat_map(|s| s.source_ips.clone()).collect();
        all.sort();
        assert_eq!(all, ips);
    }

    #[test]
    fn few_addresses_are_shared_by_all_workers() {
        let ips = [Ipv4Addr::new(127, 0, 0, 2)];
        let plan = plan_processes(4, 2, 10.0, &ips);
        assert!(plan.iter().all(|s| s.source_ips == ips));
    }

    #[test]
    fn source_ip_round_robin() {
        let ips = [
            Ipv4Addr::new(127, 0, 0, 2),
            Ipv4Addr::new(127, 0, 0, 3),
            Ipv4Addr::new(127, 0, 0, 4),
        ];
        let got: Vec<_> = (0..7).map(|i| source_ip_for(i, &ips).unwrap()).collect();
        assert_eq!(
            got.iter().map(|ip| ip.octets()[3]).collect::<Vec<_>>(),
            vec![2, 3, 4, 2, 3, 4, 2]
        );
        assert_eq!(source_ip_for(5, &[]), None);
    }

    #[test]
    fn mix_parses_and_validates() {
        let m = BehaviourMix::parse("idle:70, vote:30").unwrap();
        assert_eq!(m.weight_of(Behaviour::Idle), 70);
        assert_eq!(m.weight_of(Behaviour::Vote), 30);
        assert_eq!(m.weight_of(Behaviour::Watch), 0);
        assert_eq!(m.to_string(), "idle:70,vote:30");
        assert_eq!(
            BehaviourMix::parse("telemetry").unwrap().weights(),
            &[(Behaviour::Telemetry, 1)]
        );
        for bad in [
            "",
            "idle:",
            "idle:x",
            "idle:-1",
            "idle:0",
            "dance:1",
            "idle,idle",
            "idle:5000,vote:5001",
            "idle,,vote",
        ] {
            assert!(
                BehaviourMix::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn mix_assignment_is_exact_and_interleaved() {
        let m = BehaviourMix::parse("idle:70,vote:30").unwrap();
        let votes = (0..100)
            .filter(|i| m.behaviour_for(*i) == Behaviour::Vote)
            .count();
        assert_eq!(votes, 30);
        assert_eq!(m.count_in(Behaviour::Vote, 100), 30);
        assert_eq!(m.count_in(Behaviour::Vote, 1050), 315);
        let direct = (0..1050)
            .filter(|i| m.behaviour_for(*i) == Behaviour::Vote)
            .count() as u64;
        assert_eq!(m.count_in(Behaviour::Vote, 1050), direct);
        // Interleaved: the first ten viewers already hold three voters.
        assert_eq!(m.count_in(Behaviour::Vote, 10), 3);
        // A single behaviour applies to everyone.
        let all = BehaviourMix::parse("watch").unwrap();
        assert!((0..50).all(|i| all.behaviour_for(i) == Behaviour::Watch));
    }
}
