//! The typed parser against the `serde_json::Value` classification it replaced: the same
//! message or the same error code and text, over hand-picked cases and a few thousand
//! deterministic pseudo-random and mutated inputs (the in-tree stand-in for `protocol/fuzz`).

use protocol::{field, parse_viewer_message, ViewerMessage, MAX_FIELD_LEN};
use serde_json::Value;

/// What the old `Conn::on_text` did with a text, as comparable data.
#[derive(Debug, PartialEq)]
enum Outcome {
    Error(&'static str, String),
    Hello([Option<String>; 4]),
    Ping,
    Watch(String),
    Vote(String, i64),
    Telemetry([Option<u64>; 6]),
}

/// The classification that ran on every viewer message before the typed protocol (kept as
/// the reference; its one panic, `String::truncate` inside a multi-byte char, is fixed here
/// the way the new parser fixes it).
fn reference(text: &str) -> Outcome {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Outcome::Error("invalid_json", format!("invalid JSON: {e}")),
    };
    let Some(obj) = value.as_object() else {
        return Outcome::Error("not_an_object", "a message is a JSON object".into());
    };
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Outcome::Error("missing_type", "a message needs a string \"type\"".into());
    };
    let str_field = |name: &str| obj.get(name).and_then(Value::as_str);
    let num = |name: &str| obj.get(name).and_then(Value::as_f64).map(f64::to_bits);
    match kind {
        "hello" => Outcome::Hello(
            ["app_version", "hardware", "region", "language"]
                .map(|n| str_field(n).map(String::from)),
        ),
        "ping" => Outcome::Ping,
        "watch" => match str_field("stream").and_then(field) {
            Some(s) => Outcome::Watch(s.into()),
            None => Outcome::Error("bad_field", "watch needs a string \"stream\"".into()),
        },
        "vote" => {
            let poll = str_field("poll").and_then(field);
            let choice = obj.get("choice").and_then(Value::as_i64);
            match (poll, choice) {
                (Some(p), Some(c)) => Outcome::Vote(p.into(), c),
                _ => Outcome::Error(
                    "bad_field",
                    "vote needs a string \"poll\" and an integer \"choice\"".into(),
                ),
            }
        }
        "telemetry" => Outcome::Telemetry(
            [
                "bitrate_kbps",
                "buffering_ms",
                "dropped_frames",
                "rtt_ms",
                "failures",
                "buffering_ratio",
            ]
            .map(num),
        ),
        other => {
            let mut end = other.len().min(MAX_FIELD_LEN);
            while !other.is_char_boundary(end) {
                end -= 1;
            }
            Outcome::Error(
                "unknown_type",
                format!("unknown message type {:?}", &other[..end]),
            )
        }
    }
}

fn typed(text: &str) -> Outcome {
    match parse_viewer_message(text) {
        Err(e) => Outcome::Error(e.code(), e.to_string()),
        Ok(ViewerMessage::Hello(h)) => Outcome::Hello(
            [h.app_version, h.hardware, h.region, h.language].map(|s| s.map(|s| s.into_owned())),
        ),
        Ok(ViewerMessage::Ping) => Outcome::Ping,
        Ok(ViewerMessage::Watch { stream }) => Outcome::Watch(stream.into_owned()),
        Ok(ViewerMessage::Vote { poll, choice }) => Outcome::Vote(poll.into_owned(), choice),
        Ok(ViewerMessage::Telemetry(t)) => Outcome::Telemetry(
            [
                t.bitrate_kbps,
                t.buffering_ms,
                t.dropped_frames,
                t.rtt_ms,
                t.failures,
                t.buffering_ratio,
            ]
            .map(|n| n.map(f64::to_bits)),
        ),
    }
}

fn same(text: &str) {
    assert_eq!(typed(text), reference(text), "input {text:?}");
}

