//! A tiny stand-in for ovation, for loadgen's own tests and for measuring loadgen itself:
//! the viewer WebSocket (welcome, watch -> endpoint, vote -> voted, telemetry, hello) and the
//! operator API subset loadgen uses (group-cast, streams, polls). Not a server to copy: one
//! task per connection, one mutex for everything.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Misbehaviours to exercise loadgen's error accounting.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Answer the upgrade of every connection whose id is a multiple of N with 503.
    pub reject_every: Option<u64>,
    /// Close every connection whose id is a multiple of N with 1011 right after the welcome.
    pub close_every: Option<u64>,
}

#[derive(Default)]
pub struct State {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    polls: HashMap<String, Poll>,
    next_poll: u64,
    pub token: String,
    pub faults: Faults,
    pub user_agents: Vec<String>,
    pub accept_languages: Vec<String>,
    pub queries: Vec<String>,
    pub peer_ips: BTreeSet<std::net::IpAddr>,
    pub hellos: u64,
    pub watches: BTreeMap<String, u64>,
    pub telemetry: u64,
    pub votes: u64,
    pub close_frames: u64,
    pub streams: Vec<String>,
    pub api_requests: u64,
    pub api_unauthorized: u64,
}

struct Conn {
    tx: mpsc::UnboundedSender<Message>,
    stream: Option<String>,
}

struct Poll {
    stream: String,
    counts: Vec<u64>,
    open: bool,
}

