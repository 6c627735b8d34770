//! Fuzzes the viewer-message parser with arbitrary bytes (as text when they are UTF-8, the
//! only thing the WebSocket decoder hands the shard). Must never panic; an error has one of
//! the documented codes; an accepted message has bounded, trimmed fields and re-serializes
//! to JSON that parses back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{parse_viewer_message, ViewerMessage, MAX_FIELD_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_viewer_message(text) {
        Err(e) => {
            assert!(matches!(
                e.code(),
                "invalid_json" | "not_an_object" | "missing_type" | "unknown_type" | "bad_field"
            ));
            let _ = e.to_string();
        }
        Ok(msg) => {
            match &msg {
                ViewerMessage::Watch { stream: s } | ViewerMessage::Vote { poll: s, .. } => {
                    assert!(!s.is_empty() && s.len() <= MAX_FIELD_LEN && s.trim() == &**s);
                }
                _ => {}
            }
            let again = serde_json::to_string(&msg).expect("a parsed message serializes");
            let back = parse_viewer_message(&again).expect("its own encoding parses");
            // Telemetry NaN cannot occur (JSON has none), so equality is exact.
            assert_eq!(back, msg);
        }
    }
});
