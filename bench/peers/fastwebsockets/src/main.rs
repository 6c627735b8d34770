//! peer-fastwebsockets: the benchmark peer contract (see bench/peers/README.md) built on
//! `fastwebsockets` + `hyper` 1.x on a multi-threaded tokio runtime.
//!
//! It owns a viewer WebSocket listener, a control HTTP listener and a registry of connected
//! viewers. A broadcast is serialised once into one `Bytes` buffer; every viewer's queue gets a
//! reference-counted clone of that buffer and its writer task frames it with
//! `Frame::text(Payload::Borrowed(..))`, so the JSON is never encoded per viewer. Each viewer
//! runs a reader and a writer over fastwebsockets' split halves; the writer drains whatever is
//! queued into a `BufWriter` and flushes once per batch. A viewer whose queue holds more than
//! `MAX_QUEUED_BYTES` is disconnected.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{
    upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError, WebSocketWrite,
};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, Notify};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes a viewer may have queued but not yet written before it is dropped as a slow consumer.
const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Largest operator request body accepted.
const MAX_API_BODY: usize = 1 << 20;
/// Largest message a viewer may send.
const MAX_VIEWER_MESSAGE: usize = 64 << 10;
/// Frames written before the writer flushes even if more are queued.
const WRITE_BATCH: usize = 64;
/// How long shutdown waits for viewers to take their close frame.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Listen backlog for both listeners (the same for every peer).
const LISTEN_BACKLOG: u32 = 4096;
/// WebSocket close code 1001 "going away", big-endian.
const CLOSE_GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();

const USAGE: &str = "usage: peer-fastwebsockets [--viewer-addr ADDR] [--api-addr ADDR]";

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("peer-fastwebsockets: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peer-fastwebsockets: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-fastwebsockets: {e}");
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
    eprintln!("peer-fastwebsockets: shutting down, closing {open} viewers");
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
    eprintln!("peer-fastwebsockets: accept on {what} listener: {e}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

// ---------------------------------------------------------------------------------------------
// Viewer registry

/// One frame waiting in a viewer's queue.
enum Out {
    /// A text frame; broadcasts share one buffer between every viewer.
    Text(Bytes),
    /// A pong owed for a ping.
    Pong(Bytes),
    /// A close frame (raw payload: code + reason); the writer stops after it.
    Close(Bytes),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Text(b) | Out::Pong(b) | Out::Close(b) => b.len(),
        }
    }
}

/// The registry's handle on one viewer.
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    /// Payload bytes queued and not yet written.
    queued: AtomicUsize,
    /// Wakes the viewer's task to drop it (slow consumer).
    kill: Notify,
}

impl Conn {
    /// Queues a frame. Returns false, and tells the viewer's task to drop the connection, if
    /// the viewer already has `MAX_QUEUED_BYTES` waiting.
    fn push(&self, out: Out) -> bool {
        let len = out.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > MAX_QUEUED_BYTES {
            self.kill.notify_one();
            return false;
        }
        // Fails only once the writer is gone, i.e. the connection is already ending.
        self.tx.send(out).is_ok()
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

    /// Queues one pre-encoded frame to every viewer; returns how many viewers there were.
    fn broadcast(&self, frame: &Bytes) -> usize {
        let conns = self.conns();
        for conn in conns.values() {
            conn.push(Out::Text(frame.clone()));
        }
        conns.len()
    }

    /// Queues a "going away" close frame to every viewer; returns how many there were.
    fn close_all(&self) -> usize {
        let close = Bytes::from_static(&CLOSE_GOING_AWAY);
        let conns = self.conns();
        for conn in conns.values() {
            conn.push(Out::Close(close.clone()));
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
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| viewer_request(state.clone(), req));
            // Errors here are a viewer's broken handshake: nothing to do but drop it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Answers the upgrade request (any path) and hands the connection to its own task.
async fn viewer_request(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    if !upgrade::is_upgrade_request(&req) {
        return Ok(empty_response(StatusCode::BAD_REQUEST));
    }
    match upgrade::upgrade(&mut req) {
        Ok((response, upgraded)) => {
            tokio::spawn(serve_viewer(state, upgraded));
            Ok(response)
        }
        Err(_) => Ok(empty_response(StatusCode::BAD_REQUEST)),
    }
}

fn empty_response(status: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    response
}

async fn serve_viewer(state: Arc<State>, upgraded: upgrade::UpgradeFut) {
    let Ok(ws) = upgraded.await else {
        return;
    };
    let (read, write) = ws.split(|stream| {
        let (r, w) = tokio::io::split(stream);
        (r, BufWriter::new(w))
    });
    let mut read = read;
    read.set_max_message_size(MAX_VIEWER_MESSAGE);
    let read = FragmentCollectorRead::new(read);

    let (tx, rx) = mpsc::unbounded_channel();
    let id = state.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let conn = Arc::new(Conn {
        tx,
        queued: AtomicUsize::new(0),
        kill: Notify::new(),
    });
    let welcome = format!(r#"{{"type":"welcome","viewer":"{id}"}}"#);
    conn.push(Out::Text(Bytes::from(welcome)));
    state.conns().insert(id, conn.clone());

    let reader = read_loop(read, &conn);
    let writer = write_loop(write, rx, &conn);
    tokio::pin!(reader, writer);
    tokio::select! {
        _ = conn.kill.notified() => {}
        _ = &mut writer => {}
        closed = &mut reader => {
            if closed {
                // The viewer sent a close frame and its echo is queued: let the writer send it.
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, writer).await;
            }
        }
    }
    state.remove(id);
}

/// Reads until the viewer closes (true) or the connection fails (false).
async fn read_loop<S: AsyncRead + Unpin>(mut read: FragmentCollectorRead<S>, conn: &Conn) -> bool {
    // Pongs and the close echo are queued for the writer like any other frame.
    let mut obligated = |frame: Frame<'_>| {
        let payload = Bytes::copy_from_slice(&frame.payload);
        let out = match frame.opcode {
            OpCode::Close => Out::Close(payload),
            _ => Out::Pong(payload),
        };
        let queued = conn.push(out);
        std::future::ready(if queued {
            Ok(())
        } else {
            Err(io::Error::other("viewer queue full"))
        })
    };
    loop {
        let frame = match read.read_frame(&mut obligated).await {
            Ok(frame) => frame,
            Err(_) => return false,
        };
        match frame.opcode {
            OpCode::Close => return true,
            OpCode::Text => {
                if let Some(reply) = vote_reply(&frame.payload) {
                    conn.push(Out::Text(reply));
                }
            }
            _ => {}
        }
    }
}

/// Writes queued frames, flushing once per batch. Returns after writing a close frame.
async fn write_loop<S: AsyncWrite + Unpin>(
    mut write: WebSocketWrite<BufWriter<S>>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: &Conn,
) -> Result<(), WebSocketError> {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            let len = out.len();
            let closing = matches!(out, Out::Close(_));
            let frame = match &out {
                Out::Text(b) => Frame::text(Payload::Borrowed(b)),
                Out::Pong(b) => Frame::pong(Payload::Borrowed(b)),
                Out::Close(b) => Frame::close_raw(Payload::Borrowed(b)),
            };
            write.write_frame(frame).await?;
            conn.queued.fetch_sub(len, Ordering::Relaxed);
            if closing {
                write.flush().await?;
                return Ok(());
            }
            written += 1;
            if written < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        write.flush().await?;
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
fn vote_reply(text: &[u8]) -> Option<Bytes> {
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
    serde_json::to_vec(&reply).ok().map(Bytes::from)
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
            let frame = Bytes::from(format!(
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
