//! Server -> viewer (and broadcaster) messages.
//!
//! Each serializes as one JSON object with its keys in alphabetical order, `"type"` among
//! them, byte for byte what the server wrote when these were built as `serde_json::Value`s
//! (whose maps are sorted). `Deserialize` is derived (for clients and tests).

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::id::{as_hex, ViewerId};

/// `welcome`: the first message on every viewer connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Welcome {
    pub ping_interval_s: u64,
    pub resume: String,
    pub resumed: bool,
    pub shard: u16,
    #[serde(deserialize_with = "as_hex::deserialize")]
    pub viewer: ViewerId,
}

/// `endpoint`: the answer to a `watch` of a live stream.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Endpoint {
    pub session: String,
    pub stream: String,
    pub url: String,
}

/// `voted`: an accepted vote.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Voted {
    pub choice: u8,
    pub poll: String,
}

/// `message`: a group-cast from the operator; `payload` is passed through unchanged.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GroupMessage {
    pub group: String,
    pub payload: serde_json::Value,
}

/// `poll`: a live poll, sent to its audience.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PollMessage {
    pub choices: Vec<String>,
    /// When the poll is scheduled to close (Unix ms).
    pub closes_at: u64,
    pub poll: String,
    pub question: String,
    pub stream: String,
}

/// `results`: a poll's counts; `total` is their sum, `final` marks the last push.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Results {
    /// Broadcasters only, for a poll opened with a breakdown: the counts per value.
    #[serde(default)]
    pub breakdown: Option<ResultsBreakdown>,
    pub counts: Vec<u64>,
    #[serde(rename = "final")]
    pub last: bool,
    pub poll: String,
    pub total: u64,
}

/// A poll's counts per value of one profile field (`""`: viewers without a value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultsBreakdown {
    pub counts: std::collections::BTreeMap<String, Vec<u64>>,
    pub field: String,
}

/// A stream's live state, as `stream` messages carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    /// Registered, nobody publishing yet.
    Offline,
    /// A broadcaster is publishing: an `endpoint` follows.
    Live,
    /// The broadcast ended (it may go live again).
    Ended,
}

/// `stream`: the live state of a stream the viewer watches (on `watch` of a stream that is
/// not live, then on every change).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamMessage {
    pub state: StreamState,
    pub stream: String,
}

/// `config`: the player configuration of the stream the viewer watches (logo, title,
/// upcoming broadcasts, operator fields). Sent on `watch` and pushed on every change;
/// `version` grows with each change, so a player can ignore an older one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConfigMessage {
    pub config: serde_json::Value,
    pub stream: String,
    pub version: u64,
}

/// `error`: the connection stays open; match on `code`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorMessage {
    pub code: String,
    pub message: String,
}

/// A message the server sends a viewer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    Welcome(Welcome),
    Pong,
    Endpoint(Endpoint),
    Voted(Voted),
    Message(GroupMessage),
    Poll(PollMessage),
    Results(Results),
    Error(ErrorMessage),
    Stream(StreamMessage),
    Config(ConfigMessage),
}

/// The `type` of each [`ServerMessage`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Welcome,
    Pong,
    Endpoint,
    Voted,
    Message,
    Poll,
    Results,
    Error,
    Stream,
    Config,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Welcome => "welcome",
            ServerKind::Pong => "pong",
            ServerKind::Endpoint => "endpoint",
            ServerKind::Voted => "voted",
            ServerKind::Message => "message",
            ServerKind::Poll => "poll",
            ServerKind::Results => "results",
            ServerKind::Error => "error",
            ServerKind::Stream => "stream",
            ServerKind::Config => "config",
        }
    }
}

impl ServerMessage {
    pub fn welcome(
        viewer: ViewerId,
        resume: &str,
        resumed: bool,
        shard: u16,
        ping_interval_s: u64,
    ) -> ServerMessage {
        ServerMessage::Welcome(Welcome {
            ping_interval_s,
            resume: resume.to_owned(),
            resumed,
            shard,
            viewer,
        })
    }

    pub fn endpoint(stream: &str, url: String, session: String) -> ServerMessage {
        ServerMessage::Endpoint(Endpoint {
            session,
            stream: stream.to_owned(),
            url,
        })
    }

    pub fn voted(poll: &str, choice: u8) -> ServerMessage {
        ServerMessage::Voted(Voted {
            choice,
            poll: poll.to_owned(),
        })
    }

    /// A group-cast: `group` is the group's API id, `payload` any JSON value.
    pub fn message(group: &str, payload: serde_json::Value) -> ServerMessage {
        ServerMessage::Message(GroupMessage {
            group: group.to_owned(),
            payload,
        })
    }

    pub fn poll(
        poll: &str,
        stream: &str,
        question: &str,
        choices: &[String],
        closes_at: u64,
    ) -> ServerMessage {
        ServerMessage::Poll(PollMessage {
            choices: choices.to_vec(),
            closes_at,
            poll: poll.to_owned(),
            question: question.to_owned(),
            stream: stream.to_owned(),
        })
    }

