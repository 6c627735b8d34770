//! One simulated viewer: connect from its source address, upgrade with its profile's headers,
//! wait for the welcome, then run its behaviour until told to stop.
//!
//! A viewer is one task on its worker's single-threaded runtime; all viewers of a worker share
//! one [`ViewerEnv`] (configuration, measurements behind a `RefCell`, gauges). Per-connection
//! state is the WebSocket stream (tungstenite keeps ~8 KiB of read buffer) plus a few words.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, ACCEPT_LANGUAGE, USER_AGENT};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::cli::WsTarget;
use crate::clock::monotonic_ns;
use crate::plan::{source_ip_for, Behaviour, BehaviourMix};
use crate::profile::{Profile, Rng, SALT_BEHAVIOUR};
use crate::stats::{Counters, Measurements};
use crate::wire::{Progress, WorkerSpec};

type Ws = WebSocketStream<TcpStream>;

/// Largest message or frame a viewer accepts (server pushes are small JSON objects).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What all viewers of one worker share.
pub struct ViewerEnv {
    pub target: WsTarget,
    pub streams: Vec<String>,
    pub poll_stream: Option<String>,
    pub mix: BehaviourMix,
    pub seed: u64,
    pub first_viewer: u64,
    pub source_ips: Vec<Ipv4Addr>,
    pub telemetry_interval: Duration,
    pub connect_timeout: Duration,
    pub close_timeout: Duration,
    ws_config: WebSocketConfig,
    pub measurements: RefCell<Measurements>,
    /// Connections currently established.
    pub live: Cell<u64>,
    /// Established connections with behaviour vote.
    pub voters: Cell<u64>,
    /// Viewers that finished their setup (welcome + watch answer) or failed.
    pub settled: Cell<u64>,
    /// Viewer tasks still running.
    pub tasks: Cell<u64>,
    /// Woken whenever `settled` or `tasks` changes.
    pub changed: Notify,
    stop: watch::Receiver<bool>,
}

impl ViewerEnv {
    pub fn new(spec: &WorkerSpec, stop: watch::Receiver<bool>) -> Self {
        let ws_config = WebSocketConfig {
            write_buffer_size: 0, // small messages, written at once
            max_message_size: Some(MAX_MESSAGE_BYTES),
            max_frame_size: Some(MAX_MESSAGE_BYTES),
            ..WebSocketConfig::default()
        };
        ViewerEnv {
            target: spec.target.clone(),
            streams: spec.streams.clone(),
            poll_stream: spec.poll_stream.clone(),
            mix: spec.mix.clone(),
            seed: spec.seed,
            first_viewer: spec.share.first_viewer,
            source_ips: spec.share.source_ips.clone(),
            telemetry_interval: spec.telemetry_interval(),
            connect_timeout: spec.connect_timeout(),
            close_timeout: spec.close_timeout(),
            ws_config,
            measurements: RefCell::new(Measurements::default()),
            live: Cell::new(0),
            voters: Cell::new(0),
            settled: Cell::new(0),
            tasks: Cell::new(0),
            changed: Notify::new(),
            stop,
        }
    }

    /// A stop receiver for a new task (the connector or a viewer).
    pub fn stop_receiver(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    pub fn progress(&self) -> Progress {
        let m = self.measurements.borrow();
        let c = &m.counters;
        Progress {
            live: self.live.get(),
            voters: self.voters.get(),
            delivered: c.delivered,
            polls_received: c.polls_received,
            votes_sent: c.votes_sent,
            votes_acked: c.votes_acked,
            finals_received: c.finals_received,
        }
    }

    fn counters(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.measurements.borrow_mut().counters);
    }

    fn stream_for(&self, profile: &Profile) -> &str {
        match (&self.poll_stream, profile.behaviour) {
            (Some(s), Behaviour::Vote) => s,
            // `streams` is validated non-empty; the modulo keeps a hand-made spec safe too.
            _ => self
                .streams
                .get(usize::from(profile.stream) % self.streams.len().max(1))
                .map_or("default", String::as_str),
        }
    }
}