const CASES: &[&str] = &[
    r#"{"type":"ping"}"#,
    r#"{"type":"pong"}"#,
    r#"{"type":"ping"} x"#,
    r#"  {"type" : "ping" , "extra": [1, {"a": null}] }  "#,
    r#"{"type":"hello","app_version":"3.2.1","hardware":"iPhone15,2","region":"hu"}"#,
    r#"{"type":"hello","app_version":5,"region":"","language":"de-AT"}"#,
    r#"{"type":"hello","app_version":"a\"b\u00e9"}"#,
    r#"{"type":"watch","stream":"main"}"#,
    r#"{"type":"watch","stream":"  main  "}"#,
    r#"{"type":"watch","stream":"\tma\u0069n "}"#,
    r#"{"type":"watch","stream":"   "}"#,
    r#"{"type":"watch","stream":7}"#,
    r#"{"type":"watch"}"#,
    r#"{"type":"vote","poll":"p1","choice":0}"#,
    r#"{"type":"vote","poll":"p1","choice":-3}"#,
    r#"{"type":"vote","poll":"p1","choice":1.0}"#,
    r#"{"type":"vote","poll":"p1","choice":18446744073709551615}"#,
    r#"{"type":"vote","poll":"p1","choice":9223372036854775807}"#,
    r#"{"type":"vote","poll":"p1","choice":"1"}"#,
    r#"{"type": "vote", "poll": "p1"}"#,
    r#"{"type":"vote","poll":"","choice":1}"#,
    r#"{"type":"telemetry","bitrate_kbps":4200,"buffering_ms":80.5,"dropped_frames":-2,"rtt_ms":"x"}"#,
    r#"{"type":"telemetry","rtt_ms":1e400}"#,
    r#"{"type":"telemetry","failures":3,"buffering_ratio":0.25,"failures":"x"}"#,
    r#"{"type":"telemetry","buffering_ratio":0.5,"failures":1}"#,
    r#"{"type":"telemetry","rtt_ms":18446744073709551616}"#,
    r#"{"type":"teleport"}"#,
    r#"{"type":""}"#,
    r#"{"type":"ping","type":"watch"}"#,
    r#"{"type":"watch","stream":"a","stream":null}"#,
    r#"{"type":null}"#,
    r#"{"type":1}"#,
    r#"{"kind": "x"}"#,
    r#"{}"#,
    "[1, 2]",
    "[1, 2",
    "\"ping\"",
    "null",
    "true",
    "12",
    "-0.5e3",
    "",
    "   ",
    "{not json",
    r#"{"type":"ping",}"#,
    r#"{"type":"\ud800"}"#,
    r#"{"type":"\uD83D\uDE00"}"#,
    r#"{"a":"\x"}"#,
    "{\"type\":\"ping\"}\u{0}",
    r#"{1:2}"#,
    r#"{"type":"ping" "x":1}"#,
];

#[test]
fn hand_picked_cases_match_the_value_classification() {
    for text in CASES {
        same(text);
    }
    let long = format!(r#"{{"type":"{}é"}}"#, "x".repeat(MAX_FIELD_LEN - 1));
    same(&long);
    let long_poll = format!(
        r#"{{"type":"vote","poll":"{}","choice":1}}"#,
        "é".repeat(40)
    );
    same(&long_poll);
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    same(&deep);
    let deep_in = format!(
        r#"{{"type":"ping","x":{}1{}}}"#,
        "[".repeat(127),
        "]".repeat(127)
    );
    same(&deep_in);
    let deep_obj = format!(
        r#"{{"type":"ping","x":{}1{}}}"#,
        "{\"a\":".repeat(130),
        "}".repeat(130)
    );
    same(&deep_obj);
}

#[test]
fn unknown_type_of_a_long_multibyte_name_does_not_panic() {
    let text = format!(r#"{{"type":"{}éé"}}"#, "x".repeat(MAX_FIELD_LEN - 1));
    let err = parse_viewer_message(&text).unwrap_err();
    assert_eq!(err.code(), "unknown_type");
    assert_eq!(
        err.to_string(),
        format!("unknown message type {:?}", "x".repeat(63))
    );
}

/// xorshift64*: deterministic, so a failure names its seed and reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u00e9",
    "\\ud800",
    " ",
    "\"type\"",
    "\"ping\"",
    "\"vote\"",
    "\"watch\"",
    "\"hello\"",
    "\"telemetry\"",
    "\"poll\"",
    "\"choice\"",
    "\"stream\"",
    "\"rtt_ms\"",
    "0",
    "-1",
    "1.5",
    "1e999",
    "18446744073709551616",
    "null",
    "true",
    "é",
    "\u{0}",
    "\"p1\"",
    "\"  \"",
];

#[test]
fn random_and_mutated_inputs_match_the_value_classification() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    // Mutations of the hand-picked cases: bytes replaced, removed, duplicated, pieces inserted.
    for round in 0..3000 {
        let base = CASES[round % CASES.len()].as_bytes();
        let mut bytes = base.to_vec();
        for _ in 0..=rng.below(3) {
            match rng.below(4) {
                0 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
                1 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    bytes.remove(i);
                }
                2 if !bytes.is_empty() => {
                    let i = rng.below(bytes.len());
                    let j = (i + rng.below(8)).min(bytes.len());
                    let dup = bytes[i..j].to_vec();
                    bytes.splice(i..i, dup);
                }
                _ => {
                    let i = rng.below(bytes.len() + 1);
                    let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                    bytes.splice(i..i, piece.iter().copied());
                }
            }
        }
        // The shard only ever sees valid UTF-8 (the decoder checks it).
        if let Ok(text) = std::str::from_utf8(&bytes) {
            same(text);
            checked += 1;
        }
    }
    // Random token soup, with a valid prefix half of the time.
    for _ in 0..3000 {
        let mut text = String::new();
        if rng.below(2) == 0 {
            text.push_str(r#"{"type":"#);
        }
        for _ in 0..rng.below(12) {
            text.push_str(PIECES[rng.below(PIECES.len())]);
        }
        same(&text);
        checked += 1;
    }
    assert!(checked > 5000, "only {checked} inputs were checked");
}
