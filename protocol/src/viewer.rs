//! Viewer -> server messages and their parser.
//!
//! [`parse_viewer_message`] reads the whole text as JSON first (so a syntax error anywhere is
//! `invalid_json`, exactly as when it was parsed into a `serde_json::Value`), keeping only the
//! fields the protocol knows and skipping the rest without building them, then classifies it:
//! `not_an_object`, `missing_type`, `unknown_type`, `bad_field`. Every code and message is the
//! one docs/protocol.md lists.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Longest value kept for any free-form field; longer values are cut at a char boundary.
pub const MAX_FIELD_LEN: usize = 64;

/// Trims and bounds a peer-supplied string: `None` when it is blank.
pub fn field(value: &str) -> Option<Box<str>> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    Some(cut(value, MAX_FIELD_LEN).into())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Connection-quality telemetry from a player. Absent or non-numeric numbers are `None`.
///
/// `buffering_ms`, `dropped_frames` and `failures` count what happened since the player's
/// previous report; `bitrate_kbps`, `buffering_ratio` (share of that time spent buffering,
/// 0 to 1) and `rtt_ms` describe it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffering_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_frames: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Connection failures (failed segment or manifest loads, reconnects) since the last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<f64>,
    /// Share of the time since the last report spent buffering, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffering_ratio: Option<f64>,
}

/// `hello`: profile fields, each as sent (the shard trims and normalises them); `None` when
/// absent or not a string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hello<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_version: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<Cow<'a, str>>,
}

/// A message a viewer sends. Serializes in the wire form (`"type"` tag); parse with
/// [`parse_viewer_message`] (the `Deserialize` impl uses it too).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ViewerMessage<'a> {
    /// Adds profile fields. No answer.
    Hello(Hello<'a>),
    /// Application-level liveness check; answered with `pong`.
    Ping,
    /// Asks for a stream's media endpoint. `stream` is trimmed, non-blank, cut to 64 bytes.
    Watch { stream: Cow<'a, str> },
    /// A vote. `poll` is trimmed, non-blank, cut to 64 bytes; `choice` is any JSON integer
    /// that fits an `i64` (range is the poll's to check).
    Vote { poll: Cow<'a, str>, choice: i64 },
    /// Connection-quality numbers. No answer.
    Telemetry(Telemetry),
}

/// The `type` of each [`ViewerMessage`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewerKind {
    Hello,
    Ping,
    Watch,
    Vote,
    Telemetry,
}

impl ViewerKind {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewerKind::Hello => "hello",
            ViewerKind::Ping => "ping",
            ViewerKind::Watch => "watch",
            ViewerKind::Vote => "vote",
            ViewerKind::Telemetry => "telemetry",
        }
    }

    /// The kind a `type` string names.
    pub fn from_tag(tag: &str) -> Option<ViewerKind> {
        Some(match tag {
            "hello" => ViewerKind::Hello,
            "ping" => ViewerKind::Ping,
            "watch" => ViewerKind::Watch,
            "vote" => ViewerKind::Vote,
            "telemetry" => ViewerKind::Telemetry,
            _ => return None,
        })
    }
}

impl ViewerMessage<'_> {
    pub fn kind(&self) -> ViewerKind {
        match self {
            ViewerMessage::Hello(_) => ViewerKind::Hello,
            ViewerMessage::Ping => ViewerKind::Ping,
            ViewerMessage::Watch { .. } => ViewerKind::Watch,
            ViewerMessage::Vote { .. } => ViewerKind::Vote,
            ViewerMessage::Telemetry(_) => ViewerKind::Telemetry,
        }
    }

    /// A copy that borrows nothing from the parsed text.
    pub fn into_owned(self) -> ViewerMessage<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        match self {
            ViewerMessage::Hello(h) => ViewerMessage::Hello(Hello {
                app_version: own(h.app_version),
                hardware: own(h.hardware),
                region: own(h.region),
                language: own(h.language),
            }),
            ViewerMessage::Ping => ViewerMessage::Ping,
            ViewerMessage::Watch { stream } => ViewerMessage::Watch {
                stream: Cow::Owned(stream.into_owned()),
            },
            ViewerMessage::Vote { poll, choice } => ViewerMessage::Vote {
                poll: Cow::Owned(poll.into_owned()),
                choice,
            },
            ViewerMessage::Telemetry(t) => ViewerMessage::Telemetry(t),
        }
    }
}

/// Why a viewer's text message was refused: [`ProtocolError::code`] and the `Display` text are
/// the `code` and `message` of the `error` the viewer gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON; the text is serde_json's description.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but not an object.
    #[error("a message is a JSON object")]
    NotAnObject,
    /// An object without a string `type`.
    #[error("a message needs a string \"type\"")]
    MissingType,
    /// A `type` the server does not know, cut to [`MAX_FIELD_LEN`] bytes.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known `type` whose required fields are missing or of the wrong kind (only `watch`
    /// and `vote` have required fields); the text says what the message needs.
    #[error("{0}")]
    BadField(&'static str),
}

const WATCH_NEEDS: &str = "watch needs a string \"stream\"";
const VOTE_NEEDS: &str = "vote needs a string \"poll\" and an integer \"choice\"";

impl ProtocolError {
    /// The error `code` the viewer gets.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::InvalidJson(_) => "invalid_json",
            ProtocolError::NotAnObject => "not_an_object",
            ProtocolError::MissingType => "missing_type",
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::BadField(_) => "bad_field",
        }
    }
}

/// Parses one viewer text message.
pub fn parse_viewer_message(text: &str) -> Result<ViewerMessage<'_>, ProtocolError> {
    let raw: Raw<'_> =
        serde_json::from_str(text).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    raw.classify()
}

