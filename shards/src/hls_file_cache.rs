//! A shard's cache of recorded files: a segment's open descriptor with its size, and a
//! playlist's bytes, keyed by request path. A player reloads the same playlist and fetches the
//! same new segment as every other player of the broadcast, so without it each request costs
//! an `openat2`, an `fstat`, a `close` (and for a playlist a read) for the same few files.
//!
//! A cached file is served while the recordings directory is unchanged and for at most
//! [`MAX_AGE_TICKS`]. The recorder counts every job it finishes ([`Changes`]: a segment
//! written and listed, a playlist ended, a recording deleted or pruned); any change empties
//! the cache, so a deleted recording is never served from a descriptor kept open, a playlist
//! replaced by a rename is read again, and a segment opened while it was still being written
//! is reopened once it is complete. A file opened while the directory changed is served but
//! not cached. Files changed behind the server's back (by hand) are seen within the age
//! bound. Errors are never cached: a segment not written yet soon will be. A shard keeps at
//! most [`CAPACITY`] files, [`MAX_PLAYLIST_BYTES`] of playlists and [`MAX_OPEN_SEGMENTS`]
//! open segments, dropping the oldest.
//!
//! Single-threaded (one per shard), pure apart from the shared counter: the caller passes
//! the shard clock. Generic over the open file type (`hls_files::OpenFile` on a shard).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many times the recordings directory has changed: the recorder (on the application
/// core's side) counts every job it finishes, after its files are in place; the shards'
/// caches of recorded files ([`FileCache`]) read it before opening a file and empty
/// themselves when it moves. Written about once per recorded segment, read per request.
#[derive(Clone, Debug, Default)]
pub struct Changes(Arc<AtomicU64>);

impl Changes {
    /// The count (`Acquire`: the files of every counted job are visible after it).
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one finished job (`Release`: after its files are written, renamed or removed).
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Files kept per shard (playlists and segments). A broadcast's hot set is a few files: its
/// playlist and newest segments. Past this the oldest entry is dropped.
pub const CAPACITY: usize = 256;

/// Segments kept open per shard: descriptors, taken from the room `src/limits.rs` keeps
/// beside the viewers' seats. Past this the oldest segment is dropped.
pub const MAX_OPEN_SEGMENTS: usize = 16;

/// Longest a file is served from the cache without being opened again, in shard ticks
/// (100 ms): one second.
pub const MAX_AGE_TICKS: u32 = 10;

/// Bytes of playlists kept per shard. A recording's playlist grows with it (about 25 bytes a
/// segment, so some 900 KB for ten hours of 1 s segments); past this the oldest entries are
/// dropped, and a playlist larger than this alone is served without being kept.
pub const MAX_PLAYLIST_BYTES: usize = 8 * 1024 * 1024;

/// A cached recorded file.
pub enum Cached<F> {
    /// A segment's open file (served with `sendfile`, or read for TLS).
    Segment(Rc<F>),
    /// A playlist's bytes.
    Playlist(Rc<[u8]>),
}

impl<F> Cached<F> {
    /// Bytes the entry holds in memory (a segment's are in the page cache, not here).
    fn bytes(&self) -> usize {
        match self {
            Cached::Segment(_) => 0,
            Cached::Playlist(b) => b.len(),
        }
    }

    /// Descriptors the entry holds open.
    fn descriptors(&self) -> usize {
        usize::from(matches!(self, Cached::Segment(_)))
    }
}

impl<F> Clone for Cached<F> {
    fn clone(&self) -> Self {
        match self {
            Cached::Segment(f) => Cached::Segment(f.clone()),
            Cached::Playlist(b) => Cached::Playlist(b.clone()),
        }
    }
}

struct Entry<F> {
    cached: Cached<F>,
    /// Shard tick when the file was opened.
    opened: u32,
}

/// One shard's cache of recorded files.
pub struct FileCache<F> {
    changes: Changes,
    state: RefCell<State<F>>,
}

struct State<F> {
    /// The recorder's count the entries were opened at.
    generation: u64,
    entries: HashMap<Box<str>, Entry<F>>,
    /// Playlist bytes held by `entries`.
    bytes: usize,
    /// Segment descriptors held by `entries`.
    descriptors: usize,
}

impl<F> State<F> {
    fn remove(&mut self, path: &str) {
        if let Some(e) = self.entries.remove(path) {
            self.bytes -= e.cached.bytes();
            self.descriptors -= e.cached.descriptors();
        }
    }

