//! Backup and disaster recovery: what `tallyctl snapshot save` receives (the Admin
//! `SaveSnapshot` call), what `tallyd restore` seeds a new cluster from, and what
//! `tallyd recover` does to the last node of a cluster that lost its quorum for good.
//!
//! A backup is a file in `tally_core::backup`'s framing whose payload holds the snapshot
//! exactly as a node sends it to a node that is behind (the ledger and the usage history
//! up to its index, `sm.rs`'s envelope), its last log id, the membership and the cluster
//! name. Restoring writes it into a fresh data directory as that node's snapshot, with
//! the new cluster's membership, so that the node starts from it as if it had installed
//! it from a leader: openraft's own start-up path, nothing special at run time.
//!
//! Why the log index is kept, not restarted at 0: fencing tokens are log indexes and must
//! only ever grow, also across a restore (a resource that saw token 900 must not accept a
//! new holder's token 12), and lease ids and the usage history's keys count on it too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage as _, RaftStateMachine as _};
use openraft::{Membership, RaftLogReader as _};
use serde::{Deserialize, Serialize};
use tally_core::backup::{Header, Member};

use crate::store::{self, Copy, StateMachine};
use crate::types::{LogId, SnapshotMeta, StoredMembership, TallyNode, Vote};

/// What can go wrong taking, reading or applying a backup, or recovering a node.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file's framing: not a backup, cut short, damaged.
    #[error(transparent)]
    File(#[from] tally_core::backup::BackupError),
    #[error("the backup's payload {0}: the file is damaged or was not written by tallyd")]
    Payload(String),
    #[error("nothing to back up yet: the cluster has applied no entry")]
    Empty,
    #[error("storage: {0}")]
    Storage(String),
    #[error("{}: {problem}", dir.display())]
    Dir { dir: PathBuf, problem: String },
    #[error("{0}")]
    Members(String),
}

fn storage(e: impl std::fmt::Display) -> BackupError {
    BackupError::Storage(e.to_string())
}

/// The payload of a backup file (postcard). openraft's types go as JSON inside it, which
/// is safe with their flattened fields (see STACK.md).
#[derive(Serialize, Deserialize)]
struct Payload {
    cluster_name: String,
    /// The last log id the snapshot includes.
    last_log_id: Vec<u8>,
    /// The membership then (informative: a restore sets the new cluster's).
    membership: Vec<u8>,
    /// The snapshot as a node installs it (ledger and usage history).
    snapshot: Vec<u8>,
}

/// A backup file read and checked: framing, digest, payload, and the payload against
/// the header.
#[derive(Debug)]
pub struct Backup {
    pub header: Header,
    pub last_log_id: LogId,
    pub membership: StoredMembership,
    snapshot: Vec<u8>,
}

/// The backup file of the state machine's state now: the caller has made this a
/// linearizable point (the Admin call waits for the leader's read index first).
pub async fn take(sm: &StateMachine, cluster_name: &str) -> Result<(Header, Vec<u8>), BackupError> {
    let copy = sm.copy().await.map_err(storage)?;
    file_of(cluster_name, copy)
}

