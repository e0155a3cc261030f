//! The Raft state machine: the ledger in memory, its snapshots on disk.
//!
//! Applying an entry only changes memory; durability comes from the log (already on disk
//! before an entry can commit) plus snapshots: on restart the last snapshot is restored
//! and openraft re-applies the committed log after it. Writing the whole ledger on every
//! apply would cost a full serialization per entry for nothing the log does not already
//! guarantee.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use tally_core::ledger::{Entry as LedgerEntry, Ledger, Outcome, Reply};

use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const META_KEY: &str = "meta";
const DATA_KEY: &str = "data";

/// What the state machine holds: the ledger and where it stands in the log.
#[derive(Debug, Default)]
pub struct Applied {
    pub ledger: Ledger,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The last entry applied as it happened (see `shared::TermClock`).
    pub live_entry: Option<crate::shared::LiveEntry>,
    /// Who holds what, for the audit log's lines (see `audit.rs`).
    audit: super::audit::Audit,
}

/// Audit lines per kind (with the kind's name) and denials per reason.
pub type AuditCounts = (Vec<(&'static str, u64)>, Vec<(String, u64)>);

impl Applied {
    /// The audit log's counts: lines per kind (in `audit::KINDS` order) and denials per
    /// reason.
    pub fn audit_counts(&self) -> AuditCounts {
        let kinds = super::audit::KINDS
            .iter()
            .copied()
            .zip(self.audit.counts())
            .collect();
        (kinds, self.audit.denials())
    }
}

/// The state machine. Clones share state; services read the ledger through
/// [`StateMachine::read`].
#[derive(Clone, Debug)]
pub struct StateMachine {
    state: Arc<RwLock<Applied>>,
    db: Arc<Database>,
    /// Applied-index watchers: the lease keeper and linearizable reads wait on it.
    applied_tx: Arc<tokio::sync::watch::Sender<u64>>,
    /// `archive_log`: every applied entry also goes here (see `archive.rs`).
    archive: Option<super::archive::Archive>,
}

#[derive(Serialize, Deserialize)]
struct StoredMeta {
    meta: SnapshotMeta,
}

fn io(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    /// Opens the state machine, restoring the last persisted snapshot if there is one.
    pub fn open(db: Arc<Database>) -> Result<Self, StorageError> {
        let mut txn = db.begin_write().map_err(io)?;
        txn.set_durability(Durability::Immediate).map_err(io)?;
        txn.open_table(SNAPSHOT).map_err(io)?;
        txn.commit().map_err(io)?;
        let mut applied = Applied::default();
        if let Some((meta, data)) = read_snapshot(&db)? {
            applied.ledger = Ledger::restore(&data).map_err(io)?;
            applied.audit = super::audit::Audit::of(&applied.ledger);
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        let index = applied.last_applied.map_or(0, |l| l.index);
        let (applied_tx, _) = tokio::sync::watch::channel(index);
        Ok(Self {
            state: Arc::new(RwLock::new(applied)),
            db,
            applied_tx: Arc::new(applied_tx),
            archive: None,
        })
    }

    /// Starts archiving applied entries to `path` (before Raft starts applying), with a
    /// marker saying which snapshot this life started from.
    pub fn archive_to(&mut self, path: &std::path::Path) -> Result<(), StorageError> {
        let archive = super::archive::Archive::open(path).map_err(io)?;
        let index = self.read().last_applied.map_or(0, |l| l.index);
        archive
            .append(&[super::archive::Record::Restored { index }])
            .map_err(io)?;
        self.archive = Some(archive);
        Ok(())
    }

    /// A read view of the ledger. Hold it briefly: applies wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        // A poisoned lock means an apply panicked half-way; the process must not go on
        // serving from that state, so the panic propagates.
        match self.state.read() {
            Ok(g) => g,
            Err(e) => panic!("state machine lock poisoned: {e}"),
        }
    }

    /// Watches the last applied log index.
    pub fn applied_index(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied_tx.subscribe()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        match self.state.write() {
            Ok(g) => g,
            Err(e) => panic!("state machine lock poisoned: {e}"),
        }
    }

    async fn persist(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let meta = serde_json::to_vec(&StoredMeta { meta: meta.clone() }).map_err(io)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            let mut txn = db.begin_write().map_err(io)?;
            txn.set_durability(Durability::Immediate).map_err(io)?;
            {
                let mut t = txn.open_table(SNAPSHOT).map_err(io)?;
                t.insert(META_KEY, meta.as_slice()).map_err(io)?;
                t.insert(DATA_KEY, data.as_slice()).map_err(io)?;
            }
            txn.commit().map_err(io)
        })
        .await
        .map_err(io)?
    }
}