    /// Drops the entries older than [`MAX_AGE_TICKS`] at `now`.
    fn expire(&mut self, now: u32) {
        let (mut bytes, mut descriptors) = (0, 0);
        self.entries.retain(|_, e| {
            let keep = now.wrapping_sub(e.opened) < MAX_AGE_TICKS;
            if !keep {
                bytes += e.cached.bytes();
                descriptors += e.cached.descriptors();
            }
            keep
        });
        self.bytes -= bytes;
        self.descriptors -= descriptors;
    }

    /// Drops the oldest entry at `now` (the oldest segment, with `segments_only`); false
    /// when there was none.
    fn evict_oldest(&mut self, now: u32, segments_only: bool) -> bool {
        let oldest = self
            .entries
            .iter()
            .filter(|(_, e)| !segments_only || e.cached.descriptors() > 0)
            .max_by_key(|(_, e)| now.wrapping_sub(e.opened))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                self.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Whether an entry of `bytes` and `descriptors` fits: (entries and bytes fit, the
    /// descriptors fit).
    fn room(&self, bytes: usize, descriptors: usize) -> (bool, bool) {
        (
            self.entries.len() < CAPACITY && self.bytes + bytes <= MAX_PLAYLIST_BYTES,
            self.descriptors + descriptors <= MAX_OPEN_SEGMENTS,
        )
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.descriptors = 0;
    }
}

impl<F> FileCache<F> {
    /// An empty cache, emptied whenever `changes` moves.
    pub fn new(changes: Changes) -> FileCache<F> {
        let generation = changes.count();
        FileCache {
            changes,
            state: RefCell::new(State {
                generation,
                entries: HashMap::new(),
                bytes: 0,
                descriptors: 0,
            }),
        }
    }

    /// The cached file for request `path`, if the directory is unchanged since it was
    /// opened and it is younger than [`MAX_AGE_TICKS`] at `now`.
    pub fn get(&self, path: &str, now: u32) -> Option<Cached<F>> {
        let mut state = self.state.borrow_mut();
        self.check(&mut state);
        let entry = state.entries.get(path)?;
        if now.wrapping_sub(entry.opened) >= MAX_AGE_TICKS {
            state.remove(path);
            return None;
        }
        Some(entry.cached.clone())
    }

    /// The recorder's count now: read it before opening a file, and hand it to
    /// [`FileCache::insert`] with the file.
    pub fn generation(&self) -> u64 {
        self.changes.count()
    }

    /// Caches `cached` for request `path`, opened at `now` after [`FileCache::generation`]
    /// returned `generation`; not cached if the directory changed since, or if it is a
    /// playlist larger than [`MAX_PLAYLIST_BYTES`].
    pub fn insert(&self, path: &str, cached: Cached<F>, generation: u64, now: u32) {
        let mut state = self.state.borrow_mut();
        self.check(&mut state);
        let (size, descriptors) = (cached.bytes(), cached.descriptors());
        if generation != state.generation || size > MAX_PLAYLIST_BYTES {
            return;
        }
        state.remove(path);
        if state.room(size, descriptors) != (true, true) {
            state.expire(now);
        }
        // Each turn drops an entry, so this ends; the counts make room before the map is empty.
        loop {
            let evicted = match state.room(size, descriptors) {
                (true, true) => break,
                (fits, _) => state.evict_oldest(now, fits),
            };
            if !evicted {
                return;
            }
        }
        state.bytes += size;
        state.descriptors += descriptors;
        state.entries.insert(
            path.into(),
            Entry {
                cached,
                opened: now,
            },
        );
    }

    /// Drops what can no longer be served (the directory changed, or too old), so a file
    /// nobody asks for again is not held open: the shard's sweeper calls it every tick.
    pub fn sweep(&self, now: u32) {
        let mut state = self.state.borrow_mut();
        self.check(&mut state);
        state.expire(now);
    }

    /// Files cached.
    pub fn len(&self) -> usize {
        self.state.borrow().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the cache if the recorder's count moved.
    fn check(&self, state: &mut State<F>) {
        let now = self.changes.count();
        if now != state.generation {
            state.clear();
            state.generation = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn playlist(text: &str) -> Cached<()> {
        Cached::Playlist(text.as_bytes().into())
    }

    fn text(c: Option<Cached<()>>) -> Option<String> {
        match c? {
            Cached::Playlist(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
            Cached::Segment(_) => None,
        }
    }

    #[test]
    fn entries_live_until_the_directory_changes_or_they_age() {
        let changes = Changes::default();
        let cache = FileCache::<()>::new(changes.clone());
        let g = cache.generation();
        cache.insert("/hls/s/rec/r/index.m3u8", playlist("one"), g, 100);
        assert_eq!(
            text(cache.get("/hls/s/rec/r/index.m3u8", 105)).as_deref(),
            Some("one")
        );
        assert!(cache.get("/hls/s/rec/r/other.m3u8", 105).is_none());
        // Aged out.
        assert!(cache.get("/hls/s/rec/r/index.m3u8", 110).is_none());
        assert!(cache.is_empty());
        // A change empties the cache.
        cache.insert("/a", playlist("a"), cache.generation(), 200);
        changes.bump();
        assert!(cache.get("/a", 200).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_file_opened_across_a_change_is_not_cached() {
        let changes = Changes::default();
        let cache = FileCache::<()>::new(changes.clone());
        let g = cache.generation();
        // The recorder finished a job between the read of the count and the open.
        changes.bump();
        cache.insert("/a", playlist("stale"), g, 1);
        assert!(cache.get("/a", 1).is_none());
        cache.insert("/a", playlist("fresh"), cache.generation(), 1);
        assert_eq!(text(cache.get("/a", 1)).as_deref(), Some("fresh"));
    }

    #[test]
    fn open_segments_are_bounded_and_evicted_oldest_first() {
        let cache = FileCache::<()>::new(Changes::default());
        let g = cache.generation();
        cache.insert("/list", playlist("x"), g, 0);
        for i in 0..MAX_OPEN_SEGMENTS + 4 {
            cache.insert(
                &format!("/{i}.ts"),
                Cached::Segment(Rc::new(())),
                g,
                1 + i as u32 / 8,
            );
        }
        let state = cache.state.borrow();
        assert_eq!(state.descriptors, MAX_OPEN_SEGMENTS);
        drop(state);
        // The playlist, older than every segment, stays: only segments made room.
        assert!(cache.get("/list", 3).is_some());
        assert_eq!(cache.len(), MAX_OPEN_SEGMENTS + 1);
        assert!(cache
            .get(&format!("/{}.ts", MAX_OPEN_SEGMENTS + 3), 3)
            .is_some());
        cache.sweep(100);
        let state = cache.state.borrow();
        assert_eq!(
            (state.descriptors, state.bytes),
            (0, 0),
            "all accounted for"
        );
    }

    #[test]
    fn playlist_bytes_are_bounded() {
        let cache = FileCache::<()>::new(Changes::default());
        let g = cache.generation();
        let big = "x".repeat(MAX_PLAYLIST_BYTES / 3);
        for i in 0..3 {
            cache.insert(&format!("/p{i}"), playlist(&big), g, i);
        }
        assert_eq!(cache.len(), 3);
        // A fourth third does not fit: the oldest makes room.
        cache.insert("/p3", playlist(&big), g, 3);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("/p0", 3).is_none() && cache.get("/p3", 3).is_some());
        // Replacing an entry does not count it twice.
        cache.insert("/p3", playlist(&big), g, 4);
        assert_eq!(cache.len(), 3);
        assert!(cache.get("/p1", 4).is_some());
        // Larger than the budget alone: served, never kept.
        cache.insert("/huge", playlist(&"x".repeat(MAX_PLAYLIST_BYTES + 1)), g, 4);
        assert!(cache.get("/huge", 4).is_none());
        assert_eq!(cache.len(), 3);
        cache.sweep(4 + MAX_AGE_TICKS);
        assert!(cache.is_empty());
        assert_eq!(cache.state.borrow().bytes, 0, "every byte accounted for");
    }

    #[test]
    fn the_sweep_drops_stale_entries_and_the_size_is_bounded() {
        let changes = Changes::default();
        let cache = FileCache::<()>::new(changes.clone());
        let g = cache.generation();
        cache.insert("/f0", playlist("x"), g, 0);
        for i in 1..=CAPACITY {
            cache.insert(&format!("/f{i}"), playlist("x"), g, 1);
        }
        assert_eq!(cache.len(), CAPACITY);
        assert!(cache.get("/f0", 2).is_none(), "the oldest made room");
        assert!(cache.get(&format!("/f{CAPACITY}"), 2).is_some());
        cache.sweep(MAX_AGE_TICKS);
        assert_eq!(cache.len(), CAPACITY, "nothing aged out yet");
        cache.sweep(1 + MAX_AGE_TICKS);
        assert!(cache.is_empty(), "all aged out");
        cache.insert("/a", playlist("a"), g, 20);
        changes.bump();
        cache.sweep(20);
        assert!(
            cache.is_empty(),
            "a change empties the cache on the next sweep"
        );
    }
}
