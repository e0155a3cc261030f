//! The usage history on disk: the records every node derives from the entries it applies
//! (`tally_core::history`), in redb beside the log and the snapshot, by time.
//!
//! Written by one thread of its own, fed by the apply through a channel: the apply never
//! waits on a disk write, and one transaction carries every record that queued up
//! meanwhile. Transactions commit with `Durability::None`: the log is what makes an
//! entry durable, and its records are derived from it. redb makes a non-durable commit
//! durable with the next durable one, so a snapshot's persist (after [`Writer::flush`])
//! or a log append makes the records before it durable; a crash loses at most records of
//! entries after the last snapshot, which the restart applies again (same keys, same
//! records: the recorder is deterministic).
//!
//! Records are keyed `(ledger time, log index, position)`: ledger time never runs
//! backwards, so this is log order, and a report's window is a key range. The changes
//! of licensed counts are also kept in a table of their own, never pruned (a few per
//! feature per year), since a report needs the count in force before its window.

use std::sync::mpsc;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tally_core::history::report::Step;
use tally_core::history::{Record, What};

/// (ledger time, log index, position in the entry's records) → postcard of a [`Record`].
const RECORDS: TableDefinition<(u64, u64, u32), &[u8]> = TableDefinition::new("history");
/// The same key → postcard of a [`Step`].
const STEPS: TableDefinition<(u64, u64, u32), &[u8]> = TableDefinition::new("licensed_steps");

/// At most this many records are pruned per transaction, so a pass over a long-idle
/// history never holds the database's one writer for long.
const PRUNE_BATCH: usize = 10_000;

/// What failed in the history store. A failure to write the history is logged, not
/// fatal: the seat ledger does not depend on it, and the history of those entries is
/// written again when they are applied again after a restart.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history store: {0}")]
    Store(String),
    #[error(
        "history store: a record does not decode ({0}); was this data written by another release?"
    )]
    Decode(String),
    #[error("the history writer has stopped")]
    Stopped,
}

fn store(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Store(e.to_string())
}

/// The history a snapshot carries to a node that installs it: every record up to the
/// snapshot's index, and every licensed-count change.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Section {
    pub records: Vec<Record>,
    pub steps: Vec<Step>,
}

enum Msg {
    Write(Vec<Record>),
    Prune { before_ms: u64 },
    Flush(mpsc::SyncSender<Result<(), HistoryError>>),
    Replace(Section, mpsc::SyncSender<Result<(), HistoryError>>),
}

/// The handle the state machine holds: sends records to the writer thread. Clones share
/// one thread; when the last is dropped the thread is told to stop and joined, so the
/// database is closed when the node's stores are (a node restarted in the same process
/// must be able to open its file again at once).
#[derive(Debug, Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only while dropping: closing the channel is what stops the thread.
    tx: Option<mpsc::Sender<Msg>>,
    db: Arc<Database>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            // The thread writes what is queued and ends; it panics only on a bug, and
            // then there is nothing left to do about it here.
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("history::Msg")
    }
}

impl Writer {
    /// Creates the tables and starts the writer thread.
    pub fn start(db: Arc<Database>) -> Result<Writer, HistoryError> {
        let txn = db.begin_write().map_err(store)?;
        txn.open_table(RECORDS).map_err(store)?;
        txn.open_table(STEPS).map_err(store)?;
        txn.commit().map_err(store)?;
        let (tx, rx) = mpsc::channel();
        let thread_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("tally-history".into())
            .spawn(move || run(&thread_db, &rx))
            .map_err(store)?;
        Ok(Writer {
            inner: Arc::new(Inner {
                tx: Some(tx),
                db,
                thread: Some(thread),
            }),
        })
    }

    fn send(&self, msg: Msg) -> Result<(), HistoryError> {
        match &self.inner.tx {
            Some(tx) => tx.send(msg).map_err(|_| HistoryError::Stopped),
            None => Err(HistoryError::Stopped),
        }
    }

    /// Queues one apply's records. Never blocks.
    pub fn write(&self, records: Vec<Record>) {
        if !records.is_empty() && self.send(Msg::Write(records)).is_err() {
            tracing::error!("the history writer has stopped; records of applied entries are lost until a restart");
        }
    }

    /// Queues the removal of records older than `before_ms`.
    pub fn prune(&self, before_ms: u64) {
        let _ = self.send(Msg::Prune { before_ms });
    }

