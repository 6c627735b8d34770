//! Every server -> viewer message the application core builds, in one place, so the typed
//! viewer protocol can replace these few functions without touching the logic around them.
//!
//! Each function returns one encoded text frame: the same bytes go to every receiver.

use serde_json::{json, Value};
use shards::proto::Frame;

/// Encodes one text frame.
pub fn text_frame(json: &str) -> Frame {
    let mut buf = Vec::with_capacity(netstack::ws::header_len(json.len()) + json.len());
    netstack::ws::encode_frame(netstack::ws::OpCode::Text, json.as_bytes(), &mut buf);
    buf.into()
}

fn frame(message: &Value) -> Frame {
    text_frame(&message.to_string())
}

/// `{"type":"error",...}` to one viewer.
pub fn error(code: &str, message: &str) -> Frame {
    frame(&json!({"type": "error", "code": code, "message": message}))
}

/// `{"type":"endpoint",...}`: the media URL of a stream the viewer asked to watch.
pub fn endpoint(stream: &str, url: &str, session: &str) -> Frame {
    frame(&json!({"type": "endpoint", "stream": stream, "url": url, "session": session}))
}

/// `{"type":"stream",...}`: a stream's live state (`offline`, `live` or `ended`).
pub fn stream_state(stream: &str, state: &str) -> Frame {
    frame(&json!({"type": "stream", "stream": stream, "state": state}))
}

/// `{"type":"message",...}`: an operator's group cast.
pub fn group_message(group: &str, payload: &Value) -> Frame {
    frame(&json!({"type": "message", "group": group, "payload": payload}))
}

/// `{"type":"poll",...}`: a poll opened to the viewer's audience.
pub fn poll(id: &str, stream: &str, question: &str, choices: &[String], closes_at: u64) -> Frame {
    frame(&json!({
        "type": "poll",
        "poll": id,
        "stream": stream,
        "question": question,
        "choices": choices,
        "closes_at": closes_at,
    }))
}

/// `{"type":"results",...}`: live (`last == false`) or final counts of a poll.
pub fn results_value(id: &str, counts: &[u64], last: bool) -> Value {
    json!({
        "type": "results",
        "poll": id,
        "counts": counts,
        "total": counts.iter().sum::<u64>(),
        "final": last,
    })
}

/// [`results_value`], encoded.
pub fn results(id: &str, counts: &[u64], last: bool) -> Frame {
    frame(&results_value(id, counts, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(f: &Frame) -> Value {
        // A short text frame: two header bytes, then the payload.
        assert_eq!(f[0], 0x81);
        serde_json::from_slice(&f[2..]).unwrap()
    }

    #[test]
    fn messages_have_their_documented_shape() {
        assert_eq!(decode(&error("c", "m"))["code"], "c");
        assert_eq!(decode(&endpoint("s", "u", "x"))["type"], "endpoint");
        assert_eq!(
            &stream_state("s", "live")[2..],
            br#"{"state":"live","stream":"s","type":"stream"}"#
        );
        let r = decode(&results("p1", &[1, 2], true));
        assert_eq!(r["total"], 3);
        assert_eq!(r["final"], true);
        let p = decode(&poll("p1", "s", "q?", &["a".into(), "b".into()], 9));
        assert_eq!(p["choices"][1], "b");
        assert_eq!(
            decode(&group_message("g1", &json!({"k": 1})))["payload"]["k"],
            1
        );
    }
}