/// Resolves when the stop flag is set or its sender is gone.
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the gauges right on every exit path of a viewer task.
struct Gauges<'a> {
    env: &'a ViewerEnv,
    settled: bool,
    live: bool,
    voter: bool,
}

impl<'a> Gauges<'a> {
    fn new(env: &'a ViewerEnv) -> Self {
        Gauges {
            env,
            settled: false,
            live: false,
            voter: false,
        }
    }

    fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            self.env.settled.set(self.env.settled.get() + 1);
            self.env.changed.notify_one();
        }
    }

    fn established(&mut self, voter: bool) {
        self.live = true;
        self.env.live.set(self.env.live.get() + 1);
        if voter {
            self.voter = true;
            self.env.voters.set(self.env.voters.get() + 1);
        }
    }
}

impl Drop for Gauges<'_> {
    fn drop(&mut self) {
        self.settle();
        if self.live {
            self.env.live.set(self.env.live.get().saturating_sub(1));
        }
        if self.voter {
            self.env.voters.set(self.env.voters.get().saturating_sub(1));
        }
        self.env.tasks.set(self.env.tasks.get().saturating_sub(1));
        self.env.changed.notify_one();
    }
}

/// Runs viewer number `local` of this worker. The caller has already counted the task in
/// `env.tasks`; the task uncounts itself when it ends.
pub async fn run_viewer(env: Rc<ViewerEnv>, local: u64) {
    let env = &*env;
    let mut gauges = Gauges::new(env);
    let mut stop = env.stop_receiver();
    if *stop.borrow() {
        return;
    }
    let viewer = env.first_viewer + local;
    let profile = Profile::for_viewer(env.seed, viewer, env.streams.len(), &env.mix);
    let stream = env.stream_for(&profile);
    let source = source_ip_for(local, &env.source_ips);

    let start_ns = monotonic_ns();
    env.counters(|c| {
        c.attempted += 1;
        Counters::mark(&mut c.first_attempt_ns, start_ns, true);
    });
    let deadline = Instant::now() + env.connect_timeout;
    let opened = tokio::select! {
        biased;
        _ = stopped(&mut stop) => {
            env.counters(|c| c.error("stopped_while_connecting"));
            return;
        }
        r = open(env, &profile, stream, source, deadline) => r,
    };
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(kind) => {
            env.counters(|c| {
                c.failed += 1;
                c.error(kind);
            });
            return;
        }
    };
    let welcome_ns = monotonic_ns();
    {
        let mut m = env.measurements.borrow_mut();
        m.handshake.record_span(start_ns, welcome_ns);
        m.counters.established += 1;
        Counters::mark(&mut m.counters.last_established_ns, welcome_ns, false);
    }
    gauges.established(profile.behaviour == Behaviour::Vote);

    let mut session = Session {
        behaviour: profile.behaviour,
        rng: Rng::for_viewer(env.seed, SALT_BEHAVIOUR, viewer),
        voted_poll: None,
        vote_sent_ns: 0,
        awaiting_endpoint: false,
    };
    if let Some(hello) = profile.hello() {
        if send(&mut ws, hello).await.is_err() {
            env.counters(|c| c.error("send_failed"));
            return;
        }
        env.counters(|c| c.hello_sent += 1);
    }
    if profile.behaviour.watches() {
        let watch = serde_json::json!({"type": "watch", "stream": stream}).to_string();
        if send(&mut ws, watch).await.is_err() {
            env.counters(|c| c.error("send_failed"));
            return;
        }
        env.counters(|c| c.watch_sent += 1);
        session.awaiting_endpoint = true;
    } else {
        gauges.settle();
    }
    let endpoint_deadline = sleep_until(Instant::now() + env.connect_timeout);
    tokio::pin!(endpoint_deadline);
    let telemetry = profile.behaviour == Behaviour::Telemetry;
    // Spread telemetry over the interval rather than sending in lockstep.
    let interval_ms = env.telemetry_interval.as_millis().max(1) as u64;
    let first = Duration::from_millis(session.rng.below(interval_ms));
    let telemetry_timer = sleep_until(Instant::now() + first);
    tokio::pin!(telemetry_timer);

    loop {
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                close_gracefully(env, ws).await;
                return;
            }
            msg = ws.next() => {
                let now = monotonic_ns();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(reply) = session.on_text(env, &text, now, &mut gauges) {
                            if send(&mut ws, reply).await.is_err() {
                                env.counters(|c| c.error("send_failed"));
                                return;
                            }
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or_else(|| "no_code".to_owned(), |f| u16::from(f.code).to_string());
                        env.counters(|c| c.unexpected_close(code));
                        // Send the close reply tungstenite queued, so the server sees a clean close.
                        let _ = timeout(env.close_timeout, ws.flush()).await;
                        return;
                    }
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, binary
                    Some(Err(e)) => {
                        env.counters(|c| read_failure(c, &e));
                        return;
                    }
                    None => {
                        env.counters(|c| c.unexpected_close("eof"));
                        return;
                    }
                }
            }
            _ = &mut telemetry_timer, if telemetry => {
                let report = session.telemetry();
                if send(&mut ws, report).await.is_err() {
                    env.counters(|c| c.error("send_failed"));
                    return;
                }
                env.counters(|c| c.telemetry_sent += 1);
                telemetry_timer.as_mut().reset(Instant::now() + env.telemetry_interval);
            }
            _ = &mut endpoint_deadline, if session.awaiting_endpoint => {
                session.awaiting_endpoint = false;
                env.counters(|c| c.error("watch_timeout"));
                gauges.settle();
            }
        }
    }
}

