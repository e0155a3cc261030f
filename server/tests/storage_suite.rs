//! openraft's own conformance suite run against Tally's redb log store and state machine:
//! votes, appends, truncation, purging, membership recovery, snapshots and their transfer.

// Helpers of a test file are test code: a failed unwrap is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use openraft::testing::{StoreBuilder, Suite};
use tally_server::store::{self, LogStore, StateMachine};
use tally_server::types::{StorageError, TypeConfig};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = store::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn redb_stores_pass_openrafts_storage_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("storage suite: {e}");
    }
}

#[tokio::test]
async fn a_reopened_store_has_its_vote_and_log() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::{CommittedLeaderId, LogId, Vote};
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = store::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        log.save_committed(Some(LogId::new(CommittedLeaderId::new(3, 2), 7)))
            .await
            .unwrap();
    }
    let (mut log, _) = store::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(
        log.read_committed().await.unwrap().map(|l| l.index),
        Some(7)
    );
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
}
