//! Distribution rules (pure): who may watch a stream at all. A stream may be restricted by
//! country, region, device class, a time window and an entitlement tag; a `watch` from a
//! viewer outside them gets `not_entitled` and no session. Matching reuses the group
//! predicates (`shards::profile::Predicate`) over the viewer profile's public fields.

use serde_json::{json, Map, Value};
use shards::profile::{Field, Predicate, Profile};

/// Most values per list.
const MAX_VALUES: usize = 256;

/// A stream's rules; every part that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Distribution {
    pub countries: Vec<Box<str>>,
    pub regions: Vec<Box<str>>,
    pub devices: Vec<Box<str>>,
    /// The viewer must carry this tag (set by `PUT /api/viewers/{id}/tags`).
    pub entitlement: Option<Box<str>>,
    pub not_before_ms: Option<u64>,
    pub not_after_ms: Option<u64>,
}

impl Distribution {
    /// Whether any rule is set.
    pub fn is_open(&self) -> bool {
        *self == Distribution::default()
    }

    /// `Ok` when the viewer may watch at `now_ms`; otherwise the rule it fails, in words.
    pub fn check(&self, profile: &Profile, now_ms: u64) -> Result<(), String> {
        if self.not_before_ms.is_some_and(|t| now_ms < t) {
            return Err("the stream is not available yet".into());
        }
        if self.not_after_ms.is_some_and(|t| now_ms >= t) {
            return Err("the stream is no longer available".into());
        }
        let entitlement: Vec<Box<str>> = self.entitlement.iter().cloned().collect();
        for (field, accepted, what) in [
            (Field::Country, &self.countries, "in your country"),
            (Field::Region, &self.regions, "in your region"),
            (Field::Device, &self.devices, "on this device"),
            (Field::Tag, &entitlement, "without an entitlement"),
        ] {
            if accepted.is_empty() {
                continue;
            }
            let clause = Predicate {
                clauses: vec![(field, accepted.clone())],
            };
            if !clause.matches(profile) {
                return Err(format!("the stream is not available {what}"));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Value {
        json!({
            "countries": self.countries,
            "regions": self.regions,
            "devices": self.devices,
            "entitlement": self.entitlement,
            "not_before_ms": self.not_before_ms,
            "not_after_ms": self.not_after_ms,
        })
    }

    /// Parses the API body (also the stored form); unknown fields are refused.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Distribution, String> {
        const FIELDS: [&str; 6] = [
            "countries",
            "regions",
            "devices",
            "entitlement",
            "not_before_ms",
            "not_after_ms",
        ];
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field \"{k}\" (known: {})",
                FIELDS.join(", ")
            ));
        }
        let list = |name: &str, field: Field| -> Result<Vec<Box<str>>, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) if items.len() <= MAX_VALUES => items
                    .iter()
                    .map(|v| match v.as_str().map(str::trim) {
                        Some(s) if !s.is_empty() && s.len() <= 64 => Ok(field.normalise(s)),
                        _ => Err(format!("\"{name}\" values must be strings of 1-64 bytes")),
                    })
                    .collect(),
                _ => Err(format!(
                    "\"{name}\" must be an array of at most {MAX_VALUES} strings"
                )),
            }
        };
        let time = |name: &str| -> Result<Option<u64>, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("\"{name}\" must be Unix milliseconds")),
            }
        };
        let entitlement = match obj.get("entitlement") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 64 => {
                Some(s.trim().into())
            }
            _ => return Err("\"entitlement\" must be a tag of 1-64 bytes or null".into()),
        };
        let d = Distribution {
            countries: list("countries", Field::Country)?,
            regions: list("regions", Field::Region)?,
            devices: list("devices", Field::Device)?,
            entitlement,
            not_before_ms: time("not_before_ms")?,
            not_after_ms: time("not_after_ms")?,
        };
        if let (Some(a), Some(b)) = (d.not_before_ms, d.not_after_ms) {
            if a >= b {
                return Err("\"not_before_ms\" must be before \"not_after_ms\"".into());
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::profile::ViewerId;

    const UA_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Version/17.4 Mobile/15E148 Safari/604.1";

    fn rules(v: Value) -> Result<Distribution, String> {
        Distribution::from_json(v.as_object().unwrap())
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let mut p = Profile::from_handshake(
            ViewerId(1),
            "127.0.0.1:9".parse().unwrap(),
            Some(UA_IOS),
            None,
            &[("region".into(), "eu".into())],
            0,
        );
        let open = rules(json!({})).unwrap();
        assert!(open.is_open() && open.check(&p, 0).is_ok());
        let d = rules(json!({"regions": ["eu"], "devices": ["Mobile"], "not_before_ms": 10, "not_after_ms": 20})).unwrap();
        assert_eq!(
            d.check(&p, 5),
            Err("the stream is not available yet".into())
        );
        assert_eq!(
            d.check(&p, 20),
            Err("the stream is no longer available".into())
        );
        assert_eq!(d.check(&p, 15), Ok(()));
        let d = rules(json!({"countries": ["hu"]})).unwrap();
        assert_eq!(
            d.check(&p, 0),
            Err("the stream is not available in your country".into())
        );
        let d = rules(json!({"devices": ["tv"]})).unwrap();
        assert!(d.check(&p, 0).unwrap_err().contains("device"));
        let d = rules(json!({"entitlement": "premium"})).unwrap();
        assert!(d.check(&p, 0).unwrap_err().contains("entitlement"));
        p.rare.set_tags(vec!["premium".into()]);
        assert_eq!(d.check(&p, 0), Ok(()));
        assert_eq!(
            rules(d.to_json()).unwrap(),
            d,
            "the stored form parses back"
        );
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        for (body, needle) in [
            (json!({"country": ["HU"]}), "unknown field"),
            (json!({"countries": "HU"}), "array"),
            (json!({"countries": [""]}), "1-64"),
            (json!({"not_before_ms": -1}), "Unix"),
            (json!({"not_before_ms": 5, "not_after_ms": 5}), "before"),
            (json!({"entitlement": 3}), "entitlement"),
        ] {
            let e = rules(body.clone()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }
}