/// TCP connect from `source`, WebSocket upgrade with the profile's headers, welcome.
async fn open(
    env: &ViewerEnv,
    profile: &Profile,
    stream: &str,
    source: Option<Ipv4Addr>,
    deadline: Instant,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| io_kind("socket", &e))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::from((ip, 0)))
            .map_err(|e| io_kind("bind", &e))?;
    }
    let tcp = match timeout_at(deadline, socket.connect(env.target.addr.into())).await {
        Err(_) => return Err("connect_timeout".into()),
        Ok(Err(e)) => return Err(io_kind("connect", &e)),
        Ok(Ok(tcp)) => tcp,
    };
    // Best effort: a failure only costs latency on tiny writes.
    let _ = tcp.set_nodelay(true);

    let url = env.target.viewer_url(stream, profile.region_code());
    let mut request = url
        .into_client_request()
        .map_err(|_| "bad_request_url".to_owned())?;
    let headers = request.headers_mut();
    headers.insert(USER_AGENT, HeaderValue::from_static(profile.user_agent()));
    headers.insert(
        ACCEPT_LANGUAGE,
        HeaderValue::from_static(profile.accept_language()),
    );
    let handshake = tokio_tungstenite::client_async_with_config(request, tcp, Some(env.ws_config));
    let mut ws = match timeout_at(deadline, handshake).await {
        Err(_) => return Err("handshake_timeout".into()),
        Ok(Err(e)) => return Err(handshake_kind(&e)),
        Ok(Ok((ws, _response))) => ws,
    };
    loop {
        match timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("welcome_timeout".into()),
            Ok(Some(Ok(Message::Text(text)))) => {
                return match serde_json::from_str::<Incoming>(&text) {
                    Ok(m) if m.kind == "welcome" => Ok(ws),
                    Ok(m) if m.kind == "error" => Err(format!(
                        "server_{}",
                        m.code.as_deref().map_or("error", code_token)
                    )),
                    Ok(_) => Err("no_welcome".into()),
                    Err(_) => Err("bad_json".into()),
                };
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => {
                return Err("closed_before_welcome".into())
            }
            Ok(Some(Ok(_))) => return Err("no_welcome".into()),
            Ok(Some(Err(_))) => return Err("welcome_read_error".into()),
        }
    }
}

async fn send(ws: &mut Ws, text: String) -> Result<(), tungstenite::Error> {
    ws.send(Message::Text(text)).await
}

