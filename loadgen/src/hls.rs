//! HLS player mode: N simulated players of one live playlist. Each player holds one
//! keep-alive HTTP/1.1 connection (as a real player does), reloads the playlist at the pace
//! RFC 8216 section 6.3.4 gives a client (the target duration after a change, half of it
//! when nothing new appeared), and fetches every segment new since its last reload; the
//! first load starts three segments from the live edge, as players do. Each segment fetch
//! (request written to last body byte read) is timed into an hdrhistogram.
//!
//! Pure parts (URL split, playlist parse, response framing) are tested in memory; the
//! players run on tokio, one task each, and stop by themselves at the deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `loadgen hls`: the command line.
#[derive(Clone, Debug, Args)]
pub struct HlsArgs {
    /// The live playlist (http:// on a loopback address).
    #[arg(long)]
    pub url: String,
    /// Players.
    #[arg(long, default_value_t = 100)]
    pub players: usize,
    /// Seconds to play.
    #[arg(long, default_value_t = 20)]
    pub secs: u64,
    /// Players started per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// A playlist as a player reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    pub target_secs: u64,
    pub media_sequence: u64,
    /// Segment URIs, oldest first.
    pub uris: Vec<String>,
    pub ended: bool,
}

/// Parses the tags a player needs; `None` for text that is not a media playlist.
pub fn parse_playlist(text: &str) -> Option<Playlist> {
    if !text.starts_with("#EXTM3U") {
        return None;
    }
    let mut p = Playlist {
        target_secs: 2,
        media_sequence: 0,
        uris: Vec::new(),
        ended: false,
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_secs = v.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = v.parse().ok()?;
        } else if line == "#EXT-X-ENDLIST" {
            p.ended = true;
        } else if !line.is_empty() && !line.starts_with('#') {
            p.uris.push(line.to_owned());
        }
    }
    Some(p)
}

/// `http://HOST:PORT/path?query` -> (address, path?query).
pub fn split_url(url: &str) -> Option<(SocketAddr, String)> {
    let rest = url.strip_prefix("http://")?;
    let at = rest.find('/')?;
    Some((rest[..at].parse().ok()?, rest[at..].to_owned()))
}

/// The target of `uri` relative to the playlist at `base` (a path, maybe with a query).
pub fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let path = base.split('?').next().unwrap_or(base);
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    format!("{dir}{uri}")
}

/// The length of a complete response in `buf` (head + `Content-Length` body), with its
/// status; `None` until it is complete. `Err` for a response without a length.
pub fn response_len(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..at]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or("no Content-Length")?;
    let total = at + 4 + len;
    Ok((buf.len() >= total).then_some((status, at + 4, total)))
}

/// What the players did.
#[derive(Debug)]
pub struct HlsReport {
    pub players: usize,
    pub secs: f64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub playlists: u64,
    pub errors: u64,
    /// Segment fetch times, microseconds.
    pub fetch_us: Histogram<u64>,
}

impl HlsReport {
    pub fn to_json(&self) -> serde_json::Value {
        let q = |p: f64| self.fetch_us.value_at_quantile(p) as f64 / 1000.0;
        serde_json::json!({
            "players": self.players,
            "secs": self.secs,
            "segments": self.segments,
            "segment_bytes": self.segment_bytes,
            "playlists": self.playlists,
            "errors": self.errors,
            "segments_per_s": self.segments as f64 / self.secs,
            "bytes_per_s": self.segment_bytes as f64 / self.secs,
            "fetch_ms": {"p50": q(0.5), "p99": q(0.99), "max": self.fetch_us.max() as f64 / 1000.0},
        })
    }
}

#[derive(Default)]
struct One {
    segments: u64,
    bytes: u64,
    playlists: u64,
    errors: u64,
    fetch_us: Vec<u64>,
}