fn read_snapshot(db: &Database) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let txn = db.begin_read().map_err(io)?;
    let t = txn.open_table(SNAPSHOT).map_err(io)?;
    let (Some(meta), Some(data)) = (t.get(META_KEY).map_err(io)?, t.get(DATA_KEY).map_err(io)?)
    else {
        return Ok(None);
    };
    let meta: StoredMeta = serde_json::from_slice(meta.value()).map_err(io)?;
    Ok(Some((meta.meta, data.value().to_vec())))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Serialized on a blocking thread, not on the Raft runtime's workers: at 100,000
        // sessions it takes hundreds of milliseconds, and with the apply task waiting for
        // the write lock meanwhile, both workers were held and the core with them (the
        // Raft runtime's timer woke 300-600 ms late on a follower, BENCHMARKS.md). Under
        // the read lock, so the snapshot is of one applied index; the apply waits.
        let sm = self.clone();
        let (data, last_log_id, last_membership) = tokio::task::spawn_blocking(move || {
            let s = sm.read();
            (s.ledger.snapshot(), s.last_applied, s.membership.clone())
        })
        .await
        .map_err(io)?;
        let snapshot_id = last_log_id.map_or("empty".to_owned(), |l| {
            format!("{}-{}", l.leader_id, l.index)
        });
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        self.persist(&meta, data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = self.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        use super::archive::Record;
        let mut out = Vec::new();
        // What the archive gets: the index, and for ledger entries the entry itself.
        let mut applied: Vec<(u64, Option<LedgerEntry>)> = Vec::new();
        let last = {
            let mut s = self.write();
            for entry in entries {
                s.last_applied = Some(entry.log_id);
                let index = entry.log_id.index;
                let outcome = match entry.payload {
                    EntryPayload::Blank => {
                        applied.push((index, None));
                        Outcome {
                            reply: Reply::Done { affected: 0 },
                            events: vec![],
                        }
                    }
                    EntryPayload::Normal(cmd) => {
                        if crate::shared::wall_ms().abs_diff(cmd.at_ms)
                            <= crate::shared::LIVE_WINDOW_MS
                        {
                            s.live_entry = Some(crate::shared::LiveEntry {
                                at_ms: cmd.at_ms,
                                applied: std::time::Instant::now(),
                            });
                        }
                        let e = LedgerEntry {
                            index,
                            at_ms: cmd.at_ms,
                            op: cmd.op,
                        };
                        let outcome = s.ledger.apply(&e);
                        for line in s.audit.lines(&outcome.events) {
                            tracing::info!(target: "tally::audit", "{line}");
                        }
                        applied.push((index, Some(e)));
                        outcome
                    }
                    EntryPayload::Membership(m) => {
                        s.membership = StoredMembership::new(Some(entry.log_id), m);
                        applied.push((index, None));
                        Outcome {
                            reply: Reply::Done { affected: 0 },
                            events: vec![],
                        }
                    }
                };
                out.push(outcome);
            }
            s.last_applied.map_or(0, |l| l.index)
        };
        if let Some(archive) = &self.archive {
            let records: Vec<Record<'_>> = applied
                .iter()
                .zip(&out)
                .map(|((index, e), o)| match e {
                    Some(e) => Record::Applied {
                        index: *index,
                        at_ms: e.at_ms,
                        op: &e.op,
                        events: &o.events,
                    },
                    None => Record::Raft { index: *index },
                })
                .collect();
            archive.append(&records).map_err(io)?;
        }
        self.applied_tx.send_replace(last);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let ledger = Ledger::restore(&data).map_err(io)?;
        self.persist(meta, data).await?;
        let index = {
            let mut s = self.write();
            s.audit = super::audit::Audit::of(&ledger);
            s.ledger = ledger;
            s.last_applied = meta.last_log_id;
            s.membership = meta.last_membership.clone();
            meta.last_log_id.map_or(0, |l| l.index)
        };
        if let Some(archive) = &self.archive {
            archive
                .append(&[super::archive::Record::Installed { index }])
                .map_err(io)?;
        }
        self.applied_tx.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(read_snapshot(&self.db)?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
