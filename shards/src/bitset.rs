//! A dense bitset over connection slots: one per group per shard.
//!
//! Slots are small, dense integers handed out by the shard's connection table, so a plain
//! vector of words beats a hash set both in memory (1 bit per slot) and in fan-out speed
//! (a word at a time, skipping empty words).

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    len: usize,
}

impl Bitset {
    pub fn new() -> Bitset {
        Bitset::default()
    }

    /// Sets `slot`; returns true when it was not set before.
    pub fn insert(&mut self, slot: u32) -> bool {
        let (word, bit) = split(slot);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let was = self.words[word] & bit != 0;
        self.words[word] |= bit;
        self.len += usize::from(!was);
        !was
    }

    /// Clears `slot`; returns true when it was set.
    pub fn remove(&mut self, slot: u32) -> bool {
        let (word, bit) = split(slot);
        match self.words.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn contains(&self, slot: u32) -> bool {
        let (word, bit) = split(slot);
        self.words.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Number of set slots.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set slots in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let base = (i as u32) << 6;
            BitIter(word).map(move |b| base + b)
        })
    }

    /// Set slots from `start` on, in increasing order: lets a long fan-out yield and resume.
    pub fn iter_from(&self, start: u32) -> impl Iterator<Item = u32> + '_ {
        let (first, _) = split(start);
        self.words
            .iter()
            .enumerate()
            .skip(first)
            .flat_map(move |(i, &word)| {
                let base = (i as u32) << 6;
                let word = if i == first {
                    word & (!0u64 << (start & 63))
                } else {
                    word
                };
                BitIter(word).map(move |b| base + b)
            })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

fn split(slot: u32) -> (usize, u64) {
    ((slot >> 6) as usize, 1u64 << (slot & 63))
}

struct BitIter(u64);

impl Iterator for BitIter {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_iterate() {
        let mut b = Bitset::new();
        assert!(b.is_empty());
        for s in [0, 1, 63, 64, 65, 1000, 4095] {
            assert!(b.insert(s));
        }
        assert!(!b.insert(64));
        assert_eq!(b.len(), 7);
        assert!(b.contains(1000) && !b.contains(999) && !b.contains(1 << 20));
        assert!(b.remove(1));
        assert!(!b.remove(1));
        assert!(!b.remove(1 << 20));
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            vec![0, 63, 64, 65, 1000, 4095]
        );
        assert_eq!(
            b.iter_from(64).collect::<Vec<_>>(),
            vec![64, 65, 1000, 4095]
        );
        assert_eq!(b.iter_from(65).collect::<Vec<_>>(), vec![65, 1000, 4095]);
        assert_eq!(b.iter_from(5000).count(), 0);
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn matches_a_reference_set() {
        // Deterministic xorshift: the bitset agrees with a BTreeSet after random operations.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut b = Bitset::new();
        let mut r = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 3000) as u32;
            if x & (1 << 40) == 0 {
                assert_eq!(b.insert(slot), r.insert(slot));
            } else {
                assert_eq!(b.remove(slot), r.remove(&slot));
            }
        }
        assert_eq!(b.len(), r.len());
        assert!(b.iter().eq(r.iter().copied()));
    }
}
