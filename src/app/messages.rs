//! Every server -> viewer (and -> broadcaster) message the application core sends, built from
//! the typed viewer protocol (`protocol::ServerMessage`) and encoded once into a frame: the
//! same bytes go to every receiver.

use protocol::ServerMessage;
use serde_json::Value;
use shards::frames::encode;
use shards::proto::Frame;

pub use shards::frames::text_frame;

/// `{"type":"error",...}` to one viewer.
pub fn error(code: &str, message: &str) -> Frame {
    shards::frames::error(code, message)
}

/// `{"type":"endpoint",...}`: the media URL of a stream the viewer asked to watch.
pub fn endpoint(stream: &str, url: &str, session: &str) -> Frame {
    encode(&ServerMessage::endpoint(stream, url.into(), session.into()))
}

/// `{"type":"stream",...}`: a stream's live state (`offline`, `live` or `ended`).
pub fn stream_state(stream: &str, state: protocol::StreamState) -> Frame {
    encode(&ServerMessage::stream(stream, state))
}

/// `{"type":"message",...}`: an operator's group cast.
pub fn group_message(group: &str, payload: &Value) -> Frame {
    encode(&ServerMessage::message(group, payload.clone()))
}

/// `{"type":"poll",...}`: a poll opened to the viewer's audience.
pub fn poll(id: &str, stream: &str, question: &str, choices: &[String], closes_at: u64) -> Frame {
    encode(&ServerMessage::poll(
        id, stream, question, choices, closes_at,
    ))
}

/// `{"type":"results",...}`: live (`last == false`) or final counts of a poll. Viewers and
/// broadcasters get the same bytes.
pub fn results(id: &str, counts: &[u64], last: bool) -> Frame {
    encode(&ServerMessage::results(id, counts, last))
}

/// `{"type":"results",...}` with `breakdown`: what broadcasters get for a poll with one.
pub fn results_with_breakdown(
    id: &str,
    counts: &[u64],
    last: bool,
    breakdown: protocol::ResultsBreakdown,
) -> Frame {
    encode(&ServerMessage::Results(protocol::Results {
        breakdown: Some(breakdown),
        ..protocol::Results::new(id, counts, last)
    }))
}

/// `{"type":"remediation","event":...}` to broadcasters.
pub fn remediation(event: Value) -> Frame {
    let text =
        protocol::BroadcasterMessage::Remediation(protocol::RemediationMessage { event }).to_json();
    text_frame(&text)
}

/// `{"type":"beacons",...}` to a stream's broadcasters: a break's beacon counts.
pub fn beacons(brk: Value) -> Frame {
    let fields = match brk {
        Value::Object(m) => m,
        _ => Default::default(),
    };
    let text = protocol::BroadcasterMessage::Beacons(protocol::AdBreak { fields }).to_json();
    text_frame(&text)
}

/// `{"type":"config",...}`: a stream's player configuration.
pub fn config(stream: &str, version: u64, config: Value) -> Frame {
    encode(&ServerMessage::config(stream, version, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            &stream_state("s", protocol::StreamState::Live)[2..],
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
