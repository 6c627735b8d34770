//! Recorded streams served from files: `/hls/{stream}/rec/{recording}/index.m3u8` and
//! `/hls/{stream}/rec/{recording}/{n}.ts`, read from the recordings directory the
//! application core writes (`<data_dir>/recordings/{stream}/{recording}/`).
//!
//! [`locate`] is pure: it maps a request path to a file, refusing any name that is not a
//! plain token (no `..`, no `/`, no leading dot), so a request can never leave the
//! recordings directory. [`answer`] serves the file from the shard's cache of recorded files
//! (`hls_file_cache`), or opens it on the shard without blocking it (one `openat2` when the
//! name is in the kernel's caches, else glommio's asynchronous open on io_uring) and reads
//! with glommio's file I/O: a segment's body stays in its open file for the sender's
//! `sendfile` path ([`Body::File`]) when the connection can take it; otherwise
//! (`zerocopy = off`, TLS) the file is read ([`read`]) and written. A playlist is read once
//! and its bytes cached ([`Body::Shared`]).

use glommio::io::BufferedFile;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::hls_file_cache::{Cached, FileCache};
use crate::hls_window::PREFIX;

/// Largest recorded file served (a segment is far smaller; anything larger is refused).
pub const MAX_FILE: u64 = 256 * 1024 * 1024;

/// What a recorded file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Playlist,
    Segment,
}

/// A request for a recorded file: the names it gives, checked, and what the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'a> {
    /// The request path (the cache's key).
    pub request: &'a str,
    stream: &'a str,
    recording: &'a str,
    file: &'a str,
    pub kind: FileKind,
}

impl Located<'_> {
    /// The file's path under the recordings directory `root`.
    pub fn path(&self, root: &Path) -> PathBuf {
        root.join(self.stream).join(self.recording).join(self.file)
    }
}

/// Whether `path` is a request for a recording (`/hls/{stream}/rec/...`); `Some(None)` when
/// it is, but names no file that can exist.
pub fn locate(path: &str) -> Option<Option<Located<'_>>> {
    let rest = path.strip_prefix(PREFIX)?;
    let mut parts = rest.split('/');
    let (stream, rec_word) = (parts.next()?, parts.next()?);
    if rec_word != "rec" {
        return None;
    }
    let (Some(id), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
        return Some(None);
    };
    if !token(stream) || !token(id) {
        return Some(None);
    }
    let kind = if file == "index.m3u8" {
        FileKind::Playlist
    } else {
        match file.strip_suffix(".ts") {
            Some(n) if !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()) => {
                FileKind::Segment
            }
            _ => return Some(None),
        }
    };
    Some(Some(Located {
        request: path,
        stream,
        recording: id,
        file,
        kind,
    }))
}

