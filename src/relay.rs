//! The relay task: one glommio task on the application core's executor per stream relayed
//! from another edge (its origin). It pulls the origin's window over HTTP from the origin's
//! API (`GET /api/relay/{stream}/index.m3u8`, then each segment it does not have yet, once
//! per edge), checks what it got, and hands every segment to the core with the origin's
//! sequence number, duration, wall time and discontinuity, so this edge's playlists agree
//! with the origin's. One keep-alive connection per relay; every exchange is bounded in time
//! and size and never blocks the core.
//!
//! Faults: a failed pull is retried with a doubling backoff (bounded); the relay ends (the
//! audience gets `ended`) when the origin's playlist ends, when pulls keep failing, or at
//! the first failure once the bus said the origin ended the stream or went silent. A
//! malformed playlist or segment is a failed pull, logged once per relay, never a panic.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::sleep;
use media::playlist::MediaPlaylist;
use media::segmenter::Segment;
use netstack::http::client::{self, ClientResponse, ResponseError};

use crate::app::{unix_ms, App, Relay};

/// The longest one request (connect, send, read the whole answer) may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest playlist accepted.
const MAX_PLAYLIST_BYTES: usize = 256 * 1024;
/// Largest segment accepted: the segmenter's own cut (`max_segment_bytes`).
const MAX_SEGMENT_BYTES: usize = 64 * 1024 * 1024;
/// Consecutive failed pulls before the relay gives up.
const MAX_FAILURES: u32 = 8;
/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// MPEG-TS packets.
const TS_PACKET: usize = 188;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("connecting or talking to the origin: {0}")]
    Io(#[from] std::io::Error),
    #[error("no complete answer within {EXCHANGE_TIMEOUT:?}")]
    Timeout,
    #[error(transparent)]
    Response(#[from] ResponseError),
    #[error("the origin answered {0}")]
    Status(u16),
    #[error("malformed playlist: {0}")]
    Playlist(String),
    #[error("segment {0}: {1}")]
    Segment(u64, &'static str),
}

/// Runs every relay the core queues, until the task is dropped. `token` is presented to the
/// origins' APIs (the edges of a cluster share an API token with at least the read scope).
pub async fn serve(app: Rc<RefCell<App>>, token: Rc<str>) {
    let queued = app.borrow().relay_queued();
    loop {
        queued.wait().await;
        let started = app.borrow_mut().take_relays();
        for relay in started {
            let (app, token) = (app.clone(), token.clone());
            glommio::spawn_local(async move { run(&app, token, relay).await }).detach();
        }
    }
}

/// What one pull found.
enum Pulled {
    /// The origin's playlist is live; poll again after this long.
    Live(Duration),
    /// It ended, and this edge has its last segment.
    Ended,
}

async fn run(app: &RefCell<App>, token: Rc<str>, relay: Relay) {
    let stream = relay.turn.stream.clone();
    let mut origin = Origin {
        addr: relay.origin,
        token,
        conn: None,
    };
    let mut after = relay.after;
    let (mut failures, mut logged) = (0u32, false);
    loop {
        if !app.borrow().relay_holds(&relay.turn) {
            return;
        }
        match pull(app, &mut origin, &relay, &mut after).await {
            Ok(Pulled::Live(wait)) => {
                failures = 0;
                sleep(wait).await;
            }
            Ok(Pulled::Ended) => {
                tracing::info!(stream, "relay: the origin ended the stream");
                return app.borrow_mut().end_relay(&relay, false, unix_ms());
            }
            // The origin has no segment yet (it just went live): not a failure.
            Err(PullError::Status(503)) if !app.borrow().relay_origin_ended(&stream) => {
                sleep(FIRST_BACKOFF).await;
            }
            Err(e) => {
                failures += 1;
                app.borrow_mut().relay_counted(0, 1, 0);
                if !logged {
                    logged = true;
                    tracing::warn!(stream, origin = %relay.origin, error = %e, "relay: pull failed (logged once per relay)");
                }
                if failures >= MAX_FAILURES || app.borrow().relay_origin_ended(&stream) {
                    tracing::warn!(stream, origin = %relay.origin, failures, "relay: giving up on the origin; the stream ends here");
                    return app.borrow_mut().end_relay(&relay, true, unix_ms());
                }
                sleep(backoff(failures)).await;
            }
        }
    }
}

/// The wait before retry number `failures` (from 1).
fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// One round: the playlist, then every segment newer than `after`, released in order.
async fn pull(
    app: &RefCell<App>,
    origin: &mut Origin,
    relay: &Relay,
    after: &mut Option<u64>,
) -> Result<Pulled, PullError> {
    let stream = &relay.turn.stream;
    let path = format!("/api/relay/{stream}/index.m3u8");
    let answer = origin.get(&path, MAX_PLAYLIST_BYTES).await?;
    if answer.status != 200 {
        return Err(PullError::Status(answer.status));
    }
    app.borrow_mut().relay_counted(1, 0, 0);
    let text =
        std::str::from_utf8(&answer.body).map_err(|_| PullError::Playlist("not UTF-8".into()))?;
    let playlist =
        media::playlist_parse::parse(text).map_err(|e| PullError::Playlist(e.to_string()))?;
    let sequences = sequences(&playlist)?;
    // The origin numbers below what this edge has: it started over (restarted); take its
    // window as new.
    if let (Some(last), Some(seen)) = (sequences.last(), *after) {
        if *last < seen {
            *after = None;
        }
    }
    let mut gap = false;
    for (entry, &seq) in playlist.entries.iter().zip(&sequences) {
        if after.is_some_and(|a| seq <= a) {
            continue;
        }
        // Segments that left the origin's window before this edge saw them (a long stall, a
        // relay started again after the origin was unreachable): counted, and the next one
        // is marked discontinuous.
        if let Some(skipped) = after
            .and_then(|a| seq.checked_sub(a + 1))
            .filter(|n| *n > 0)
        {
            app.borrow_mut().relay_counted(0, 0, skipped);
            gap = true;
        }
        let path = format!("/api/relay/{stream}/{seq}.ts");
        let answer = origin.get(&path, MAX_SEGMENT_BYTES).await?;
        if answer.status == 404 {
            // It left the origin's window since the playlist was read: skipped like those
            // above (counted when the next one is released).
            continue;
        }
        if answer.status != 200 {
            return Err(PullError::Status(answer.status));
        }
        check_segment(seq, &answer.body)?;
        let segment = Segment {
            sequence: seq,
            duration_ms: entry.duration_ms.max(1),
            start_wall_ms: entry.program_date_time_ms.unwrap_or_else(unix_ms),
            discontinuity: entry.discontinuity || std::mem::take(&mut gap),
            starts_with_keyframe: true,
            data: answer.body.into(),
        };
        if !app
            .borrow_mut()
            .relay_segment(&relay.turn, segment, unix_ms())
        {
            // The relay no longer holds the stream; `run` sees it and stops.
            return Ok(Pulled::Live(Duration::ZERO));
        }
        *after = Some(seq);
    }
    if playlist.ended {
        return Ok(Pulled::Ended);
    }
    // A quarter of the target duration: a new segment is seen soon after it is cut.
    let ms = (playlist.target_duration.saturating_mul(1000) / 4).clamp(100, 1000);
    Ok(Pulled::Live(Duration::from_millis(ms)))
}

/// The sequence number of each entry: the media sequence plus its index, each URI naming
/// its own (`{seq}.ts`), as the origin route writes them.
fn sequences(p: &MediaPlaylist) -> Result<Vec<u64>, PullError> {
    p.entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let seq = p
                .media_sequence
                .checked_add(i as u64)
                .ok_or_else(|| PullError::Playlist("sequence numbers overflow".into()))?;
            if e.uri != format!("{seq}.ts") {
                return Err(PullError::Playlist(format!(
                    "entry {i} is {:?}, not {seq}.ts",
                    e.uri
                )));
            }
            Ok(seq)
        })
        .collect()
}

