//! Validation of a `POST /api/polls` body into the app core's [`PollRequest`].

use serde_json::Value;
use shards::profile::Field;

use super::validate;
use crate::app::polls::PollRequest;

pub const MAX_QUESTION: usize = 200;
pub const MAX_CHOICE: usize = 100;
pub const MIN_CHOICES: usize = 2;
pub const MAX_CHOICES: usize = 10;
pub const MIN_DURATION_S: u64 = 5;
pub const MAX_DURATION_S: u64 = 3600;
/// Fields results can be broken down by (single-valued profile fields).
pub const BREAKDOWN_FIELDS: &[&str] = &[
    "os",
    "browser",
    "device",
    "region",
    "country",
    "language",
    "stream",
    "app_version",
    "hardware",
];

/// Checks a poll body; the error names the problem.
pub fn parse_request(body: &[u8]) -> Result<PollRequest, String> {
    let obj = validate::object(body)?;
    validate::only_fields(
        &obj,
        &[
            "stream",
            "question",
            "choices",
            "duration_s",
            "match",
            "breakdown",
        ],
    )?;
    let stream = validate::string(&obj, "stream", validate::MAX_NAME)?;
    let question = validate::string(&obj, "question", MAX_QUESTION)?;
    let Some(Value::Array(items)) = obj.get("choices") else {
        return Err("\"choices\" must be an array of strings".into());
    };
    if items.len() < MIN_CHOICES || items.len() > MAX_CHOICES {
        return Err(format!(
            "\"choices\" needs {MIN_CHOICES} to {MAX_CHOICES} entries, got {}",
            items.len()
        ));
    }
    let mut choices: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(text) = item.as_str().map(str::trim) else {
            return Err(format!("choice {i} must be a string"));
        };
        let n = text.chars().count();
        if n == 0 || n > MAX_CHOICE {
            return Err(format!("choice {i} must be 1 to {MAX_CHOICE} characters"));
        }
        if choices.iter().any(|c| c == text) {
            return Err(format!("choice {i} (\"{text}\") is a duplicate"));
        }
        choices.push(text.to_owned());
    }
    let duration_s = match obj.get("duration_s").map(Value::as_u64) {
        None => return Err("\"duration_s\" is required".into()),
        Some(Some(d)) if (MIN_DURATION_S..=MAX_DURATION_S).contains(&d) => d,
        Some(_) => {
            return Err(format!(
                "\"duration_s\" must be a whole number of seconds from {MIN_DURATION_S} to {MAX_DURATION_S}"
            ))
        }
    };
    let filter = match obj.get("match") {
        None | Some(Value::Null) => None,
        Some(m) => {
            let p = validate::predicate(m)?;
            if p.clauses.iter().any(|(f, _)| *f == Field::Stream) {
                return Err(
                    "\"match\" may not name \"stream\": the poll's stream decides it".into(),
                );
            }
            Some(p)
        }
    };
    let breakdown = match obj.get("breakdown") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match Field::parse(name) {
            Some(Field::Tag) | None => {
                return Err(format!(
                    "\"breakdown\" must name one profile field ({}), not {name:?}",
                    BREAKDOWN_FIELDS.join(", ")
                ))
            }
            Some(f) => Some(f),
        },
        Some(_) => return Err("\"breakdown\" must be a profile field name".into()),
    };
    Ok(PollRequest {
        stream,
        question,
        choices,
        duration_s,
        filter,
        breakdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_request(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn valid_request() {
        let r = parse_request(
            br#"{"stream":"s","question":"Who wins?","choices":["a","b"],"duration_s":60,"match":{"os":["ios"]}}"#,
        )
        .unwrap();
        assert_eq!(r.choices, vec!["a", "b"]);
        let a = crate::app::polls::audience(&r);
        assert_eq!(a.clauses.len(), 2);
    }

    #[test]
    fn every_validation_error_names_the_problem() {
        let q = |s: &str| {
            format!(r#"{{"stream":"s","question":{s},"choices":["a","b"],"duration_s":60}}"#)
        };
        assert!(err(&q("\"\"")).contains("question"));
        assert!(err(&q(&format!("\"{}\"", "x".repeat(201)))).contains("question"));
        let c =
            |s: &str| format!(r#"{{"stream":"s","question":"q","choices":{s},"duration_s":60}}"#);
        assert!(err(&c("[\"a\"]")).contains("2 to 10"));
        assert!(err(&c(&serde_json::to_string(&vec!["x"; 11]).unwrap())).contains("2 to 10"));
        assert!(err(&c("[\"a\",\"a\"]")).contains("duplicate"));
        assert!(err(&c("[\"a\",\"\"]")).contains("choice 1"));
        assert!(err(&c(&format!("[\"a\",\"{}\"]", "y".repeat(101)))).contains("choice 1"));
        assert!(err(&c("[\"a\",2]")).contains("choice 1"));
        assert!(err(&c("\"a\"")).contains("choices"));
        let d = |s: &str| {
            format!(r#"{{"stream":"s","question":"q","choices":["a","b"],"duration_s":{s}}}"#)
        };
        assert!(err(&d("4")).contains("duration_s"));
        assert!(err(&d("3601")).contains("duration_s"));
        assert!(err(&d("5.5")).contains("duration_s"));
        assert!(err(r#"{"question":"q","choices":["a","b"],"duration_s":60}"#).contains("stream"));
        assert!(err(r#"{"stream":"s","question":"q","choices":["a","b"]}"#).contains("duration_s"));
        assert!(err(r#"{"stream":"s","question":"q","choices":["a","b"],"duration_s":9,"match":{"stream":["x"]}}"#).contains("stream"));
        assert!(err(
            r#"{"stream":"s","question":"q","choices":["a","b"],"duration_s":9,"colour":1}"#
        )
        .contains("colour"));
    }
}