    /// Results with `total` computed from `counts`; `last` is the `final` flag.
    pub fn results(poll: &str, counts: &[u64], last: bool) -> ServerMessage {
        ServerMessage::Results(Results::new(poll, counts, last))
    }

    pub fn error(code: &str, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error(ErrorMessage {
            code: code.to_owned(),
            message: message.into(),
        })
    }

    pub fn stream(stream: &str, state: StreamState) -> ServerMessage {
        ServerMessage::Stream(StreamMessage {
            state,
            stream: stream.to_owned(),
        })
    }

    /// A stream's player configuration (`config` is a JSON object).
    pub fn config(stream: &str, version: u64, config: serde_json::Value) -> ServerMessage {
        ServerMessage::Config(ConfigMessage {
            config,
            stream: stream.to_owned(),
            version,
        })
    }

    pub fn kind(&self) -> ServerKind {
        match self {
            ServerMessage::Welcome(_) => ServerKind::Welcome,
            ServerMessage::Pong => ServerKind::Pong,
            ServerMessage::Endpoint(_) => ServerKind::Endpoint,
            ServerMessage::Voted(_) => ServerKind::Voted,
            ServerMessage::Message(_) => ServerKind::Message,
            ServerMessage::Poll(_) => ServerKind::Poll,
            ServerMessage::Results(_) => ServerKind::Results,
            ServerMessage::Error(_) => ServerKind::Error,
            ServerMessage::Stream(_) => ServerKind::Stream,
            ServerMessage::Config(_) => ServerKind::Config,
        }
    }

    /// The JSON text of the message (what goes into one WebSocket text frame).
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Results {
    pub fn new(poll: &str, counts: &[u64], last: bool) -> Results {
        Results {
            breakdown: None,
            counts: counts.to_vec(),
            last,
            poll: poll.to_owned(),
            total: counts.iter().sum(),
        }
    }
}

fn to_json<T: Serialize>(msg: &T) -> String {
    // Serializing these types cannot fail: every key is a string and every number finite
    // or an integer; a failure would be a bug here, shown as an empty object, not a panic.
    serde_json::to_string(msg).unwrap_or_else(|_| String::from("{}"))
}

impl Serialize for ServerMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Keys in alphabetical order, "type" in its place.
        match self {
            ServerMessage::Welcome(w) => {
                let mut m = s.serialize_map(Some(6))?;
                m.serialize_entry("ping_interval_s", &w.ping_interval_s)?;
                m.serialize_entry("resume", &w.resume)?;
                m.serialize_entry("resumed", &w.resumed)?;
                m.serialize_entry("shard", &w.shard)?;
                m.serialize_entry("type", "welcome")?;
                m.serialize_entry("viewer", &format_args!("{}", w.viewer))?;
                m.end()
            }
            ServerMessage::Pong => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", "pong")?;
                m.end()
            }
            ServerMessage::Endpoint(e) => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("session", &e.session)?;
                m.serialize_entry("stream", &e.stream)?;
                m.serialize_entry("type", "endpoint")?;
                m.serialize_entry("url", &e.url)?;
                m.end()
            }
            ServerMessage::Voted(v) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("choice", &v.choice)?;
                m.serialize_entry("poll", &v.poll)?;
                m.serialize_entry("type", "voted")?;
                m.end()
            }
            ServerMessage::Message(g) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("group", &g.group)?;
                m.serialize_entry("payload", &g.payload)?;
                m.serialize_entry("type", "message")?;
                m.end()
            }
            ServerMessage::Poll(p) => {
                let mut m = s.serialize_map(Some(6))?;
                m.serialize_entry("choices", &p.choices)?;
                m.serialize_entry("closes_at", &p.closes_at)?;
                m.serialize_entry("poll", &p.poll)?;
                m.serialize_entry("question", &p.question)?;
                m.serialize_entry("stream", &p.stream)?;
                m.serialize_entry("type", "poll")?;
                m.end()
            }
            ServerMessage::Results(r) => r.serialize(s),
            ServerMessage::Error(e) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("code", &e.code)?;
                m.serialize_entry("message", &e.message)?;
                m.serialize_entry("type", "error")?;
                m.end()
            }
            ServerMessage::Stream(st) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("state", &st.state)?;
                m.serialize_entry("stream", &st.stream)?;
                m.serialize_entry("type", "stream")?;
                m.end()
            }
            ServerMessage::Config(c) => {
                let mut m = s.serialize_map(Some(4))?;
                m.serialize_entry("config", &c.config)?;
                m.serialize_entry("stream", &c.stream)?;
                m.serialize_entry("type", "config")?;
                m.serialize_entry("version", &c.version)?;
                m.end()
            }
        }
    }
}

impl Serialize for Results {
    /// The `results` message, `"type"` included (the same bytes go to viewers and broadcasters).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5 + usize::from(self.breakdown.is_some())))?;
        if let Some(b) = &self.breakdown {
            m.serialize_entry("breakdown", b)?;
        }
        m.serialize_entry("counts", &self.counts)?;
        m.serialize_entry("final", &self.last)?;
        m.serialize_entry("poll", &self.poll)?;
        m.serialize_entry("total", &self.total)?;
        m.serialize_entry("type", "results")?;
        m.end()
    }
}