pub struct FakeServer {
    pub ws_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking handler in a test should not hide the original failure behind poison.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeServer {
    /// Binds both listeners on 127.0.0.1 with ephemeral ports.
    pub async fn start(token: &str, faults: Faults) -> FakeServer {
        Self::start_on("127.0.0.1:0", "127.0.0.1:0", token, faults).await
    }

    pub async fn start_on(ws: &str, api: &str, token: &str, faults: Faults) -> FakeServer {
        let ws_listener = listen(ws);
        let api_listener = listen(api);
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            faults,
            ..State::default()
        }));
        let ws_addr = ws_listener.local_addr().expect("ws addr");
        let api_addr = api_listener.local_addr().expect("api addr");
        let s1 = state.clone();
        let ws_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = ws_listener.accept().await else {
                    continue;
                };
                let state = s1.clone();
                tokio::spawn(viewer_conn(state, tcp, peer));
            }
        });
        let s2 = state.clone();
        let api_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = api_listener.accept().await else {
                    continue;
                };
                tokio::spawn(api_conn(s2.clone(), tcp));
            }
        });
        FakeServer {
            ws_addr,
            api_addr,
            state,
            tasks: vec![ws_task, api_task],
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A listener with a deep accept queue (tokio's default of 1024 overflows in connect storms).
fn listen(addr: &str) -> TcpListener {
    let addr: SocketAddr = addr.parse().expect("listen address");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind");
    socket.listen(4096).expect("listen")
}

fn text(s: String) -> Message {
    Message::Text(s)
}

async fn viewer_conn(state: Arc<Mutex<State>>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let (id, faults) = {
        let mut st = lock(&state);
        let id = st.next_id;
        st.next_id += 1;
        st.peer_ips.insert(peer.ip());
        (id, st.faults.clone())
    };
    let reject = faults.reject_every.is_some_and(|n| id % n == 0);
    let st2 = state.clone();
    // The Result type is fixed by tungstenite's handshake Callback trait.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let mut st = lock(&st2);
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        st.user_agents.push(header("user-agent"));
        st.accept_languages.push(header("accept-language"));
        st.queries.push(req.uri().query().unwrap_or("").to_owned());
        if reject {
            let mut e = ErrorResponse::new(Some("overloaded".into()));
            *e.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return Err(e);
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let closing = faults.close_every.is_some_and(|n| id % n == 0);
    // Join the broadcast set before the welcome, so a viewer that has its welcome is a member.
    let (tx, mut rx) = mpsc::unbounded_channel();
    if !closing {
        lock(&state).conns.insert(id, Conn { tx, stream: None });
    }
    let welcome = format!(r#"{{"type":"welcome","viewer":"v{id}","resume":"r{id}","shard":0}}"#);
    if ws.send(text(welcome)).await.is_err() {
        lock(&state).conns.remove(&id);
        return;
    }
    if closing {
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Error,
                reason: "fault".into(),
            }))
            .await;
        // Let the close handshake finish.
        while let Some(Ok(_)) = ws.next().await {}
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            inc = ws.next() => match inc {
                Some(Ok(Message::Text(t))) => {
                    let reply = on_viewer_text(&state, id, &t);
                    if let Some(r) = reply {
                        if ws.send(text(r)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    lock(&state).close_frames += 1;
                    // tungstenite answers the close on the next flush.
                    let _ = ws.flush().await;
                    while let Some(Ok(_)) = ws.next().await {}
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    lock(&state).conns.remove(&id);
}

fn on_viewer_text(state: &Mutex<State>, id: u64, t: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    let mut st = lock(state);
    match v["type"].as_str()? {
        "hello" => {
            st.hellos += 1;
            None
        }
        "telemetry" => {
            st.telemetry += 1;
            None
        }
        "watch" => {
            let stream = v["stream"].as_str()?.to_owned();
            *st.watches.entry(stream.clone()).or_insert(0) += 1;
            if let Some(c) = st.conns.get_mut(&id) {
                c.stream = Some(stream.clone());
            }
            Some(
                serde_json::json!({"type":"endpoint","stream":stream,"url":format!("https://cdn.invalid/{stream}.m3u8"),"session":format!("s{id}")})
                    .to_string(),
            )
        }
        "vote" => {
            let poll_id = v["poll"].as_str()?.to_owned();
            let choice = v["choice"].as_u64()?;
            let ok = match st.polls.get_mut(&poll_id) {
                Some(p) if p.open && (choice as usize) < p.counts.len() => {
                    p.counts[choice as usize] += 1;
                    true
                }
                _ => false,
            };
            if ok {
                st.votes += 1;
                Some(serde_json::json!({"type":"voted","poll":poll_id,"choice":choice}).to_string())
            } else {
                Some(r#"{"type":"error","code":"bad_vote","message":"no such open poll"}"#.into())
            }
        }
        _ => Some(r#"{"type":"error","code":"unknown_type","message":"?"}"#.into()),
    }
}

async fn api_conn(state: Arc<Mutex<State>>, mut tcp: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (method, path, auth, body) = loop {
        let Ok(n) = tcp.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
            continue;
        };
        let mut len = 0usize;
        let mut auth = String::new();
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                len = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            if h.name.eq_ignore_ascii_case("authorization") {
                auth = String::from_utf8_lossy(h.value).into_owned();
            }
        }
        if buf.len() >= head + len {
            break (
                req.method.unwrap_or("").to_owned(),
                req.path.unwrap_or("").to_owned(),
                auth,
                buf[head..head + len].to_vec(),
            );
        }
    };
    let (status, reply) = route(&state, &method, &path, &auth, &body);
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = tcp.write_all(resp.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

fn route(state: &Mutex<State>, method: &str, path: &str, auth: &str, body: &[u8]) -> (u16, String) {
    let mut st = lock(state);
    st.api_requests += 1;
    if auth != format!("Bearer {}", st.token) {
        st.api_unauthorized += 1;
        return (401, r#"{"error":"unauthorized"}"#.into());
    }
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["api", "groups", group, "messages"]) => {
            let msg = serde_json::json!({"type":"message","group":group,"payload":json["payload"]})
                .to_string();
            let mut members = 0;
            for c in st.conns.values() {
                if c.tx.send(text(msg.clone())).is_ok() {
                    members += 1;
                }
            }
            (
                202,
                serde_json::json!({"group":group,"members":members}).to_string(),
            )
        }
        ("POST", ["api", "streams"]) => {
            let id = json["id"].as_str().unwrap_or("").to_owned();
            if st.streams.contains(&id) {
                return (409, r#"{"error":"exists"}"#.into());
            }
            st.streams.push(id.clone());
            (201, serde_json::json!({"id":id}).to_string())
        }
        ("POST", ["api", "polls"]) => {
            let stream = json["stream"].as_str().unwrap_or("").to_owned();
            let choices = json["choices"].as_array().cloned().unwrap_or_default();
            st.next_poll += 1;
            let id = format!("p{}", st.next_poll);
            let msg = serde_json::json!({"type":"poll","poll":id,"stream":stream,"question":json["question"],"choices":choices,"closes_at":0}).to_string();
            for c in st.conns.values() {
                if c.stream.as_deref() == Some(stream.as_str()) {
                    let _ = c.tx.send(text(msg.clone()));
                }
            }
            st.polls.insert(
                id.clone(),
                Poll {
                    stream,
                    counts: vec![0; choices.len()],
                    open: true,
                },
            );
            (201, serde_json::json!({"id":id}).to_string())
        }
        ("POST", ["api", "polls", id, "close"]) => {
            let Some(p) = st.polls.get_mut(*id) else {
                return (404, "{}".into());
            };
            p.open = false;
            let total: u64 = p.counts.iter().sum();
            let msg = serde_json::json!({"type":"results","poll":id,"counts":p.counts,"total":total,"final":true}).to_string();
            let stream = p.stream.clone();
            for c in st.conns.values() {
                if c.stream.as_deref() == Some(stream.as_str()) {
                    let _ = c.tx.send(text(msg.clone()));
                }
            }
            (200, serde_json::json!({"id":id,"total":total}).to_string())
        }
        ("GET", ["api", "polls", id]) => match st.polls.get(*id) {
            Some(p) => {
                let total: u64 = p.counts.iter().sum();
                let state = if p.open { "open" } else { "closed" };
                (
                    200,
                    serde_json::json!({"id":id,"counts":p.counts,"total":total,"state":state})
                        .to_string(),
                )
            }
            None => (404, "{}".into()),
        },
        _ => (404, r#"{"error":"not_found"}"#.into()),
    }
}
