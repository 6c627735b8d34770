//! Compact storage for the profile fields that cost the most inline (issue 18): every
//! connected viewer holds a profile on its shard and a copy in the application core's mirror,
//! so each byte here is paid twice per viewer.
//!
//! - [`Peer`]: the peer address in 19 bytes (a `SocketAddr` is 32). It keeps the address, the
//!   port and whether it was IPv6; an IPv6 address's flow label and scope id are not kept.
//! - [`Params`]: the extra query parameters as one interned string ([`Sym`]): 8 bytes, and the
//!   crowd that connected with the same parameters (`?stream=main`) shares one allocation.
//! - [`Rare`]: the fields few viewers have (tags, the verified person) behind one optional
//!   shared pointer: 8 bytes and nothing on the heap for a viewer with neither, and a profile
//!   snapshot sent to the application core shares the shard's allocation instead of copying.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::sym::Sym;

/// A peer address, packed: the IPv6 form of the address (IPv4 as `::ffff:a.b.c.d`), the port
/// and which family it came as. 19 bytes, alignment 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    ip: [u8; 16],
    port: [u8; 2],
    v6: bool,
}

impl Peer {
    /// The address (an IPv6 one without its flow label and scope id).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), u16::from_le_bytes(self.port))
    }

    pub fn ip(&self) -> IpAddr {
        let v6 = Ipv6Addr::from(self.ip);
        match (self.v6, v6.to_ipv4_mapped()) {
            (false, Some(v4)) => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    }

    pub fn port(&self) -> u16 {
        u16::from_le_bytes(self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        let (ip, v6) = match a.ip() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), false),
            IpAddr::V6(v6) => (v6.octets(), true),
        };
        Peer {
            ip,
            port: a.port().to_le_bytes(),
            v6,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.addr(), f)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.addr(), f)
    }
}

/// Query parameters in arrival order, as one interned string: each name and value as its
/// byte length in decimal, `:`, and its bytes. `None` for no parameters.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Params(Option<Sym>);

impl Params {
    /// The list of `pairs`, in their order.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Params {
        use std::fmt::Write;
        let mut text = String::new();
        for (k, v) in pairs {
            for s in [k, v] {
                // Writing to a String cannot fail.
                let _ = write!(text, "{}:{s}", s.len());
            }
        }
        Params((!text.is_empty()).then(|| Sym::new(&text)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The pairs, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut rest = self.0.as_deref().unwrap_or("");
        let mut next = move || {
            let (len, tail) = rest.split_once(':')?;
            let len: usize = len.parse().ok()?;
            let s = tail.get(..len)?;
            rest = &tail[len..];
            Some(s)
        };
        std::iter::from_fn(move || Some((next()?, next()?)))
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct RareFields {
    tags: Vec<Box<str>>,
    sub: Option<Box<str>>,
}

/// The tags and the person (`sub`) of a viewer: `None` while it has neither, so the common
/// anonymous, untagged viewer holds 8 bytes and nothing on the heap. Clones share the fields;
/// a change copies them first (`Arc::make_mut`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Rare(Option<Arc<RareFields>>);

impl Rare {
    pub fn tags(&self) -> &[Box<str>] {
        self.0.as_deref().map_or(&[], |r| &r.tags)
    }

    pub fn sub(&self) -> Option<&str> {
        self.0.as_deref().and_then(|r| r.sub.as_deref())
    }

    pub fn set_tags(&mut self, tags: Vec<Box<str>>) {
        self.edit(|r| r.tags = tags);
    }

    pub fn add_tags(&mut self, tags: impl IntoIterator<Item = Box<str>>) {
        self.edit(|r| r.tags.extend(tags));
    }

    pub fn set_sub(&mut self, sub: Option<Box<str>>) {
        self.edit(|r| r.sub = sub);
    }

    /// Applies `change`, keeping `None` for "neither field" (so equal profiles compare and
    /// hash equal) and no spare capacity in the tags.
    fn edit(&mut self, change: impl FnOnce(&mut RareFields)) {
        let mut fields = self.0.take().unwrap_or_default();
        let r = Arc::make_mut(&mut fields);
        change(r);
        r.tags.shrink_to_fit();
        if !r.tags.is_empty() || r.sub.is_some() {
            self.0 = Some(fields);
        }
    }
}

impl fmt::Debug for Rare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rare")
            .field("tags", &self.tags())
            .field("sub", &self.sub())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_round_trip_in_19_bytes() {
        assert_eq!(std::mem::size_of::<Peer>(), 19);
        for a in [
            "127.0.0.1:5000",
            "[::1]:443",
            "[::ffff:10.0.0.1]:80",
            "[2001:db8::7]:65535",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let p = Peer::from(a);
            assert_eq!(p.addr(), a);
            assert_eq!(p.to_string(), a.to_string());
            assert_eq!(p.ip(), a.ip());
            assert_eq!(p.port(), a.port());
        }
        let v4 = Peer::from("10.0.0.1:80".parse::<SocketAddr>().unwrap());
        let mapped = Peer::from("[::ffff:10.0.0.1]:80".parse::<SocketAddr>().unwrap());
        assert_ne!(v4, mapped, "the family is kept");
    }

    #[test]
    fn params_keep_order_and_odd_bytes_and_share_one_string() {
        assert!(Params::new([]).is_empty());
        assert_eq!(Params::new([]).iter().count(), 0);
        let pairs = [("stream", "s1"), ("a:b", "1:2:3"), ("é", ""), ("9", "x")];
        let p = Params::new(pairs);
        assert_eq!(p.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(p.len(), 4);
        assert_eq!(format!("{p:?}"), format!("{:?}", pairs));
        let q = Params::new([("stream", "s1")]);
        let r = Params::new([("stream", "s1")]);
        assert_eq!(q, r);
        assert_ne!(q, p);
        assert_eq!(std::mem::size_of::<Params>(), 8);
    }

    #[test]
    fn rare_fields_are_none_until_set_and_shared_by_clones() {
        let mut r = Rare::default();
        assert_eq!(std::mem::size_of::<Rare>(), 8);
        assert!(r.tags().is_empty() && r.sub().is_none());
        r.set_tags(vec!["vip".into()]);
        r.add_tags(["beta".into()]);
        r.set_sub(Some("alice".into()));
        let copy = r.clone();
        assert!(Arc::ptr_eq(r.0.as_ref().unwrap(), copy.0.as_ref().unwrap()));
        r.set_tags(Vec::new());
        assert_eq!(copy.tags(), [Box::from("vip"), Box::from("beta")]);
        assert_eq!(r.sub(), Some("alice"));
        r.set_sub(None);
        assert_eq!(r, Rare::default(), "emptied: back to None");
        assert_eq!(r.0, None);
    }
}
