//! RTMP ingest: the listener on `rtmp_listen` (and RTMPS on `rtmps_listen`, the same TLS
//! certificate as the other listeners) and one task per connection on the application
//! core's executor (publishers are few; the segmenter and the stream registry live there),
//! each driving a sans-IO [`media::rtmp::ServerSession`].
//!
//! Bounds: at most `rtmp_max_connections` connections (more are closed at accept), the
//! handshake within `rtmp_handshake_timeout_ms` of accept, then no silence longer than
//! `rtmp_idle_timeout_ms` (a silent publisher's stream ends). The publish name is the stream
//! key; a wrong key, a second publisher on a live stream or an unsupported codec is refused
//! (`NetStream.Publish.BadName` for the first two) and the connection closed. Any error a
//! peer causes closes that connection and nothing else.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::timer::sleep;
use media::rtmp::{Event, ServerSession, SessionConfig};
use netstack::tls::{ServerConfig, TlsSession};

use crate::api::tls::{TlsStream, Transport};
use crate::app::{unix_ms, App, PublishTurn};

/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// How often the input bitrate of a publisher is measured.
const BITRATE_EVERY: Duration = Duration::from_secs(1);

/// Ingest settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts RTMP connections (and RTMPS ones on `tls`'s listener) until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, Arc<ServerConfig>)>,
    app: Rc<RefCell<App>>,
    limits: IngestLimits,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let next = async { (listener.accept().await, None) };
        let (accepted, tls_config) = match &tls {
            None => next.await,
            Some((tls_listener, config)) => {
                future::or(next, async {
                    (tls_listener.accept().await, Some(config.clone()))
                })
                .await
            }
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "RTMP accept failed");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= limits.max_connections {
            app.borrow_mut().count_bad_rtmp();
            tracing::warn!(
                max = limits.max_connections,
                "RTMP connection refused: rtmp_max_connections reached"
            );
            drop(stream);
            continue;
        }
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let session = match tls_config.map(TlsSession::new) {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "RTMPS session could not start");
                continue;
            }
        };
        open.set(open.get() + 1);
        let (app, open) = (app.clone(), open.clone());
        glommio::spawn_local(async move {
            match session {
                None => connection(stream, peer, &app, limits).await,
                Some(session) => {
                    connection(TlsStream::new(stream, session), peer, &app, limits).await
                }
            }
            open.set(open.get() - 1);
        })
        .detach();
    }
}

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed, or the publish was refused (answered, then closed).
    Normal,
    /// A protocol error or a timeout (counted).
    Bad,
}

async fn connection<S: Transport>(
    mut stream: S,
    peer: SocketAddr,
    app: &RefCell<App>,
    limits: IngestLimits,
) {
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    let mut session = ServerSession::new(SessionConfig {
        epoch_ms: unix_ms() as u32,
        seed: u64::from_le_bytes(seed),
        ..SessionConfig::default()
    });
    let accepted = Instant::now();
    let mut turn: Option<PublishTurn> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut meter_at, mut meter_bytes) = (Instant::now(), 0u64);
    let end = loop {
        let limit = if session.is_handshaking() {
            match limits.handshake_timeout.checked_sub(accepted.elapsed()) {
                Some(left) => left,
                None => break End::Bad,
            }
        } else {
            limits.idle_timeout
        };
        let read = future::or(async { Some(stream.read(&mut buf).await) }, async {
            sleep(limit).await;
            None
        })
        .await;
        let n = match read {
            None => {
                tracing::info!(%peer, handshaking = session.is_handshaking(), "RTMP connection timed out");
                break End::Bad;
            }
            Some(Ok(0)) | Some(Err(_)) => break End::Normal,
            Some(Ok(n)) => n,
        };
        meter_bytes += n as u64;
        let result = session.handle_input(&buf[..n]);
        let refused = events(&mut session, &mut turn, peer, app);
        let out = session.take_output();
        if !out.is_empty() && !write_bounded(&mut stream, &out, limits.idle_timeout).await {
            break End::Normal;
        }
        if refused {
            break End::Normal;
        }
        if let Err(e) = result {
            tracing::info!(%peer, error = %e, "RTMP connection closed on a protocol error");
            break End::Bad;
        }
        if meter_at.elapsed() >= BITRATE_EVERY {
            if let Some(t) = &turn {
                let ms = meter_at.elapsed().as_millis().max(1) as u64;
                app.borrow_mut().publish_bitrate(t, meter_bytes * 8 / ms);
            }
            (meter_at, meter_bytes) = (Instant::now(), 0);
        }
    };
    if end == End::Bad {
        app.borrow_mut().count_bad_rtmp();
    }
    session.close();
    if let Some(t) = turn.take() {
        app.borrow_mut().end_publish(&t, unix_ms());
    }
    let _ = future::or(
        async { AsyncWriteExt::close(&mut stream).await.is_ok() },
        async {
            sleep(Duration::from_secs(1)).await;
            false
        },
    )
    .await;
}

/// Handles the session's events; true when the connection must close after its output is
/// written (a refused publish or codec).
fn events(
    session: &mut ServerSession,
    turn: &mut Option<PublishTurn>,
    peer: SocketAddr,
    app: &RefCell<App>,
) -> bool {
    while let Some(event) = session.poll_event() {
        match event {
            Event::PublishRequested { app: name, .. } if name != "live" => {
                tracing::info!(%peer, app = %name, "publish refused: the RTMP application is \"live\"");
                session.reject_publish("the application name is \"live\"");
                app.borrow_mut().count_bad_rtmp();
                return true;
            }
            Event::PublishRequested { name, .. } => {
                let begun = app.borrow_mut().begin_publish(&name, peer);
                match begun {
                    Ok(t) => {
                        session.accept_publish();
                        *turn = Some(t);
                    }
                    Err(e) => {
                        tracing::info!(%peer, reason = %e, "publish refused");
                        session.reject_publish(&e.to_string());
                        return true;
                    }
                }
            }
            Event::Media {
                kind,
                timestamp,
                data,
            } => {
                let Some(t) = turn.as_ref() else { continue };
                let pushed = app
                    .borrow_mut()
                    .publish_media(t, kind, timestamp, &data, unix_ms());
                if let Err(e) = pushed {
                    tracing::warn!(%peer, stream = %t.stream, codec = %e, "publisher refused: unsupported codec");
                    return true;
                }
            }
            Event::Unpublished { .. } => {
                if let Some(t) = turn.take() {
                    app.borrow_mut().end_publish(&t, unix_ms());
                }
            }
            Event::Connected { .. } | Event::Metadata { .. } => {}
        }
    }
    false
}

async fn write_bounded<S: Transport>(stream: &mut S, bytes: &[u8], limit: Duration) -> bool {
    future::or(async { stream.write_all(bytes).await.is_ok() }, async {
        sleep(limit).await;
        false
    })
    .await
}