    /// Waits until every record queued before this call is written. Blocking: call it
    /// from a blocking thread.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Flush(tx))?;
        rx.recv().map_err(|_| HistoryError::Stopped)?
    }

    /// Replaces the whole history with a snapshot's (after the records queued before
    /// this call are written, so none of them lands after it). Blocking.
    pub fn replace(&self, section: Section) -> Result<(), HistoryError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Replace(section, tx))?;
        rx.recv().map_err(|_| HistoryError::Stopped)?
    }

    /// Records from `from_ms` on, in log order, at most `limit` of them (the caller
    /// says so if the limit is reached). Blocking.
    pub fn read(&self, from_ms: u64, limit: usize) -> Result<Vec<Record>, HistoryError> {
        let txn = self.inner.db.begin_read().map_err(store)?;
        let t = txn.open_table(RECORDS).map_err(store)?;
        let mut out = Vec::new();
        for row in t.range((from_ms, 0, 0)..).map_err(store)? {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row.map_err(store)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Every change of a licensed count, in log order. Blocking.
    pub fn steps(&self) -> Result<Vec<Step>, HistoryError> {
        let txn = self.inner.db.begin_read().map_err(store)?;
        let t = txn.open_table(STEPS).map_err(store)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(store)? {
            let (_, v) = row.map_err(store)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// What a snapshot at log index `upto` carries. Blocking; reads the whole history.
    pub fn section(&self, upto: u64) -> Result<Section, HistoryError> {
        let mut records = self.read(0, usize::MAX)?;
        records.retain(|r| r.index <= upto);
        // Count changes of entries after `upto` are not the snapshot's either (a backup
        // is taken while entries keep coming). Steps installed from a snapshot are keyed
        // with index 0 (see `replace`): they are all before it.
        let txn = self.inner.db.begin_read().map_err(store)?;
        let t = txn.open_table(STEPS).map_err(store)?;
        let mut steps = Vec::new();
        for row in t.iter().map_err(store)? {
            let (k, v) = row.map_err(store)?;
            if k.value().1 <= upto {
                steps.push(decode(v.value())?);
            }
        }
        Ok(Section { records, steps })
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HistoryError> {
    postcard::from_bytes(bytes).map_err(|e| HistoryError::Decode(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, HistoryError> {
    postcard::to_allocvec(v).map_err(|e| HistoryError::Decode(e.to_string()))
}

/// The writer thread: each turn takes every message waiting and writes the records of
/// all of them in one transaction.
fn run(db: &Database, rx: &mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut records = Vec::new();
        let mut replies = Vec::new();
        for msg in batch {
            match msg {
                Msg::Write(r) => records.extend(r),
                Msg::Prune { before_ms } => {
                    let r =
                        write(db, std::mem::take(&mut records)).and_then(|()| prune(db, before_ms));
                    log_failure(r);
                }
                Msg::Flush(reply) => {
                    let r = write(db, std::mem::take(&mut records));
                    replies.push((reply, r));
                }
                Msg::Replace(section, reply) => {
                    let r =
                        write(db, std::mem::take(&mut records)).and_then(|()| replace(db, section));
                    replies.push((reply, r));
                }
            }
        }
        log_failure(write(db, records));
        for (reply, r) in replies {
            let _ = reply.send(r);
        }
    }
}

fn log_failure(r: Result<(), HistoryError>) {
    if let Err(e) = r {
        tracing::error!("writing the usage history: {e}");
    }
}

fn write(db: &Database, records: Vec<Record>) -> Result<(), HistoryError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut txn = db.begin_write().map_err(store)?;
    txn.set_durability(Durability::None).map_err(store)?;
    {
        let mut t = txn.open_table(RECORDS).map_err(store)?;
        let mut s = txn.open_table(STEPS).map_err(store)?;
        insert(&mut t, Some(&mut s), &records)?;
    }
    txn.commit().map_err(store)
}

type Table<'t> = redb::Table<'t, (u64, u64, u32), &'static [u8]>;

/// Inserts records under their keys (and the licensed-count changes among them into
/// `steps`). An entry's records always arrive together, so a record's position is
/// counted among the records of its index before it here.
fn insert(
    t: &mut Table<'_>,
    mut steps: Option<&mut Table<'_>>,
    records: &[Record],
) -> Result<(), HistoryError> {
    let mut pos: (u64, u32) = (u64::MAX, 0);
    for r in records {
        pos = if pos.0 == r.index {
            (r.index, pos.1 + 1)
        } else {
            (r.index, 0)
        };
        let key = (r.at_ms, r.index, pos.1);
        t.insert(key, encode(r)?.as_slice()).map_err(store)?;
        if let (
            Some(s),
            What::Licensed {
                issued,
                overdraft_limit,
            },
        ) = (steps.as_deref_mut(), &r.what)
        {
            let step = Step {
                feature: r.feature.clone(),
                at_ms: r.at_ms,
                issued: *issued,
                overdraft_limit: *overdraft_limit,
            };
            s.insert(key, encode(&step)?.as_slice()).map_err(store)?;
        }
    }
    Ok(())
}

fn prune(db: &Database, before_ms: u64) -> Result<(), HistoryError> {
    loop {
        let mut txn = db.begin_write().map_err(store)?;
        txn.set_durability(Durability::None).map_err(store)?;
        let done = {
            let mut t = txn.open_table(RECORDS).map_err(store)?;
            let keys: Vec<(u64, u64, u32)> = t
                .range(..(before_ms, 0, 0))
                .map_err(store)?
                .take(PRUNE_BATCH)
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(store)?;
            for k in &keys {
                t.remove(k).map_err(store)?;
            }
            keys.len() < PRUNE_BATCH
        };
        txn.commit().map_err(store)?;
        if done {
            return Ok(());
        }
    }
}

/// The history of a snapshot replaces this node's, in one durable transaction: a node
/// that installed a snapshot has exactly the history of the node that sent it.
fn replace(db: &Database, section: Section) -> Result<(), HistoryError> {
    let txn = db.begin_write().map_err(store)?;
    txn.delete_table(RECORDS).map_err(store)?;
    txn.delete_table(STEPS).map_err(store)?;
    {
        let mut t = txn.open_table(RECORDS).map_err(store)?;
        insert(&mut t, None, &section.records)?;
        let mut s = txn.open_table(STEPS).map_err(store)?;
        for (i, step) in section.steps.iter().enumerate() {
            // Keys only order the steps: the section lists them in log order.
            let key = (step.at_ms, 0, u32::try_from(i).unwrap_or(u32::MAX));
            s.insert(key, encode(step)?.as_slice()).map_err(store)?;
        }
    }
    txn.commit().map_err(store)
}
