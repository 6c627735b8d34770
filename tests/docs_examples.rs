//! The examples in docs/api.md and README.md run as written, against a real server.
//!
//! docs/api.md: every `$ command` line in a fenced block runs in `bash` (in document order,
//! with `API` and `TOKEN` set), and its output must equal the documented output once the
//! values that differ on every run are set aside: Unix-millisecond timestamps, peer ports,
//! viewer ids and poll ids. Ids are mapped: the first time a documented id meets the real one
//! in the same place, later commands use the real id where the document wrote its own.
//! HTML comments `<!-- docs-test {...} -->` set the scene between examples; they do not
//! render. Each is one of:
//! - `{"viewer": ID, ...}`: the viewer the document calls `ID` (connected on first use, with
//!   `query`, `user_agent`, `accept_language`; the mirror waited for) first reads `receive`
//!   (a list of messages: each waited for by its `type`, then every key given must match),
//!   then sends `send` (a list of messages; a `watch` waits for its `endpoint`, a `vote` for
//!   its `voted`), then waits until `GET /api/viewers/ID` shows every key of `expect`;
//! - `{"get": PATH, "expect": {...}}`: waits until `GET PATH` answers 200 with every key of
//!   `expect` (e.g. merged poll counts, which follow the votes by up to a results interval);
//! - `{"restart": true}`: drops the viewers, stops the server with SIGTERM and starts it
//!   again on the same data directory.
//!
//! Every wait is bounded. Ids in a directive are the document's; they are mapped to the real
//! ones like the ids in commands.
//!
//! `OVATION_BLESS_DOCS=1 cargo test --test docs_examples` rewrites the documented outputs
//! with what the server answered (ids mapped back), to refresh the document after a change.
//!
//! README.md: the "try it" block runs verbatim against a server started with the embedded
//! defaults in a scratch directory.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");

/// One step of the document, in order.
enum Step {
    /// A `<!-- docs-test {...} -->` directive.
    Directive { line: usize, json: Value },
    /// A `$ command` with its documented output; `lines` are the output's line numbers.
    Example {
        line: usize,
        command: String,
        expected: Vec<String>,
        lines: std::ops::Range<usize>,
    },
}

fn parse_doc(text: &str) -> Vec<Step> {
    let lines: Vec<&str> = text.lines().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let mut in_block = false;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("```") {
            in_block = !in_block;
            i += 1;
            continue;
        }
        if !in_block {
            if let Some(rest) = l.trim().strip_prefix("<!-- docs-test ") {
                let body = rest.trim_end_matches("-->").trim();
                let json = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("docs/api.md:{}: bad directive: {e}", i + 1));
                steps.push(Step::Directive { line: i + 1, json });
            }
            i += 1;
            continue;
        }
        if let Some(command) = l.strip_prefix("$ ") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len()
                && !lines[end].starts_with("$ ")
                && !lines[end].starts_with("```")
            {
                end += 1;
            }
            let mut out_end = end;
            while out_end > start && lines[out_end - 1].trim().is_empty() {
                out_end -= 1;
            }
            steps.push(Step::Example {
                line: i + 1,
                command: command.to_owned(),
                expected: lines[start..out_end]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                lines: start..out_end,
            });
            i = end;
            continue;
        }
        i += 1;
    }
    steps
}

/// A value that differs between runs.
#[derive(Debug, Clone, PartialEq)]
enum Volatile {
    /// A 16-hex-digit viewer id or `p` + 16 hex digits poll id: mapped, not ignored.
    Id(String),
    /// A Unix-millisecond timestamp or a peer port: ignored.
    Noise,
}