/// Sends a close frame and waits (bounded) for the server's close, so the server sees a
/// clean close rather than a reset.
async fn close_gracefully(env: &ViewerEnv, mut ws: Ws) {
    let closed = timeout(env.close_timeout, async {
        ws.close(None).await.ok()?;
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
        Some(())
    })
    .await;
    env.counters(|c| {
        c.closed_by_us += 1;
        if !matches!(closed, Ok(Some(()))) {
            c.error("close_incomplete");
        }
    });
}

/// The part of a viewer that reacts to server messages.
struct Session {
    behaviour: Behaviour,
    rng: Rng,
    /// The last poll this viewer voted in (a viewer votes once per poll).
    voted_poll: Option<String>,
    vote_sent_ns: u64,
    awaiting_endpoint: bool,
}

/// The fields of any server message that loadgen looks at; others are ignored.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    poll: Option<String>,
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    counts: Option<Vec<u64>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default, rename = "final")]
    is_final: Option<bool>,
    #[serde(default)]
    code: Option<String>,
}

impl Session {
    /// Handles one text message received at `now` (monotonic ns); returns a reply to send.
    fn on_text(
        &mut self,
        env: &ViewerEnv,
        text: &str,
        now: u64,
        gauges: &mut Gauges<'_>,
    ) -> Option<String> {
        let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
            env.counters(|c| c.error("bad_json"));
            return None;
        };
        let mut m = env.measurements.borrow_mut();
        let m = &mut *m;
        let c = &mut m.counters;
        match msg.kind.as_str() {
            "message" => {
                c.delivered += 1;
                Counters::mark(&mut c.first_receipt_ns, now, true);
                Counters::mark(&mut c.last_receipt_ns, now, false);
                let t = msg.payload.as_ref().and_then(|p| p.get("t")?.as_u64());
                if let Some(t) = t {
                    c.timed += 1;
                    m.delivery.record_span(t, now);
                }
                None
            }
            "endpoint" => {
                c.endpoints += 1;
                if self.awaiting_endpoint {
                    self.awaiting_endpoint = false;
                    gauges.settle();
                }
                None
            }
            "error" => {
                c.error(format!(
                    "server_{}",
                    msg.code.as_deref().map_or("error", code_token)
                ));
                if self.awaiting_endpoint {
                    self.awaiting_endpoint = false;
                    gauges.settle();
                }
                None
            }
            "poll" => {
                c.polls_received += 1;
                let poll = msg.poll?;
                if self.behaviour != Behaviour::Vote || self.voted_poll.as_deref() == Some(&poll) {
                    return None;
                }
                let n = msg.choices.map_or(0, |v| v.len()) as u64;
                if n == 0 {
                    c.error("poll_without_choices");
                    return None;
                }
                let choice = self.rng.below(n);
                let vote = serde_json::json!({"type": "vote", "poll": &poll, "choice": choice})
                    .to_string();
                c.votes_sent += 1;
                Counters::mark(&mut c.first_vote_ns, now, true);
                Counters::mark(&mut c.last_vote_ns, now, false);
                self.voted_poll = Some(poll);
                self.vote_sent_ns = now;
                Some(vote)
            }
            "voted" => {
                c.votes_acked += 1;
                Counters::mark(&mut c.last_ack_ns, now, false);
                if self.vote_sent_ns != 0 {
                    m.vote_ack.record_span(self.vote_sent_ns, now);
                }
                None
            }
            "results" => {
                if msg.is_final == Some(true) {
                    let poll = msg.poll.unwrap_or_default();
                    let counts = msg.counts.unwrap_or_default();
                    let total = msg.total.unwrap_or_else(|| counts.iter().sum());
                    c.record_final(&poll, counts, total, now);
                } else {
                    c.results_received += 1;
                }
                None
            }
            // A second welcome, or message types newer than this loadgen: not errors.
            _ => None,
        }
    }

    fn telemetry(&mut self) -> String {
        let buffering_ms = self.rng.below(10) * self.rng.below(60);
        // One report in 50 carries a connection failure (issue 14's fields).
        let failures = u64::from(self.rng.below(50) == 0);
        format!(
            r#"{{"type":"telemetry","bitrate_kbps":{},"buffering_ms":{},"buffering_ratio":{},"dropped_frames":{},"rtt_ms":{},"failures":{}}}"#,
            self.rng.between(800, 8000),
            buffering_ms,
            buffering_ms as f64 / 1000.0,
            self.rng.below(4),
            self.rng.between(8, 180),
            failures,
        )
    }
}

