//! Live polls at the application core (FIG. 6): validation of the broadcaster's request, the
//! poll's life (open, closing, closed), and the merge of the shards' tallies into the counts
//! that are pushed as live results.

use serde_json::{json, Value};
use shards::polls::merge_counts;
use shards::profile::{Field, Predicate};
use shards::proto::{GroupId, PollSeq};

use crate::api::validate;

pub const MAX_QUESTION: usize = 200;
pub const MAX_CHOICE: usize = 100;
pub const MIN_CHOICES: usize = 2;
pub const MAX_CHOICES: usize = 10;
pub const MIN_DURATION_S: u64 = 5;
pub const MAX_DURATION_S: u64 = 3600;

/// A validated `POST /api/polls` body.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest {
    pub stream: String,
    pub question: String,
    pub choices: Vec<String>,
    pub duration_s: u64,
    /// Narrows the audience beyond the stream's viewers.
    pub filter: Option<Predicate>,
}

/// Checks a poll body; the error names the problem.
pub fn parse_request(body: &[u8]) -> Result<PollRequest, String> {
    let obj = validate::object(body)?;
    validate::only_fields(
        &obj,
        &["stream", "question", "choices", "duration_s", "match"],
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
    Ok(PollRequest {
        stream,
        question,
        choices,
        duration_s,
        filter,
    })
}

/// The audience of a poll: the stream's viewers, narrowed by the filter.
pub fn audience(req: &PollRequest) -> Predicate {
    let mut p = Predicate::stream(&req.stream);
    if let Some(f) = &req.filter {
        p.clauses.extend(f.clauses.iter().cloned());
    }
    p
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollState {
    Open,
    /// Shards were told to stop; waiting for every final tally.
    Closing,
    Closed,
}

impl PollState {
    pub fn as_str(self) -> &'static str {
        match self {
            PollState::Open => "open",
            PollState::Closing => "closing",
            PollState::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Poll {
    pub id: String,
    pub seq: PollSeq,
    pub stream: String,
    pub question: String,
    pub choices: Vec<String>,
    pub filter: Option<Predicate>,
    pub audience: GroupId,
    pub created_ms: u64,
    pub closes_at_ms: u64,
    pub state: PollState,
    /// The latest tally of each shard.
    pub tallies: Vec<Vec<i64>>,
    /// Which shards sent their final tally.
    pub finals: Vec<bool>,
    /// Counts at the last results cast to the audience, to coalesce pushes.
    pub pushed: Option<Vec<u64>>,
    /// Counts at the last results push to broadcasters.
    pub broadcast: Option<Vec<u64>>,
    /// Results pushes so far (live and final).
    pub pushes: u64,
    /// When closing started, to log how long the final count took.
    pub closing_since: Option<std::time::Instant>,
}

impl Poll {
    pub fn new(
        id: String,
        seq: PollSeq,
        req: PollRequest,
        audience: GroupId,
        shards: usize,
        now_ms: u64,
    ) -> Poll {
        let n = req.choices.len();
        Poll {
            id,
            seq,
            stream: req.stream,
            question: req.question,
            choices: req.choices,
            filter: req.filter,
            audience,
            created_ms: now_ms,
            closes_at_ms: now_ms + req.duration_s * 1000,
            state: PollState::Open,
            tallies: vec![vec![0; n]; shards],
            finals: vec![false; shards],
            pushed: None,
            broadcast: None,
            pushes: 0,
            closing_since: None,
        }
    }

    /// The merged counts. Each shard's tally is signed (a vote moved between shards leaves
    /// -1 on one and +1 on another); the sum is exact and never negative.
    pub fn counts(&self) -> Vec<u64> {
        let mut sum = vec![0i64; self.choices.len()];
        for t in &self.tallies {
            merge_counts(&mut sum, t);
        }
        sum.into_iter().map(|c| c.max(0) as u64).collect()
    }

    /// Takes a shard's tally; true when this completes the final count.
    pub fn take_tally(&mut self, shard: usize, tally: Vec<i64>, closed: bool) -> bool {
        if self.state == PollState::Closed || shard >= self.tallies.len() {
            return false;
        }
        if tally.len() == self.choices.len() {
            self.tallies[shard] = tally;
        }
        if closed {
            self.finals[shard] = true;
        }
        self.state == PollState::Closing && self.finals.iter().all(|f| *f)
    }

    pub fn poll_message(&self) -> Value {
        json!({
            "type": "poll",
            "poll": self.id,
            "stream": self.stream,
            "question": self.question,
            "choices": self.choices,
            "closes_at": self.closes_at_ms,
        })
    }

    pub fn results_message(&self, counts: &[u64], last: bool) -> Value {
        json!({
            "type": "results",
            "poll": self.id,
            "counts": counts,
            "total": counts.iter().sum::<u64>(),
            "final": last,
        })
    }

    /// The API and storage form.
    pub fn to_json(&self) -> Value {
        let counts = self.counts();
        json!({
            "id": self.id,
            "stream": self.stream,
            "question": self.question,
            "choices": self.choices,
            "match": self.filter.as_ref().map(validate::predicate_json),
            "state": self.state.as_str(),
            "counts": counts,
            "total": counts.iter().sum::<u64>(),
            "created_ms": self.created_ms,
            "closes_at": self.closes_at_ms,
        })
    }
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
        let a = audience(&r);
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

    #[test]
    fn tallies_merge_and_finish_on_the_last_final() {
        let req =
            parse_request(br#"{"stream":"s","question":"q","choices":["a","b"],"duration_s":60}"#)
                .unwrap();
        let mut p = Poll::new("p".into(), 1, req, GroupId(3), 2, 1000);
        assert!(!p.take_tally(0, vec![2, 1], false));
        assert!(!p.take_tally(1, vec![-1, 1], false));
        assert_eq!(p.counts(), vec![1, 2]);
        p.state = PollState::Closing;
        assert!(!p.take_tally(0, vec![2, 1], true));
        assert!(p.take_tally(1, vec![-1, 2], true));
        assert_eq!(p.counts(), vec![1, 3]);
        assert_eq!(p.results_message(&p.counts(), true)["total"], 4);
    }
}