/// A segment is whole MPEG-TS packets, each starting with the sync byte.
fn check_segment(seq: u64, data: &[u8]) -> Result<(), PullError> {
    if data.is_empty() {
        return Err(PullError::Segment(seq, "empty"));
    }
    if data.len() % TS_PACKET != 0 {
        return Err(PullError::Segment(seq, "not whole 188-byte packets"));
    }
    if data.chunks(TS_PACKET).any(|p| p[0] != 0x47) {
        return Err(PullError::Segment(seq, "a packet without the sync byte"));
    }
    Ok(())
}

/// One relay's keep-alive connection to its origin's API (made again when the origin
/// closes it or an exchange fails).
struct Origin {
    addr: SocketAddr,
    token: Rc<str>,
    conn: Option<TcpStream>,
}

impl Origin {
    /// `GET path` with the bearer token: the whole answer, within [`EXCHANGE_TIMEOUT`] and
    /// `max_body` bytes. A kept connection the origin closed meanwhile is made again once.
    async fn get(&mut self, path: &str, max_body: usize) -> Result<ClientResponse, PullError> {
        let reused = self.conn.is_some();
        match self.exchange(path, max_body).await {
            Err(PullError::Io(_)) | Err(PullError::Response(ResponseError::Truncated(_)))
                if reused =>
            {
                self.exchange(path, max_body).await
            }
            other => other,
        }
    }