/// Keeps server-chosen error codes usable as map keys: snake_case characters only, bounded.
fn code_token(code: &str) -> &str {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        code
    } else {
        "invalid_code"
    }
}

fn io_kind(stage: &str, e: &io::Error) -> String {
    let what = match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::AddrInUse => "addr_in_use",
        io::ErrorKind::AddrNotAvailable => "addr_not_available",
        io::ErrorKind::PermissionDenied => "permission_denied",
        _ => {
            return match e.raw_os_error() {
                // EMFILE / ENFILE: out of descriptors.
                Some(24) | Some(23) => format!("{stage}_too_many_open_files"),
                Some(errno) => format!("{stage}_errno_{errno}"),
                None => format!("{stage}_io"),
            };
        }
    };
    format!("{stage}_{what}")
}

fn handshake_kind(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("handshake_status_{}", resp.status().as_u16()),
        tungstenite::Error::Io(io) => io_kind("handshake", io),
        tungstenite::Error::Protocol(_) => "handshake_protocol".into(),
        _ => "handshake_error".into(),
    }
}

fn read_failure(c: &mut Counters, e: &tungstenite::Error) {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed => c.unexpected_close("eof"),
        tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionReset => {
            c.unexpected_close("reset")
        }
        tungstenite::Error::Io(io) => {
            c.error(io_kind("read", io));
            c.unexpected_close("error");
        }
        tungstenite::Error::Capacity(_) => {
            c.error("read_too_large");
            c.unexpected_close("error");
        }
        _ => {
            c.error("read_protocol");
            c.unexpected_close("error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::ProcessShare;

    fn env() -> (ViewerEnv, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let spec = WorkerSpec {
            share: ProcessShare {
                index: 0,
                first_viewer: 0,
                count: 1,
                source_ips: vec![],
                rate: 1.0,
            },
            target: crate::cli::parse_ws_url("ws://127.0.0.1:9/v1/viewer").unwrap(),
            seed: 1,
            streams: vec!["s1".into()],
            mix: BehaviourMix::parse("vote").unwrap(),
            poll_stream: None,
            telemetry_interval_ms: 1000,
            connect_timeout_ms: 1000,
            duration_max_ms: 1000,
            close_timeout_ms: 100,
        };
        (ViewerEnv::new(&spec, rx), tx)
    }

    fn session(b: Behaviour) -> Session {
        Session {
            behaviour: b,
            rng: Rng::new(5),
            voted_poll: None,
            vote_sent_ns: 0,
            awaiting_endpoint: true,
        }
    }

    #[test]
    fn group_cast_is_timed_against_payload_t() {
        let (env, _tx) = env();
        let mut g = Gauges::new(&env);
        env.tasks.set(1);
        let mut s = session(Behaviour::Idle);
        let msg = r#"{"type":"message","group":"global","payload":{"t":1000000,"seq":0}}"#;
        assert!(s.on_text(&env, msg, 4_000_000, &mut g).is_none());
        let untimed = r#"{"type":"message","group":"global","payload":"hi"}"#;
        s.on_text(&env, untimed, 5_000_000, &mut g);
        let early = r#"{"type":"message","group":"global","payload":{"t":9000000}}"#;
        s.on_text(&env, early, 6_000_000, &mut g);
        let m = env.measurements.borrow();
        assert_eq!(m.counters.delivered, 3);
        assert_eq!(m.counters.timed, 2);
        assert_eq!(
            m.delivery.negative, 1,
            "receipt before send is a clock anomaly"
        );
        assert_eq!(m.delivery.hist.len(), 2);
        assert!((2_998..=3_002).contains(&m.delivery.hist.max()));
        assert_eq!(m.counters.first_receipt_ns, Some(4_000_000));
        assert_eq!(m.counters.last_receipt_ns, Some(6_000_000));
    }

    #[test]
    fn voter_votes_once_per_poll_and_times_the_ack() {
        let (env, _tx) = env();
        env.tasks.set(1);
        let mut g = Gauges::new(&env);
        let mut s = session(Behaviour::Vote);
        assert!(s
            .on_text(
                &env,
                r#"{"type":"endpoint","stream":"s1","url":"u","session":"x"}"#,
                1,
                &mut g
            )
            .is_none());
        assert_eq!(env.settled.get(), 1);
        let poll = r#"{"type":"poll","poll":"p1","stream":"s1","question":"q","choices":["a","b","c"],"closes_at":0}"#;
        let vote = s.on_text(&env, poll, 1_000, &mut g).expect("votes");
        let v: serde_json::Value = serde_json::from_str(&vote).unwrap();
        assert_eq!(v["type"], "vote");
        assert_eq!(v["poll"], "p1");
        assert!(v["choice"].as_u64().unwrap() < 3);
        assert!(
            s.on_text(&env, poll, 2_000, &mut g).is_none(),
            "no second vote"
        );
        s.on_text(
            &env,
            r#"{"type":"voted","poll":"p1","choice":1}"#,
            501_000,
            &mut g,
        );
        s.on_text(
            &env,
            r#"{"type":"results","poll":"p1","counts":[1,0,0],"total":1,"final":false}"#,
            600_000,
            &mut g,
        );
        s.on_text(
            &env,
            r#"{"type":"results","poll":"p1","counts":[1,0,0],"total":1,"final":true}"#,
            700_000,
            &mut g,
        );
        let m = env.measurements.borrow();
        let c = &m.counters;
        assert_eq!((c.polls_received, c.votes_sent, c.votes_acked), (2, 1, 1));
        assert_eq!((c.results_received, c.finals_received), (1, 1));
        assert_eq!(c.final_total, Some(1));
        assert_eq!(c.last_vote_ns, Some(1_000));
        assert_eq!(m.vote_ack.hist.max(), 500);
    }

    #[test]
    fn non_voters_ignore_polls_and_bad_input_is_counted() {
        let (env, _tx) = env();
        env.tasks.set(1);
        let mut g = Gauges::new(&env);
        let mut s = session(Behaviour::Watch);
        let poll = r#"{"type":"poll","poll":"p1","choices":["a","b"]}"#;
        assert!(s.on_text(&env, poll, 1, &mut g).is_none());
        s.on_text(&env, "not json", 2, &mut g);
        s.on_text(
            &env,
            r#"{"type":"error","code":"unknown_stream","message":"m"}"#,
            3,
            &mut g,
        );
        s.on_text(&env, r#"{"type":"error","code":"bad code!"}"#, 4, &mut g);
        s.on_text(&env, r#"{"type":"brand_new_thing"}"#, 5, &mut g);
        let mut v = session(Behaviour::Vote);
        v.on_text(
            &env,
            r#"{"type":"poll","poll":"p2","choices":[]}"#,
            6,
            &mut g,
        );
        let m = env.measurements.borrow();
        assert_eq!(m.counters.errors["bad_json"], 1);
        assert_eq!(m.counters.errors["server_unknown_stream"], 1);
        assert_eq!(m.counters.errors["server_invalid_code"], 1);
        assert_eq!(m.counters.errors["poll_without_choices"], 1);
        assert_eq!(m.counters.votes_sent, 0);
        assert_eq!(env.settled.get(), 1, "the error answered the watch");
    }

    #[test]
    fn telemetry_is_valid_json() {
        let mut s = session(Behaviour::Telemetry);
        for _ in 0..10 {
            let v: serde_json::Value = serde_json::from_str(&s.telemetry()).unwrap();
            assert_eq!(v["type"], "telemetry");
            assert!(v["bitrate_kbps"].as_u64().unwrap() >= 800);
        }
    }

    #[test]
    fn io_errors_have_stable_kinds() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_kind("connect", &refused), "connect_refused");
        assert_eq!(
            io_kind("bind", &io::Error::from_raw_os_error(99)),
            "bind_addr_not_available"
        );
        assert_eq!(
            io_kind("socket", &io::Error::from_raw_os_error(24)),
            "socket_too_many_open_files"
        );
    }
}
