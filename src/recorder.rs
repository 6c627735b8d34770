//! Recording files: every live stream is also written to disk, by a dedicated writer thread
//! fed over a channel (never on a shard's or the application core's executor).
//!
//! Layout: `<data_dir>/recordings/<stream>/<recording>/` holds `0.ts`, `1.ts`, ... and
//! `index.m3u8`. Each segment is written and fsynced before the playlist lists it, and the
//! playlist is replaced atomically (written to a temporary file, fsynced, renamed) after each
//! segment, so a recording cut short by a crash (kill -9) is playable up to its last complete
//! segment. When the recording ends its playlist gets `#EXT-X-ENDLIST` (VOD).
//! [`finalize_interrupted`] closes, at startup, a recording the last run left open.
//!
//! The application core decides what is recorded and keeps the directory (`app::recordings`);
//! this module only owns the files.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use media::playlist::{Entry, MediaPlaylist};
use shards::hls_file_cache::Changes;

/// Name of a recording's playlist.
pub const PLAYLIST: &str = "index.m3u8";

/// One job for the writer thread.
#[derive(Debug)]
pub enum Job {
    /// Appends segment `index` (`{index}.ts`) to the recording in `dir`.
    Segment {
        dir: PathBuf,
        index: u64,
        duration_ms: u64,
        discontinuity: bool,
        data: Arc<[u8]>,
    },
    /// The recording in `dir` ended: its playlist gets `#EXT-X-ENDLIST`.
    End { dir: PathBuf },
    /// Removes the recording in `dir` and its files.
    Delete { dir: PathBuf },
}

/// The writer thread's handle. Dropping it finishes the queued jobs and joins the thread.
pub struct Recorder {
    root: PathBuf,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Jobs queued and not yet done.
    queued: Arc<AtomicU64>,
    /// Jobs that failed (logged).
    failed: Arc<AtomicU64>,
    /// Jobs handed to the thread since start: the last one's number is its ticket.
    sent: AtomicU64,
    /// Jobs the thread has finished (done or failed), in order: also what the shards'
    /// caches of recorded files watch, so it moves only after a job's files are in place.
    done: Changes,
}

impl Recorder {
    /// Starts the writer for recordings under `root` (`<data_dir>/recordings`), counting
    /// finished jobs in `done` (the shards' [`Changes`]).
    pub fn start(root: PathBuf, target_secs: u64, done: Changes) -> io::Result<Recorder> {
        fs::create_dir_all(&root)?;
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        // Tickets count from the jobs already counted (the count is shared, not fresh).
        let sent = AtomicU64::new(done.count());
        let thread = {
            let (queued, failed, done) = (queued.clone(), failed.clone(), done.clone());
            std::thread::Builder::new()
                .name("recorder".into())
                .spawn(move || write_loop(&rx, target_secs, &queued, &failed, &done))?
        };
        Ok(Recorder {
            root,
            tx: Some(tx),
            thread: Some(thread),
            queued,
            failed,
            sent,
            done,
        })
    }

    /// The directory of recording `id` of `stream`.
    pub fn dir(&self, stream: &str, id: &str) -> PathBuf {
        self.root.join(stream).join(id)
    }

    /// Where recordings live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Queues a job; returns its ticket for [`Recorder::finished`] (jobs run in order).
    pub fn send(&self, job: Job) -> u64 {
        let Some(tx) = &self.tx else {
            return 0;
        };
        let ticket = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        self.queued.fetch_add(1, Ordering::Relaxed);
        if tx.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.failed.fetch_add(1, Ordering::Relaxed);
            // The thread is gone: count the job as finished so no one waits for it.
            self.done.bump();
        }
        ticket
    }

    /// Whether the job with `ticket` (and every job before it) has been carried out.
    pub fn finished(&self, ticket: u64) -> bool {
        self.done.count() >= ticket
    }

    /// Jobs queued and not yet done.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Jobs that failed since start.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Finishes what is queued and stops the thread (blocks until done).
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(
    rx: &mpsc::Receiver<Job>,
    target_secs: u64,
    queued: &AtomicU64,
    failed: &AtomicU64,
    done: &Changes,
) {
    let mut open: HashMap<PathBuf, Vec<Entry>> = HashMap::new();
    while let Ok(job) = rx.recv() {
        if let Err(e) = run(&mut open, job, target_secs) {
            failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "recording write failed");
        }
        queued.fetch_sub(1, Ordering::Relaxed);
        done.bump();
    }
}

