//! Validation of operator API bodies. Pure functions: each error names the field and the
//! problem, and becomes a 400.

use serde_json::{Map, Value};
use shards::profile::{Browser, Device, Field, Os, Predicate};

/// Longest group name, stream id, or predicate value.
pub const MAX_NAME: usize = 64;
/// Most values one predicate field may list.
pub const MAX_VALUES: usize = 64;

pub type Invalid = String;

/// The body as a JSON object.
pub fn object(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
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

/// The JSON form of a predicate, as the API shows it.
pub fn predicate_json(p: &Predicate) -> Value {
    let mut map = Map::new();
    for (field, values) in &p.clauses {
        map.insert(
            field.as_str().to_owned(),
            Value::Array(
                values
                    .iter()
                    .map(|v| Value::String(v.to_string()))
                    .collect(),
            ),
        );
    }
    Value::Object(map)
}

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
}
