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
use tally_core::history::What;
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
    /// Who holds what, for the usage history's records and the audit log's lines (see
    /// `audit.rs`).
    audit: super::audit::Audit,
    /// Under-licensing alerts this node applied since it started (for `/metrics`).
    pub short_alerts: u64,
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
    /// The usage history's store (see `history.rs`).
    history: super::history::Writer,
    /// Records older than this (in ledger time) are pruned from the history.
    retention_ms: u64,
}

/// Every this many log indexes, the history is pruned of records past retention.
const PRUNE_EVERY: u64 = 4096;

/// A snapshot as it travels to a node that installs it: the ledger's snapshot and the
/// usage history up to it. Persisted locally is the ledger's part only (the history is
/// in its own tables); the history is added when a snapshot is sent.
const ENVELOPE: &[u8; 8] = b"TALLYSN\0";
const ENVELOPE_FORMAT: u8 = 1;

fn envelope(ledger: Vec<u8>, section: &super::history::Section) -> Result<Vec<u8>, StorageError> {
    let mut out = ENVELOPE.to_vec();
    out.push(ENVELOPE_FORMAT);
    postcard::to_extend(&(ledger, section), out).map_err(io)
}

/// The ledger's bytes and the history a received snapshot carries. A bare ledger
/// snapshot (as persisted locally) carries no history.
fn open_envelope(
    data: Vec<u8>,
) -> Result<(Vec<u8>, Option<super::history::Section>), StorageError> {
    let Some(rest) = data.strip_prefix(ENVELOPE.as_slice()) else {
        return Ok((data, None));
    };
    match rest.split_first() {
        Some((&ENVELOPE_FORMAT, body)) => {
            let (ledger, section): (Vec<u8>, super::history::Section) =
                postcard::from_bytes(body).map_err(io)?;
            Ok((ledger, Some(section)))
        }
        _ => Err(io(std::io::Error::other(
            "snapshot envelope of an unknown format: every node must run the same tallyd release",
        ))),
    }
}

/// A consistent copy of the state at one applied index, with the usage history up to
/// it: what a backup holds (see `backup.rs`).
#[derive(Debug)]
pub struct Copy {
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    /// The snapshot as a node installs it: the ledger and the history (the envelope).
    pub snapshot: Vec<u8>,
    /// For the backup's header.
    pub cluster_id: String,
    pub ledger_time_ms: u64,
    pub sessions: u64,
    pub leases: u64,
    pub history_records: u64,
}

