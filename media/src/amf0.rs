//! AMF0 (Action Message Format 0) values: the encoding of RTMP commands and metadata.
//!
//! Decoding is bounded: nesting deeper than the caller's limit is an error, and no length a
//! peer claims is trusted for an allocation before the bytes are actually there.

use thiserror::Error;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;
const UNSUPPORTED: u8 = 0x0D;
const XML_DOCUMENT: u8 = 0x0F;
const TYPED_OBJECT: u8 = 0x10;
const AVMPLUS: u8 = 0x11;

/// One AMF0 value. Objects keep their properties in wire order.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// IEEE 754 double.
    Number(f64),
    /// Boolean.
    Boolean(bool),
    /// UTF-8 string (short or long form on the wire).
    String(String),
    /// Anonymous object: ordered key/value pairs.
    Object(Vec<(String, Amf0Value)>),
    /// Null.
    Null,
    /// Undefined.
    Undefined,
    /// Associative array (key/value pairs; the count on the wire is only a hint).
    EcmaArray(Vec<(String, Amf0Value)>),
    /// Dense array.
    StrictArray(Vec<Amf0Value>),
    /// Milliseconds since the Unix epoch (the time-zone field is ignored, as the spec says).
    Date(f64),
}

impl Amf0Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// A property of an object or ECMA array, by name.
    pub fn property(&self, name: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == name).map(|(_, v)| v)
            }
            _ => None,
        }
    }
}

/// Why AMF0 bytes could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Amf0Error {
    /// The bytes end in the middle of a value.
    #[error("AMF0 value truncated")]
    Truncated,
    /// A type marker this decoder does not accept (references, XML, typed objects, AMF3).
    #[error("unsupported AMF0 type marker 0x{0:02x}")]
    UnsupportedMarker(u8),
    /// Objects or arrays nested deeper than the limit.
    #[error("AMF0 nesting deeper than {0}")]
    TooDeep(usize),
    /// A string that is not UTF-8.
    #[error("AMF0 string is not UTF-8")]
    InvalidUtf8,
}

/// Decodes every value in `bytes`, back to back (an RTMP command is a sequence of values).
pub fn decode_all(bytes: &[u8], max_depth: usize) -> Result<Vec<Amf0Value>, Amf0Error> {
    let mut reader = Reader { bytes, pos: 0 };
    let mut values = Vec::new();
    while reader.pos < bytes.len() {
        values.push(reader.value(0, max_depth)?);
    }
    Ok(values)
}