/// The broadcaster's `welcome` (on `/v1/broadcaster`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BroadcasterWelcome {
    pub role: String,
    pub stream: String,
}

/// `remediation`: a remediation rule acted on a group, or its action was reverted (the
/// event as `GET /api/remediations` lists it).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RemediationMessage {
    pub event: serde_json::Value,
}

/// `break` (the answer to a broadcaster's `{"type":"break","duration_s":N}`) and `beacons`
/// (a break's beacon counts, pushed as they change): the break as
/// `POST /api/streams/{id}/breaks` shows it (`id`, `stream`, `start_sequence`,
/// `duration_ms`, `sessions`, `beacons` per ad and event, `vast` when a decision server
/// is used).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdBreak {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A message the server sends a broadcaster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BroadcasterMessage {
    Welcome(BroadcasterWelcome),
    Results(Results),
    Remediation(RemediationMessage),
    Break(AdBreak),
    Beacons(AdBreak),
}

impl BroadcasterMessage {
    /// The welcome of a broadcaster following `stream`.
    pub fn welcome(stream: &str) -> BroadcasterMessage {
        BroadcasterMessage::Welcome(BroadcasterWelcome {
            role: "broadcaster".into(),
            stream: stream.to_owned(),
        })
    }

    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

impl Serialize for BroadcasterMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BroadcasterMessage::Welcome(w) => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("role", &w.role)?;
                m.serialize_entry("stream", &w.stream)?;
                m.serialize_entry("type", "welcome")?;
                m.end()
            }
            BroadcasterMessage::Results(r) => r.serialize(s),
            BroadcasterMessage::Remediation(r) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("event", &r.event)?;
                m.serialize_entry("type", "remediation")?;
                m.end()
            }
            BroadcasterMessage::Break(b) | BroadcasterMessage::Beacons(b) => {
                let kind = if matches!(self, BroadcasterMessage::Break(_)) {
                    "break"
                } else {
                    "beacons"
                };
                // Keys in order, `type` among them (a sorted map).
                let mut all = b.fields.clone();
                all.insert("type".into(), kind.into());
                all.serialize(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn samples() -> Vec<ServerMessage> {
        vec![
            ServerMessage::welcome(ViewerId(0x0040_0000_0000_0001), "ab12", false, 1, 30),
            ServerMessage::Pong,
            ServerMessage::endpoint("main", "http://x/main?session=s1".into(), "s1".into()),
            ServerMessage::voted("p1", 2),
            ServerMessage::message("g1", json!({"z": 1, "a": [true, null]})),
            ServerMessage::poll("p1", "main", "Who?", &["a".into(), "b".into()], 17),
            ServerMessage::results("p1", &[1, 2, 0], true),
            ServerMessage::error("unknown_type", "unknown message type \"x\""),
            ServerMessage::stream("main", StreamState::Offline),
            ServerMessage::stream("main", StreamState::Live),
            ServerMessage::stream("main", StreamState::Ended),
        ]
    }

    /// The bytes are those of the same object built as a `Value` (sorted keys), and they
    /// deserialize back to the same message.
    #[test]
    fn keys_are_sorted_and_messages_round_trip() {
        for msg in samples() {
            let text = msg.to_json();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(text, value.to_string(), "{:?}", msg.kind());
            assert_eq!(value["type"], msg.kind().as_str());
            let back: ServerMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(back, msg);
        }
        for msg in [
            BroadcasterMessage::welcome("main"),
            BroadcasterMessage::Results(Results::new("p", &[3, 4], false)),
            BroadcasterMessage::Results(Results {
                breakdown: Some(ResultsBreakdown {
                    field: "os".into(),
                    counts: [("ios".to_owned(), vec![3, 1]), ("".to_owned(), vec![0, 3])].into(),
                }),
                ..Results::new("p", &[3, 4], false)
            }),
            BroadcasterMessage::Remediation(RemediationMessage {
                event: json!({"id": "r1", "action": "applied", "group": "g1"}),
            }),
        ] {
            let text = msg.to_json();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(text, value.to_string());
            assert_eq!(
                serde_json::from_str::<BroadcasterMessage>(&text).unwrap(),
                msg
            );
        }
    }

    #[test]
    fn exact_bytes_of_todays_messages() {
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(
            ServerMessage::welcome(ViewerId(0x0001_0000_0000_0001), "afe2", false, 1, 30).to_json(),
            r#"{"ping_interval_s":30,"resume":"afe2","resumed":false,"shard":1,"type":"welcome","viewer":"0001000000000001"}"#
        );
        assert_eq!(
            ServerMessage::results("p", &[1, 1, 0], false).to_json(),
            r#"{"counts":[1,1,0],"final":false,"poll":"p","total":2,"type":"results"}"#
        );
        assert_eq!(
            ServerMessage::stream("main", StreamState::Live).to_json(),
            r#"{"state":"live","stream":"main","type":"stream"}"#
        );
        assert_eq!(
            BroadcasterMessage::welcome("main").to_json(),
            r#"{"role":"broadcaster","stream":"main","type":"welcome"}"#
        );
    }
}
