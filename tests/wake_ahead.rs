//! Waking the shards ahead of an operator's command (`wake_shards_ahead`) on a real server
//! over loopback: heads-ups go out for requests that may command the shards, on connections
//! whose last such request succeeded, and never change what viewers receive.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::{connect, next_of_type, read_response, Server, TOKEN, WAIT};
use serde_json::{json, Value};

/// One keep-alive API connection.
struct Api {
    stream: TcpStream,
    buf: Vec<u8>,
    token: String,
}

impl Api {
    fn open(server: &Server) -> Api {
        Api::with_token(server, TOKEN)
    }

    fn with_token(server: &Server, token: &str) -> Api {
        let stream = TcpStream::connect(server.api).expect("connect api");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Api {
            stream,
            buf: Vec::new(),
            token: token.to_owned(),
        }
    }

    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).unwrap();
        let (status, _, body) = read_response(&mut self.stream, &mut self.buf);
        (status, body)
    }

    /// The shard counters `heads_ups` and `heads_ups_unused`, summed over the shards.
    fn heads_ups(&mut self) -> (u64, u64) {
        let (status, stats) = self.call("GET", "/api/stats", None);
        assert_eq!(status, 200, "{stats}");
        let shards = stats["shards"].as_array().expect("shards");
        let sum = |name: &str| -> u64 {
            shards
                .iter()
                .map(|s| s["counters"][name].as_u64().expect(name))
                .sum()
        };
        (sum("heads_ups"), sum("heads_ups_unused"))
    }
}

/// Casts a numbered message on `api` and checks the viewer gets that one.
fn cast(api: &mut Api, viewer: &mut common::Ws, seq: u64) {
    let (status, body) = api.call(
        "POST",
        "/api/groups/global/messages",
        Some(&json!({"payload": {"seq": seq}})),
    );
    assert_eq!(status, 202, "{body}");
    let got = next_of_type(viewer, "message");
    assert_eq!(got["payload"]["seq"], seq, "{got}");
}

/// One shard: the application core then has a CPU of its own (on a machine with two or more),
/// so the shard is never on the core's CPU and a sleeping shard is always sent a heads-up.
#[test]
fn casts_after_a_successful_write_wake_the_shard_ahead() {
    let server = Server::start(&["--shards", "1"]);
    let (mut viewer, _) = connect(&server.url(""), None);
    let mut api = Api::open(&server);
    // Reads never wake a shard.
    for _ in 0..5 {
        assert_eq!(api.heads_ups(), (0, 0), "a GET woke a shard");
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        eprintln!("one CPU: the core shares the shard's, which is never woken ahead");
        return;
    }
    // The first cast follows no successful write on this connection and is not announced;
    // the later ones are, when the shard sleeps, which it does between casts unless a timer
    // of its own runs just then: one of a few is enough.
    let mut taken = 0;
    for seq in 0..50 {
        cast(&mut api, &mut viewer, seq);
        (taken, _) = api.heads_ups();
        if taken > 0 {
            break;
        }
    }
    assert!(taken > 0, "no cast was announced to the sleeping shard");
    // A refused request that follows a cast is announced (the last write succeeded) and
    // sends the shard nothing: its hold runs out, counted once the shard is back from it.
    let mut unused = 0;
    for seq in 50..100 {
        cast(&mut api, &mut viewer, seq);
        let (status, _) = api.call("POST", "/api/groups/nosuchgroup/messages", Some(&json!({})));
        assert!((400..500).contains(&status), "{status}");
        (_, unused) = api.heads_ups();
        if unused > 0 {
            break;
        }
    }
    assert!(
        unused > 0,
        "no hold ran out after requests that sent nothing"
    );
    for seq in 100..105 {
        cast(&mut api, &mut viewer, seq);
    }
}

/// A token that may only read is refused every write, so its requests never wake a shard.
#[test]
fn a_read_only_token_never_wakes_the_shards() {
    const READ: &str = "dashboard-read-0123456789";
    let dir = std::env::temp_dir().join(format!("ovation-wake-ahead-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ovation.toml");
    std::fs::write(
        &config,
        format!("[[api_tokens]]\ntoken = \"{READ}\"\nscope = \"read\"\n"),
    )
    .unwrap();
    let server = Server::start(&["--shards", "1", "--config", config.to_str().unwrap()]);
    let (mut viewer, _) = connect(&server.url(""), None);
    let mut reader = Api::with_token(&server, READ);
    assert_eq!(reader.heads_ups(), (0, 0));
    for _ in 0..20 {
        let (status, body) = reader.call(
            "POST",
            "/api/groups/global/messages",
            Some(&json!({"payload": "no"})),
        );
        assert_eq!(status, 403, "{body}");
    }
    // The admin token's casts on a connection of their own still arrive.
    let mut admin = Api::open(&server);
    cast(&mut admin, &mut viewer, 1);
    let (taken, _) = reader.heads_ups();
    // The admin's first cast follows no successful write on its connection: not announced.
    assert_eq!(taken, 0, "a refused write or a first write woke a shard");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the setting off, casts go out as before and no shard is woken ahead.
#[test]
fn no_heads_ups_with_the_setting_off() {
    let server = Server::start(&["--shards", "1", "--wake-shards-ahead", "false"]);
    let (mut viewer, _) = connect(&server.url(""), None);
    let mut api = Api::open(&server);
    api.heads_ups();
    for seq in 0..20 {
        cast(&mut api, &mut viewer, seq);
    }
    assert_eq!(api.heads_ups(), (0, 0));
}
