//! Durable state in an embedded database (redb, a pure-Rust single-file store in the data
//! directory: nothing to install or start).
//!
//! What is kept: polls (closed ones once, open ones as checkpoints of their definition and
//! merged counts), custom group definitions, the stream directory (ids, titles, SHA-256 of
//! stream keys), the directory of recordings (their files live beside it), operator settings
//! made through the API (player configurations, remediation rules), and a boot counter that
//! makes viewer ids unique across restarts. Records are the JSON the API returns.
//!
//! Writes (each an fsynced transaction) never run on the application core: they go over a
//! channel to a dedicated writer thread, which commits everything queued in one transaction.
//! Reads (at startup, and `GET /api/polls/{id}` for polls no longer in memory) stay on the
//! caller's thread: a read transaction does not sync.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

const POLLS: TableDefinition<&str, &[u8]> = TableDefinition::new("polls");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
const STREAMS: TableDefinition<&str, &[u8]> = TableDefinition::new("streams");
/// The directory of recordings, keyed `{stream}/{recording}`.
const RECORDINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("recordings");
/// Operator settings made through the API, keyed `player/{stream}` (a stream's player
/// configuration) or `rule/{id}` (a remediation rule added by the API).
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Viewers that left when the last run shut down (viewer id -> `mirror::Departed` bytes), so
/// they can resume after a restart; read and emptied at startup.
const DEPARTED: TableDefinition<u64, &[u8]> = TableDefinition::new("departed");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BOOT: &str = "boot";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("creating data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database reported an error (open, transaction, table or commit).
    #[error("database {0}")]
    Db(Box<redb::Error>),
    /// A stored record is not the JSON it should be.
    #[error("stored record: {0}")]
    Record(#[from] serde_json::Error),
    /// The writer thread could not be started.
    #[error("starting the store writer: {0}")]
    Thread(std::io::Error),
}

fn dberr(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

/// One queued write.
enum Write {
    Poll(String, Vec<u8>),
    Group(String, Vec<u8>),
    DeleteGroup(String),
    Stream(String, Vec<u8>),
    Recording(String, Vec<u8>),
    DeleteRecording(String),
    /// A setting's new value, or `None` to remove it.
    Setting(String, Option<Vec<u8>>),
    /// Every departed viewer at shutdown, replacing what the table held.
    Departed(Vec<(u64, Vec<u8>)>),
}

/// A poll found in the store at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoll {
    pub id: String,
    pub choices: u8,
    pub created_ms: u64,
}

/// What the store held at startup.
#[derive(Debug, Default)]
pub struct Restored {
    /// This start's number (1 on a fresh data directory), already stored.
    pub boot: u32,
    /// Custom group records (`{"id","name","match","created_ms"}`).
    pub groups: Vec<Value>,
    /// Stream directory records (`{"id","title","key_sha256","created_ms"}`), oldest first.
    pub streams: Vec<Value>,
    /// Recording records (`{"id","stream","started_ms","duration_ms","bytes","segments",
    /// "ended"}`), oldest first.
    pub recordings: Vec<Value>,
    /// Operator settings made through the API (`player/{stream}`, `rule/{id}`), by key.
    pub settings: Vec<(String, Value)>,
    /// Viewers that left at the last shutdown: (viewer id, `Departed` bytes). The table is
    /// emptied as they are read: they live in memory from here on.
    pub departed: Vec<(u64, Vec<u8>)>,
    /// Every stored poll, oldest first.
    pub polls: Vec<StoredPoll>,
    /// Polls found open (a crash or kill): now stored as `interrupted` with their counts.
    pub interrupted: Vec<String>,
}

impl Restored {
    /// The ids of the newest `n` stored polls (every stored poll is closed by now): the
    /// shards answer a vote for one with `poll_closed` rather than `unknown_poll`.
    pub fn closed_poll_ids(&self, n: usize) -> std::collections::HashSet<Box<str>> {
        self.polls
            .iter()
            .rev()
            .take(n)
            .map(|p| p.id.as_str().into())
            .collect()
    }
}

/// How many stored polls the shards know as closed from the start.
pub const KNOWN_CLOSED_POLLS: usize = 1000;

pub struct Store {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<Write>>,
    writer: Option<JoinHandle<()>>,
    /// Writes queued and not yet committed.
    queued: Arc<AtomicU64>,
    /// Writes that failed (logged).
    failed: Arc<AtomicU64>,
}

impl Store {
    /// Opens (or creates) `<data_dir>/ovation.redb`, counts this boot, marks polls left open by
    /// the last run as `interrupted`, and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<(Store, Restored), StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Dir {
            path: data_dir.to_owned(),
            source,
        })?;
        let db = Database::create(data_dir.join("ovation.redb")).map_err(dberr)?;
        let restored = startup(&db)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let writer = {
            let (db, queued, failed) = (db.clone(), queued.clone(), failed.clone());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(&db, &rx, &queued, &failed))
                .map_err(StoreError::Thread)?
        };
        let store = Store {
            db,
            tx: Some(tx),
            writer: Some(writer),
            queued,
            failed,
        };
        Ok((store, restored))
    }

    fn queue(&self, write: Write) {
        if let Some(tx) = &self.tx {
            self.queued.fetch_add(1, Ordering::Relaxed);
            if tx.send(write).is_err() {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a poll record (a checkpoint or the final result), replacing any earlier one.
    pub fn put_poll(&self, id: &str, poll: &Value) {
        self.queue(Write::Poll(id.to_owned(), poll.to_string().into_bytes()));
    }

    /// Queues a custom group definition.
    pub fn put_group(&self, key: &str, group: &Value) {
        self.queue(Write::Group(key.to_owned(), group.to_string().into_bytes()));
    }

    /// Queues a stream directory record (created, or its key rotated).
    pub fn put_stream(&self, id: &str, stream: &Value) {
        self.queue(Write::Stream(
            id.to_owned(),
            stream.to_string().into_bytes(),
        ));
    }

    /// Queues a recording record (`key` is `{stream}/{recording}`), replacing any earlier one.
    pub fn put_recording(&self, key: &str, record: &Value) {
        self.queue(Write::Recording(
            key.to_owned(),
            record.to_string().into_bytes(),
        ));
    }

    /// Queues the removal of a recording record.
    pub fn delete_recording(&self, key: &str) {
        self.queue(Write::DeleteRecording(key.to_owned()));
    }

    /// Queues an operator setting (see [`Restored::settings`]), replacing any earlier one.
    pub fn put_setting(&self, key: &str, value: &Value) {
        self.queue(Write::Setting(
            key.to_owned(),
            Some(value.to_string().into_bytes()),
        ));
    }

    /// Queues the departed viewers kept for a resume after the restart (at shutdown).
    pub fn put_departed(&self, records: Vec<(u64, Vec<u8>)>) {
        self.queue(Write::Departed(records));
    }

    /// Queues the removal of an operator setting.
    pub fn delete_setting(&self, key: &str) {
        self.queue(Write::Setting(key.to_owned(), None));
    }

    /// Queues the removal of a custom group.
    pub fn delete_group(&self, key: &str) {
        self.queue(Write::DeleteGroup(key.to_owned()));
    }

    /// A stored poll (committed writes only).
    pub fn poll(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(POLLS).map_err(dberr)?;
        let Some(found) = table.get(id).map_err(dberr)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(found.value())?))
    }

    /// Number of stored polls.
    pub fn polls(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        txn.open_table(POLLS).map_err(dberr)?.len().map_err(dberr)
    }

    /// Writes queued and not yet committed.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Writes that failed since start.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Commits what is queued and stops the writer (at shutdown; blocks until done).
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Startup reads and fix-ups, on the caller's thread before anything else runs.
fn startup(db: &Database) -> Result<Restored, StoreError> {
    let txn = db.begin_write().map_err(dberr)?;
    let mut restored = Restored::default();
    {
        let mut meta = txn.open_table(META).map_err(dberr)?;
        let boot = meta.get(BOOT).map_err(dberr)?.map_or(0, |v| v.value()) + 1;
        meta.insert(BOOT, boot).map_err(dberr)?;
        restored.boot = u32::try_from(boot).unwrap_or(u32::MAX);

        let groups = txn.open_table(GROUPS).map_err(dberr)?;
        for entry in groups.iter().map_err(dberr)? {
            let (_, v) = entry.map_err(dberr)?;
            match serde_json::from_slice::<Value>(v.value()) {
                Ok(g) => restored.groups.push(g),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable stored group"),
            }
        }

        let streams = txn.open_table(STREAMS).map_err(dberr)?;
        for entry in streams.iter().map_err(dberr)? {
            let (_, v) = entry.map_err(dberr)?;
            match serde_json::from_slice::<Value>(v.value()) {
                Ok(s) => restored.streams.push(s),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable stored stream"),
            }
        }
        restored
            .streams
            .sort_by_key(|s| s["created_ms"].as_u64().unwrap_or(0));

        let recordings = txn.open_table(RECORDINGS).map_err(dberr)?;
        for entry in recordings.iter().map_err(dberr)? {
            let (_, v) = entry.map_err(dberr)?;
            match serde_json::from_slice::<Value>(v.value()) {
                Ok(r) => restored.recordings.push(r),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable stored recording"),
            }
        }
        restored
            .recordings
            .sort_by_key(|r| r["started_ms"].as_u64().unwrap_or(0));

        let settings = txn.open_table(SETTINGS).map_err(dberr)?;
        for entry in settings.iter().map_err(dberr)? {
            let (k, v) = entry.map_err(dberr)?;
            match serde_json::from_slice::<Value>(v.value()) {
                Ok(value) => restored.settings.push((k.value().to_owned(), value)),
                Err(e) => {
                    tracing::warn!(key = k.value(), error = %e, "skipping an unreadable stored setting")
                }
            }
        }

        let mut departed = txn.open_table(DEPARTED).map_err(dberr)?;
        for entry in departed.iter().map_err(dberr)? {
            let (k, v) = entry.map_err(dberr)?;
            restored.departed.push((k.value(), v.value().to_vec()));
        }
        departed.retain(|_, _| false).map_err(dberr)?;

        let mut polls = txn.open_table(POLLS).map_err(dberr)?;
        let mut rewrite = Vec::new();
        for entry in polls.iter().map_err(dberr)? {
            let (k, v) = entry.map_err(dberr)?;
            let Ok(mut poll) = serde_json::from_slice::<Value>(v.value()) else {
                tracing::warn!(poll = k.value(), "skipping an unreadable stored poll");
                continue;
            };
            let choices = poll["choices"].as_array().map_or(0, Vec::len);
            restored.polls.push(StoredPoll {
                id: k.value().to_owned(),
                choices: u8::try_from(choices).unwrap_or(u8::MAX),
                created_ms: poll["created_ms"].as_u64().unwrap_or(0),
            });
            if matches!(poll["state"].as_str(), Some("open" | "closing")) {
                poll["state"] = "interrupted".into();
                rewrite.push((k.value().to_owned(), poll.to_string()));
            }
        }
        for (id, poll) in &rewrite {
            polls.insert(id.as_str(), poll.as_bytes()).map_err(dberr)?;
        }
        restored.interrupted = rewrite.into_iter().map(|(id, _)| id).collect();
        restored.polls.sort_by_key(|p| p.created_ms);
    }
    txn.commit().map_err(dberr)?;
    Ok(restored)
}

/// The writer thread: commits every write queued so far in one transaction, until the
/// sender is dropped.
fn write_loop(db: &Database, rx: &mpsc::Receiver<Write>, queued: &AtomicU64, failed: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let n = batch.len() as u64;
        if let Err(e) = commit(db, batch) {
            failed.fetch_add(n, Ordering::Relaxed);
            tracing::error!(error = %e, writes = n, "could not store state");
        }
        queued.fetch_sub(n, Ordering::Relaxed);
    }
}