/// Checks that a snapshot as a node installs it (an envelope, or a bare ledger) opens and
/// its ledger restores, writing nothing; returns the ledger.
pub fn check_snapshot(data: &[u8]) -> Result<Ledger, StorageError> {
    let (ledger, _) = open_envelope(data.to_vec())?;
    Ledger::restore(&ledger).map_err(io)
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
        let history = super::history::Writer::start(db.clone()).map_err(io)?;
        Ok(Self {
            state: Arc::new(RwLock::new(applied)),
            db,
            applied_tx: Arc::new(applied_tx),
            archive: None,
            history,
            retention_ms: tally_core::history::DEFAULT_RETENTION_MS,
        })
    }

    /// Keeps the usage history for `ms` of ledger time (the `history_retention_days`
    /// setting).
    pub fn set_retention_ms(&mut self, ms: u64) {
        self.retention_ms = ms;
    }

    /// The usage history's store, for reports.
    pub fn history(&self) -> &super::history::Writer {
        &self.history
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

    /// A copy of the ledger at the index applied now, its membership, and the usage
    /// history up to that index, in the envelope a snapshot travels in. The ledger is
    /// read under the read lock (one applied index); the history is flushed after, so
    /// every record of an entry up to that index is on disk, and those after it are left
    /// out. Blocking work runs on a blocking thread.
    pub async fn copy(&self) -> Result<Copy, StorageError> {
        let sm = self.clone();
        tokio::task::spawn_blocking(move || -> Result<Copy, StorageError> {
            let (ledger, last_log_id, membership, info) = {
                let s = sm.read();
                let l = &s.ledger;
                let info = (
                    l.cluster_id().map(|c| c.to_string()).unwrap_or_default(),
                    l.now_ms(),
                    l.sessions().len() as u64,
                    l.leases().len() as u64,
                );
                (l.snapshot(), s.last_applied, s.membership.clone(), info)
            };
            sm.history.flush().map_err(io)?;
            let section = sm
                .history
                .section(last_log_id.map_or(0, |l| l.index))
                .map_err(io)?;
            let history_records = section.records.len() as u64;
            Ok(Copy {
                last_log_id,
                membership,
                snapshot: envelope(ledger, &section)?,
                cluster_id: info.0,
                ledger_time_ms: info.1,
                sessions: info.2,
                leases: info.3,
                history_records,
            })
        })
        .await
        .map_err(io)?
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
            let taken = {
                let s = sm.read();
                (s.ledger.snapshot(), s.last_applied, s.membership.clone())
            };
            // The history's records up to this index are on disk before the snapshot
            // says the log before it may go (see `history.rs`).
            sm.history.flush().map(|()| taken)
        })
        .await
        .map_err(io)?
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
        let mut history = Vec::new();
        let mut prune_before = None;
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
                        let s = &mut *s;
                        let (records, lines) = s.audit.entry(
                            &s.ledger,
                            (index, e.at_ms, cmd.by.as_deref()),
                            &outcome.events,
                        );
                        for line in lines {
                            tracing::info!(target: "tally::audit", "{line}");
                        }
                        for r in &records {
                            if let What::Short { in_use, licensed } = r.what {
                                s.short_alerts += 1;
                                tracing::warn!(
                                    target: "tally::usage",
                                    "UNDER-LICENSED: \"{}\" has {in_use} seat(s) in use (or users assigned) and {licensed} licensed",
                                    r.feature
                                );
                            }
                        }
                        history.extend(records);
                        if index % PRUNE_EVERY == 0 {
                            prune_before = s.ledger.now_ms().checked_sub(self.retention_ms);
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
            // Queued before the lock is let go: a snapshot built at this index flushes
            // the writer after reading the ledger, and must find these records queued.
            self.history.write(history);
            if let Some(before_ms) = prune_before {
                self.history.prune(before_ms);
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
        let (data, section) = open_envelope(snapshot.into_inner())?;
        let ledger = Ledger::restore(&data).map_err(io)?;
        if let Some(section) = section {
            let history = self.history.clone();
            tokio::task::spawn_blocking(move || history.replace(section))
                .await
                .map_err(io)?
                .map_err(io)?;
        }
        self.persist(meta, data).await?;
        let index = {
            let mut s = self.write();
            s.audit = super::audit::Audit::of(&ledger);
            s.ledger = ledger;
            s.last_applied = meta.last_log_id;
            s.membership = meta.last_membership.clone();
            meta.last_log_id.map_or(0, |l| l.index)
        };
        tracing::info!(
            "installed a snapshot at log index {index}: the ledger and the usage history up to it"
        );
        if let Some(archive) = &self.archive {
            archive
                .append(&[super::archive::Record::Installed { index }])
                .map_err(io)?;
        }
        self.applied_tx.send_replace(index);
        Ok(())
    }

    /// The persisted snapshot, with the usage history up to its index added: this is
    /// what openraft sends to a node that is too far behind for the log.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, data)) = read_snapshot(&self.db)? else {
            return Ok(None);
        };
        let upto = meta.last_log_id.map_or(0, |l| l.index);
        let history = self.history.clone();
        let section = tokio::task::spawn_blocking(move || history.section(upto))
            .await
            .map_err(io)?
            .map_err(io)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(envelope(data, &section)?)),
        }))
    }
}