/// Splits `s` into fixed text and volatile tokens.
fn tokens(s: &str) -> (Vec<String>, Vec<(Volatile, String)>) {
    let b = s.as_bytes();
    let (mut fixed, mut vol) = (vec![String::new()], Vec::new());
    let mut i = 0;
    let boundary = |j: usize| j >= b.len() || !b[j].is_ascii_alphanumeric();
    while i < b.len() {
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let hex_run = |from: usize| {
            b[from..]
                .iter()
                .take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
                .count()
        };
        let take = if before_ok && b[i] == b'p' && hex_run(i + 1) == 16 && boundary(i + 17) {
            Some((Volatile::Id(s[i..i + 17].to_owned()), 17))
        } else if before_ok && hex_run(i) == 16 && boundary(i + 16) {
            Some((Volatile::Id(s[i..i + 16].to_owned()), 16))
        } else if before_ok
            && b[i..].iter().take_while(|c| c.is_ascii_digit()).count() == 13
            && (i + 13 >= b.len() || !b[i + 13].is_ascii_digit())
        {
            Some((Volatile::Noise, 13))
        } else if s[i..].starts_with("127.0.0.1:") && before_ok {
            let n = b[i + 10..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            (n > 0).then_some((Volatile::Noise, 10 + n))
        } else {
            None
        };
        match take {
            Some((v, n)) => {
                vol.push((v, s[i..i + n].to_owned()));
                fixed.push(String::new());
                i += n;
            }
            None => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                fixed.last_mut().unwrap().push(ch);
                i += ch.len_utf8();
            }
        }
    }
    (fixed, vol)
}

/// Compares a documented output with the real one; on a match, learns id pairs. Lists of
/// objects with an `"id"` may come in another order (`GET /api/polls` sorts by id, and poll
/// ids are random): when the texts differ, both are compared again with such lists sorted by
/// the document's ids.
fn matches(expected: &str, actual: &str, ids: &mut HashMap<String, String>) -> bool {
    if matches_as_written(expected, actual, ids) {
        return true;
    }
    let (Ok(e), Ok(a)) = (
        serde_json::from_str::<Value>(expected),
        serde_json::from_str::<Value>(actual),
    ) else {
        return false;
    };
    let back: HashMap<String, String> = ids.iter().map(|(d, r)| (r.clone(), d.clone())).collect();
    let e = sorted_by_id(&e, &HashMap::new()).to_string();
    let a = sorted_by_id(&a, &back).to_string();
    matches_as_written(&e, &a, ids)
}

/// `v` with every array whose elements are all objects with a string `"id"` sorted by that
/// id, read through `map` (real id -> documented id) where it has one.
fn sorted_by_id(v: &Value, map: &HashMap<String, String>) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|i| sorted_by_id(i, map)).collect();
            let key = |i: &Value| {
                i["id"]
                    .as_str()
                    .map(|id| map.get(id).cloned().unwrap_or_else(|| id.to_owned()))
            };
            if items.iter().all(|i| key(i).is_some()) {
                items.sort_by_key(|i| key(i));
            }
            Value::Array(items)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), sorted_by_id(x, map)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn matches_as_written(expected: &str, actual: &str, ids: &mut HashMap<String, String>) -> bool {
    let (ef, ev) = tokens(expected);
    let (af, av) = tokens(actual);
    if ef != af || ev.len() != av.len() {
        return false;
    }
    let mut learned = Vec::new();
    for ((e, _), (a, _)) in ev.iter().zip(&av) {
        match (e, a) {
            (Volatile::Noise, Volatile::Noise) => {}
            (Volatile::Id(d), Volatile::Id(r)) => match ids.get(d) {
                Some(known) if known != r => return false,
                Some(_) => {}
                None => learned.push((d.clone(), r.clone())),
            },
            _ => return false,
        }
    }
    ids.extend(learned);
    true
}

/// Replaces documented ids with the real ones.
fn substitute(s: &str, ids: &HashMap<String, String>) -> String {
    let mut out = s.to_owned();
    for (d, r) in ids {
        out = out.replace(d, r);
    }
    out
}