fn commit(db: &Database, batch: Vec<Write>) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(dberr)?;
    {
        let mut polls = txn.open_table(POLLS).map_err(dberr)?;
        let mut groups = txn.open_table(GROUPS).map_err(dberr)?;
        let mut streams = txn.open_table(STREAMS).map_err(dberr)?;
        let mut recordings = txn.open_table(RECORDINGS).map_err(dberr)?;
        let mut settings = txn.open_table(SETTINGS).map_err(dberr)?;
        let mut departed = txn.open_table(DEPARTED).map_err(dberr)?;
        for write in batch {
            match write {
                Write::Poll(id, bytes) => {
                    polls.insert(id.as_str(), bytes.as_slice()).map_err(dberr)?;
                }
                Write::Group(key, bytes) => {
                    groups
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(dberr)?;
                }
                Write::DeleteGroup(key) => {
                    groups.remove(key.as_str()).map_err(dberr)?;
                }
                Write::Stream(id, bytes) => {
                    streams
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(dberr)?;
                }
                Write::Recording(key, bytes) => {
                    recordings
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(dberr)?;
                }
                Write::DeleteRecording(key) => {
                    recordings.remove(key.as_str()).map_err(dberr)?;
                }
                Write::Setting(key, Some(bytes)) => {
                    settings
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(dberr)?;
                }
                Write::Setting(key, None) => {
                    settings.remove(key.as_str()).map_err(dberr)?;
                }
                Write::Departed(records) => {
                    departed.retain(|_, _| false).map_err(dberr)?;
                    for (id, bytes) in records {
                        departed.insert(id, bytes.as_slice()).map_err(dberr)?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(dberr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovation-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn polls_survive_reopening() {
        let dir = dir("polls");
        {
            let (mut store, restored) = Store::open(&dir).unwrap();
            assert_eq!(restored.boot, 1);
            assert_eq!(store.poll("p1").unwrap(), None);
            store.put_poll("p1", &json!({"counts": [1, 2], "state": "closed"}));
            store.close();
            assert_eq!(store.queued(), 0);
            assert_eq!(store.failed(), 0);
        }
        let (store, restored) = Store::open(&dir).unwrap();
        assert_eq!(restored.boot, 2, "every start counts");
        assert_eq!(
            store.poll("p1").unwrap(),
            Some(json!({"counts": [1, 2], "state": "closed"}))
        );
        assert_eq!(store.polls().unwrap(), 1);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn open_polls_come_back_interrupted_and_groups_come_back() {
        let dir = dir("restart");
        {
            let (mut store, _) = Store::open(&dir).unwrap();
            let open = json!({"id": "p2", "state": "open", "choices": ["a", "b"],
                              "counts": [3, 4], "created_ms": 20});
            store.put_poll("p2", &open);
            store.put_poll("p1", &json!({"id": "p1", "state": "closed", "choices": ["a", "b", "c"], "created_ms": 10}));
            store.put_group("g1", &json!({"id": "g1", "name": "one"}));
            store.put_group("g2", &json!({"id": "g2", "name": "two"}));
            store.delete_group("g1");
            store.put_stream("s2", &json!({"id": "s2", "created_ms": 9}));
            store.put_recording("s1/b", &json!({"id": "b", "started_ms": 7}));
            store.put_recording("s1/a", &json!({"id": "a", "started_ms": 6}));
            store.put_recording("s1/c", &json!({"id": "c", "started_ms": 1}));
            store.delete_recording("s1/c");
            store.put_setting("rule/r1", &json!({"id": "r1"}));
            store.put_setting("player/s1", &json!({"title": "old"}));
            store.put_setting("player/s1", &json!({"title": "new"}));
            store.put_setting("rule/r2", &json!({"id": "r2"}));
            store.delete_setting("rule/r2");
            store.put_departed(vec![(9, vec![1, 2]), (8, vec![3])]);
            store.put_stream(
                "s1",
                &json!({"id": "s1", "created_ms": 5, "key_sha256": "00"}),
            );
            store.put_stream(
                "s2",
                &json!({"id": "s2", "created_ms": 9, "key_sha256": "ff"}),
            );
            store.close();
        }
        let (store, restored) = Store::open(&dir).unwrap();
        assert_eq!(restored.interrupted, vec!["p2".to_owned()]);
        assert_eq!(restored.groups, vec![json!({"id": "g2", "name": "two"})]);
        assert_eq!(
            restored.streams,
            vec![
                json!({"id": "s1", "created_ms": 5, "key_sha256": "00"}),
                json!({"id": "s2", "created_ms": 9, "key_sha256": "ff"}),
            ],
            "oldest first, the latest record of each"
        );
        assert_eq!(
            restored.recordings,
            vec![
                json!({"id": "a", "started_ms": 6}),
                json!({"id": "b", "started_ms": 7})
            ],
            "recordings oldest first, deleted ones gone"
        );
        assert_eq!(
            restored.settings,
            vec![
                ("player/s1".to_owned(), json!({"title": "new"})),
                ("rule/r1".to_owned(), json!({"id": "r1"})),
            ],
            "the latest value of each setting, removed ones gone"
        );
        assert_eq!(restored.departed, vec![(8, vec![3]), (9, vec![1, 2])]);
        let ids: Vec<(&str, u8)> = restored
            .polls
            .iter()
            .map(|p| (p.id.as_str(), p.choices))
            .collect();
        assert_eq!(ids, vec![("p1", 3), ("p2", 2)], "oldest first");
        let p2 = store.poll("p2").unwrap().unwrap();
        assert_eq!(p2["state"], "interrupted");
        assert_eq!(p2["counts"], json!([3, 4]));
        drop(store);
        let (store, restored) = Store::open(&dir).unwrap();
        assert!(
            restored.departed.is_empty(),
            "departed viewers are read once"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
