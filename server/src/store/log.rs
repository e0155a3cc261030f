//! The Raft log and vote in redb. One database file per node, shared with the snapshot
//! store. Every append is one write transaction committed with `Durability::Immediate`
//! on a blocking thread, and openraft is told the entries are flushed only after the
//! commit returned: an acknowledged entry is on disk.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Log entries by index, as serde_json of openraft's entry (safe with its flattened
/// fields, unlike bincode).
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Small named records: the vote, the committed log id, the last purged log id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last_purged";
const CLUSTER: &str = "cluster_name";
/// The META key of [`DATA_FORMAT`].
const FORMAT: &str = "data_format";

/// The format of everything in a node's database: the tables, the log entries' encoding
/// (serde_json of openraft's entry around `types::Command`), the snapshot and history
/// tables (the snapshot's ledger bytes carry their own number too). Written when a
/// database is made; a node refuses, with a sentence, a database of another number
/// rather than misread it. Raise it with any change an older or newer `tallyd` would
/// misread, and say in deploy/README.md ("Upgrades") what the upgrade does about it.
/// A database from before the number existed has the same layout as 1 and is read as 1.
pub const DATA_FORMAT: u32 = 1;

/// The log store. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// How long each durable write took, queueing for a blocking thread included: the
    /// leader's Raft core waits for it before anything else (openraft 0.9), so a slow
    /// fsync is a pause in heartbeats too. For `/metrics`.
    write_ms: Arc<crate::stats::Histogram>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Result<Self, StorageError> {
        // Create the tables up front so readers never meet a missing table.
        let mut txn = db.begin_write().map_err(io_write)?;
        txn.set_durability(Durability::Immediate)
            .map_err(io_write)?;
        txn.open_table(LOG).map_err(io_write)?;
        {
            let mut meta = txn.open_table(META).map_err(io_write)?;
            let found = match meta.get(FORMAT).map_err(io_read)? {
                Some(v) => Some(
                    serde_json::from_slice::<u32>(v.value()).map_err(|e| {
                        io_read(std::io::Error::other(format!(
                            "this database's format number does not read ({e}): not a Tally data directory, or a damaged one"
                        )))
                    })?,
                ),
                None => None,
            };
            match found {
                Some(DATA_FORMAT) => {}
                Some(other) => {
                    return Err(io_read(std::io::Error::other(format!(
                        "this data directory is in format {other}, and this tallyd reads format {DATA_FORMAT}: run the tallyd release that wrote it, or restore a backup (tallyctl snapshot save) into a new directory (deploy/README.md, \"Upgrades\")"
                    ))))
                }
                None => {
                    let bytes = serde_json::to_vec(&DATA_FORMAT).map_err(io_write)?;
                    meta.insert(FORMAT, bytes.as_slice()).map_err(io_write)?;
                }
            }
        }
        txn.commit().map_err(io_write)?;
        Ok(Self {
            db,
            write_ms: Arc::new(crate::stats::Histogram::new(
                &crate::stats::LATENCY_BUCKETS_MS,
            )),
        })
    }

    /// Binds this data directory to `name` on first use. Returns the name it is already
    /// bound to if that differs, so the node refuses to start on another cluster's data.
    /// Called once, before Raft starts, so writing synchronously here is fine.
    pub fn claim_cluster(&self, name: &str) -> Result<Option<String>, StorageError> {
        if let Some(bound) = self.get_meta::<String>(CLUSTER)? {
            return Ok((bound != name).then_some(bound));
        }
        let bytes = serde_json::to_vec(name).map_err(io_write)?;
        let mut txn = self.db.begin_write().map_err(io_write)?;
        txn.set_durability(Durability::Immediate)
            .map_err(io_write)?;
        txn.open_table(META)
            .map_err(io_write)?
            .insert(CLUSTER, bytes.as_slice())
            .map_err(io_write)?;
        txn.commit().map_err(io_write)?;
        Ok(None)
    }

    /// The cluster name this data directory is bound to, if it was ever started.
    pub fn cluster_name(&self) -> Result<Option<String>, StorageError> {
        self.get_meta(CLUSTER)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(META).map_err(io_read)?;
        match table.get(key).map_err(io_read)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_read),
        }
    }

    /// Runs `f` in one write transaction on a blocking thread, committed with
    /// `Durability::Immediate`: on disk when this returns. Every write of the log store
    /// goes through here.
    async fn durably<F>(&self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.clone();
        let start = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb::Error::from)?;
            f(&txn)?;
            txn.commit()?;
            Ok(())
        })
        .await;
        self.write_ms
            .record(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
        done.map_err(io_write)?.map_err(io_write)
    }

    /// The durable-write histogram, for `/metrics`.
    pub fn write_ms(&self) -> crate::stats::HistogramView {
        self.write_ms.view()
    }

    /// Writes a meta record durably.
    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(io_write)?;
        self.durably(move |txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let txn = self.db.begin_read().map_err(io_read)?;
        let table = txn.open_table(LOG).map_err(io_read)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(io_read)? {
            let (_, v) = item.map_err(io_read)?;
            out.push(serde_json::from_slice(v.value()).map_err(io_read)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED)?;
        let last = {
            let txn = self.db.begin_read().map_err(io_read)?;
            let table = txn.open_table(LOG).map_err(io_read)?;
            let last = table.last().map_err(io_read)?;
            let id = match last {
                None => None,
                Some((_, v)) => Some(
                    serde_json::from_slice::<Entry>(v.value())
                        .map_err(io_read)?
                        .log_id,
                ),
            };
            id
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // openraft awaits this on every commit, in line with the appends; an fsync here
        // doubled the leader's fsyncs per entry. The committed mark is only a lower bound
        // that lets a restart re-apply sooner (openraft treats it as optional), so it is
        // written without its own fsync: the next durable append carries it to disk, and a
        // crash before that leaves an older mark, which is still true.
        let bytes = serde_json::to_vec(&committed).map_err(io_write)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::None)
                .map_err(redb::Error::from)?;
            txn.open_table(META)?.insert(COMMITTED, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(io_write)?
        .map_err(io_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, serde_json::to_vec(&e).map_err(io_write)?));
        }
        // One transaction for the whole batch: one fsync however many entries. openraft
        // hears the entries are flushed only after the commit returned.
        let result = self
            .durably(move |txn| {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        callback.log_io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        result
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.durably(move |txn| {
            txn.open_table(LOG)?
                .retain_in(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purged = serde_json::to_vec(&log_id).map_err(io_write)?;
        // The purge mark and the deletion commit together, so a crash between them
        // cannot leave a log whose start disagrees with its recorded purge point.
        self.durably(move |txn| {
            txn.open_table(META)?.insert(PURGED, purged.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &std::path::Path) -> Arc<Database> {
        Arc::new(Database::create(dir.join("t.redb")).unwrap())
    }

    #[test]
    fn a_database_is_stamped_with_its_format_and_another_format_is_refused_by_number() {
        let dir = tempfile::tempdir().unwrap();
        // New: stamped with this build's format, and opened again without complaint.
        {
            let d = db(dir.path());
            LogStore::new(d.clone()).unwrap();
            let s = LogStore::new(d).unwrap();
            assert_eq!(s.get_meta::<u32>(FORMAT).unwrap(), Some(DATA_FORMAT));
        }
        // A database of a format this build does not read is refused, naming both.
        {
            let d = db(dir.path());
            let txn = d.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT, b"99".as_slice())
                .unwrap();
            txn.commit().unwrap();
            let e = LogStore::new(d).map(drop).unwrap_err().to_string();
            assert!(
                e.contains("format 99") && e.contains(&format!("reads format {DATA_FORMAT}")),
                "{e}"
            );
        }
    }
}