/// One request on a keep-alive connection (reconnecting once if the server closed it).
async fn get(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    target: &str,
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    for attempt in 0..2 {
        if conn.is_none() {
            *conn = Some(TcpStream::connect(addr).await.map_err(|e| e.to_string())?);
        }
        let Some(s) = conn.as_mut() else { continue };
        let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        buf.clear();
        let result: Result<(u16, Vec<u8>), String> = async {
            s.write_all(req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                if let Some((status, body, total)) = response_len(buf)? {
                    return Ok((status, buf[body..total].to_vec()));
                }
                let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        .await;
        match result {
            Ok(r) => return Ok(r),
            Err(e) if attempt == 1 => return Err(e),
            Err(_) => *conn = None,
        }
    }
    Err("unreachable".into())
}

async fn player(addr: SocketAddr, target: String, deadline: Instant) -> One {
    let mut one = One::default();
    let mut conn = None;
    let mut buf = Vec::new();
    // The next media sequence number to fetch (None before the first load).
    let mut next: Option<u64> = None;
    while Instant::now() < deadline {
        let playlist = match get(&mut conn, addr, &target, &mut buf).await {
            Ok((200, body)) => parse_playlist(&String::from_utf8_lossy(&body)),
            _ => None,
        };
        one.playlists += 1;
        let Some(p) = playlist else {
            one.errors += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let first = p.media_sequence;
        let last = first + p.uris.len() as u64; // exclusive
        let from = next.unwrap_or(last.saturating_sub(3)).max(first);
        let fresh = from < last;
        for seq in from..last {
            if Instant::now() >= deadline {
                break;
            }
            let uri = &p.uris[(seq - first) as usize];
            let started = Instant::now();
            match get(&mut conn, addr, &resolve(&target, uri), &mut buf).await {
                Ok((200, body)) => {
                    one.fetch_us.push(started.elapsed().as_micros() as u64);
                    one.segments += 1;
                    one.bytes += body.len() as u64;
                }
                _ => one.errors += 1,
            }
        }
        next = Some(last);
        if p.ended {
            break;
        }
        let wait = if fresh {
            Duration::from_secs(p.target_secs.max(1))
        } else {
            Duration::from_millis(p.target_secs.max(1) * 500)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(wait.min(left)).await;
    }
    one
}

/// Runs `args.players` players against `args.url` for `args.secs`.
pub async fn run(args: &HlsArgs) -> Result<HlsReport, String> {
    let (addr, target) = split_url(&args.url).ok_or("--url must be http://ADDR/path")?;
    if !addr.ip().is_loopback() {
        return Err("--url must be on a loopback address".into());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.secs);
    let gap = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut tasks = Vec::with_capacity(args.players);
    for _ in 0..args.players {
        tasks.push(tokio::spawn(player(addr, target.clone(), deadline)));
        tokio::time::sleep(gap).await;
    }
    let mut fetch_us =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut report = HlsReport {
        players: args.players,
        secs: 0.0,
        segments: 0,
        segment_bytes: 0,
        playlists: 0,
        errors: 0,
        fetch_us: Histogram::new(3).map_err(|e| e.to_string())?,
    };
    for t in tasks {
        let one = t.await.map_err(|e| e.to_string())?;
        report.segments += one.segments;
        report.segment_bytes += one.bytes;
        report.playlists += one.playlists;
        report.errors += one.errors;
        for us in one.fetch_us {
            let _ = fetch_us.record(us.max(1));
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    report.fetch_us = fetch_us;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_urls_and_responses_parse() {
        let p = parse_playlist(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\n7.ts?session=a\n#EXTINF:2.000,\n8.ts?session=a\n",
        )
        .unwrap();
        assert_eq!(
            (p.target_secs, p.media_sequence, p.uris.len(), p.ended),
            (2, 7, 2, false)
        );
        assert_eq!(parse_playlist("<html>"), None);
        assert!(parse_playlist("#EXTM3U\n#EXT-X-ENDLIST\n").unwrap().ended);
        let (addr, target) = split_url("http://127.0.0.1:8080/hls/s/index.m3u8?session=x").unwrap();
        assert_eq!(addr.port(), 8080);
        assert_eq!(resolve(&target, "3.ts?session=x"), "/hls/s/3.ts?session=x");
        assert_eq!(resolve("/a/b/index.m3u8", "/c/1.ts"), "/c/1.ts");
        assert_eq!(split_url("https://x/y"), None);
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcHTTP";
        for cut in 0..full.len() {
            let r = response_len(&full[..cut]).unwrap();
            assert_eq!(r.is_some(), cut >= full.len() - 4, "cut {cut}");
        }
        assert_eq!(response_len(full).unwrap(), Some((200, 38, 41)));
        assert!(response_len(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
