//! The viewer's real address behind a load balancer: the PROXY protocol (v1 text and v2
//! binary, haproxy's spec) and `X-Forwarded-For`, both believed only from configured trusted
//! addresses ([`Cidr`]).
//!
//! Pure: [`parse`] reads a header from the first bytes of a connection (it may need more
//! bytes: `Ok(None)`), [`client_address`] picks the client from the peer, the PROXY source
//! and the forwarded-for chain. The accept path calls them before the HTTP head is parsed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that open a v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;
/// Longest v2 address block (with TLVs) accepted.
pub const V2_MAX_LEN: usize = 1024;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection the balancer accepted came from this address.
    Source(SocketAddr),
    /// A health check or an unknown family (`LOCAL`, `UNKNOWN`): keep the peer address.
    Local,
}

/// Why the first bytes are not a usable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The connection does not start with a PROXY header at all.
    #[error("no PROXY protocol header")]
    NotProxy,
    /// It starts like one but breaks the spec.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Parses a PROXY header at the start of `buf`: the header and its length, `Ok(None)` when
/// more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if prefix_of(buf, &V2_SIGNATURE) {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    if prefix_of(buf, b"PROXY ") {
        return if buf.len() < 6 {
            Ok(None)
        } else {
            parse_v1(buf)
        };
    }
    Err(ProxyError::NotProxy)
}

/// Whether `buf` and `sig` agree on their common length.
fn prefix_of(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyError::Malformed("v1 header is not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("v1 address family mismatch"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("v1 source port"))?;
            ProxyHeader::Source(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed("v1 header fields")),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version"));
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > V2_MAX_LEN {
        return Err(ProxyError::Malformed("v2 address block too long"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let block = &buf[16..total];
    let header = match (ver_cmd & 0x0f, family) {
        (0, _) => ProxyHeader::Local,
        (1, 0x11) | (1, 0x12) => {
            let a: [u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            ProxyHeader::Source(SocketAddr::new(ip.into(), port))
        }
        (1, 0x21) | (1, 0x22) => {
            let a: [u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv6 block too short"))?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            ProxyHeader::Source(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        // UNSPEC and unix sockets: nothing to learn.
        (1, _) => ProxyHeader::Local,
        _ => return Err(ProxyError::Malformed("v2 command")),
    };
    Ok(Some((header, total)))
}

/// An address range: `192.0.2.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (text.trim().parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in any of `trusted`.
pub fn is_trusted(trusted: &[Cidr], ip: IpAddr) -> bool {
    trusted.iter().any(|c| c.contains(ip))
}

/// The client's address: the PROXY source (which the caller takes only from a trusted peer)
/// or the peer; then, while that address is trusted, `X-Forwarded-For` from the right: the
/// first entry that is not itself trusted is the client. Entries that do not parse end the
/// walk. A forwarded address has port 0.
pub fn client_address(
    peer: SocketAddr,
    proxy_source: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> SocketAddr {
    let mut addr = proxy_source.unwrap_or(peer);
    let Some(chain) = forwarded_for else {
        return addr;
    };
    for hop in chain.rsplit(',') {
        if !is_trusted(trusted, addr.ip()) {
            break;
        }
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => addr = SocketAddr::new(canonical(ip), 0),
            Err(_) => break,
        }
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | cmd);
        b.push(family);
        b.extend_from_slice(&(block.len() as u16).to_be_bytes());
        b.extend_from_slice(block);
        b
    }

    fn src(s: &str) -> ProxyHeader {
        ProxyHeader::Source(s.parse().unwrap())
    }

    #[test]
    fn v1_headers() {
        let h = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(parse(h), Ok(Some((src("203.0.113.7:51234"), 43))));
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\n";
        assert_eq!(parse(h), Ok(Some((src("[2001:db8::7]:4000"), h.len()))));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Some((ProxyHeader::Local, 15)))
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"[..],
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 x 5.6.7.8 1 1\r\n",
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY \xff\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::Malformed(_))));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(parse(b"PROX"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn v2_headers() {
        let mut block = vec![198, 51, 100, 9, 10, 0, 0, 1];
        block.extend_from_slice(&7000u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        block.extend_from_slice(&[0x03, 0, 4, 1, 2, 3, 4]); // a CRC TLV: skipped
        let h = v2(1, 0x11, &block);
        assert_eq!(parse(&h), Ok(Some((src("198.51.100.9:7000"), h.len()))));
        let mut block6 = [0u8; 36];
        block6[..16].copy_from_slice(&"2001:db8::9".parse::<Ipv6Addr>().unwrap().octets());
        block6[32..34].copy_from_slice(&8000u16.to_be_bytes());
        let h = v2(1, 0x21, &block6);
        assert_eq!(parse(&h), Ok(Some((src("[2001:db8::9]:8000"), 52))));
        assert_eq!(parse(&v2(0, 0, &[])), Ok(Some((ProxyHeader::Local, 16))));
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216])).unwrap().unwrap().0,
            ProxyHeader::Local
        );
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(&v2(7, 0x11, &block)),
            Err(ProxyError::Malformed(_))
        ));
        let mut wrong_version = v2(1, 0x11, &block);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse(&wrong_version),
            Err(ProxyError::Malformed(_))
        ));
        let mut huge = v2(1, 0x11, &block);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&huge), Err(ProxyError::Malformed(_))));
    }

    /// Every split point of a header followed by a request: incomplete prefixes ask for more,
    /// the whole parses to the same header and length (bytes arriving in any chunks).
    #[test]
    fn split_at_every_byte() {
        let mut block = vec![198, 51, 100, 9, 10, 0, 0, 1];
        block.extend_from_slice(&[0x1b, 0x58, 0x01, 0xbb]);
        for header in [
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n".to_vec(),
            v2(1, 0x11, &block),
        ] {
            let whole = [header.as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat();
            let expect = parse(&whole).unwrap().unwrap();
            assert_eq!(expect.1, header.len());
            for cut in 0..header.len() {
                assert_eq!(parse(&whole[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    #[test]
    fn cidrs_and_forwarded_for() {
        let lan = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(lan.contains("10.200.1.1".parse().unwrap()));
        assert!(
            lan.contains("::ffff:10.0.0.1".parse().unwrap()),
            "v4-mapped"
        );
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        assert!(!lan.contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::5".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nope"), None);
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(!one.contains("127.0.0.2".parse().unwrap()));

        let trusted = [one, lan];
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let chain = Some("198.51.100.1, 203.0.113.5, 10.0.0.3");
        assert_eq!(
            client_address(peer, None, chain, &trusted),
            "203.0.113.5:0".parse().unwrap(),
            "the first untrusted hop from the right"
        );
        let stranger: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_address(stranger, None, chain, &trusted), stranger);
        assert_eq!(
            client_address(peer, None, Some("junk, 10.0.0.3"), &trusted),
            "10.0.0.3:0".parse().unwrap()
        );
        let proxied: SocketAddr = "198.51.100.7:1234".parse().unwrap();
        assert_eq!(
            client_address(peer, Some(proxied), chain, &trusted),
            proxied
        );
    }
}