/// Runs one documented command; returns its output without `\r` and trailing blank lines.
fn run(command: &str, api: &str) -> Vec<String> {
    let out = Command::new("bash")
        .args(["-c", command])
        .env("API", api)
        .env("TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

fn read_only(command: &str) -> bool {
    !command.contains(" -X ") && !command.contains(" -d ")
}

struct Scene {
    server: Server,
    viewers: HashMap<String, Ws>,
}

impl Scene {
    fn api_addr(&self) -> String {
        self.server.api.to_string()
    }

    fn directive(&mut self, line: usize, d: &Value, ids: &mut HashMap<String, String>) {
        if d["restart"].as_bool() == Some(true) {
            self.viewers.clear();
            self.server.keep_data = true;
            assert!(
                self.server.terminate().success(),
                "docs/api.md:{line}: clean stop"
            );
            let dir = self.server.data_dir.clone();
            self.server = Server::start_in(&server_flags(), dir);
            return;
        }
        if let Some(path) = d["get"].as_str() {
            let path = substitute(path, ids);
            self.wait_for(line, &path, &d["expect"]);
            return;
        }
        let name = d["viewer"]
            .as_str()
            .unwrap_or_else(|| panic!("docs/api.md:{line}: a directive names a viewer or a path"))
            .to_owned();
        if !self.viewers.contains_key(&name) {
            let query = d["query"].as_str().unwrap_or("");
            let (ws, welcome) = connect_with(
                &self.server.url(query),
                d["user_agent"].as_str(),
                d["accept_language"].as_str(),
            );
            let real = welcome["viewer"].as_str().expect("viewer id").to_owned();
            ids.insert(name.clone(), real);
            self.viewers.insert(name.clone(), ws);
            let n = self.viewers.len() as u64;
            self.server
                .wait_stats("the mirror to see the viewer", |s| s["viewers"] == n);
        }
        let ws = self.viewers.get_mut(&name).expect("viewer");
        for want in d["receive"].as_array().into_iter().flatten() {
            let want: Value =
                serde_json::from_str(&substitute(&want.to_string(), ids)).expect("json");
            let kind = want["type"]
                .as_str()
                .unwrap_or_else(|| panic!("docs/api.md:{line}: a received message has a type"));
            let got = next_of_type(ws, kind);
            assert!(
                subset(&want, &got),
                "docs/api.md:{line}: {name} received {got}, documented {want}"
            );
        }
        for m in d["send"].as_array().into_iter().flatten() {
            let m = serde_json::from_str(&substitute(&m.to_string(), ids)).expect("json");
            send_json(ws, &m);
            match m["type"].as_str() {
                Some("watch") => {
                    next_of_type(ws, "endpoint");
                }
                Some("vote") => {
                    next_of_type(ws, "voted");
                }
                _ => {}
            }
        }
        // Whatever the viewer sent reaches the mirror through its shard: wait for it to show.
        let real = ids[&name].clone();
        self.wait_for(line, &format!("/api/viewers/{real}"), &d["expect"]);
    }

    /// Reads `GET path` until it answers 200 with every key of `expect` (bounded).
    fn wait_for(&self, line: usize, path: &str, expect: &Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, v) = self.server.api("GET", path, None);
            if status == 200 && (expect.is_null() || subset(expect, &v)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docs/api.md:{line}: GET {path} answered {status} {v}, waited for {expect}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether every key of the object `want` has the same value in `got`.
/// Every key of `want` is in `got` with the same value; objects are compared key by key, so
/// `{"windows":{"10s":{"reports":2}}}` checks one number deep inside.
fn subset(want: &Value, got: &Value) -> bool {
    want.as_object().into_iter().flatten().all(|(k, v)| {
        if v.is_object() {
            subset(v, &got[k])
        } else {
            &got[k] == v
        }
    })
}

fn server_flags() -> Vec<&'static str> {
    // One shard, so per-shard figures do not depend on which CPU a client ran on; no ping
    // within a run, so frame counters do not depend on how long it took. docs/api.md names
    // these flags where it says how its examples were run.
    vec!["--shards", "1", "--ping-interval-s", "3600"]
}

fn connect_with(url: &str, ua: Option<&str>, lang: Option<&str>) -> (Ws, Value) {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(ua) = ua {
        req.headers_mut().insert("User-Agent", ua.parse().unwrap());
    }
    if let Some(lang) = lang {
        req.headers_mut()
            .insert("Accept-Language", lang.parse().unwrap());
    }
    let (mut ws, _) = tungstenite::connect(req).expect("websocket connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let welcome = next_of_type(&mut ws, "welcome");
    (ws, welcome)
}

#[test]
fn outputs_match_up_to_volatile_values_and_list_order() {
    let mut ids = HashMap::new();
    let doc =
        r#"{"polls":[{"id":"p0000000000000001","t":1795267344762},{"id":"p0000000000000002"}]}"#;
    let real =
        r#"{"polls":[{"id":"p00000000000000b2"},{"id":"p00000000000000a1","t":1796048064699}]}"#;
    assert!(matches(doc, real, &mut ids));
    assert_eq!(ids["p0000000000000001"], "p00000000000000a1");
    assert_eq!(ids["p0000000000000002"], "p00000000000000b2");
    // A learned id must keep its place: a swapped pair no longer matches.
    let swapped =
        r#"{"polls":[{"id":"p00000000000000b2","t":1796048064699},{"id":"p00000000000000a1"}]}"#;
    assert!(!matches(doc, swapped, &mut ids));
    assert!(!matches(r#"{"size":1}"#, r#"{"size":2}"#, &mut ids));
}

#[test]
fn api_examples_answer_as_documented() {
    let text = std::fs::read_to_string(DOC).expect("read docs/api.md");
    let steps = parse_doc(&text);
    assert!(steps.len() > 20, "docs/api.md has its examples");
    let bless = std::env::var_os("OVATION_BLESS_DOCS").is_some();
    let server = Server::start(&server_flags());
    let mut scene = Scene {
        server,
        viewers: HashMap::new(),
    };
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut rewritten: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
    let mut failures = Vec::new();
    for step in &steps {
        match step {
            Step::Directive { line, json } => scene.directive(*line, json, &mut ids),
            Step::Example {
                line,
                command,
                expected,
                lines,
            } => {
                let command = substitute(command, &ids);
                let expected_text = expected.join("\n");
                let deadline = Instant::now() + WAIT;
                let (actual, matched) = loop {
                    let actual = run(&command, &scene.api_addr()).join("\n");
                    if matches(&expected_text, &actual, &mut ids) {
                        break (actual, true);
                    }
                    // Reads may trail a change by the mirror's lag: retry those (bounded).
                    if !read_only(&command) || Instant::now() > deadline || bless {
                        break (actual, false);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if bless {
                    // Every output from this one run, so timestamps agree across examples.
                    let back: HashMap<String, String> =
                        ids.iter().map(|(d, r)| (r.clone(), d.clone())).collect();
                    let shown = substitute(&actual, &back);
                    if shown != expected_text {
                        rewritten.push((lines.clone(), shown.lines().map(str::to_owned).collect()));
                    }
                } else if !matched {
                    failures.push(format!(
                        "docs/api.md:{line}: $ {command}\n  documented: {expected_text}\n  answered:   {actual}"
                    ));
                }
            }
        }
    }
    if bless && !rewritten.is_empty() {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for (range, new) in rewritten.into_iter().rev() {
            lines.splice(range, new);
        }
        std::fs::write(DOC, lines.join("\n") + "\n").expect("write docs/api.md");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn readme_try_it_runs_verbatim() {
    let text = std::fs::read_to_string(README).expect("read README.md");
    let start = text.find("try it").expect("the README's try-it paragraph");
    let block = &text[start..];
    let open = block.find("```sh\n").expect("a sh block") + 6;
    let close = open + block[open..].find("```").expect("block end");
    let script = &block[open..close];

    // The README runs `serve` with no flags: default addresses, `ovation-data/` in the
    // current directory. Run it in a scratch directory.
    let dir = std::env::temp_dir().join(format!("ovation-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for port in [8080, 8081] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is busy: the README's defaults need it free for this test"
        );
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovation"))
        .arg("serve")
        .current_dir(&dir)
        .env_remove("OVATION_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ovation");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("ovation ready"), "{ready}");
    let out = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(&dir)
        .output()
        .expect("bash");
    let _ = child.kill();
    let mut stderr = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "README block failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            v.get("error").is_none(),
            "README example answered an error: {v}"
        );
    }
    // A default start on this machine warns about nothing but the generated token.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("generated a token"))
        .collect();
    assert!(warnings.is_empty(), "default start warned: {warnings:#?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "log lines carry no colour codes off a terminal"
    );
}