/// Appends the encoding of `value` to `out`.
pub fn encode(value: &Amf0Value, out: &mut Vec<u8>) {
    match value {
        Amf0Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Amf0Value::Boolean(b) => {
            out.push(BOOLEAN);
            out.push(u8::from(*b));
        }
        Amf0Value::String(s) => {
            if s.len() <= usize::from(u16::MAX) {
                out.push(STRING);
                push_short_string(s, out);
            } else {
                out.push(LONG_STRING);
                // Lengths above u32::MAX cannot be produced by this crate's callers; clamp.
                let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&s.as_bytes()[..len as usize]);
            }
        }
        Amf0Value::Object(props) => {
            out.push(OBJECT);
            push_properties(props, out);
        }
        Amf0Value::Null => out.push(NULL),
        Amf0Value::Undefined => out.push(UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.push(ECMA_ARRAY);
            let count = u32::try_from(props.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            push_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.push(STRICT_ARRAY);
            let count = u32::try_from(items.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date(ms) => {
            out.push(DATE);
            out.extend_from_slice(&ms.to_be_bytes());
            out.extend_from_slice(&0i16.to_be_bytes());
        }
    }
}

fn push_short_string(s: &str, out: &mut Vec<u8>) {
    let len = s.len().min(usize::from(u16::MAX));
    // `len` fits u16 by the min above.
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn push_properties(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        push_short_string(key, out);
        encode(value, out);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Amf0Error> {
        let end = self.pos.checked_add(n).ok_or(Amf0Error::Truncated)?;
        let slice = self.bytes.get(self.pos..end).ok_or(Amf0Error::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, Amf0Error> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Amf0Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Amf0Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64, Amf0Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(f64::from_be_bytes(a))
    }

    fn string(&mut self, len: usize) -> Result<String, Amf0Error> {
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Amf0Error::InvalidUtf8)
    }

    fn value(&mut self, depth: usize, max_depth: usize) -> Result<Amf0Value, Amf0Error> {
        let marker = self.u8()?;
        Ok(match marker {
            NUMBER => Amf0Value::Number(self.f64()?),
            BOOLEAN => Amf0Value::Boolean(self.u8()? != 0),
            STRING => {
                let len = usize::from(self.u16()?);
                Amf0Value::String(self.string(len)?)
            }
            LONG_STRING => {
                let len = self.u32()? as usize;
                Amf0Value::String(self.string(len)?)
            }
            NULL => Amf0Value::Null,
            UNDEFINED | UNSUPPORTED => Amf0Value::Undefined,
            OBJECT => Amf0Value::Object(self.properties(depth + 1, max_depth)?),
            ECMA_ARRAY => {
                let _count_hint = self.u32()?;
                Amf0Value::EcmaArray(self.properties(depth + 1, max_depth)?)
            }
            STRICT_ARRAY => {
                if depth + 1 > max_depth {
                    return Err(Amf0Error::TooDeep(max_depth));
                }
                let count = self.u32()? as usize;
                // Every value takes at least one byte: never reserve more than remain.
                let mut items = Vec::with_capacity(count.min(self.bytes.len() - self.pos));
                for _ in 0..count {
                    items.push(self.value(depth + 1, max_depth)?);
                }
                Amf0Value::StrictArray(items)
            }
            DATE => {
                let ms = self.f64()?;
                let _tz = self.u16()?;
                Amf0Value::Date(ms)
            }
            REFERENCE | XML_DOCUMENT | TYPED_OBJECT | AVMPLUS | OBJECT_END => {
                return Err(Amf0Error::UnsupportedMarker(marker))
            }
            other => return Err(Amf0Error::UnsupportedMarker(other)),
        })
    }

    fn properties(
        &mut self,
        depth: usize,
        max_depth: usize,
    ) -> Result<Vec<(String, Amf0Value)>, Amf0Error> {
        if depth > max_depth {
            return Err(Amf0Error::TooDeep(max_depth));
        }
        let mut props = Vec::new();
        loop {
            let len = usize::from(self.u16()?);
            if len == 0 {
                // An empty key followed by the end marker closes the object. Some encoders
                // omit the marker at the very end of the message; accept that too.
                match self.bytes.get(self.pos) {
                    Some(&OBJECT_END) => {
                        self.pos += 1;
                        return Ok(props);
                    }
                    None => return Ok(props),
                    Some(_) => {}
                }
            }
            let key = self.string(len)?;
            let value = self.value(depth, max_depth)?;
            props.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(value: Amf0Value) {
        let mut out = Vec::new();
        encode(&value, &mut out);
        assert_eq!(decode_all(&out, 16).unwrap(), vec![value]);
    }

    #[test]
    fn every_type_roundtrips() {
        roundtrip(Amf0Value::Number(1.5));
        roundtrip(Amf0Value::Boolean(true));
        roundtrip(Amf0Value::String("connect".into()));
        roundtrip(Amf0Value::String("x".repeat(70_000)));
        roundtrip(Amf0Value::Null);
        roundtrip(Amf0Value::Undefined);
        roundtrip(Amf0Value::Date(1_700_000_000_000.0));
        roundtrip(Amf0Value::Object(vec![
            ("app".into(), Amf0Value::String("live".into())),
            (
                "nested".into(),
                Amf0Value::Object(vec![("n".into(), Amf0Value::Number(2.0))]),
            ),
        ]));
        roundtrip(Amf0Value::EcmaArray(vec![(
            "duration".into(),
            Amf0Value::Number(0.0),
        )]));
        roundtrip(Amf0Value::StrictArray(vec![
            Amf0Value::Null,
            Amf0Value::Number(3.0),
        ]));
    }

    #[test]
    fn decodes_a_connect_command_as_ffmpeg_sends_it() {
        let mut out = Vec::new();
        encode(&Amf0Value::String("connect".into()), &mut out);
        encode(&Amf0Value::Number(1.0), &mut out);
        encode(
            &Amf0Value::Object(vec![
                ("app".into(), Amf0Value::String("live".into())),
                ("type".into(), Amf0Value::String("nonprivate".into())),
            ]),
            &mut out,
        );
        let values = decode_all(&out, 8).unwrap();
        assert_eq!(values[0].as_str(), Some("connect"));
        assert_eq!(values[1].as_number(), Some(1.0));
        assert_eq!(
            values[2].property("app").and_then(Amf0Value::as_str),
            Some("live")
        );
    }

    #[test]
    fn truncation_at_every_position_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(
            &Amf0Value::Object(vec![
                ("a".into(), Amf0Value::String("bc".into())),
                (
                    "d".into(),
                    Amf0Value::StrictArray(vec![Amf0Value::Number(1.0)]),
                ),
                ("e".into(), Amf0Value::Date(5.0)),
            ]),
            &mut out,
        );
        // Cutting just before the end marker is accepted (lenient), anything earlier is not.
        for cut in 1..out.len() - 3 {
            assert!(decode_all(&out[..cut], 8).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut value = Amf0Value::Null;
        for _ in 0..40 {
            value = Amf0Value::Object(vec![("k".into(), value)]);
        }
        let mut out = Vec::new();
        encode(&value, &mut out);
        assert_eq!(decode_all(&out, 16), Err(Amf0Error::TooDeep(16)));
        assert!(decode_all(&out, 64).is_ok());

        // A hostile stream of array openers fails fast on depth, whatever counts it claims.
        let mut arrays = Vec::new();
        for _ in 0..10_000 {
            arrays.extend_from_slice(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert_eq!(decode_all(&arrays, 16), Err(Amf0Error::TooDeep(16)));
    }

    #[test]
    fn claimed_lengths_beyond_the_input_are_truncation() {
        assert_eq!(
            decode_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF], 8),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode_all(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a'], 8),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            decode_all(&[REFERENCE, 0, 1], 8),
            Err(Amf0Error::UnsupportedMarker(REFERENCE))
        );
        assert_eq!(
            decode_all(&[STRING, 0, 2, 0xC3, 0x28], 8),
            Err(Amf0Error::InvalidUtf8)
        );
    }
}
