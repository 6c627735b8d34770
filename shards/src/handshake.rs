//! The HTTP side of a new viewer-port connection, shared by the accept loop's inline path
//! (`crate::accept`: a plain upgrade whose request is already there is answered without a
//! task) and the handshake task that serves everything else (a request that has not fully
//! arrived, TLS, HLS and the viewer page, refusals): the seat a connection holds, reading and
//! checking the first request, the 101 and welcome, and the join.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use netstack::http::{self, HandshakeError};
use netstack::tls::TlsSession;
use netstack::ws::{self, OpCode};

use crate::clock::unix_ms;
use crate::conn::Link;
use crate::hls;
use crate::hls_window;
use crate::identity::{self, Identity, TokenError};
use crate::profile::Profile;
use crate::proxy::{self, ProxyError, ProxyHeader};
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::tls::Wire;

/// Longest a refused socket may take to send its request and read the 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What an accepted socket holds until it ends: a viewer seat (released when the handshake
/// fails, or by `Shard::finish` once it joined) or one of the shard's refusal places.
pub(crate) struct Seat {
    pub shard: Rc<Shard>,
    pub viewer: bool,
    pub held: bool,
    /// The source address's place under the per-address limits (a viewer seat, while held).
    pub address: Option<IpAddr>,
    /// A refusal's answer other than "server is full" (per-address limits).
    pub answer: Option<Refusal>,
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

/// Why a handshake ended without a viewer.
pub(crate) enum Refusal {
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

/// 503 with Retry-After: the server is full or shutting down.
pub(crate) fn unavailable(why: &str) -> Refusal {
    Refusal::Respond(http::response(
        503,
        "Service Unavailable",
        &[("Connection", "close"), ("Retry-After", "5")],
        "text/plain; charset=utf-8",
        format!("{why}\n").as_bytes(),
    ))
}

/// What the first request on a viewer-port connection asks for.
pub(crate) enum Incoming {
    /// A WebSocket upgrade, and the bytes after its head.
    Upgrade(Box<http::UpgradeRequest>, Vec<u8>),
    /// HLS (a request line whose target is under `/hls/`): every byte read so far.
    Media(Vec<u8>),
}

/// A first request that passed the checks: an upgrade (with the bytes after its head, its
/// identity and its PROXY source), or HLS and the viewer page.
pub(crate) enum Checked {
    Upgrade(
        Box<http::UpgradeRequest>,
        Vec<u8>,
        Option<Box<Identity>>,
        Option<SocketAddr>,
    ),
    Media(Vec<u8>),
}

/// The first request's bytes as they arrive, read by whichever path has the socket. From a
/// trusted balancer (`proxied`, plain connections only), a PROXY protocol header (v1 or v2)
/// may come first: it is parsed and removed, and its source address kept.
pub(crate) struct Request {
    buf: Vec<u8>,
    len: usize,
    max: usize,
    expect_proxy: bool,
    source: Option<SocketAddr>,
}

impl Request {
    pub fn new(max: usize, proxied: bool) -> Request {
        Request {
            buf: vec![0u8; 1024.min(max + 1)],
            len: 0,
            max,
            expect_proxy: proxied,
            source: None,
        }
    }

    /// Room for the next read (grown when full, up to the header limit).
    pub fn space(&mut self) -> Result<&mut [u8], Refusal> {
        if self.len == self.buf.len() {
            if self.buf.len() > self.max {
                return Err(HandshakeError::HeadersTooLarge.into());
            }
            self.buf.resize((self.buf.len() * 2).min(self.max + 1), 0);
        }
        Ok(&mut self.buf[self.len..])
    }

