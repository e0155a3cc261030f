//! Storage: the Raft log and vote ([`LogStore`]) and the state machine with its snapshots
//! ([`StateMachine`]), both in one redb file per node.

// openraft's storage traits fix `StorageError` (200+ bytes) as the error type; boxing it
// here would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

mod log;
mod sm;

use std::path::Path;
use std::sync::Arc;

pub use log::LogStore;
pub use sm::{Applied, StateMachine};

use crate::types::StorageError;

/// Opens (or creates) the node's database under `dir` and both stores on it.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), StorageError> {
    let io = |e: &dyn std::error::Error| -> StorageError {
        openraft::StorageIOError::write_logs(openraft::AnyError::error(e.to_string())).into()
    };
    std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
    let db = redb::Database::create(dir.join("tally.redb")).map_err(|e| io(&e))?;
    let db = Arc::new(db);
    Ok((LogStore::new(db.clone())?, StateMachine::open(db)?))
}
