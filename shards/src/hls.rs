//! One HLS connection on the viewer port: HTTP/1.1 keep-alive on netstack's request parser,
//! answered from the shard's windows (`hls_window`), or for recordings from their files
//! (`hls_files`), or for the viewer page and its assets from the `web` crate. Pipelined
//! requests are answered in order; a segment is written from its shared buffer or file. A
//! plain connection waits for its next request on the shard's reactor ([`Watched`]), a TLS
//! one reads through its session on glommio. The connection holds a seat of
//! `max_connections` (the guard it is given) until it ends, and closes after
//! `hls_idle_timeout` without a request, after a request error, or when the client asks.

use std::cell::Cell;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use futures_lite::{future, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use netstack::http::server::{Limits, RequestParser, Step};

use crate::hls_window::Body;
use crate::reactor::TaskWatch;
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::tls::Wire;

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// Serves `stream`, whose first bytes (`buf`) were read by the handshake, until it ends.
/// `seat` is dropped (releasing the connection's place) when it does.
///
/// `wire` is the connection's TLS state, if it came in on the TLS listener: requests are read
/// and answers written through it (a TLS viewer page plays its media over the same port);
/// plain connections write segment bodies straight from the shared buffer (zero-copy when on).
pub(crate) async fn serve<G>(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    mut wire: Wire,
    mut buf: Vec<u8>,
    seat: G,
) {
    let _seat = seat;
    // Every write is a whole response (or its last part): Nagle would hold a response's
    // sub-MSS tail until the client ACKs the bytes before it, up to a delayed ACK (40 ms).
    // One setsockopt per HLS connection, not per request (nginx's `tcp_nodelay on`).
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY refused on an HLS connection");
    }
    let limits = Limits {
        max_head: shard.config.max_header_bytes,
        max_body: 0,
        ..Limits::default()
    };
    // Plain connections that may send files with `sendfile`: O_NONBLOCK set once, here.
    let file_sends = wire.is_plain() && shard.sender.file_socket(&stream);
    let mut parser = RequestParser::new(limits);
    let idle = shard.config.hls_idle_timeout;
    let mut chunk = vec![0u8; READ_CHUNK];
    // Plain connections wait for their next request on the shard's reactor (TLS ones read
    // through their session, on glommio).
    let watched = if wire.is_plain() {
        Watched::new(&shard, stream.as_raw_fd())
    } else {
        None
    };
    loop {
        // Answer every request already buffered, then read.
        loop {
            let (step, used) = match parser.next(&buf) {
                Ok(v) => v,
                Err(e) => {
                    let status = e.status();
                    let mut out = Vec::new();
                    netstack::http::write_response(
                        &mut out,
                        status,
                        false,
                        &[("Access-Control-Allow-Origin", "*")],
                        "text/plain; charset=utf-8",
                        format!("{e}\n").as_bytes(),
                    );
                    let _ = write(&mut stream, &mut wire, &out, &[], idle).await;
                    return;
                }
            };
            buf.drain(..used);
            match step {
                Step::Partial => break,
                Step::Continue => {
                    if !write(&mut stream, &mut wire, netstack::http::CONTINUE, &[], idle).await {
                        return;
                    }
                }
                Step::Request(req) => {
                    let keep_alive = req.keep_alive && !shard.draining.get();
                    let site = web::Site::Viewer {
                        viewer_path: &shard.config.path,
                    };
                    let ask = web::Ask {
                        keep_alive,
                        ..web::Ask::of(&req)
                    };
                    if let Some(page) = web::answer(site, ask) {
                        if !write(&mut stream, &mut wire, &page, &[], idle).await || !keep_alive {
                            let _ = stream.close().await;
                            return;
                        }
                        continue;
                    }
                    ShardStats::add(&shard.stats.hls_requests, 1);
                    let recorded = shard
                        .config
                        .recordings_dir
                        .as_deref()
                        .and_then(|root| Some((root, crate::hls_files::locate(&req.path)?)));
                    if let Some((root, located)) = recorded {
                        use crate::hls_files::{answer, Ask, Body, FileKind};
                        let segment = located.is_some_and(|l| l.kind == FileKind::Segment);
                        let ask = Ask {
                            method: &req.method,
                            keep_alive,
                            // Plain connections send a segment from its file (`sendfile`).
                            open_segments: file_sends && shard.sender.file_sends(),
                            now: shard.now(),
                        };
                        let (head, body) =
                            answer(&shard.files, &shard.stats, root, located, ask).await;
                        let ok = match body {
                            Body::Bytes(body) => {
                                let ok = write(&mut stream, &mut wire, &head, &body, idle).await;
                                if ok && segment {
                                    ShardStats::add(
                                        &shard.stats.hls_bytes_plain,
                                        body.len() as u64,
                                    );
                                }
                                ok
                            }
                            Body::Shared(body) => {
                                write(&mut stream, &mut wire, &head, &body, idle).await
                            }
                            Body::File(file) => {
                                // An empty file: no body follows to push a corked head.
                                let ok = if file.len == 0 {
                                    write(&mut stream, &mut wire, &head, &[], idle).await
                                } else {
                                    crate::sender::write_head(&mut stream, &head, idle).await
                                        && shard.sender.write_file(&mut stream, &file, idle).await
                                };
                                drop(file);
                                ok
                            }
                        };
                        if !ok || !keep_alive {
                            let _ = stream.close().await;
                            return;
                        }
                        continue;
                    }
                    let now_s = crate::clock::unix_ms() / 1000;
                    let answer = {
                        let mut hls = shard.hls.borrow_mut();
                        let answer =
                            hls.answer(&req.method, &req.path, &req.query, keep_alive, now_s);
                        if hls.sessions.has_deltas() {
                            shard.session_fetched();
                        }
                        answer
                    };
                    // A playlist or message goes out with its head in one write; a segment
                    // is sent from its shared buffer after the head (zero-copy when on).
                    let (head, body, file) = match answer.body {
                        Body::Segment(data, file) => (answer.head, Some(data), file),
                        Body::Text(text) => {
                            let mut head = answer.head;
                            head.extend_from_slice(&text);
                            (head, None, None)
                        }
                        Body::Empty => (answer.head, None, None),
                    };
                    let ok = match (&body, wire.is_plain()) {
                        // Plain: from the segment's read-only file with `sendfile` where it has
                        // one, else the head leaves with the body from the shared buffer.
                        (Some(body), true) => {
                            let sender = &shard.sender;
                            match file {
                                Some(file) if file_sends && sender.file_sends() => {
                                    sender
                                        .write_segment_file(&mut stream, &head, body, &file, idle)
                                        .await
                                }
                                _ => sender.write_segment(&mut stream, &head, body, idle).await,
                            }
                        }
                        (None, _) => write(&mut stream, &mut wire, &head, &[], idle).await,
                        // Each TLS connection encrypts the shared bytes: no zero-copy here.
                        (Some(body), false) => {
                            write(&mut stream, &mut wire, &head, body, idle).await
                        }
                    };
                    if !ok || !keep_alive {
                        let _ = stream.close().await;
                        return;
                    }
                }
            }
        }
        let read = match &watched {
            Some(watched) => watched.read(&mut chunk).await,
            None => {
                future::or(
                    async { wire.read(&mut stream, &mut chunk).await.ok() },
                    async {
                        sleep(idle).await;
                        None
                    },
                )
                .await
            }
        };
        match read {
            Some(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// Writes a head and a body through the connection's wire (plain: straight from the
/// buffers), bounded by `limit`.
async fn write(
    stream: &mut TcpStream,
    wire: &mut Wire,
    head: &[u8],
    body: &[u8],
    limit: std::time::Duration,
) -> bool {
    future::or(
        async {
            wire.write_all(stream, head).await.is_ok()
                && (body.is_empty() || wire.write_all(stream, body).await.is_ok())
        },
        async {
            sleep(limit).await;
            false
        },
    )
    .await
}

/// A plain connection's socket watched by the shard's reactor: the next request is read with
/// a direct `recv` after the reactor reports input, so a keep-alive request costs no glommio
/// poll and no timer; the shard's sweeper ends the wait after `hls_idle_timeout` without a
/// request (`Reactor::expire`). Dropped (the watch given back) before the socket closes.
struct Watched {
    shard: Rc<Shard>,
    watch: Option<TaskWatch>,
    fd: RawFd,
    /// The last `recv` emptied the socket.
    drained: Cell<bool>,
}

impl Watched {
    /// `None` when the reactor cannot take the socket (the connection then reads on glommio).
    fn new(shard: &Rc<Shard>, fd: RawFd) -> Option<Watched> {
        match shard.reactor.register(fd, shard.now()) {
            Ok(watch) => Some(Watched {
                shard: shard.clone(),
                watch: Some(watch),
                fd,
                drained: Cell::new(false),
            }),
            Err(e) => {
                tracing::debug!(error = %e, "HLS connection not watched by the reactor");
                None
            }
        }
    }

    /// Reads the next bytes: `None` at the end of the stream, on an error, or once the
    /// connection was idle past the limit.
    async fn read(&self, buf: &mut [u8]) -> Option<usize> {
        let watch = self.watch.as_ref()?;
        let reactor = &self.shard.reactor;
        // The idle time runs from here: the previous answer has gone out.
        reactor.touch(watch, self.shard.now());
        // The last read drained the socket: anything newer raises the watch, so wait for it
        // first instead of a `recv` that would find nothing (a player asks again only after
        // its answer arrived).
        if self.drained.get() {
            reactor.readable(watch).await.ok()?;
        }
        loop {
            match netstack::sys::recv_nonblocking(self.fd, buf) {
                Ok(0) => return None,
                Ok(n) => {
                    // A full buffer may have left bytes behind, which no new event reports.
                    self.drained.set(n < buf.len());
                    return Some(n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    reactor.readable(watch).await.ok()?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(watch) = self.watch.take() {
            self.shard.reactor.deregister(watch);
        }
    }
}