fn run(open: &mut HashMap<PathBuf, Vec<Entry>>, job: Job, target_secs: u64) -> io::Result<()> {
    match job {
        Job::Segment {
            dir,
            index,
            duration_ms,
            discontinuity,
            data,
        } => {
            let fresh = !dir.exists();
            fs::create_dir_all(&dir)?;
            let uri = format!("{index}.ts");
            let mut file = File::create(dir.join(&uri))?;
            file.write_all(&data)?;
            file.sync_all()?;
            if fresh {
                sync_dir(&dir)?;
                if let Some(parent) = dir.parent() {
                    sync_dir(parent)?;
                }
            }
            let entries = open.entry(dir.clone()).or_default();
            entries.push(Entry {
                uri,
                duration_ms,
                program_date_time_ms: None,
                discontinuity: discontinuity && !entries.is_empty(),
            });
            write_playlist(&dir, entries, target_secs, false)
        }
        Job::End { dir } => {
            let entries = open.remove(&dir).unwrap_or_default();
            if entries.is_empty() {
                // Nothing was recorded: no playlist to end (the caller drops the record).
                return Ok(());
            }
            write_playlist(&dir, &entries, target_secs, true)
        }
        Job::Delete { dir } => {
            open.remove(&dir);
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }
}

/// The playlist text of a recording.
pub fn playlist(entries: &[Entry], target_secs: u64, ended: bool) -> String {
    MediaPlaylist {
        target_duration: target_secs,
        media_sequence: 0,
        discontinuity_sequence: 0,
        entries: entries.to_vec(),
        ended,
    }
    .render()
}

fn write_playlist(dir: &Path, entries: &[Entry], target_secs: u64, ended: bool) -> io::Result<()> {
    let text = playlist(entries, target_secs, ended);
    let tmp = dir.join("index.m3u8.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(PLAYLIST))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What an interrupted recording holds once closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed {
    pub duration_ms: u64,
    pub bytes: u64,
    pub segments: u64,
}

/// Closes a recording the last run left open (a crash or kill): keeps the segments its
/// playlist lists, removes any segment file written after the last playlist (it may be
/// partial), and ends the playlist. Runs at startup, before anything is served.
pub fn finalize_interrupted(dir: &Path, target_secs: u64) -> io::Result<Closed> {
    let text = match fs::read_to_string(dir.join(PLAYLIST)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let entries = parse_entries(&text);
    let mut closed = Closed::default();
    for e in &entries {
        closed.duration_ms += e.duration_ms;
        closed.bytes += fs::metadata(dir.join(&e.uri)).map_or(0, |m| m.len());
        closed.segments += 1;
    }
    if let Ok(listing) = fs::read_dir(dir) {
        for file in listing.flatten() {
            let name = file.file_name();
            let name = name.to_string_lossy();
            let listed = entries.iter().any(|e| e.uri == name);
            if name.ends_with(".ts") && !listed || name.ends_with(".tmp") {
                let _ = fs::remove_file(file.path());
            }
        }
    }
    if !entries.is_empty() {
        write_playlist(dir, &entries, target_secs, true)?;
    }
    Ok(closed)
}

/// The entries of a recording playlist this module wrote (`#EXTINF:S.mmm,` then a URI).
pub fn parse_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut pending: Option<(u64, bool)> = None;
    let mut discontinuity = false;
    for line in text.lines().map(str::trim) {
        if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if let Some(inf) = line.strip_prefix("#EXTINF:") {
            let secs = inf.split(',').next().unwrap_or_default();
            let ms = secs
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(0, |s| (s * 1000.0).round() as u64);
            pending = Some((ms, discontinuity));
            discontinuity = false;
        } else if !line.is_empty() && !line.starts_with('#') {
            if let Some((duration_ms, disc)) = pending.take() {
                entries.push(Entry {
                    uri: line.to_owned(),
                    duration_ms,
                    program_date_time_ms: None,
                    discontinuity: disc,
                });
            }
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovation-rec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn seg(dir: &Path, index: u64, len: usize) -> Job {
        Job::Segment {
            dir: dir.to_owned(),
            index,
            duration_ms: 2000 + index,
            discontinuity: index == 2,
            data: vec![0x47u8; len].into(),
        }
    }

    #[test]
    fn segments_then_playlist_then_endlist_and_delete() {
        let root = tmp("write");
        let mut rec = Recorder::start(root.clone(), 2, Changes::default()).unwrap();
        let dir = rec.dir("s", "r1");
        for i in 0..3 {
            rec.send(seg(&dir, i, 188 * (i as usize + 1)));
        }
        let end = rec.send(Job::End { dir: dir.clone() });
        assert_eq!(end, 4, "tickets count the jobs in order");
        rec.close();
        assert!(rec.finished(end), "every queued job is done after close");
        assert!(!rec.finished(end + 1), "a later ticket is not");
        assert_eq!((rec.queued(), rec.failed()), (0, 0));
        let text = fs::read_to_string(dir.join(PLAYLIST)).unwrap();
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXTINF:2.002,\n2.ts\n"),
            "{text}"
        );
        let entries = parse_entries(&text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].duration_ms, 2001);
        assert_eq!(fs::read(dir.join("1.ts")).unwrap().len(), 376);

        let mut rec = Recorder::start(root.clone(), 2, Changes::default()).unwrap();
        rec.send(Job::Delete { dir: dir.clone() });
        rec.close();
        assert!(!dir.exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_interrupted_recording_is_closed_at_its_last_listed_segment() {
        let root = tmp("crash");
        let mut rec = Recorder::start(root.clone(), 2, Changes::default()).unwrap();
        let dir = rec.dir("s", "r2");
        rec.send(seg(&dir, 0, 188));
        rec.send(seg(&dir, 1, 376));
        rec.close();
        // A segment written after the last playlist (the crash came before the playlist).
        fs::write(dir.join("2.ts"), [0x47u8; 100]).unwrap();
        fs::write(dir.join("index.m3u8.tmp"), "partial").unwrap();
        assert!(!fs::read_to_string(dir.join(PLAYLIST))
            .unwrap()
            .contains("ENDLIST"));
        let closed = finalize_interrupted(&dir, 2).unwrap();
        assert_eq!(
            closed,
            Closed {
                duration_ms: 4001,
                bytes: 564,
                segments: 2
            }
        );
        assert!(!dir.join("2.ts").exists() && !dir.join("index.m3u8.tmp").exists());
        let text = fs::read_to_string(dir.join(PLAYLIST)).unwrap();
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(
            finalize_interrupted(&root.join("none"), 2).unwrap(),
            Closed::default()
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn parse_tolerates_garbage() {
        assert!(parse_entries("#EXTINF:abc,\nx.ts\n")
            .iter()
            .all(|e| e.duration_ms == 0));
        assert!(parse_entries("a.ts\n#EXTINF:1.0,").is_empty());
        assert_eq!(parse_entries("#EXTINF:-1,\nx.ts")[0].duration_ms, 0);
    }
}
