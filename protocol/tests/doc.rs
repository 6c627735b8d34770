//! docs/protocol.md against the types: every JSON example in section 3 (viewer -> server)
//! parses into the message its heading names, every example in section 4 (server -> viewer)
//! deserializes into its heading's variant and re-encodes to the same bytes, server lines
//! (`<-`) elsewhere in those sections and the broadcaster's in section 10 do too, and every
//! variant of both enums has at least one documented example.

use std::collections::BTreeSet;

use protocol::{parse_viewer_message, BroadcasterMessage, ServerKind, ServerMessage, ViewerKind};

#[derive(Debug)]
struct Example {
    section: u32,
    heading: String,
    /// `Some(true)` for `->` (viewer), `Some(false)` for `<-` (server), `None` when unmarked.
    from_viewer: Option<bool>,
    json: String,
    line: usize,
}

fn examples(doc: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let (mut section, mut heading, mut in_block) = (0u32, String::new(), false);
    for (i, line) in doc.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            if let Some(h) = line.strip_prefix("## ") {
                section = h
                    .split('.')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                heading.clear();
                continue;
            }
            if let Some(h) = line.strip_prefix("### ") {
                heading = h.trim().to_owned();
                continue;
            }
        }
        let mut push = |from_viewer, json: &str| {
            out.push(Example {
                section,
                heading: heading.clone(),
                from_viewer,
                json: json.trim().to_owned(),
                line: i + 1,
            })
        };
        if in_block {
            if let Some(j) = line.strip_prefix("-> ") {
                if j.trim_start().starts_with('{') {
                    push(Some(true), j);
                }
            } else if let Some(j) = line.strip_prefix("<- ") {
                push(Some(false), j);
            } else if line.starts_with('{') {
                push(None, line);
            }
        } else {
            // Inline examples such as `{"type":"pong"}`.
            for (n, span) in line.split('`').enumerate() {
                if n % 2 == 1 && span.starts_with("{\"") && span.contains("\"type\"") {
                    push(None, span);
                }
            }
        }
    }
    out
}

/// The variant names serde knows for a tag enum, from its "expected one of" error: this
/// follows the enum itself, so a variant added later is listed without touching this test.
fn variants<T: for<'de> serde::Deserialize<'de> + std::fmt::Debug>() -> BTreeSet<String> {
    let err = serde_json::from_str::<T>("\"no-such-variant\"")
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected one of")
        .nth(1)
        .expect("serde lists the variants");
    list.split(',')
        .map(|v| {
            v.trim()
                .trim_matches(|c: char| c == '`' || c.is_whitespace())
        })
        .map(|v| v.split('`').next().unwrap_or(v).to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn check_server(ex: &Example) -> ServerMessage {
    let msg: ServerMessage = serde_json::from_str(&ex.json)
        .unwrap_or_else(|e| panic!("line {}: {} is no ServerMessage: {e}", ex.line, ex.json));
    assert_eq!(
        msg.to_json(),
        ex.json,
        "line {}: re-encoded differently",
        ex.line
    );
    msg
}

#[test]
fn every_documented_message_parses_and_every_variant_is_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md is readable");
    let all = examples(&doc);
    let mut viewer_seen = BTreeSet::new();
    let mut server_seen = BTreeSet::new();
    for ex in all.iter().filter(|e| e.section == 3 || e.section == 4) {
        let from_viewer = ex.from_viewer.unwrap_or(ex.section == 3);
        if from_viewer {
            assert_eq!(
                ex.section, 3,
                "line {}: a viewer message outside section 3",
                ex.line
            );
            let msg = parse_viewer_message(&ex.json)
                .unwrap_or_else(|e| panic!("line {}: {} does not parse: {e}", ex.line, ex.json));
            assert_eq!(
                msg.kind().as_str(),
                ex.heading,
                "line {}: {}",
                ex.line,
                ex.json
            );
            viewer_seen.insert(ex.heading.clone());
        } else {
            let msg = check_server(ex);
            if ex.section == 4 {
                assert_eq!(
                    msg.kind().as_str(),
                    ex.heading,
                    "line {}: {}",
                    ex.line,
                    ex.json
                );
                server_seen.insert(ex.heading.clone());
            }
        }
    }
    let mut broadcaster = 0;
    for ex in all
        .iter()
        .filter(|e| e.section == 10 && e.from_viewer == Some(false))
    {
        let msg: BroadcasterMessage = serde_json::from_str(&ex.json).unwrap_or_else(|e| {
            panic!(
                "line {}: {} is no BroadcasterMessage: {e}",
                ex.line, ex.json
            )
        });
        assert_eq!(msg.to_json(), ex.json, "line {}", ex.line);
        broadcaster += 1;
    }
    assert!(
        broadcaster >= 2,
        "section 10 shows the broadcaster's welcome and results"
    );

    let viewer_kinds = variants::<ViewerKind>();
    let server_kinds = variants::<ServerKind>();
    assert_eq!(viewer_kinds.len(), 5, "{viewer_kinds:?}");
    assert_eq!(server_kinds.len(), 10, "{server_kinds:?}");
    for k in &viewer_kinds {
        assert!(
            viewer_seen.contains(k),
            "viewer message {k:?} has no example in section 3"
        );
    }
    for k in &server_kinds {
        assert!(
            server_seen.contains(k),
            "server message {k:?} has no example in section 4"
        );
    }
}

/// The kind enums and the message enums agree on every tag.
#[test]
fn kind_tags_round_trip() {
    for k in variants::<ViewerKind>() {
        let kind = ViewerKind::from_tag(&k).expect("every ViewerKind has a tag");
        assert_eq!(kind.as_str(), k);
    }
    for k in variants::<ServerKind>() {
        let kind: ServerKind = serde_json::from_str(&format!("{k:?}")).unwrap();
        assert_eq!(kind.as_str(), k);
    }
    // ServerMessage and ServerKind list the same variants.
    let messages = variants_of_tagged::<ServerMessage>();
    assert_eq!(messages, variants::<ServerKind>());
}

fn variants_of_tagged<T: for<'de> serde::Deserialize<'de> + std::fmt::Debug>() -> BTreeSet<String> {
    let err = serde_json::from_str::<T>(r#"{"type":"no-such-variant"}"#)
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected one of")
        .nth(1)
        .expect("serde lists the variants");
    list.split(',')
        .map(|v| {
            v.trim()
                .trim_matches('`')
                .split('`')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|v| !v.is_empty())
        .collect()
}
