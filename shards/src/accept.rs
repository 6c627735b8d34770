//! The shard's front door: the accept loop on its `SO_REUSEPORT` listener and the
//! handshake of each new connection, up to the point it joins the shard as a viewer.
//!
//! Descriptors: every viewer socket (handshaking or open) holds a seat counted against
//! `max_connections` over all shards, taken at accept. A socket accepted over the cap is
//! still answered (HTTP 503 `server is full`) while this shard has fewer than
//! [`REFUSALS_PER_SHARD`] such answers in progress; beyond that it is closed at once. So the
//! viewer side never holds more than `max_connections + REFUSALS_PER_SHARD x shards`
//! descriptors, and the descriptor reserve the default cap leaves (see `src/limits.rs`) keeps
//! the API, the store and the 503 answers working when viewers fill every seat. Should the
//! process run out of descriptors anyway (a configured cap above the limit), each shard's
//! spare descriptor lets it accept and close waiting connections instead of leaving them
//! hanging.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use netstack::http::{self, HandshakeError};
use netstack::tls::{ServerConfig, TlsSession};
use netstack::ws::{self, OpCode};

use crate::clock::unix_ms;
use crate::conn::Link;
use crate::hls;
use crate::hls_window;
use crate::identity::{self, Identity, TokenError};
use crate::limits::Admit;
use crate::profile::Profile;
use crate::proxy::{self, ProxyError, ProxyHeader};
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::tls::Wire;

/// Most sockets one shard answers with 503 at once once the cap is reached (each holds a
/// descriptor from the reserve until its answer is written).
pub const REFUSALS_PER_SHARD: usize = 8;
/// Longest a refused socket may take to send its request and read the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one log line per this interval for each kind of accept trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Linux `EMFILE` and `ENFILE`: the process's or the system's descriptors are used up.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// One descriptor held back (`/dev/null`) for the worst case: when something other than the
/// viewers has used up the reserve and `accept` fails with EMFILE, the shard gives this one
/// up, accepts the waiting connection and closes it at once, so clients see their
/// connection closed instead of waiting in the backlog for an answer that never comes.
struct Spare(Option<std::fs::File>);

impl Spare {
    fn open() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }

    /// Gives the spare descriptor up to accept and close one waiting connection; true when
    /// one was closed. Takes the descriptor back afterwards (when one is free again).
    async fn shed(&mut self, listener: &TcpListener) -> bool {
        if self.0.take().is_none() {
            *self = Spare::open();
            return false;
        }
        let shed = future::or(async { listener.accept().await.is_ok() }, async {
            sleep(Duration::from_millis(100)).await;
            false
        })
        .await;
        *self = Spare::open();
        shed
    }
}

/// Logs at most once per [`LOG_EVERY`].
#[derive(Default)]
struct Throttle(Option<Instant>);

impl Throttle {
    fn ready(&mut self) -> bool {
        if self.0.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return false;
        }
        self.0 = Some(Instant::now());
        true
    }
}

/// What an accepted socket holds until it ends: a viewer seat (released when the handshake
/// fails, or by `Shard::finish` once it joined) or one of the shard's refusal places.
struct Seat {
    shard: Rc<Shard>,
    viewer: bool,
    held: bool,
    /// The source address's place under the per-address limits (a viewer seat, while held).
    address: Option<IpAddr>,
    /// A refusal's answer other than "server is full" (per-address limits).
    answer: Option<Refusal>,
}

impl Seat {
    /// The seat now belongs to a joined viewer: `Shard::finish` releases it.
    fn hand_over(mut self) {
        self.held = false;
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        if self.viewer {
            self.shard.open_total.fetch_sub(1, Ordering::Relaxed);
            if let (Some(ip), Some(limits)) = (self.address, &self.shard.config.addresses) {
                limits.release(ip);
            }
        } else {
            self.shard.refusing.set(self.shard.refusing.get() - 1);
        }
    }
}