    async fn exchange(&mut self, path: &str, max_body: usize) -> Result<ClientResponse, PullError> {
        let (addr, token) = (self.addr, self.token.clone());
        let mut tcp = match self.conn.take() {
            Some(tcp) => tcp,
            None => {
                let tcp = future::or(
                    async { TcpStream::connect(addr).await.map_err(std::io::Error::from) },
                    async {
                        sleep(EXCHANGE_TIMEOUT).await;
                        Err(std::io::ErrorKind::TimedOut.into())
                    },
                )
                .await?;
                let _ = tcp.set_nodelay(true);
                tracing::debug!(origin = %addr, "relay: connected to the origin");
                tcp
            }
        };
        let exchange = async {
            let agent = concat!("ovation-relay/", env!("CARGO_PKG_VERSION"));
            let request = client::get_request(&addr.to_string(), path, &token, agent, true);
            tcp.write_all(&request).await?;
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = tcp.read(&mut chunk).await?;
                buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = client::parse_response(&buf, n == 0, max_body)? {
                    // One request in flight: bytes past the answer are a broken peer.
                    return Ok((answer, n == 0));
                }
            }
        };
        let answer = future::or(exchange, async {
            sleep(EXCHANGE_TIMEOUT).await;
            Err(PullError::Timeout)
        })
        .await;
        // Kept only after a complete answer the origin did not close (a failed exchange
        // drops the connection: its state is unknown).
        match answer {
            Ok((answer, eof)) => {
                if !answer.close && !eof {
                    self.conn = Some(tcp);
                }
                Ok(answer)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(3200));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn playlists_must_name_their_own_sequence_numbers() {
        let ok = media::playlist_parse::parse(
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:1,\n5.ts\n#EXTINF:1,\n6.ts\n",
        )
        .unwrap();
        assert_eq!(sequences(&ok).unwrap(), vec![5, 6]);
        for bad in [
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:5\n#EXTINF:1,\n6.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n../x/0.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nhttp://elsewhere/0.ts\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n#EXTINF:1,\n18446744073709551615.ts\n#EXTINF:1,\n0.ts\n",
        ] {
            let p = media::playlist_parse::parse(bad).unwrap();
            assert!(matches!(sequences(&p), Err(PullError::Playlist(_))), "{bad}");
        }
    }

    #[test]
    fn segments_must_be_whole_ts_packets() {
        assert!(check_segment(0, &[0x47; 376]).is_ok());
        assert!(check_segment(0, &[]).is_err());
        assert!(check_segment(0, &[0x47; 200]).is_err());
        let mut bad = vec![0x47; 376];
        bad[188] = 0;
        assert!(check_segment(0, &bad).is_err());
    }
}
