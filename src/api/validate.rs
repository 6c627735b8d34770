//! Validation of operator API bodies. Pure functions: each error names the field and the
//! problem, and becomes a 400.

use serde_json::{Map, Value};
use shards::profile::{Browser, Device, Field, Os, Predicate};

/// Longest group name, stream id, or predicate value.
pub const MAX_NAME: usize = 64;
/// Most values one predicate field may list.
pub const MAX_VALUES: usize = 64;

pub type Invalid = String;

/// Deepest nesting of arrays and objects accepted in a body.
pub const MAX_DEPTH: usize = 32;

/// The body as a JSON object. Stricter than `serde_json::from_slice`: a key repeated in any
/// object, at any depth, is refused naming the key (serde_json would keep the last value, so
/// `{"name":"a","name":"b"}` would pass as "b"), and nesting deeper than [`MAX_DEPTH`] is
/// refused.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    match strict_json(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

/// Parses one JSON value with [`Strict`], and nothing after it but whitespace.
pub fn strict_json(body: &[u8]) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`] like serde_json's own visitor, refusing duplicate keys and deep nesting.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
}

impl Strict {
    fn nested<E: serde::de::Error>(self) -> Result<Strict, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON numbers are finite, so this is never Null.
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key \"{key}\""
                )));
            }
            let value = map.next_value_seed(inner)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Rejects fields the endpoint does not know, so typos do not pass silently.
pub fn only_fields(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), Invalid> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown field \"{k}\" (allowed: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// A required string field of 1..=`max` characters.
pub fn string(obj: &Map<String, Value>, name: &str, max: usize) -> Result<String, Invalid> {
    match obj.get(name) {
        None => Err(format!("\"{name}\" is required")),
        Some(Value::String(s)) => {
            let n = s.trim().chars().count();
            if n == 0 || n > max {
                Err(format!("\"{name}\" must be 1 to {max} characters"))
            } else {
                Ok(s.trim().to_owned())
            }
        }
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

/// An identifier usable in URLs: letters, digits, `-`, `_`, `.`; 1..=64 bytes.
pub fn identifier(obj: &Map<String, Value>, name: &str) -> Result<String, Invalid> {
    let s = string(obj, name, MAX_NAME)?;
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(s)
    } else {
        Err(format!(
            "\"{name}\" may only contain letters, digits, '-', '_' and '.'"
        ))
    }
}

fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|&v| label(v)).collect()
}

/// Values a field accepts, where the set is closed.
fn closed_set(field: Field) -> Option<Vec<&'static str>> {
    use Browser as B;
    use Device as D;
    match field {
        Field::Os => Some(labels(
            &[
                Os::Windows,
                Os::Macos,
                Os::Linux,
                Os::Ios,
                Os::Android,
                Os::Chromeos,
                Os::Tvos,
                Os::Tizen,
                Os::Webos,
                Os::Other,
            ],
            Os::as_str,
        )),
        Field::Browser => Some(labels(
            &[
                B::Chrome,
                B::Firefox,
                B::Safari,
                B::Edge,
                B::Opera,
                B::Samsung,
                B::App,
                B::Other,
            ],
            B::as_str,
        )),
        Field::Device => Some(labels(
            &[D::Desktop, D::Mobile, D::Tablet, D::Tv, D::Other],
            D::as_str,
        )),
        _ => None,
    }
}

/// A predicate from `{"os":["ios"],"region":["HU","DE"]}`; a single string stands for a list
/// of one. Fields with a closed set of values (os, browser, device) reject unknown values.
pub fn predicate(value: &Value) -> Result<Predicate, Invalid> {
    let Value::Object(map) = value else {
        return Err("\"match\" must be an object of field -> [values]".into());
    };
    let mut clauses = Vec::new();
    for (key, v) in map {
        let Some(field) = Field::parse(key) else {
            let known: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
            return Err(format!(
                "unknown match field \"{key}\" (known: {})",
                known.join(", ")
            ));
        };
        let raw: Vec<&Value> = match v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        if raw.is_empty() || raw.len() > MAX_VALUES {
            return Err(format!(
                "match field \"{key}\" needs 1 to {MAX_VALUES} values"
            ));
        }
        let mut values = Vec::with_capacity(raw.len());
        for item in raw {
            let Value::String(s) = item else {
                return Err(format!("match field \"{key}\" values must be strings"));
            };
            let n = s.trim().chars().count();
            if n == 0 || n > MAX_NAME {
                return Err(format!(
                    "match field \"{key}\" values must be 1 to {MAX_NAME} characters"
                ));
            }
            let norm = field.normalise(s);
            if let Some(allowed) = closed_set(field) {
                if !allowed.contains(&&*norm) {
                    return Err(format!(
                        "match field \"{key}\": unknown value \"{s}\" (known: {})",
                        allowed.join(", ")
                    ));
                }
            }
            if !values.contains(&norm) {
                values.push(norm);
            }
        }
        clauses.push((field, values));
    }
    clauses.sort_by_key(|(f, _)| *f as u8);
    Ok(Predicate { clauses })
}

pub use crate::app::groups::predicate_json;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn predicates_parse_and_normalise() {
        let p =
            predicate(&json!({"os": ["iOS", "android"], "region": "hu", "tags": ["vip"]})).unwrap();
        assert_eq!(
            predicate_json(&p),
            json!({"os": ["ios", "android"], "region": ["HU"], "tag": ["vip"]})
        );
        assert!(predicate(&json!({})).unwrap().clauses.is_empty());
    }

    #[test]
    fn predicate_errors_name_the_problem() {
        let err = |v: Value| predicate(&v).unwrap_err();
        assert!(err(json!([1])).contains("object"));
        assert!(err(json!({"colour": ["red"]})).contains("colour"));
        assert!(err(json!({"os": []})).contains("1 to"));
        assert!(err(json!({"os": [3]})).contains("strings"));
        assert!(err(json!({"os": ["beos"]})).contains("beos"));
        assert!(err(json!({"region": [""]})).contains("characters"));
    }

    #[test]
    fn fields() {
        let obj = object(br#"{"id":"main-stage","x":1}"#).unwrap();
        assert_eq!(identifier(&obj, "id").unwrap(), "main-stage");
        assert!(only_fields(&obj, &["id"]).unwrap_err().contains("\"x\""));
        assert!(string(&obj, "name", 10).unwrap_err().contains("required"));
        let obj = object(br#"{"id":"a b"}"#).unwrap();
        assert!(identifier(&obj, "id").is_err());
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").unwrap_err().contains("valid JSON"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_depth() {
        let err = object(br#"{"name":"a","name":"b"}"#).unwrap_err();
        assert!(err.contains("duplicate key \"name\""), "{err}");
        let err = object(br#"{"match":{"os":["ios"],"os":["android"]}}"#).unwrap_err();
        assert!(err.contains("duplicate key \"os\""), "{err}");
        let err = object(br#"{"a":[{"k":1},{"k":2,"k":3}]}"#).unwrap_err();
        assert!(err.contains("duplicate key \"k\""), "{err}");
        // The same key in sibling objects is fine, and values come out as serde_json's.
        let v = object(br#"{"a":{"k":1},"b":{"k":-2.5},"c":[null,true,"s",18446744073709551615]}"#)
            .unwrap();
        assert_eq!(
            Value::Object(v),
            json!({"a":{"k":1},"b":{"k":-2.5},"c":[null,true,"s",18446744073709551615u64]})
        );
        assert!(object(br#"{"a":1} x"#).unwrap_err().contains("valid JSON"));
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(object(ok.as_bytes()).is_ok());
        let deep = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(object(deep.as_bytes())
            .unwrap_err()
            .contains("nested deeper"));
        // Far deeper than serde_json's own recursion limit: an error, not a stack overflow.
        let deeper = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(object(deeper.as_bytes()).is_err());
    }
}
