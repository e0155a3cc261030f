//! Collecting a run's history once the faults are over: every node's ledger digest (all
//! at the same applied index must be equal) and every node's archive, merged.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::LedgerDigestRequest;

use crate::archive::{merge, read, Merged};
use crate::harness::Harness;

/// Waits (up to 20 s) until every node has applied the same index, compares their
/// ledger digests, then reads and merges their archives. Disagreements are violations
/// in the result.
pub async fn collect(h: &Harness) -> anyhow::Result<Merged> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let digests = loop {
        let mut digests = BTreeMap::new();
        for id in h.ids() {
            let (addr, c) = h.direct(id)?;
            let d = c
                .call_node(&addr, "digest", |ch| async move {
                    AdminClient::new(ch)
                        .ledger_digest(LedgerDigestRequest {})
                        .await
                })
                .await?;
            digests.insert(id, (d.applied_index, d.sha256));
        }
        let indexes: BTreeSet<u64> = digests.values().map(|(i, _)| *i).collect();
        if indexes.len() == 1 || tokio::time::Instant::now() > deadline {
            break digests;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut archives = BTreeMap::new();
    for id in h.ids() {
        archives.insert(id, read(&h.data_dir(id))?);
    }
    let mut merged = merge(&archives);
    // Same index, same ledger: what a snapshot install or a restart restored must be
    // the state the others reached by applying entries.
    let mut by_index: BTreeMap<u64, Vec<(u64, &Vec<u8>)>> = BTreeMap::new();
    for (id, (index, sha)) in &digests {
        by_index.entry(*index).or_default().push((*id, sha));
    }
    for (index, nodes) in by_index {
        if nodes.windows(2).any(|w| w[0].1 != w[1].1) {
            let ids: Vec<u64> = nodes.iter().map(|(id, _)| *id).collect();
            merged.violations.push(format!(
                "nodes {ids:?} are all at index {index} but their ledgers differ"
            ));
        }
        if index > merged.last_index {
            merged.violations.push(format!(
                "a node applied index {index}, beyond the last archived index {}",
                merged.last_index
            ));
        }
    }
    Ok(merged)
}
