//! A table of boxed values keyed by the viewer id each value holds: one 8-byte slot (the box)
//! per viewer, where a `HashMap<ViewerId, Box<T>>` slot is 16 bytes (the key again beside the
//! pointer). The mirror keeps every connected viewer in one, so the slot and the table's
//! spare capacity (up to twice the entries after it grows) are paid once per viewer.
//!
//! Owns: the table and its hasher. A value's key must not change while it is in the table
//! ([`ByViewer::get_mut`] hands out the value; the caller keeps its key).

use std::hash::{BuildHasher, RandomState};

use hashbrown::hash_table::{Entry, HashTable};
use shards::profile::ViewerId;

/// A value that names the viewer it belongs to.
pub trait Keyed {
    fn key(&self) -> ViewerId;
}

#[derive(Debug)]
pub struct ByViewer<T> {
    table: HashTable<Box<T>>,
    hasher: RandomState,
}

impl<T> Default for ByViewer<T> {
    fn default() -> ByViewer<T> {
        ByViewer {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<T: Keyed> ByViewer<T> {
    fn hash(&self, id: ViewerId) -> u64 {
        self.hasher.hash_one(id)
    }

    pub fn get(&self, id: ViewerId) -> Option<&T> {
        self.table
            .find(self.hash(id), |v| v.key() == id)
            .map(|v| &**v)
    }

    /// The value of `id`, to change anything but its key.
    pub fn get_mut(&mut self, id: ViewerId) -> Option<&mut T> {
        let hash = self.hash(id);
        self.table
            .find_mut(hash, |v| v.key() == id)
            .map(|v| &mut **v)
    }

    pub fn contains(&self, id: ViewerId) -> bool {
        self.get(id).is_some()
    }

    /// Inserts `value` under its key; returns the value it replaced.
    pub fn insert(&mut self, value: Box<T>) -> Option<Box<T>> {
        let id = value.key();
        let hasher = &self.hasher;
        match self.table.entry(
            hasher.hash_one(id),
            |v| v.key() == id,
            |v| hasher.hash_one(v.key()),
        ) {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), value)),
            Entry::Vacant(e) => {
                e.insert(value);
                None
            }
        }
    }

    pub fn remove(&mut self, id: ViewerId) -> Option<Box<T>> {
        let hash = self.hash(id);
        let entry = self.table.find_entry(hash, |v| v.key() == id).ok()?;
        Some(entry.remove().0)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.table.iter().map(|v| &**v)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct V(u64, &'static str);

    impl Keyed for V {
        fn key(&self) -> ViewerId {
            ViewerId(self.0)
        }
    }

    #[test]
    fn finds_replaces_and_removes_by_the_key_inside() {
        assert_eq!(std::mem::size_of::<Box<V>>(), 8, "one slot per viewer");
        let mut t = ByViewer::default();
        assert!(t.is_empty());
        for i in 0..1000 {
            assert_eq!(t.insert(Box::new(V(i, "a"))), None);
        }
        assert_eq!(t.len(), 1000);
        assert_eq!(t.insert(Box::new(V(7, "b"))), Some(Box::new(V(7, "a"))));
        assert_eq!(t.get(ViewerId(7)), Some(&V(7, "b")));
        t.get_mut(ViewerId(8)).unwrap().1 = "c";
        assert_eq!(t.get(ViewerId(8)), Some(&V(8, "c")));
        assert_eq!(t.remove(ViewerId(9)), Some(Box::new(V(9, "a"))));
        assert_eq!(t.remove(ViewerId(9)), None);
        assert!(!t.contains(ViewerId(9)) && t.contains(ViewerId(10)));
        assert!(t.get(ViewerId(5000)).is_none());
        assert_eq!(t.len(), 999);
        assert_eq!(t.values().filter(|v| v.1 == "a").count(), 997);
    }
}