/// A backup file's bytes from a copy of the state, and its header as written.
fn file_of(cluster_name: &str, copy: Copy) -> Result<(Header, Vec<u8>), BackupError> {
    let last = copy.last_log_id.ok_or(BackupError::Empty)?;
    let mem = copy.membership.membership();
    let voters: BTreeSet<u64> = mem.voter_ids().collect();
    let members = mem
        .nodes()
        .map(|(id, n)| Member {
            id: *id,
            addr: n.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    let header = Header {
        cluster_name: cluster_name.to_owned(),
        cluster_id: copy.cluster_id,
        index: last.index,
        term: last.leader_id.term,
        ledger_time_ms: copy.ledger_time_ms,
        members,
        sessions: copy.sessions,
        leases: copy.leases,
        history_records: copy.history_records,
        tallyd_version: env!("CARGO_PKG_VERSION").to_owned(),
        payload_bytes: 0,
        payload_sha256: String::new(),
    };
    let json = |e: serde_json::Error| BackupError::Payload(e.to_string());
    let payload = Payload {
        cluster_name: cluster_name.to_owned(),
        last_log_id: serde_json::to_vec(&last).map_err(json)?,
        membership: serde_json::to_vec(&copy.membership).map_err(json)?,
        snapshot: copy.snapshot,
    };
    let payload =
        postcard::to_allocvec(&payload).map_err(|e| BackupError::Payload(e.to_string()))?;
    let file = tally_core::backup::encode(header, &payload);
    // Read back what is about to be sent: the same checks a restore makes.
    let header = open(&file)?.header;
    Ok((header, file))
}

/// Reads and checks a backup file's bytes. Nothing is written anywhere.
pub fn open(file: &[u8]) -> Result<Backup, BackupError> {
    let (header, payload) = tally_core::backup::decode(file)?;
    let bad = |what: String| BackupError::Payload(what);
    let p: Payload =
        postcard::from_bytes(payload).map_err(|e| bad(format!("does not decode ({e})")))?;
    let last_log_id: LogId = serde_json::from_slice(&p.last_log_id)
        .map_err(|e| bad(format!("has no readable log id ({e})")))?;
    let membership: StoredMembership = serde_json::from_slice(&p.membership)
        .map_err(|e| bad(format!("has no readable membership ({e})")))?;
    let ledger = store::check_snapshot(&p.snapshot)
        .map_err(|e| bad(format!("holds a snapshot that does not restore ({e})")))?;
    // The header is what people read and tools print: it must say what the payload is.
    let found = (
        p.cluster_name.as_str(),
        last_log_id.index,
        last_log_id.leader_id.term,
        ledger.sessions().len() as u64,
        ledger.leases().len() as u64,
        ledger
            .cluster_id()
            .map(|c| c.to_string())
            .unwrap_or_default(),
    );
    let said = (
        header.cluster_name.as_str(),
        header.index,
        header.term,
        header.sessions,
        header.leases,
        header.cluster_id.clone(),
    );
    if found != said {
        return Err(bad(format!(
            "disagrees with the header (cluster, index, term, sessions, leases, cluster id: {found:?} in the payload, {said:?} in the header)"
        )));
    }
    Ok(Backup {
        header,
        last_log_id,
        membership,
        snapshot: p.snapshot,
    })
}

/// Reads a backup file from disk and checks it.
pub fn read(path: &Path) -> Result<Backup, BackupError> {
    let bytes = std::fs::read(path).map_err(|e| BackupError::Dir {
        dir: path.to_owned(),
        problem: format!("cannot read it: {e}"),
    })?;
    open(&bytes)
}

/// What a restore or a recovery wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Seeded {
    pub dir: PathBuf,
    pub cluster_name: String,
    pub id: u64,
    pub members: BTreeMap<u64, String>,
    pub index: u64,
    pub term: u64,
    pub sessions: u64,
    pub leases: u64,
    pub history_records: u64,
}

/// `tallyd restore`: seeds `dir` (absent or empty) as node `id` of a new cluster of
/// `members` from `backup`, under the backup's cluster name unless `cluster_name` says
/// another. Started with `tallyd run`, the node elects itself among `members` (alone if
/// it is the only one) and sends the snapshot to the others, which start empty.
pub async fn restore(
    backup: Backup,
    dir: &Path,
    id: u64,
    members: BTreeMap<u64, TallyNode>,
    cluster_name: Option<&str>,
) -> Result<Seeded, BackupError> {
    check_empty(dir)?;
    let name = cluster_name
        .unwrap_or(&backup.header.cluster_name)
        .to_owned();
    let h = &backup.header;
    let seeded = Seeded {
        dir: dir.to_owned(),
        cluster_name: name.clone(),
        id,
        members: members.iter().map(|(i, n)| (*i, n.addr.clone())).collect(),
        index: h.index,
        term: h.term,
        sessions: h.sessions,
        leases: h.leases,
        history_records: h.history_records,
    };
    let last = backup.last_log_id;
    seed(
        dir,
        &name,
        last,
        backup.snapshot,
        id,
        members,
        last.leader_id.term,
    )
    .await?;
    Ok(seeded)
}

/// A data directory a restore may seed: absent, or empty but for a file system's
/// `lost+found` (a fresh volume has one).
fn check_empty(dir: &Path) -> Result<(), BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(BackupError::Dir {
                dir: dir.to_owned(),
                problem: format!("cannot read it: {e}"),
            })
        }
        Ok(entries) => entries,
    };
    let found: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lost+found")
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(BackupError::Dir {
        dir: dir.to_owned(),
        problem: format!(
            "not empty (it holds {}): a restore seeds a new node's data directory and never writes over data; give an empty or absent directory",
            found.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Writes a node's storage in `dir` as if it had installed `snapshot` (at `last`) from a
/// leader of a cluster of `members`: the snapshot with that membership, the log empty
/// and purged up to it, and a vote in `vote_term` (at least the snapshot's term, so the
/// node's first election is in a later term than any entry it holds).
async fn seed(
    dir: &Path,
    cluster_name: &str,
    last: LogId,
    snapshot: Vec<u8>,
    id: u64,
    members: BTreeMap<u64, TallyNode>,
    vote_term: u64,
) -> Result<(), BackupError> {
    if !members.contains_key(&id) {
        return Err(BackupError::Members(format!(
            "node {id} is not among the members given ({:?}): the seeded node must be one of them",
            members.keys().collect::<Vec<_>>()
        )));
    }
    let (mut log, mut sm) = store::open(dir).map_err(storage)?;
    if let Some(bound) = log.claim_cluster(cluster_name).map_err(storage)? {
        return Err(BackupError::Dir {
            dir: dir.to_owned(),
            problem: format!("already holds data of cluster \"{bound}\""),
        });
    }
    let voters: BTreeSet<u64> = members.keys().copied().collect();
    let membership = Membership::new(vec![voters], members);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        snapshot_id: format!("restored-{}-{}", last.leader_id.term, last.index),
    };
    sm.install_snapshot(&meta, Box::new(Cursor::new(snapshot)))
        .await
        .map_err(storage)?;
    // Not committed and for itself: the node campaigns in the next term at its first
    // election timeout, as after any restart.
    log.save_vote(&Vote::new(vote_term, id))
        .await
        .map_err(storage)?;
    // What openraft itself would do at start for a snapshot ahead of the log; written
    // here so the directory is consistent on its own.
    log.purge(last).await.map_err(storage)?;
    Ok(())
}

/// What `tallyd recover` found on the node, and what it did (nothing on a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub cluster_name: String,
    pub id: u64,
    pub addr: String,
    /// The last entry of this node's log: the recovered state includes it.
    pub index: u64,
    pub term: u64,
    /// This node's commit mark (a lower bound): entries after it were in its log but
    /// may not have been committed by the old cluster; they are kept.
    pub committed_at_least: u64,
    /// The snapshot this node held, and how many log entries after it were applied.
    pub snapshot_index: u64,
    pub log_entries_applied: u64,
    pub old_members: Vec<Member>,
    pub sessions: u64,
    pub leases: u64,
    pub history_records: u64,
    /// Whether anything was changed (false: a dry run).
    pub applied: bool,
    /// Where the old database was moved, and the backup of the recovered state written
    /// beside it.
    pub old_database: Option<PathBuf>,
    pub backup: Option<PathBuf>,
}

/// `tallyd recover`: makes the node whose data is in `dir` (stopped) the only member of
/// its cluster, with everything its log holds.
///
/// How: the node's snapshot and every entry of its log after it are applied in a scratch
/// store (all entries, not only those known committed: the commit mark is a lower bound
/// written lazily, and an entry acknowledged to a client may be past it; an entry that
/// was never committed is kept too, as etcd's `--force-new-cluster` keeps them, which at
/// worst keeps a seat nobody was told of, and that seat's session expires); the result is
/// then seeded into `dir` as a snapshot whose membership is this node alone, exactly as a
/// restore does. The old database is moved aside, never deleted, and a backup file of
/// the recovered state is written beside it.
///
/// The cluster keeps its name (and the ledger its cluster id): clients, configs,
/// certificates and `CLUSTER=`-locked licenses keep working, and new nodes join with
/// `tallyctl node add` under the same name. The price: the lost nodes must never come
/// back with their old data (they would still form a majority of the old membership and
/// elect a leader of their own); a lost node returns with its data directory wiped, and
/// joins as a new member. deploy/README.md says so.
pub async fn recover(
    dir: &Path,
    id: u64,
    advertise: Option<String>,
    apply: bool,
) -> Result<Recovery, BackupError> {
    let db = dir.join(store::DB_FILE);
    if !db.is_file() {
        return Err(BackupError::Dir {
            dir: dir.to_owned(),
            problem: format!("holds no {}: not a node's data directory", store::DB_FILE),
        });
    }
    let (name, snapshot, entries, vote, committed) = {
        let (mut log, mut sm) = store::open(dir).map_err(|e| BackupError::Dir {
            dir: dir.to_owned(),
            problem: format!(
                "cannot open its database ({e}): is tallyd still running on it? Stop it first"
            ),
        })?;
        let name = log
            .cluster_name()
            .map_err(storage)?
            .ok_or_else(|| BackupError::Dir {
                dir: dir.to_owned(),
                problem: "was never started as a node (no cluster name)".into(),
            })?;
        let vote = log.read_vote().await.map_err(storage)?;
        let committed = log.read_committed().await.map_err(storage)?;
        let snapshot = sm.get_current_snapshot().await.map_err(storage)?;
        let from = snapshot
            .as_ref()
            .and_then(|s| s.meta.last_log_id)
            .map_or(0, |l| l.index + 1);
        let entries = log.try_get_log_entries(from..).await.map_err(storage)?;
        (name, snapshot, entries, vote, committed)
    };
    // The scratch store: the old database is only read, so a dry run changes nothing.
    let work = dir.join(format!(".recover-work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = replay(&work, snapshot, entries).await;
    let _ = std::fs::remove_dir_all(&work);
    let (copy, snapshot_index, applied_entries) = result?;
    let last = copy.last_log_id.ok_or(BackupError::Empty)?;
    let mem = copy.membership.membership();
    let voters: BTreeSet<u64> = mem.voter_ids().collect();
    let old_members: Vec<Member> = mem
        .nodes()
        .map(|(i, n)| Member {
            id: *i,
            addr: n.addr.clone(),
            voter: voters.contains(i),
        })
        .collect();
    let node = match (advertise, mem.get_node(&id)) {
        (Some(addr), known) => TallyNode {
            addr,
            http: known.map(|n| n.http.clone()).unwrap_or_default(),
        },
        (None, Some(n)) => n.clone(),
        (None, None) => {
            return Err(BackupError::Members(format!(
                "node {id} is not a member of this data's cluster (members: {}): is --id right? Give the address it serves on with --advertise",
                old_members
                    .iter()
                    .map(|m| format!("{}={}", m.id, m.addr))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    let mut recovery = Recovery {
        cluster_name: name.clone(),
        id,
        addr: node.addr.clone(),
        index: last.index,
        term: last.leader_id.term,
        committed_at_least: committed.map_or(0, |c| c.index),
        snapshot_index,
        log_entries_applied: applied_entries,
        old_members,
        sessions: copy.sessions,
        leases: copy.leases,
        history_records: copy.history_records,
        applied: false,
        old_database: None,
        backup: None,
    };
    if !apply {
        return Ok(recovery);
    }
    let vote_term = vote
        .map_or(0, |v| v.leader_id.term)
        .max(last.leader_id.term);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // First the backup, so that whatever happens next, the recovered state is on disk.
    let (_, file) = file_of(&name, copy)?;
    let backup_path = dir.join(format!("recovered-{}-{stamp}.tallybak", last.index));
    write_atomically(&backup_path, &file).map_err(|e| BackupError::Dir {
        dir: backup_path.clone(),
        problem: format!("writing the backup of the recovered state: {e}"),
    })?;
    let backup = open(&file)?;
    let old = dir.join(format!("{}.before-recover-{stamp}", store::DB_FILE));
    std::fs::rename(&db, &old).map_err(|e| BackupError::Dir {
        dir: db.clone(),
        problem: format!("moving it to {}: {e}", old.display()),
    })?;
    let members = BTreeMap::from([(id, node)]);
    seed(dir, &name, last, backup.snapshot, id, members, vote_term).await?;
    recovery.applied = true;
    recovery.old_database = Some(old);
    recovery.backup = Some(backup_path);
    Ok(recovery)
}

/// Applies `snapshot` and `entries` in a scratch store in `work` through the state
/// machine's own apply (so the ledger and the usage history come out as on a running
/// node), and copies the result. Returns the copy, the snapshot's index and how many
/// entries were applied.
async fn replay(
    work: &Path,
    snapshot: Option<openraft::storage::Snapshot<crate::types::TypeConfig>>,
    entries: Vec<crate::types::Entry>,
) -> Result<(Copy, u64, u64), BackupError> {
    let (_log, mut sm) = store::open(work).map_err(storage)?;
    let mut snapshot_index = 0;
    if let Some(s) = snapshot {
        snapshot_index = s.meta.last_log_id.map_or(0, |l| l.index);
        sm.install_snapshot(&s.meta, s.snapshot)
            .await
            .map_err(storage)?;
    }
    let n = entries.len() as u64;
    // In batches, as openraft applies them: one lock and one history message a batch.
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let batch: Vec<_> = entries.by_ref().take(1024).collect();
        sm.apply(batch).await.map_err(storage)?;
    }
    let copy = sm.copy().await.map_err(storage)?;
    Ok((copy, snapshot_index, n))
}

/// Writes `bytes` to `path` so that `path` is either absent or whole: a temporary file in
/// the same directory, synced, renamed over `path`, the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