    /// Takes `n` bytes just read into [`Request::space`]: the request and the PROXY source
    /// once the request is complete, `None` while more must be read.
    pub fn advance(&mut self, n: usize) -> Result<Option<(Incoming, Option<SocketAddr>)>, Refusal> {
        self.len += n;
        if self.expect_proxy {
            match proxy::parse(&self.buf[..self.len]) {
                Ok(None) => return Ok(None),
                Ok(Some((header, used))) => {
                    if let ProxyHeader::Source(a) = header {
                        self.source = Some(a);
                    }
                    self.buf.copy_within(used..self.len, 0);
                    self.len -= used;
                }
                Err(ProxyError::NotProxy) => {}
                Err(ProxyError::Malformed(_)) => {
                    return Err(
                        HandshakeError::BadRequest("malformed PROXY protocol header").into(),
                    )
                }
            }
            self.expect_proxy = false;
        }
        let head = &self.buf[..self.len];
        // HLS on the viewer port, plain or TLS: a page served over HTTPS plays its media from
        // the same `tls_listen` address as its control connection.
        // The viewer page (`/watch/{stream}`, `/web/*`) is answered by the same connection.
        if hls_window::is_media_request(head) || web::is_page_request(head) {
            let mut buf = std::mem::take(&mut self.buf);
            buf.truncate(self.len);
            return Ok(Some((Incoming::Media(buf), self.source)));
        }
        match http::parse_upgrade(head, self.max) {
            Ok(Some(req)) => {
                let rest = self.buf[req.header_len..self.len].to_vec();
                Ok(Some((Incoming::Upgrade(Box::new(req), rest), self.source)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads the rest of the first request through glommio.
async fn read_request(
    mut request: Request,
    stream: &mut TcpStream,
    wire: &mut Wire,
) -> Result<(Incoming, Option<SocketAddr>), Refusal> {
    loop {
        let n = wire
            .read(stream, request.space()?)
            .await
            .map_err(|_| Refusal::Gone)?;
        if n == 0 {
            return Err(Refusal::Gone);
        }
        if let Some(done) = request.advance(n)? {
            return Ok(done);
        }
    }
}

/// The checks on a complete first request: the path, draining, the seat (a connection
/// without one gets its refusal now that its request is read), the identity token.
pub(crate) fn check(
    shard: &Shard,
    seat: &mut Seat,
    incoming: Incoming,
    source: Option<SocketAddr>,
) -> Result<Checked, Refusal> {
    if let Incoming::Upgrade(req, _) = &incoming {
        if req.path != shard.config.path {
            return Err(HandshakeError::NotFound.into());
        }
    }
    if shard.draining.get() {
        return Err(unavailable("server is shutting down"));
    }
    if !seat.viewer {
        return Err(seat
            .answer
            .take()
            .unwrap_or_else(|| unavailable("server is full")));
    }
    match incoming {
        Incoming::Upgrade(req, rest) => {
            let identity = identify(shard, &req)?;
            Ok(Checked::Upgrade(req, rest, identity, source))
        }
        Incoming::Media(bytes) => Ok(Checked::Media(bytes)),
    }
}

/// How the handshake task starts: reading the first request, or with it already read and
/// checked by the accept loop.
pub(crate) enum Start {
    Read(Request),
    Checked(Result<Checked, Refusal>),
}

/// A checked upgrade ready to answer: the 101 (and the welcome, unless the viewer waits for
/// a resume decision) and what the join needs.
pub(crate) struct Upgrade {
    pub head: Vec<u8>,
    profile: Profile,
    resume: Box<str>,
    claim: Option<Box<str>>,
    identity: Option<Box<Identity>>,
}

/// Mints the viewer, builds its profile and its answer.
pub(crate) fn prepare(
    shard: &Shard,
    req: &http::UpgradeRequest,
    identity: Option<Box<Identity>>,
    peer: SocketAddr,
    source: Option<SocketAddr>,
) -> Upgrade {
    let viewer = shard.mint_viewer();
    let query = http::parse_query(&req.query);
    // Behind a trusted balancer, the client is the PROXY source or X-Forwarded-For's.
    let client = if proxy::is_trusted(&shard.config.trusted_proxies, peer.ip()) {
        let forwarded = req.forwarded_for.as_deref();
        proxy::client_address(peer, source, forwarded, &shard.config.trusted_proxies)
    } else {
        peer
    };
    let mut profile = Profile::from_handshake(
        viewer,
        client,
        req.user_agent.as_deref(),
        req.accept_language.as_deref(),
        &query,
        unix_ms(),
    );
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
    Upgrade {
        head,
        profile,
        resume,
        claim,
        identity,
    }
}

/// The answered viewer joins the shard (its reactor serves `socket` from now on), with the
/// frames it pipelined behind its request.
pub(crate) fn join(
    shard: &Shard,
    upgrade: Upgrade,
    socket: OwnedFd,
    tls: Option<Box<TlsSession>>,
    mut rest: Vec<u8>,
    seat: Seat,
) {
    let now = shard.now();
    let link = Link {
        socket,
        tls,
        identity: upgrade.identity,
    };
    let conn = shard.join(link, upgrade.profile, upgrade.resume, upgrade.claim, now);
    seat.hand_over();
    if !rest.is_empty() {
        let env = shard.env(now);
        conn.on_bytes(&env, &mut rest, &mut |c, message| {
            shard.on_message(c, message, now)
        });
    }
}

/// The handshake of a connection the accept loop could not answer at once, through glommio
/// and bounded by the handshake timeout.
pub(crate) async fn handshake(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    mut wire: Wire,
    mut seat: Seat,
    peer: SocketAddr,
    start: Start,
) {
    let timeout = if seat.viewer {
        shard.config.handshake_timeout
    } else {
        shard.config.handshake_timeout.min(REFUSAL_TIMEOUT)
    };
    let outcome = match start {
        Start::Checked(checked) => checked,
        Start::Read(request) => {
            future::or(
                async {
                    let (incoming, source) = read_request(request, &mut stream, &mut wire).await?;
                    check(&shard, &mut seat, incoming, source)
                },
                async {
                    sleep(timeout).await;
                    Err(Refusal::Gone)
                },
            )
            .await
        }
    };
    // The socket leaves glommio once upgraded: the shard's reactor serves it, with no
    // runtime object per connection. glommio's stream cannot give its descriptor up, so the
    // connection keeps a duplicate (taken before the 101, so a process out of descriptors
    // answers 503 instead).
    let outcome = match outcome {
        Ok(Checked::Media(bytes)) => {
            return hls::serve(shard, stream, wire, bytes, seat).await;
        }
        Ok(Checked::Upgrade(req, rest, identity, source)) => {
            match netstack::sys::dup_cloexec(stream.as_raw_fd()) {
                Ok(socket) => Ok((req, rest, identity, source, socket)),
                Err(_) => Err(unavailable("server is out of descriptors")),
            }
        }
        Err(refusal) => Err(refusal),
    };
    let (req, mut rest, identity, source, socket) = match outcome {
        Ok(accepted) => accepted,
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
    let upgrade = prepare(&shard, &req, identity, peer, source);
    let written = future::or(
        async { wire.write_all(&mut stream, &upgrade.head).await.is_ok() },
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
    join(&shard, upgrade, socket, tls, rest, seat);
}
