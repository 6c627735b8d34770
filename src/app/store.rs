//! Durable poll results in an embedded database (redb, a pure-Rust single-file store in the
//! data directory: nothing to install or start).
//!
//! Closed polls are written once, as the JSON the API returns, in one fsynced transaction;
//! `GET /api/polls/{id}` reads them back after a restart.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableTableMetadata, TableDefinition};
use serde_json::Value;

const POLLS: TableDefinition<&str, &[u8]> = TableDefinition::new("polls");

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) `<data_dir>/ovation.redb`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let path = data_dir.join("ovation.redb");
        let db = Database::create(&path)
            .with_context(|| format!("opening the database {}", path.display()))?;
        // Create the table up front so readers never see it missing.
        let txn = db.begin_write()?;
        txn.open_table(POLLS)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Stores a closed poll (replacing any earlier copy).
    pub fn put_poll(&self, id: &str, poll: &Value) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(poll)?;
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(POLLS)?;
            table.insert(id, bytes.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn poll(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POLLS)?;
        let Some(found) = table.get(id)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(found.value())?))
    }

    /// Number of stored polls.
    pub fn polls(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(POLLS)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("ovation-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            assert_eq!(store.poll("p1").unwrap(), None);
            store
                .put_poll("p1", &serde_json::json!({"counts": [1, 2]}))
                .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.poll("p1").unwrap(),
            Some(serde_json::json!({"counts": [1, 2]}))
        );
        assert_eq!(store.polls().unwrap(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
