//! Storage: the Raft log and vote ([`LogStore`]) and the state machine with its snapshots
//! ([`StateMachine`]), both in one redb file per node.

// openraft's storage traits fix `StorageError` (200+ bytes) as the error type; boxing it
// here would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

mod archive;
mod audit;
pub mod history;
mod log;
mod sm;

use std::path::Path;
use std::sync::Arc;

pub use log::LogStore;
pub use sm::{check_snapshot, Applied, Copy, StateMachine};

use crate::types::StorageError;

/// redb's page cache. Its default (1 GiB) would let the cache alone reach the memory a
/// node may use at a million sessions; what is read hot is the log's tail (replication)
/// and, rarely, the latest snapshot, so a small cache serves it and the rest is left to
/// the OS page cache, which the kernel can reclaim.
const CACHE_BYTES: usize = 64 << 20;

/// The node's database file in its data directory.
pub const DB_FILE: &str = "tally.redb";

/// Opens (or creates) the node's database under `dir` and both stores on it.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), StorageError> {
    let io = |e: &dyn std::error::Error| -> StorageError {
        openraft::StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
    };
    std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    let db = redb::Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(DB_FILE))
        .map_err(|e| io(&e))?;
    let db = Arc::new(db);
    Ok((LogStore::new(db.clone())?, StateMachine::open(db)?))
}