fn token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The head of an answer for a recorded file (`len` bytes of body, or an error's text).
pub fn head(status: u16, kind: Option<FileKind>, len: usize, keep_alive: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let _ = write!(
        head,
        "HTTP/1.1 {status} {reason}\r\nConnection: {}\r\nAccess-Control-Allow-Origin: *\r\n",
        if keep_alive { "keep-alive" } else { "close" }
    );
    let kind_headers: &[u8] = match kind {
        Some(FileKind::Playlist) => {
            // A finished recording's playlist no longer changes, but one being written does.
            b"Content-Type: application/vnd.apple.mpegurl\r\nCache-Control: max-age=1\r\n"
        }
        Some(FileKind::Segment) => {
            b"Content-Type: video/mp2t\r\nCache-Control: public, max-age=31536000, immutable\r\n"
        }
        None => b"Content-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n",
    };
    head.extend_from_slice(kind_headers);
    if status == 405 {
        head.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    let _ = write!(head, "Content-Length: {len}\r\n\r\n");
    head
}

/// Why a recorded file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No such file (or recording).
    #[error("no such recorded file")]
    NotFound,
    /// Larger than [`MAX_FILE`].
    #[error("recorded file too large")]
    TooLarge,
    /// Any other I/O error.
    #[error("reading a recorded file: {0}")]
    Io(std::io::Error),
}

/// An open recorded file and its size when opened (the bytes a response promises). Closed
/// (one `close`, no await) when dropped.
pub struct OpenFile {
    fd: OwnedFd,
    pub len: u64,
}

impl OpenFile {
    /// Opens `path` and reads its size (`fstat`). A name the kernel resolves from its caches
    /// (a recording being written or recently served) opens with one `openat2` on the
    /// shard; any other is opened asynchronously on the executor's ring, so a cold lookup
    /// never blocks the shard. Either way no `statx` goes to a kernel worker thread.
    pub async fn open(path: &Path) -> Result<OpenFile, ReadError> {
        let not_found = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ReadError::NotFound
            } else {
                ReadError::Io(e)
            }
        };
        let fd = match netstack::sys::open_cached(path).map_err(not_found)? {
            Some(fd) => fd,
            None => {
                let file = BufferedFile::open(path)
                    .await
                    .map_err(|e| not_found(e.into()))?;
                let fd = netstack::sys::dup_cloexec(file.as_raw_fd()).map_err(ReadError::Io);
                let _ = file.close().await;
                fd?
            }
        };
        match netstack::sys::file_len(fd.as_raw_fd()) {
            Ok(len) if len <= MAX_FILE => Ok(OpenFile { fd, len }),
            Ok(_) => Err(ReadError::TooLarge),
            Err(e) => Err(ReadError::Io(e)),
        }
    }

    /// The open descriptor (for `sendfile`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads `want` bytes from `offset` (fewer at the end of the file; empty past it): from
    /// the page cache at once where the pages are there (`preadv2` with `RWF_NOWAIT`), the
    /// rest asynchronously on the executor's ring.
    pub async fn read_at(&self, offset: u64, want: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let at = offset + got as u64;
            match netstack::sys::pread_nowait(self.fd(), &mut out[got..], at) {
                Ok(Some(0)) => break,
                Ok(Some(n)) => got += n,
                Ok(None) => {
                    got += self.read_async(at, &mut out[got..]).await?;
                    break;
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        out.truncate(got);
        Ok(out)
    }

    /// Fills `into` from `offset` (fewer bytes at the end of the file) through glommio's
    /// file I/O, for pages that are not cached.
    async fn read_async(&self, offset: u64, into: &mut [u8]) -> Result<usize, ReadError> {
        let dup = netstack::sys::dup_cloexec(self.fd()).map_err(ReadError::Io)?;
        let file: BufferedFile = netstack::sys::from_owned_fd(dup);
        let mut got = 0;
        let result = loop {
            if got == into.len() {
                break Ok(got);
            }
            match file.read_at(offset + got as u64, into.len() - got).await {
                Ok(chunk) if chunk.is_empty() => break Ok(got),
                Ok(chunk) => {
                    into[got..got + chunk.len()].copy_from_slice(&chunk);
                    got += chunk.len();
                }
                Err(e) => break Err(ReadError::Io(e.into())),
            }
        };
        let _ = file.close().await;
        result
    }
}

/// Reads a whole recorded file (asynchronously, on the calling executor's ring).
pub async fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = OpenFile::open(path).await?;
    file.read_at(0, file.len as usize).await
}

/// The body of an answer for a recorded file.
pub enum Body {
    /// Bytes in memory: a message, a segment read for the plain path, or nothing (HEAD).
    Bytes(Vec<u8>),
    /// A playlist's bytes, shared with the shard's cache.
    Shared(Rc<[u8]>),
    /// A segment's open file (shared with the shard's cache), for the sender's file-backed
    /// path (`sendfile`).
    File(Rc<OpenFile>),
}

/// How a recorded file is asked for.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub method: &'a str,
    pub keep_alive: bool,
    /// Whether a segment's body may be its open file ([`Body::File`]) rather than its bytes.
    pub open_segments: bool,
    /// The shard clock (ticks), for the cache's age bound.
    pub now: u32,
}