/// Accepts viewers on `listener`; with `tls`, each connection runs a TLS handshake (with the
/// certificate current at that moment) before its HTTP upgrade.
pub(crate) async fn accept_loop(
    shard: Rc<Shard>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
) {
    let (mut failed, mut full, mut dropped) = (
        Throttle::default(),
        Throttle::default(),
        Throttle::default(),
    );
    let mut spare = Spare::open();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shard.stop_accepting.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning, and say so now and then.
                if failed.ready() {
                    tracing::warn!(shard = shard.index, error = %e, "accept failed");
                }
                let out_of_fds = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                if out_of_fds && spare.shed(&listener).await {
                    ShardStats::add(&shard.stats.refused_unanswered, 1);
                    continue;
                }
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        ShardStats::add(&shard.stats.accepted, 1);
        // Per-address limits first: a refused address takes no viewer seat.
        let (mut address, answer) = match check_address(&shard, &stream) {
            Ok(address) => (address, None),
            Err(answer) => (None, Some(answer)),
        };
        let viewer = answer.is_none() && {
            let held = shard.open_total.fetch_add(1, Ordering::Relaxed);
            if held >= shard.config.max_connections {
                shard.open_total.fetch_sub(1, Ordering::Relaxed);
                if let (Some(ip), Some(limits)) = (address.take(), &shard.config.addresses) {
                    limits.release(ip);
                }
            }
            held < shard.config.max_connections
        };
        if !viewer {
            if shard.refusing.get() >= REFUSALS_PER_SHARD {
                ShardStats::add(&shard.stats.refused_unanswered, 1);
                if dropped.ready() {
                    tracing::warn!(
                        shard = shard.index,
                        "refused connections arrive faster than their answers go out; closing the excess unanswered"
                    );
                }
                drop(stream);
                continue;
            }
            shard.refusing.set(shard.refusing.get() + 1);
            if answer.is_none() && full.ready() {
                tracing::info!(
                    shard = shard.index,
                    max_connections = shard.config.max_connections,
                    "viewer connections at max_connections: answering 503"
                );
            }
        }
        let seat = Seat {
            shard: shard.clone(),
            viewer,
            held: true,
            address,
            answer,
        };
        let wire = match &tls {
            None => Wire::plain(),
            // Over the cap a TLS connection is closed before its handshake: a refusal should
            // cost little, and a full handshake to say 503 does not.
            Some(_) if !viewer => {
                ShardStats::add(&shard.stats.refused_unanswered, 1);
                continue;
            }
            Some(config) => match TlsSession::new(config.clone()) {
                Ok(session) => Wire::tls(session),
                Err(_) => continue,
            },
        };
        glommio::spawn_local(handshake(shard.clone(), stream, wire, seat)).detach();
    }
}

/// Why a handshake ended without a viewer.
enum Refusal {
    /// Answer with this HTTP response and close.
    Respond(Vec<u8>),
    /// The peer went away, or was too slow.
    Gone,
}

impl From<HandshakeError> for Refusal {
    fn from(err: HandshakeError) -> Refusal {
        Refusal::Respond(err.response())
    }
}

/// 401 with the reason the token was refused.
fn unauthorized(shard: &Shard, why: TokenError) -> Refusal {
    ShardStats::add(&shard.stats.handshake_unauthorized, 1);
    Refusal::Respond(http::response(
        401,
        "Unauthorized",
        &[("Connection", "close"), ("WWW-Authenticate", "Bearer")],
        "text/plain; charset=utf-8",
        format!("{why}\n").as_bytes(),
    ))
}

/// The viewer's identity from its token, when identity is configured.
fn identify(shard: &Shard, req: &http::UpgradeRequest) -> Result<Option<Box<Identity>>, Refusal> {
    let Some(verifier) = &shard.config.identity else {
        return Ok(None);
    };
    let query = http::parse_query(&req.query);
    match identity::presented(&query, req.protocols.as_deref()).0 {
        Some(token) => match verifier.verify(token) {
            Ok(id) => Ok(Some(Box::new(id))),
            Err(e) => Err(unauthorized(shard, e)),
        },
        None if verifier.anonymous_viewers => Ok(None),
        None => Err(unauthorized(shard, TokenError::Missing)),
    }
}

/// The per-address verdict on a new connection: `Ok(Some(ip))` holds a place for `ip` (given
/// back when the seat or the viewer ends), `Ok(None)` when no limit is on, `Err` the answer.
fn check_address(shard: &Shard, stream: &TcpStream) -> Result<Option<IpAddr>, Refusal> {
    let Some(limits) = shard.config.addresses.as_ref().filter(|l| l.active()) else {
        return Ok(None);
    };
    let Ok(peer) = stream.peer_addr() else {
        return Ok(None);
    };
    let ip = peer.ip();
    match limits.admit(ip, Instant::now()) {
        Admit::Yes => Ok(Some(ip)),
        Admit::Capped => {
            ShardStats::add(&shard.stats.refused_address_cap, 1);
            Err(Refusal::Respond(http::response(
                503,
                "Service Unavailable",
                &[("Connection", "close"), ("Retry-After", "10")],
                "text/plain; charset=utf-8",
                b"too many connections from your address\n",
            )))
        }
        Admit::Limited { retry_after_s } => {
            ShardStats::add(&shard.stats.refused_rate_limited, 1);
            let retry = retry_after_s.to_string();
            Err(Refusal::Respond(http::response(
                429,
                "Too Many Requests",
                &[("Connection", "close"), ("Retry-After", retry.as_str())],
                "text/plain; charset=utf-8",
                b"too many connection attempts from your address; slow down\n",
            )))
        }
    }
}

