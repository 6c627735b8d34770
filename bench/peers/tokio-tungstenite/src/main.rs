//! peer-tokio-tungstenite: the benchmark peer contract (see bench/peers/README.md) built on
//! `tokio-tungstenite` on a multi-threaded tokio runtime, with a `hyper` 1.x control API.
//!
//! It owns a viewer WebSocket listener, a control HTTP listener and a registry of connected
//! viewers, in the shape of tokio-tungstenite's own broadcast example: one unbounded sender per
//! viewer in a shared map, the socket split into a stream and a sink. A broadcast is serialised
//! once into a `Utf8Bytes` (reference-counted `Bytes`), and every viewer's queue gets a clone of
//! the same `Message::Text`; tungstenite then frames it into each connection's write buffer. The
//! writer feeds everything queued and flushes once per batch. A viewer whose queue holds more
//! than `MAX_QUEUED_BYTES` is disconnected.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes a viewer may have queued but not yet written before it is dropped as a slow consumer.
const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Largest operator request body accepted.
const MAX_API_BODY: usize = 1 << 20;
/// Largest message a viewer may send.
const MAX_VIEWER_MESSAGE: usize = 64 << 10;
/// Messages fed to the sink before the writer flushes even if more are queued.
const WRITE_BATCH: usize = 64;
/// How long shutdown waits for viewers to take their close frame.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Listen backlog for both listeners (the same for every peer).
const LISTEN_BACKLOG: u32 = 4096;

const USAGE: &str = "usage: peer-tokio-tungstenite [--viewer-addr ADDR] [--api-addr ADDR]";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("peer-tokio-tungstenite: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-tokio-tungstenite: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-tokio-tungstenite: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Command line: listen addresses only.
struct Args {
    viewer_addr: String,
    api_addr: String,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut args = Args {
            viewer_addr: "127.0.0.1:9080".to_owned(),
            api_addr: "127.0.0.1:9081".to_owned(),
        };
        while let Some(arg) = argv.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let slot = match name.as_str() {
                "--viewer-addr" => &mut args.viewer_addr,
                "--api-addr" => &mut args.api_addr,
                "-h" | "--help" => return Err("help requested".to_owned()),
                other => return Err(format!("unknown argument {other:?}")),
            };
            *slot = match inline.or_else(|| argv.next()) {
                Some(value) => value,
                None => return Err(format!("{name} needs a value")),
            };
        }
        Ok(args)
    }
}

async fn run(args: Args) -> io::Result<()> {
    let viewers = bind(&args.viewer_addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("bind viewer {}: {e}", args.viewer_addr)))?;
    let api = bind(&args.api_addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("bind api {}: {e}", args.api_addr)))?;
    println!(
        "listening viewer={} api={}",
        viewers.local_addr()?,
        api.local_addr()?
    );

    let state = Arc::new(State::default());
    let viewer_loop = tokio::spawn(accept_viewers(viewers, state.clone()));
    let api_loop = tokio::spawn(accept_api(api, state.clone()));

    shutdown_signal().await?;
    viewer_loop.abort();
    api_loop.abort();
    let open = state.close_all();
    eprintln!("peer-tokio-tungstenite: shutting down, closing {open} viewers");
    // Best effort: viewers that do not drain in time are dropped with the runtime.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, state.wait_empty()).await;
    Ok(())
}

/// Binds with a `LISTEN_BACKLOG` backlog (tokio's `TcpListener::bind` uses 128, too small
/// for the bursts of connects a benchmark opens with).
async fn bind(addr: &str) -> io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Pauses an accept loop after an error such as EMFILE so it does not spin.
async fn accept_backoff(what: &str, e: io::Error) {
    eprintln!("peer-tokio-tungstenite: accept on {what} listener: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

// ---------------------------------------------------------------------------------------------
// Viewer registry

/// The registry's handle on one viewer.
struct Conn {
    tx: mpsc::UnboundedSender<Message>,
    /// Payload bytes queued and not yet handed to tungstenite.
    queued: AtomicUsize,
    /// Wakes the viewer's task to drop it (slow consumer).
    kill: Notify,
}

impl Conn {
    /// Queues a message. Returns false, and tells the viewer's task to drop the connection, if
    /// the viewer already has `MAX_QUEUED_BYTES` waiting.
    fn push(&self, msg: Message) -> bool {
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > MAX_QUEUED_BYTES {
            self.kill.notify_one();
            return false;
        }
        // Fails only once the writer is gone, i.e. the connection is already ending.
        self.tx.send(msg).is_ok()
    }
}

#[derive(Default)]
struct State {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Signalled when the last viewer leaves.
    empty: Notify,
}

impl State {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        // The map is consistent after every single operation, so a poisoned lock is usable.
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns();
        conns.remove(&id);
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// Queues one pre-encoded text message to every viewer; returns how many there were.
    fn broadcast(&self, text: &Utf8Bytes) -> usize {
        let conns = self.conns();
        for conn in conns.values() {
            conn.push(Message::Text(text.clone()));
        }
        conns.len()
    }

    /// Queues a "going away" close frame to every viewer; returns how many there were.
    fn close_all(&self) -> usize {
        let conns = self.conns();
        for conn in conns.values() {
            conn.push(Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: Utf8Bytes::from_static(""),
            })));
        }
        conns.len()
    }

    async fn wait_empty(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.conns().is_empty() {
                return;
            }
            notified.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Viewer side

async fn accept_viewers(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_backoff("viewer", e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_viewer(state.clone(), stream));
    }
}

