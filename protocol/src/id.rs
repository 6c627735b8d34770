//! The viewer id and its layout, and the lowercase-hex helper ids and tokens share.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bits of a [`ViewerId`] that name the shard that minted it.
const SHARD_BITS: u32 = 10;
/// Bits that name the id epoch (a boot counter the application core persists).
const EPOCH_BITS: u32 = 22;
/// Bits of the per-shard, per-boot counter.
const COUNTER_BITS: u32 = 32;

/// Largest shard index an id can name (1023).
pub const MAX_SHARD: u16 = (1 << SHARD_BITS) - 1;
/// Largest id epoch (4,194,303): epochs are distinct up to here, then they wrap.
pub const MAX_EPOCH: u32 = (1 << EPOCH_BITS) - 1;
/// Largest counter value: a shard mints this many ids per epoch before the counter wraps.
pub const MAX_COUNTER: u32 = u32::MAX;

/// A viewer's identity, stable across reconnects with a resume token. On the wire it is 16
/// lowercase hex digits; inside, from the top bit down: 10 bits of shard index, 22 bits of
/// id epoch, 32 bits of a counter the shard starts at 1 each epoch. Two ids minted by
/// different shards, or under different epochs (below [`MAX_EPOCH`]), never collide, so a
/// restart with a new epoch never hands out an id an earlier boot used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewerId(pub u64);

impl ViewerId {
    /// The id a shard mints as its `counter`th viewer under `epoch`. The shard index and the
    /// epoch are taken modulo their field widths (the callers keep them in range).
    pub fn compose(shard: u16, epoch: u32, counter: u32) -> ViewerId {
        let shard = u64::from(shard & MAX_SHARD);
        let epoch = u64::from(epoch & MAX_EPOCH);
        ViewerId(
            (shard << (EPOCH_BITS + COUNTER_BITS)) | (epoch << COUNTER_BITS) | u64::from(counter),
        )
    }

    /// The shard index that minted this id.
    pub fn shard(self) -> u16 {
        (self.0 >> (EPOCH_BITS + COUNTER_BITS)) as u16
    }

    /// The id epoch it was minted under.
    pub fn epoch(self) -> u32 {
        ((self.0 >> COUNTER_BITS) as u32) & MAX_EPOCH
    }

    /// The shard's counter when it minted this id.
    pub fn counter(self) -> u32 {
        self.0 as u32
    }

    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Option<ViewerId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(ViewerId)
    }
}

impl fmt::Display for ViewerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `bytes` as lowercase hex, two digits per byte (resume tokens, session ids).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Reads a [`ViewerId`] from its 16-hex-digit string (the `viewer` field of `welcome`).
pub(crate) mod as_hex {
    use serde::{de, Deserialize, Deserializer};

    use super::ViewerId;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ViewerId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ViewerId::parse(&s).ok_or_else(|| de::Error::custom("a viewer id is 16 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_separates_epochs() {
        let id = ViewerId::compose(3, 7, 42);
        assert_eq!((id.shard(), id.epoch(), id.counter()), (3, 7, 42));
        let max = ViewerId::compose(MAX_SHARD, MAX_EPOCH, MAX_COUNTER);
        assert_eq!(
            (max.shard(), max.epoch(), max.counter()),
            (MAX_SHARD, MAX_EPOCH, MAX_COUNTER)
        );
        assert_eq!(max.0, u64::MAX);
        // Every counter of one epoch differs from every counter of the next.
        assert_ne!(
            ViewerId::compose(0, 0, MAX_COUNTER),
            ViewerId::compose(0, 1, 0)
        );
        assert!(ViewerId::compose(0, 0, MAX_COUNTER) < ViewerId::compose(0, 1, 1));
        assert_ne!(ViewerId::compose(1, 0, 1), ViewerId::compose(0, 0, 1));
        assert_eq!(ViewerId::compose(1, 0, 1).to_string(), "0040000000000001");
    }

    #[test]
    fn parse_is_the_inverse_of_display() {
        for id in [0, 1, 0x0040_0000_0000_0001, u64::MAX] {
            assert_eq!(
                ViewerId::parse(&ViewerId(id).to_string()),
                Some(ViewerId(id))
            );
        }
        assert_eq!(ViewerId::parse("+040000000000001"), None);
        assert_eq!(ViewerId::parse("0001"), None);
        assert_eq!(ViewerId::parse("000100000000000g"), None);
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }
}
