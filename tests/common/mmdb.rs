//! A tiny MaxMind DB writer (IPv4 tree, 24-bit records, `{"country_code": CC}` records), so
//! geolocation tests run on a database made at test time, independent of the npm download.
//! The format: a binary search tree over address bits, a 16-byte separator, the data
//! section, then the metadata after the `\xAB\xCD\xEFMaxMind.com` marker.

#[derive(Clone, Copy)]
enum Rec {
    Node(u32),
    Data(u32),
    Empty,
}

fn string(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 29);
    out.push(0x40 | s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let n = (8 - skip) as u8;
    if kind <= 7 {
        out.push(kind << 5 | n);
    } else {
        out.push(n);
        out.push(kind - 7);
    }
    out.extend_from_slice(&bytes[skip..]);
}

/// A database answering `country_code` for each `(a.b.c.d/len, CC)`.
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (cidr, cc) in entries {
        let offset = data.len() as u32;
        data.push(0xE1); // a map of one entry
        string(&mut data, "country_code");
        string(&mut data, cc);
        let (addr, len) = cidr.split_once('/').expect("a/len");
        let addr = u32::from(addr.parse::<std::net::Ipv4Addr>().expect("IPv4"));
        let len: u32 = len.parse().expect("prefix length");
        let mut node = 0usize;
        for i in 0..len {
            let bit = ((addr >> (31 - i)) & 1) as usize;
            if i == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n as usize,
                    Rec::Empty => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n as u32);
                        n
                    }
                    Rec::Data(_) => panic!("overlapping prefixes"),
                };
            }
        }
    }
    let count = nodes.len() as u32;
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match *rec {
                Rec::Node(n) => n,
                Rec::Empty => count,
                Rec::Data(off) => count + 16 + off,
            };
            out.extend_from_slice(&v.to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    out.push(0xE0 | 9); // metadata: a map of nine entries
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_700_000_000);
    string(&mut out, "database_type");
    string(&mut out, "ovation-test-country");
    string(&mut out, "description");
    out.push(0xE0); // an empty map
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "languages");
    out.extend_from_slice(&[0x00, 0x04]); // an empty array
    string(&mut out, "node_count");
    uint(&mut out, 6, u64::from(count));
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    out
}