async fn serve_viewer(state: Arc<State>, stream: TcpStream) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_VIEWER_MESSAGE))
        .max_frame_size(Some(MAX_VIEWER_MESSAGE));
    // Accepts the upgrade on any path; a failed handshake just drops the connection.
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (sink, stream) = ws.split();

    let (tx, rx) = mpsc::unbounded_channel();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let conn = Arc::new(Conn {
        tx,
        queued: AtomicUsize::new(0),
        kill: Notify::new(),
    });
    let welcome = format!(r#"{{"type":"welcome","viewer":"{id}"}}"#);
    conn.push(Message::Text(Utf8Bytes::from(welcome)));
    state.conns().insert(id, conn.clone());

    // Reader and writer are polled by this one task, so the split's lock is never contended.
    tokio::select! {
        _ = conn.kill.notified() => {}
        _ = read_loop(stream, &conn) => {}
        _ = write_loop(sink, rx, &conn) => {}
    }
    state.remove(id);
}

type Viewer = WebSocketStream<TcpStream>;

/// Reads until the connection ends. tungstenite answers pings and echoes the viewer's close
/// frame by itself (flushed on the next read, which then reports the end of the stream).
async fn read_loop(mut stream: SplitStream<Viewer>, conn: &Conn) {
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Text(text) = msg {
            if let Some(reply) = vote_reply(text.as_bytes()) {
                conn.push(Message::Text(reply));
            }
        }
    }
}

/// Feeds queued messages to the sink, flushing once per batch. Returns after a close frame.
async fn write_loop(
    mut sink: SplitSink<Viewer, Message>,
    mut rx: mpsc::UnboundedReceiver<Message>,
    conn: &Conn,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut fed = 0;
        while let Some(msg) = next.take() {
            let len = msg.len();
            let closing = matches!(msg, Message::Close(_));
            sink.feed(msg).await?;
            conn.queued.fetch_sub(len, Ordering::Relaxed);
            if closing {
                sink.flush().await?;
                return Ok(());
            }
            fed += 1;
            if fed < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.flush().await?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct ViewerMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    poll: Option<Cow<'a, str>>,
    choice: Option<serde_json::Number>,
}

#[derive(Serialize)]
struct Voted<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    poll: &'a str,
    choice: &'a serde_json::Number,
}

/// The `voted` answer to a `vote` message; None for anything else (ignored).
fn vote_reply(text: &[u8]) -> Option<Utf8Bytes> {
    let msg: ViewerMessage = serde_json::from_slice(text).ok()?;
    if msg.kind != "vote" {
        return None;
    }
    let (poll, choice) = (msg.poll?, msg.choice?);
    let reply = Voted {
        kind: "voted",
        poll: &poll,
        choice: &choice,
    };
    serde_json::to_string(&reply).ok().map(Utf8Bytes::from)
}

// ---------------------------------------------------------------------------------------------
// Control API

async fn accept_api(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_backoff("api", e).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| api_request(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(Deserialize)]
struct Publish<'a> {
    #[serde(borrow)]
    payload: &'a RawValue,
}

async fn api_request(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = (req.method() == Method::POST, req.uri().path());
    Ok(match route {
        (true, "/api/groups/global/messages") => {
            let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return Ok(json_response(StatusCode::BAD_REQUEST, error("bad_body"))),
            };
            let Ok(publish) = serde_json::from_slice::<Publish>(&body) else {
                return Ok(json_response(StatusCode::BAD_REQUEST, error("bad_json")));
            };
            // Encoded once; every viewer's queue shares this buffer.
            let frame = Utf8Bytes::from(format!(
                r#"{{"type":"message","group":"global","payload":{}}}"#,
                publish.payload.get()
            ));
            let members = state.broadcast(&frame);
            json_response(
                StatusCode::ACCEPTED,
                format!(r#"{{"group":"global","members":{members}}}"#),
            )
        }
        (false, "/api/stats") if req.method() == Method::GET => {
            let connections = state.conns().len();
            json_response(
                StatusCode::OK,
                format!(r#"{{"connections":{connections}}}"#),
            )
        }
        _ => json_response(StatusCode::NOT_FOUND, error("not_found")),
    })
}

fn error(code: &str) -> String {
    format!(r#"{{"type":"error","code":"{code}"}}"#)
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
