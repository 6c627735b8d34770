//! The live edges, from their announcements: an edge not heard from for `ttl_ms` is gone.

use std::collections::BTreeMap;

use crate::msg::Announce;

/// An edge as last announced.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: String,
    pub announce: Announce,
    pub seen_ms: u64,
}

/// Other edges, by id.
#[derive(Debug, Default)]
pub struct Peers {
    peers: BTreeMap<String, Peer>,
}

impl Peers {
    /// Records an announcement.
    pub fn seen(&mut self, id: &str, announce: Announce, now_ms: u64) {
        self.peers.insert(
            id.to_owned(),
            Peer {
                id: id.to_owned(),
                announce,
                seen_ms: now_ms,
            },
        );
    }

    /// Forgets edges silent for longer than `ttl_ms`; returns their ids.
    pub fn expire(&mut self, now_ms: u64, ttl_ms: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .peers
            .values()
            .filter(|p| now_ms.saturating_sub(p.seen_ms) > ttl_ms)
            .map(|p| p.id.clone())
            .collect();
        for id in &gone {
            self.peers.remove(id);
        }
        gone
    }

    /// Live edges heard from within `ttl_ms`.
    pub fn live(&self, now_ms: u64, ttl_ms: u64) -> impl Iterator<Item = &Peer> {
        self.peers
            .values()
            .filter(move |p| now_ms.saturating_sub(p.seen_ms) <= ttl_ms)
    }

    /// The sum over live edges of their size of group `key`.
    pub fn group_size(&self, key: &str, now_ms: u64, ttl_ms: u64) -> u64 {
        self.live(now_ms, ttl_ms)
            .filter_map(|p| p.announce.groups.get(key))
            .sum()
    }

    /// Live edges that announced `poll` open.
    pub fn with_poll(&self, poll: &str, now_ms: u64, ttl_ms: u64) -> Vec<String> {
        self.live(now_ms, ttl_ms)
            .filter(|p| p.announce.polls.iter().any(|id| id == poll))
            .map(|p| p.id.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(size: u64, polls: &[&str]) -> Announce {
        Announce {
            groups: [("g1".to_owned(), size)].into(),
            polls: polls.iter().map(|s| s.to_string()).collect(),
            ..Announce::default()
        }
    }

    #[test]
    fn live_edges_sum_their_group_sizes_and_silent_ones_expire() {
        let mut p = Peers::default();
        p.seen("a", announce(3, &["p1"]), 1000);
        p.seen("b", announce(4, &[]), 1500);
        assert_eq!(p.group_size("g1", 2000, 1000), 7);
        assert_eq!(p.group_size("nope", 2000, 1000), 0);
        assert_eq!(p.with_poll("p1", 2000, 1000), vec!["a".to_owned()]);
        // a is silent past the ttl: not live, then expired.
        assert_eq!(p.group_size("g1", 2200, 1000), 4);
        assert_eq!(p.expire(2200, 1000), vec!["a".to_owned()]);
        assert_eq!(p.len(), 1);
        // A later announcement replaces the earlier one.
        p.seen("b", announce(1, &[]), 2300);
        assert_eq!(p.group_size("g1", 2300, 1000), 1);
    }
}
