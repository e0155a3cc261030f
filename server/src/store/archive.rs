//! The applied-entry archive (`archive_log`): an append-only JSON-lines file in the data
//! directory holding every entry this node applied, with the events the ledger produced
//! for it, and a marker for every snapshot restored at start or installed from a leader.
//!
//! Why it exists: with snapshots on, the Raft log is purged behind every snapshot, so no
//! node can export the whole history any more. The fault tests' history checker needs
//! all of it, and it wants the events as the server under test produced them, not as a
//! replay of the same ledger code would. The union of the nodes' archives covers every
//! committed entry: a snapshot holds only entries its builder applied, and so archived.
//!
//! The file is written before `apply` returns and before the state machine is persisted
//! (it never is per entry: a restart re-applies the log after the last snapshot), so a
//! crash can repeat entries in the archive but never lose one another node does not
//! have; the checker requires repeats to be identical. kill -9 leaves what was written
//! in the page cache, and each batch is one `write`, so at worst the last line of a
//! life is cut short; a reader may skip such a line only where a `Restored` marker follows.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tally_core::ledger::{Event, Op};

/// One line of the archive.
#[derive(Debug, Serialize)]
pub enum Record<'a> {
    /// The process started on a snapshot at this index (0: none); entries after it follow.
    Restored { index: u64 },
    /// A snapshot up to this index was installed from the leader.
    Installed { index: u64 },
    /// A ledger entry and what applying it did.
    Applied {
        index: u64,
        at_ms: u64,
        op: &'a Op,
        events: &'a [Event],
    },
    /// One of Raft's own entries (blank, membership): the ledger never sees them, but the
    /// index is accounted for.
    Raft { index: u64 },
}

/// The open archive. Clones share the file.
#[derive(Debug, Clone)]
pub struct Archive {
    file: Arc<Mutex<File>>,
}

impl Archive {
    pub fn open(path: &Path) -> std::io::Result<Archive> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        // Start on a fresh line: the previous life may have been killed mid-line (readers
        // skip empty lines).
        file.write_all(b"\n")?;
        Ok(Archive {
            file: Arc::new(Mutex::new(file)),
        })
    }

    /// Encodes `records` as lines and appends them in one write.
    pub fn append(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("archive lock poisoned"))?;
        file.write_all(&buf)
    }
}
