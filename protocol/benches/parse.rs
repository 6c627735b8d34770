//! Viewer-message parsing, typed (`parse_viewer_message`) against the `serde_json::Value`
//! parse and lookups it replaced, on the messages viewers send most. Plain `Instant` harness
//! like `bench/benches/hot_paths.rs`: `cargo bench -p ovation-protocol`.

use std::hint::black_box;
use std::time::Instant;

use protocol::parse_viewer_message;
use serde_json::Value;

const MESSAGES: &[(&str, &str)] = &[
    (
        "vote",
        r#"{"type":"vote","poll":"pf0eb6ceb37fad271","choice":1}"#,
    ),
    ("ping", r#"{"type":"ping"}"#),
    (
        "telemetry",
        r#"{"type":"telemetry","bitrate_kbps":4200,"buffering_ms":80,"dropped_frames":2,"rtt_ms":35}"#,
    ),
    (
        "hello",
        r#"{"type":"hello","app_version":"3.2.1","hardware":"iPhone15,2","region":"hu"}"#,
    ),
    ("invalid", r#"{"type":"vote","poll":"p1","choice":1"#),
];

/// What the shard did before: parse into a Value, then look up the fields (an error is
/// formatted, as it was for the viewer's `error` message).
fn value_parse(text: &str) -> usize {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(e) => return format!("invalid JSON: {e}").len(),
    };
    let Some(obj) = value.as_object() else {
        return 1;
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
    kind.len()
        + obj.get("poll").and_then(Value::as_str).map_or(0, str::len)
        + obj.get("choice").and_then(Value::as_i64).unwrap_or(0) as usize
        + obj.get("rtt_ms").and_then(Value::as_f64).unwrap_or(0.0) as usize
        + obj
            .get("app_version")
            .and_then(Value::as_str)
            .map_or(0, str::len)
}

fn typed_parse(text: &str) -> usize {
    match parse_viewer_message(text) {
        Ok(m) => m.kind() as usize,
        Err(e) => e.to_string().len(),
    }
}

/// One run of `iters` calls, in ns per call.
fn run(iters: u32, f: &mut impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// Best of seven interleaved runs of each (a shared machine's noise hits both alike).
fn compare(iters: u32, mut a: impl FnMut() -> usize, mut b: impl FnMut() -> usize) -> (f64, f64) {
    let (mut best_a, mut best_b) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        best_a = best_a.min(run(iters, &mut a));
        best_b = best_b.min(run(iters, &mut b));
    }
    (best_a, best_b)
}

fn main() {
    let iters = 200_000;
    println!("| message | Value parse (ns) | typed parse (ns) | typed / Value |");
    println!("|---|---:|---:|---:|");
    for (name, text) in MESSAGES {
        let (old, new) = compare(
            iters,
            || value_parse(black_box(text)),
            || typed_parse(black_box(text)),
        );
        println!("| {name} | {old:.0} | {new:.0} | {:.2} |", new / old);
    }
}
