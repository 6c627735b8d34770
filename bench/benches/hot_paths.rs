//! Microbenchmarks of ovation's hot paths: WebSocket frame encoding, decoding with unmasking,
//! the unmasking loop itself against a byte-wise XOR, the group bitmaps against hash and tree
//! sets, and the merging of per-shard vote counts.
//!
//! `cargo bench -p ovation-bench` (or `cargo bench -p ovation-bench -- FILTER` to run the
//! benchmarks whose name contains FILTER). A plain harness: each benchmark is timed in
//! batches sized to take about 20 ms, 11 batches, and the median batch gives ns per
//! operation. Results print as a markdown table; ratio rows say which side of the ratio is
//! ovation's.

use std::collections::{BTreeSet, HashSet};
use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use netstack::ws::{self, Decoder, Event, Limits, OpCode};
use shards::bitset::Bitset;

/// Target duration of one timed batch.
const BATCH: Duration = Duration::from_millis(20);
/// Timed batches per benchmark; the median is reported.
const SAMPLES: usize = 11;

/// The median time of one call of `f`, in nanoseconds.
fn time_ns(mut f: impl FnMut()) -> f64 {
    // Calibrate: double the batch until it takes at least BATCH.
    let mut iters: u64 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() >= BATCH || iters >= 1 << 30 {
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

struct Table {
    filter: Option<String>,
    rows: Vec<String>,
}

impl Table {
    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }

    /// Times `f`, which processes `items` items and `bytes` bytes per call.
    fn bench(&mut self, name: &str, items: u64, bytes: u64, f: impl FnMut()) -> Option<f64> {
        if !self.wants(name) {
            return None;
        }
        let ns = time_ns(f);
        let per_item = ns / items as f64;
        let throughput = if bytes > 0 {
            format!("{:.2} GiB/s", bytes as f64 / ns * 1e9 / (1u64 << 30) as f64)
        } else {
            format!("{:.1} M items/s", items as f64 / ns * 1e3)
        };
        let row = format!(
            "| {name} | {} | {per_item:.2} | {throughput} |",
            ns_text(ns)
        );
        eprintln!("{row}");
        self.rows.push(row);
        Some(ns)
    }

    /// A ratio row: `other / ovation` time, so > 1 means ovation's code is faster.
    fn ratio(&mut self, name: &str, ovation_ns: Option<f64>, other_ns: Option<f64>) {
        if let (Some(o), Some(x)) = (ovation_ns, other_ns) {
            let row = format!(
                "| {name} | | | **{:.2}×** (time ratio, > 1 = ovation faster) |",
                x / o
            );
            eprintln!("{row}");
            self.rows.push(row);
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other non-flag argument filters by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut t = Table {
        filter,
        rows: Vec::new(),
    };
    eprintln!("hot-path microbenchmarks (median of {SAMPLES} batches of ~{BATCH:?})\n");
    encoding(&mut t);
    decoding(&mut t);
    masking(&mut t);
    bitmaps(&mut t);
    votes(&mut t);
    vote_path(&mut t);
    api_cast(&mut t);
    println!("| benchmark | ns/call | ns/item | throughput |");
    println!("| --- | ---: | ---: | ---: |");
    for row in &t.rows {
        println!("{row}");
    }
}

/// A text payload of `len` bytes: a JSON group-cast, padded.
fn text_payload(len: usize) -> Vec<u8> {
    let mut p =
        br#"{"type":"message","group":"global","payload":{"t":123456789,"seq":1,"pad":""#.to_vec();
    while p.len() < len.saturating_sub(3) {
        p.push(b'x');
    }
    p.extend_from_slice(br#""}}"#);
    p.truncate(len.max(1));
    p
}

fn encoding(t: &mut Table) {
    for len in [64usize, 1024, 16 * 1024] {
        let payload = text_payload(len);
        let mut out = Vec::with_capacity(len + ws::MAX_HEADER_LEN);
        t.bench(
            &format!("encode_frame text {}", size(len)),
            1,
            len as u64,
            || {
                out.clear();
                ws::encode_frame(OpCode::Text, black_box(&payload), &mut out);
                black_box(&out);
            },
        );
    }
}

fn decoding(t: &mut Table) {
    // Votes are the viewer messages that arrive in bursts; 64 B is a vote's size.
    for (len, frames) in [(64usize, 256usize), (1024, 64), (16 * 1024, 4)] {
        let payload = String::from_utf8(text_payload(len)).unwrap_or_default();
        let mut wire = Vec::new();
        for i in 0..frames {
            let mask = (i as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
            ws::encode_client_frame(OpCode::Text, true, payload.as_bytes(), mask, &mut wire);
        }
        let mut work = wire.clone();
        let mut decoder = Decoder::new(Limits::default());
        let name = format!("Decoder::feed {frames} masked text frames of {}", size(len));
        t.bench(&name, frames as u64, (len * frames) as u64, || {
            // The decoder unmasks in place, so every round starts from the masked bytes.
            work.copy_from_slice(&wire);
            let mut seen = 0usize;
            let r = decoder.feed(&mut work, &mut |e: Event<'_>| {
                if let Event::Text(s) = e {
                    seen += s.len();
                }
                ControlFlow::Continue(())
            });
            black_box((r.is_ok(), seen));
        });
    }
}

/// The unmasking loop written the obvious way, one byte at a time.
fn mask_bytewise(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

fn masking(t: &mut Table) {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    for len in [64usize, 1024, 16 * 1024] {
        let mut buf = text_payload(len);
        let ours = t.bench(&format!("apply_mask {}", size(len)), 1, len as u64, || {
            ws::apply_mask(black_box(&mut buf), mask, 0);
        });
        let naive = t.bench(
            &format!("byte-wise XOR loop {}", size(len)),
            1,
            len as u64,
            || {
                mask_bytewise(black_box(&mut buf), mask, 0);
            },
        );
        t.ratio(
            &format!("apply_mask vs byte-wise, {}", size(len)),
            ours,
            naive,
        );
    }
}

/// Deterministic slots: every slot (dense) or a pseudo-random tenth of them (sparse).
fn slots(universe: u32, sparse: bool) -> Vec<u32> {
    if !sparse {
        return (0..universe).collect();
    }
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..universe)
        .filter(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 10 == 0
        })
        .collect()
}

fn bitmaps(t: &mut Table) {
    const UNIVERSE: u32 = 1 << 20;
    for (label, sparse) in [("dense", false), ("10% sparse", true)] {
        let members = slots(UNIVERSE, sparse);
        let n = members.len() as u64;
        let what = format!(
            "{} of {} slots ({label})",
            digits(members.len() as u64),
            digits(u64::from(UNIVERSE))
        );

        let b_ins = t.bench(&format!("Bitset insert {what}"), n, 0, || {
            let mut b = Bitset::new();
            for &s in &members {
                b.insert(s);
            }
            black_box(b.len());
        });
        let h_ins = t.bench(&format!("HashSet<u32> insert {what}"), n, 0, || {
            let mut h = HashSet::new();
            for &s in &members {
                h.insert(s);
            }
            black_box(h.len());
        });
        let bt_ins = t.bench(&format!("BTreeSet<u32> insert {what}"), n, 0, || {
            let mut h = BTreeSet::new();
            for &s in &members {
                h.insert(s);
            }
            black_box(h.len());
        });
        t.ratio(&format!("insert {label}: HashSet / Bitset"), b_ins, h_ins);
        t.ratio(&format!("insert {label}: BTreeSet / Bitset"), b_ins, bt_ins);

        // Iteration is what a group-cast does: visit every member slot.
        let mut bitset = Bitset::new();
        let mut hash = HashSet::new();
        let mut tree = BTreeSet::new();
        for &s in &members {
            bitset.insert(s);
            hash.insert(s);
            tree.insert(s);
        }
        let b_it = t.bench(&format!("Bitset iterate {what}"), n, 0, || {
            black_box(
                bitset
                    .iter()
                    .fold(0u64, |a, s| a.wrapping_add(u64::from(s))),
            );
        });
        let h_it = t.bench(&format!("HashSet<u32> iterate {what}"), n, 0, || {
            black_box(hash.iter().fold(0u64, |a, s| a.wrapping_add(u64::from(*s))));
        });
        let bt_it = t.bench(&format!("BTreeSet<u32> iterate {what}"), n, 0, || {
            black_box(tree.iter().fold(0u64, |a, s| a.wrapping_add(u64::from(*s))));
        });
        t.ratio(&format!("iterate {label}: HashSet / Bitset"), b_it, h_it);
        t.ratio(&format!("iterate {label}: BTreeSet / Bitset"), b_it, bt_it);
    }
}

fn votes(t: &mut Table) {
    const CHOICES: usize = 10;
    for shards in [2usize, 8, 64] {
        let tallies: Vec<Vec<i64>> = (0..shards)
            .map(|s| {
                (0..CHOICES)
                    .map(|c| ((s * 31 + c * 7) % 97) as i64 - 10)
                    .collect()
            })
            .collect();
        let mut merged = vec![0i64; CHOICES];
        t.bench(
            &format!("merge_counts {shards} shards x {CHOICES} choices"),
            shards as u64,
            0,
            || {
                merged.iter_mut().for_each(|c| *c = 0);
                for tally in &tallies {
                    merge_counts(&mut merged, black_box(tally));
                }
                black_box(&merged);
            },
        );
    }
}

/// The shard's pure vote path, as `logic::Core::vote` runs it for an anonymous viewer: the
/// poll and choice checked, the audience bitmap tested, the previous vote looked up, the
/// tally moved, the viewer's vote recorded. 1,000 viewers vote in turn, each changing its
/// choice every round (the first round allocates each viewer's vote record, as the first
/// vote does; later rounds move counts).
fn vote_path(t: &mut Table) {
    use shards::polls::{Polls, ViewerVotes};
    use shards::proto::GroupId;
    const VIEWERS: usize = 1000;
    let mut polls = Polls::default();
    polls.open("p1".into(), 1, 4, GroupId(0), None);
    let mut audience = shards::bitset::Bitset::new();
    for slot in 0..VIEWERS as u32 {
        audience.insert(slot);
    }
    let mut voters: Vec<ViewerVotes> = (0..VIEWERS).map(|_| ViewerVotes::default()).collect();
    let mut round = 0i64;
    t.bench(
        "vote path (check, audience, count, record)",
        VIEWERS as u64,
        0,
        || {
            round += 1;
            for (slot, votes) in voters.iter_mut().enumerate() {
                let choice = (round + slot as i64) % 4;
                let Ok((seq, _audience)) = polls.check(black_box("p1"), choice) else {
                    continue;
                };
                if !audience.contains(slot as u32) {
                    continue;
                }
                let previous = votes.choice(seq).map(|c| (c, ""));
                polls.count(seq, previous, choice as u8, "");
                votes.set(seq, choice as u8);
            }
            black_box(&polls);
        },
    );
}

/// The application core's whole handling of one `POST /api/groups/global/messages` on a
/// two-shard core: parse the request, check the token, route, validate the body, encode the
/// frame and queue it for both shards, write the answer. Warm (back to back), and once after
/// each 5 ms sleep, as on an idle server where every cast finds its code and data out of the
/// caches: the cold row is what one cast on an idle server pays for this part of its path.
fn api_cast(t: &mut Table) {
    use ovation::app::downlink::Downlink;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;
    const WARM: &str = "API group-cast handling, warm (parse, route, encode, queue, answer)";
    const COLD: &str = "API group-cast handling, once per 5 ms (cold caches), p50";
    if !t.wants(WARM) && !t.wants(COLD) {
        return;
    }
    const TOKEN: &str = "bench-token-0123456789abcdef";
    let downlinks: Vec<Rc<Downlink>> = (0..2).map(|_| Rc::default()).collect();
    let config = Arc::new(ovation::config::Config::default());
    let stats = (0..2).map(|_| Arc::default()).collect();
    let app = RefCell::new(ovation::app::App::new(
        config,
        stats,
        downlinks.clone(),
        ovation::app::unix_ms(),
    ));
    let body = r#"{"payload":{"seq":1,"mark":"m1z"}}"#;
    let raw = format!(
        "POST /api/groups/global/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = Vec::with_capacity(512);
    let mut one = || {
        let mut parser = netstack::http::server::RequestParser::new(Default::default());
        let Ok((netstack::http::server::Step::Request(req), _)) = parser.next(raw.as_bytes())
        else {
            panic!("the request did not parse");
        };
        let response = ovation::api::handle(&app, TOKEN, &req);
        assert_eq!(response.status, 202, "the cast was refused");
        out.clear();
        response.write(&mut out, true);
        for d in &downlinks {
            black_box(d.take_all());
        }
    };
    t.bench(WARM, 1, 0, &mut one);
    if t.wants(COLD) {
        let mut ns: Vec<f64> = (0..200)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(5));
                let started = Instant::now();
                one();
                started.elapsed().as_nanos() as f64
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        let p50 = ns[ns.len() / 2];
        let row = format!("| {COLD} | {} | {p50:.2} | |", ns_text(p50));
        eprintln!("{row}");
        t.rows.push(row);
    }
}

/// The application core's merge of one shard's tally into the poll's counts.
fn merge_counts(into: &mut [i64], from: &[i64]) {
    ovation::app::polls::merge_counts(into, from);
}

/// Nanoseconds with one decimal below 10,000, digit-grouped above.
fn ns_text(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.1}")
    } else {
        digits(ns.round() as u64)
    }
}

/// `1048576` -> `1,048,576`.
fn digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn size(len: usize) -> String {
    if len >= 1024 {
        format!("{} KiB", len / 1024)
    } else {
        format!("{len} B")
    }
}