impl<'de> Deserialize<'de> for ViewerMessage<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw::deserialize(d)?.classify().map_err(de::Error::custom)
    }
}

// ---- the lenient first pass ----

/// A JSON value as far as the protocol cares: strings and numbers are kept, anything else
/// (after being read in full) is `Other`.
#[derive(Debug)]
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Other,
}

impl<'a> Scalar<'a> {
    fn into_str(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_i64`: integers that fit, never floats.
    fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::Int(i) => Some(i),
            Scalar::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_f64`: any number.
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(i) => Some(i as f64),
            Scalar::UInt(u) => Some(u as f64),
            Scalar::Float(f) => Some(f),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
        // Read every element the way a Value would, so errors inside are the same.
        while seq.next_element::<Scalar<'de>>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
        while map.next_entry::<Key<'de>, Scalar<'de>>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Scalar::deserialize(d)? {
            Scalar::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("key must be a string")),
        }
    }
}

/// The top-level value: the known fields of an object, each already narrowed to what the
/// protocol reads from it (the last occurrence wins, as in a `Value`), or the fact that it
/// was not an object.
#[derive(Default)]
struct Raw<'a> {
    object: bool,
    /// `type`, when it is a string.
    kind: Option<Cow<'a, str>>,
    /// String fields, indexed by [`StrField`]; `None` when absent or not a string.
    strs: [Option<Cow<'a, str>>; 6],
    /// `choice` as `Value::as_i64` reads it.
    choice: Option<i64>,
    /// Telemetry numbers, indexed by [`NumField`], as `Value::as_f64` reads them.
    nums: [Option<f64>; 6],
}

#[derive(Clone, Copy)]
enum StrField {
    AppVersion,
    Hardware,
    Region,
    Language,
    Stream,
    Poll,
}

#[derive(Clone, Copy)]
enum NumField {
    BitrateKbps,
    BufferingMs,
    DroppedFrames,
    RttMs,
    Failures,
    BufferingRatio,
}

impl<'de> Deserialize<'de> for Raw<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw<'de>, A::Error> {
        let mut raw = Raw {
            object: true,
            ..Raw::default()
        };
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<Scalar<'de>>()?;
            let str_field = match &*key {
                "type" => {
                    raw.kind = value.into_str();
                    continue;
                }
                "choice" => {
                    raw.choice = value.as_i64();
                    continue;
                }
                "app_version" => StrField::AppVersion,
                "hardware" => StrField::Hardware,
                "region" => StrField::Region,
                "language" => StrField::Language,
                "stream" => StrField::Stream,
                "poll" => StrField::Poll,
                other => {
                    let num = match other {
                        "bitrate_kbps" => NumField::BitrateKbps,
                        "buffering_ms" => NumField::BufferingMs,
                        "dropped_frames" => NumField::DroppedFrames,
                        "rtt_ms" => NumField::RttMs,
                        "failures" => NumField::Failures,
                        "buffering_ratio" => NumField::BufferingRatio,
                        _ => continue,
                    };
                    raw.nums[num as usize] = value.as_f64();
                    continue;
                }
            };
            raw.strs[str_field as usize] = value.into_str();
        }
        Ok(raw)
    }
    // Anything else is read in full (its syntax errors win) and then refused as not an object.
    fn visit_bool<E>(self, _: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_unit<E>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Raw<'de>, A::Error> {
        ScalarVisitor.visit_seq(seq)?;
        Ok(Raw::default())
    }
}

impl<'a> Raw<'a> {
    fn classify(self) -> Result<ViewerMessage<'a>, ProtocolError> {
        if !self.object {
            return Err(ProtocolError::NotAnObject);
        }
        let Some(tag) = self.kind else {
            return Err(ProtocolError::MissingType);
        };
        let Some(kind) = ViewerKind::from_tag(&tag) else {
            return Err(ProtocolError::UnknownType(
                cut(&tag, MAX_FIELD_LEN).to_owned(),
            ));
        };
        let [app_version, hardware, region, language, stream, poll] = self.strs;
        // A required string: trimmed, non-blank, bounded.
        let required = |s: Option<Cow<'a, str>>| -> Option<Cow<'a, str>> {
            match s? {
                Cow::Borrowed(b) => {
                    let t = b.trim();
                    (!t.is_empty()).then(|| Cow::Borrowed(cut(t, MAX_FIELD_LEN)))
                }
                Cow::Owned(o) => field(&o).map(|f| Cow::Owned(f.into())),
            }
        };
        let [bitrate_kbps, buffering_ms, dropped_frames, rtt_ms, failures, buffering_ratio] =
            self.nums;
        Ok(match kind {
            ViewerKind::Hello => ViewerMessage::Hello(Hello {
                app_version,
                hardware,
                region,
                language,
            }),
            ViewerKind::Ping => ViewerMessage::Ping,
            ViewerKind::Watch => match required(stream) {
                Some(stream) => ViewerMessage::Watch { stream },
                None => return Err(ProtocolError::BadField(WATCH_NEEDS)),
            },
            ViewerKind::Vote => match (required(poll), self.choice) {
                (Some(poll), Some(choice)) => ViewerMessage::Vote { poll, choice },
                _ => return Err(ProtocolError::BadField(VOTE_NEEDS)),
            },
            ViewerKind::Telemetry => ViewerMessage::Telemetry(Telemetry {
                bitrate_kbps,
                buffering_ms,
                dropped_frames,
                rtt_ms,
                failures,
                buffering_ratio,
            }),
        })
    }
}