/// The answer (head, body) to `ask` for recorded file `located` under `root` (`None`: a
/// recording path that names no file): from `cache` where it holds the file, else opened
/// (and read, for a playlist) and cached.
pub async fn answer(
    cache: &FileCache<OpenFile>,
    stats: &crate::stats::ShardStats,
    root: &Path,
    located: Option<Located<'_>>,
    ask: Ask<'_>,
) -> (Vec<u8>, Body) {
    let keep_alive = ask.keep_alive;
    let error = |status: u16, message: &str| {
        let body = format!("{message}\n").into_bytes();
        (
            head(status, None, body.len(), keep_alive),
            Body::Bytes(body),
        )
    };
    if ask.method != "GET" && ask.method != "HEAD" {
        return error(405, "only GET and HEAD are served for recordings");
    }
    let Some(located) = located else {
        return error(404, "no such recorded file");
    };
    let cached = match cache.get(located.request, ask.now) {
        Some(cached) => cached,
        None => {
            // Read before the file is opened: a change after it keeps the file out of the cache.
            let generation = cache.generation();
            crate::stats::ShardStats::add(&stats.hls_files_opened, 1);
            let opened = match OpenFile::open(&located.path(root)).await {
                Ok(file) => file,
                Err(ReadError::NotFound) => return error(404, "no such recorded file"),
                Err(e) => {
                    tracing::warn!(error = %e, "serving a recorded file");
                    return error(500, "the recorded file could not be read");
                }
            };
            let cached = match located.kind {
                FileKind::Segment => Cached::Segment(Rc::new(opened)),
                FileKind::Playlist => match opened.read_at(0, opened.len as usize).await {
                    Ok(data) => Cached::Playlist(data.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "serving a recorded playlist");
                        return error(500, "the recorded file could not be read");
                    }
                },
            };
            cache.insert(located.request, cached.clone(), generation, ask.now);
            cached
        }
    };
    let ok = |len: u64| head(200, Some(located.kind), len as usize, keep_alive);
    let head_only = ask.method == "HEAD";
    match cached {
        Cached::Playlist(bytes) => {
            let head = ok(bytes.len() as u64);
            if head_only {
                (head, Body::Bytes(Vec::new()))
            } else {
                (head, Body::Shared(bytes))
            }
        }
        Cached::Segment(file) => {
            if head_only {
                return (ok(file.len), Body::Bytes(Vec::new()));
            }
            if ask.open_segments {
                return (ok(file.len), Body::File(file));
            }
            match file.read_at(0, file.len as usize).await {
                Ok(data) => (ok(data.len() as u64), Body::Bytes(data)),
                Err(e) => {
                    tracing::warn!(error = %e, "serving a recorded file");
                    error(500, "the recorded file could not be read")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_maps_recording_paths_and_refuses_escapes() {
        let root = Path::new("/data/recordings");
        assert_eq!(locate("/hls/s/index.m3u8"), None, "live playlist");
        assert_eq!(locate("/hls/s/3.ts"), None, "live segment");
        let playlist = locate("/hls/s/rec/r1/index.m3u8").flatten().unwrap();
        assert_eq!(playlist.kind, FileKind::Playlist);
        assert_eq!(playlist.path(root), root.join("s/r1/index.m3u8"));
        assert_eq!(playlist.request, "/hls/s/rec/r1/index.m3u8");
        assert_eq!(
            locate("/hls/s/rec/r1/12.ts").flatten().map(|l| l.kind),
            Some(FileKind::Segment)
        );
        for bad in [
            "/hls/s/rec/../index.m3u8",
            "/hls/../rec/r1/index.m3u8",
            "/hls/s/rec/r1/../../x/index.m3u8",
            "/hls/s/rec/r1/passwd",
            "/hls/s/rec/r1/.ts",
            "/hls/s/rec/.r/1.ts",
            "/hls/s/rec/r1",
            "/hls/s/rec/r1/1.ts/x",
            "/hls/s/rec/r%2f1/1.ts",
        ] {
            assert_eq!(locate(bad), Some(None), "{bad}");
        }
    }

    #[test]
    fn heads_name_type_cache_and_length() {
        let h = String::from_utf8(head(200, Some(FileKind::Segment), 376, true)).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(
            h.contains("Content-Type: video/mp2t\r\n")
                && h.ends_with("Content-Length: 376\r\n\r\n")
        );
        let h = String::from_utf8(head(405, None, 0, false)).unwrap();
        assert!(h.contains("Allow: GET, HEAD\r\n") && h.contains("Connection: close\r\n"));
    }

    #[test]
    fn read_reads_whole_files_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("ovation-hls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.join("0.ts"), &data).unwrap();
        let (d, want) = (dir.clone(), data.clone());
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let got = read(&d.join("0.ts")).await.unwrap();
                assert_eq!(&got[..], &want[..]);
                assert!(matches!(
                    read(&d.join("missing.ts")).await,
                    Err(ReadError::NotFound)
                ));
            })
            .unwrap()
            .join()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