/// 503 with Retry-After: the server is full or shutting down.
fn unavailable(why: &str) -> Refusal {
    Refusal::Respond(http::response(
        503,
        "Service Unavailable",
        &[("Connection", "close"), ("Retry-After", "5")],
        "text/plain; charset=utf-8",
        format!("{why}\n").as_bytes(),
    ))
}

/// What the first request on a viewer-port connection asks for.
enum Incoming {
    /// A WebSocket upgrade, and the bytes after its head.
    Upgrade(Box<http::UpgradeRequest>, Vec<u8>),
    /// HLS (a request line whose target is under `/hls/`): every byte read so far.
    Media(Vec<u8>),
}

/// A first request that passed the checks: an upgrade with its identity, or HLS.
enum Accepted {
    Upgrade(
        Box<http::UpgradeRequest>,
        Vec<u8>,
        Option<Box<Identity>>,
        Option<SocketAddr>,
        OwnedFd,
    ),
    Media(Vec<u8>),
}

/// Reads the first request. From a trusted balancer (`proxied`, plain connections only), a
/// PROXY protocol header (v1 or v2) may come first: it is parsed and removed, and its source
/// address returned.
async fn read_request(
    max: usize,
    stream: &mut TcpStream,
    wire: &mut Wire,
    proxied: bool,
) -> Result<(Incoming, Option<SocketAddr>), Refusal> {
    let mut buf = vec![0u8; 1024.min(max + 1)];
    let mut len = 0;
    let mut expect_proxy = proxied && wire.is_plain();
    let mut source = None;
    loop {
        if len == buf.len() {
            if buf.len() > max {
                return Err(HandshakeError::HeadersTooLarge.into());
            }
            buf.resize((buf.len() * 2).min(max + 1), 0);
        }
        let n = wire
            .read(stream, &mut buf[len..])
            .await
            .map_err(|_| Refusal::Gone)?;
        if n == 0 {
            return Err(Refusal::Gone);
        }
        len += n;
        if expect_proxy {
            match proxy::parse(&buf[..len]) {
                Ok(None) => continue,
                Ok(Some((header, used))) => {
                    if let ProxyHeader::Source(a) = header {
                        source = Some(a);
                    }
                    buf.copy_within(used..len, 0);
                    len -= used;
                }
                Err(ProxyError::NotProxy) => {}
                Err(ProxyError::Malformed(_)) => {
                    return Err(
                        HandshakeError::BadRequest("malformed PROXY protocol header").into(),
                    )
                }
            }
            expect_proxy = false;
        }
        // HLS on the viewer port, plain or TLS: a page served over HTTPS plays its media from
        // the same `tls_listen` address as its control connection.
        // The viewer page (`/watch/{stream}`, `/web/*`) is answered by the same connection.
        if hls_window::is_media_request(&buf[..len]) || web::is_page_request(&buf[..len]) {
            buf.truncate(len);
            return Ok((Incoming::Media(buf), source));
        }
        match http::parse_upgrade(&buf[..len], max) {
            Ok(Some(req)) => {
                let rest = buf[req.header_len..len].to_vec();
                return Ok((Incoming::Upgrade(Box::new(req), rest), source));
            }
            Ok(None) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

async fn handshake(shard: Rc<Shard>, mut stream: TcpStream, mut wire: Wire, mut seat: Seat) {
    let mut answer = seat.answer.take();
    let peer: SocketAddr = match stream.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let timeout = if seat.viewer {
        shard.config.handshake_timeout
    } else {
        shard.config.handshake_timeout.min(REFUSAL_TIMEOUT)
    };
    let proxied = proxy::is_trusted(&shard.config.trusted_proxies, peer.ip());
    let outcome = future::or(
        async {
            let (incoming, source) = read_request(
                shard.config.max_header_bytes,
                &mut stream,
                &mut wire,
                proxied,
            )
            .await?;
            if let Incoming::Upgrade(req, _) = &incoming {
                if req.path != shard.config.path {
                    return Err(HandshakeError::NotFound.into());
                }
            }
            if shard.draining.get() {
                return Err(unavailable("server is shutting down"));
            }
            if !seat.viewer {
                return Err(answer
                    .take()
                    .unwrap_or_else(|| unavailable("server is full")));
            }
            match incoming {
                Incoming::Upgrade(req, rest) => {
                    let identity = identify(&shard, &req)?;
                    // The socket leaves glommio once upgraded: the shard's reactor serves it,
                    // with no runtime object per connection. glommio's stream cannot give its
                    // descriptor up, so the connection keeps a duplicate (taken before the
                    // 101, so a process out of descriptors answers 503 instead).
                    let socket = netstack::sys::dup_cloexec(stream.as_raw_fd())
                        .map_err(|_| unavailable("server is out of descriptors"))?;
                    Ok(Accepted::Upgrade(req, rest, identity, source, socket))
                }
                Incoming::Media(bytes) => Ok(Accepted::Media(bytes)),
            }
        },
        async {
            sleep(timeout).await;
            Err(Refusal::Gone)
        },
    )
    .await;
    let (req, mut rest, identity, source, socket) = match outcome {
        Ok(Accepted::Upgrade(req, rest, identity, source, socket)) => {
            (*req, rest, identity, source, socket)
        }
        Ok(Accepted::Media(bytes)) => {
            return hls::serve(shard, stream, wire, bytes, seat).await;
        }
        Err(Refusal::Gone) => {
            ShardStats::add(&shard.stats.handshake_aborted, 1);
            return;
        }
        Err(Refusal::Respond(response)) => {
            ShardStats::add(&shard.stats.handshake_rejected, 1);
            let _ = future::or(
                async {
                    let _ = wire.write_all(&mut stream, &response).await;
                    let _ = stream.close().await;
                },
                sleep(timeout),
            )
            .await;
            return;
        }
    };

    let viewer = shard.mint_viewer();
    let query = http::parse_query(&req.query);
    // Behind a trusted balancer, the client is the PROXY source or X-Forwarded-For's.
    let client = if proxied {
        let forwarded = req.forwarded_for.as_deref();
        proxy::client_address(peer, source, forwarded, &shard.config.trusted_proxies)
    } else {
        peer
    };
    let profile = Profile::from_handshake(
        viewer,
        client,
        req.user_agent.as_deref(),
        req.accept_language.as_deref(),
        &query,
        unix_ms(),
    );
    let mut profile = profile;
    profile.country = shard
        .config
        .geo
        .as_ref()
        .and_then(|g| g.country(client.ip()));
    if let Some(id) = &identity {
        profile.rare.set_sub(Some(id.sub.clone()));
        profile.rare.add_tags(id.tags.iter().cloned());
    }
    let resume = shard.resume_token(viewer);
    // A viewer presenting a resume token waits for the application core before its welcome.
    let claim: Option<Box<str>> = query
        .iter()
        .find(|(k, _)| k == "resume")
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .map(Into::into);
    let subprotocol = match shard.config.identity {
        Some(_) => identity::presented(&query, req.protocols.as_deref()).1,
        None => None,
    };
    let mut head = match subprotocol {
        Some(p) => http::switching_protocols_with(&req.key, p),
        None => http::switching_protocols(&req.key),
    };
    if claim.is_none() {
        let welcome = shard.welcome(viewer, &resume, false).to_json();
        ws::encode_frame(OpCode::Text, welcome.as_bytes(), &mut head);
    }
    let written = future::or(
        async { wire.write_all(&mut stream, &head).await.is_ok() },
        async {
            sleep(timeout).await;
            false
        },
    )
    .await;
    if !written {
        ShardStats::add(&shard.stats.handshake_aborted, 1);
        return;
    }

    let (tls, ahead) = wire.finish();
    rest.extend_from_slice(&ahead);
    drop(stream); // closes glommio's descriptor; the connection owns the duplicate
    let now = shard.now();
    let link = Link {
        socket,
        tls,
        identity,
    };
    let conn = shard.join(link, profile, resume, claim, now);
    seat.hand_over();
    if !rest.is_empty() {
        // Frames the client pipelined behind its upgrade request.
        let env = shard.env(now);
        conn.on_bytes(&env, &mut rest, &mut |c, message| {
            shard.on_message(c, message, now)
        });
    }
}
