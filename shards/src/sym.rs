//! Interned profile strings: a [`Sym`] is one pointer to a string shared by every profile on
//! the thread that holds the same value (the stream, region, language, app version and
//! hardware of thousands of viewers are a handful of distinct values).
//!
//! Each thread (a shard, the application core) interns into its own bounded table; a `Sym`
//! may cross threads (it is an `Arc`), and two `Sym`s compare by value wherever they were made.
//! The table never holds more than [`MAX_INTERNED`] values: when it is full, values nobody
//! else holds any more are swept out, and if it is still full a value is given its own,
//! unshared allocation instead. So peer-chosen strings (free-form `hello` fields) cost at most
//! what they cost before interning, and never grow the table without bound.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most distinct values one thread's table keeps.
pub const MAX_INTERNED: usize = 4096;
/// Misses (values not interned because the table was full) between two sweeps.
const SWEEP_EVERY: u32 = 256;

/// An interned string: 8 bytes (a thin pointer), so `Option<Sym>` is 8 bytes too.
#[derive(Clone)]
pub struct Sym(Arc<Box<str>>);

struct Table {
    set: HashSet<Sym>,
    misses: u32,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table {
        set: HashSet::new(),
        misses: 0,
    });
}

impl Sym {
    /// The interned `value`: shared with every other `Sym` of the same value made on this
    /// thread while the table has room.
    pub fn new(value: &str) -> Sym {
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(s) = t.set.get(value) {
                return s.clone();
            }
            let sym = Sym(Arc::new(value.into()));
            if t.set.len() >= MAX_INTERNED {
                if t.misses % SWEEP_EVERY == 0 {
                    // Values only the table holds are dropped.
                    t.set.retain(|s| Arc::strong_count(&s.0) > 1);
                }
                if t.set.len() >= MAX_INTERNED {
                    t.misses = t.misses.wrapping_add(1);
                    return sym;
                }
                t.misses = 0;
            }
            t.set.insert(sym.clone());
            sym
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Values in this thread's table (for tests and the footprint benchmark).
    pub fn interned() -> usize {
        TABLE.with(|t| t.borrow().set.len())
    }
}

impl Deref for Sym {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Sym {
    fn eq(&self, other: &Sym) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || **self.0 == **other.0
    }
}

impl Eq for Sym {}

impl PartialEq<str> for Sym {
    fn eq(&self, other: &str) -> bool {
        **self.0 == *other
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, other: &&str) -> bool {
        **self.0 == **other
    }
}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sym {
    fn cmp(&self, other: &Sym) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Sym {
    /// As the `str` hashes (so a table keyed by `Sym` is searched by `&str`).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}

impl From<Box<str>> for Sym {
    fn from(s: Box<str>) -> Sym {
        Sym::new(&s)
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym::new(&s)
    }
}

impl From<&Sym> for Box<str> {
    fn from(s: &Sym) -> Box<str> {
        s.as_str().into()
    }
}

impl From<Sym> for Box<str> {
    fn from(s: Sym) -> Box<str> {
        s.as_str().into()
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sym, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Sym::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let a = Sym::new("hu");
        let b = Sym::from(String::from("hu"));
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(a, b);
        assert_eq!(a, "hu");
        assert_eq!(&*a, "hu");
        assert_eq!(std::mem::size_of::<Option<Sym>>(), 8);
        assert_eq!(format!("{a:?} {a}"), "\"hu\" hu");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"hu\"");
        let back: Sym = serde_json::from_str(&json).unwrap();
        assert!(Arc::ptr_eq(&a.0, &back.0));
    }

    #[test]
    fn the_table_is_bounded_and_sweeps_unheld_values() {
        // A thread of its own: the table is per thread.
        std::thread::spawn(|| {
            let held: Vec<Sym> = (0..MAX_INTERNED)
                .map(|i| Sym::new(&format!("v{i}")))
                .collect();
            assert_eq!(Sym::interned(), MAX_INTERNED);
            // Full of held values: a new one is not interned, but is still a correct Sym.
            let extra = Sym::new("extra");
            assert_eq!(extra, "extra");
            assert_eq!(Sym::interned(), MAX_INTERNED);
            assert!(!Arc::ptr_eq(&extra.0, &Sym::new("extra").0));
            // Once the values are dropped, a sweep makes room again.
            drop(held);
            let mut fresh = Vec::new();
            for i in 0..(2 * SWEEP_EVERY) {
                fresh.push(Sym::new(&format!("w{i}")));
            }
            assert!(Sym::interned() < MAX_INTERNED);
            let a = Sym::new("again");
            assert!(Arc::ptr_eq(&a.0, &Sym::new("again").0));
        })
        .join()
        .unwrap();
    }
}
