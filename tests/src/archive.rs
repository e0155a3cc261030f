//! Reading the nodes' applied-entry archives (`archive_log`, see the server's
//! `store/archive.rs`) and merging them into the one committed history the checker
//! judges.
//!
//! Why archives and not `Admin.ExportLog`: the fault tests run with snapshots every few
//! entries, and a snapshot purges the log behind it, so no node still holds the whole
//! history. Every node instead appends each entry it applies, with the events its ledger
//! produced, to a file in its data directory, and marks where it started from a snapshot
//! (a restart) or installed one from the leader. The harness reads the files directly:
//! the checker runs on the same machine after the run, so no RPC is needed.
//!
//! What merging checks on the way (state machine safety, as the archives show it):
//! - within one life of a node (between two `Restored` markers), indexes follow one
//!   another without gaps or repeats, and after an install the next index is the
//!   snapshot's plus one;
//! - every node that applied an index applied the same entry and produced the same
//!   events, and so did a node that re-applied it after a restart;
//! - together the archives cover every index from 1 to the last one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use tally_core::ledger::{Event, Op};

/// One line of an archive, as the server writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "most records are `Applied`; boxing it would only add an allocation each"
)]
pub enum Record {
    Restored {
        index: u64,
    },
    Installed {
        index: u64,
    },
    Applied {
        index: u64,
        at_ms: u64,
        op: Op,
        events: Vec<Event>,
    },
    Raft {
        index: u64,
    },
}

/// One applied ledger entry of the merged history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub index: u64,
    pub at_ms: u64,
    pub op: Op,
    pub events: Vec<Event>,
}

/// The merged history and what merging found.
#[derive(Debug, Default)]
pub struct Merged {
    /// Ledger entries in index order (Raft's own entries left out).
    pub steps: Vec<Step>,
    /// Snapshot installs: (node, index).
    pub installs: Vec<(u64, u64)>,
    pub last_index: u64,
    pub violations: Vec<String>,
}

/// Reads node `id`'s archive under `data_dir`. A line that does not parse is skipped only
/// where a kill -9 could have cut it: right before the next life's `Restored` marker, or
/// at the very end; anywhere else it is an error.
pub fn read(data_dir: &Path) -> anyhow::Result<Vec<Record>> {
    let path = data_dir.join("archive.jsonl");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Record>(line) {
            Ok(r) => out.push(r),
            Err(e) => {
                let next = lines.get(i + 1).map(|l| serde_json::from_str::<Record>(l));
                let cut = matches!(next, None | Some(Ok(Record::Restored { .. })));
                anyhow::ensure!(
                    cut,
                    "{}: line {} does not parse ({e}) and is not the last of a life",
                    path.display(),
                    i + 1
                );
            }
        }
    }
    Ok(out)
}

/// Merges the archives of every node (node id → records in file order).
pub fn merge(archives: &BTreeMap<u64, Vec<Record>>) -> Merged {
    let mut m = Merged::default();
    // index → (the record, the node that first archived it); Raft entries as `Raft`.
    let mut union: BTreeMap<u64, (&Record, u64)> = BTreeMap::new();
    for (node, records) in archives {
        // The index the next applied record must have; None before the first marker.
        let mut next: Option<u64> = None;
        let mut reached = 0u64;
        for r in records {
            match r {
                Record::Restored { index } => {
                    // Index 0 is openraft's first membership entry: a node that starts
                    // on no snapshot (also written as 0) applies it next.
                    if *index == 0 {
                        next = Some(0);
                        continue;
                    }
                    if *index > reached {
                        m.violations.push(format!(
                            "node {node} restarted on a snapshot at index {index}, beyond anything it had applied or installed ({reached})"
                        ));
                    }
                    next = Some(index + 1);
                }
                Record::Installed { index } => {
                    m.installs.push((*node, *index));
                    next = Some(index + 1);
                    reached = reached.max(*index);
                }
                Record::Applied { index, .. } | Record::Raft { index } => {
                    match next {
                        Some(n) if n == *index => {}
                        // No snapshot (or one at 0): index 0 may already be behind it.
                        Some(0) if *index == 1 => {}
                        Some(n) => m.violations.push(format!(
                            "node {node} applied index {index} where {n} was next (a gap, a repeat or a step back within one run of the process)"
                        )),
                        None => m.violations.push(format!(
                            "node {node}'s archive starts with index {index}, before any start marker"
                        )),
                    }
                    next = Some(index + 1);
                    reached = reached.max(*index);
                    match union.get(index) {
                        None => {
                            union.insert(*index, (r, *node));
                        }
                        Some((first, by)) if *first != r => m.violations.push(format!(
                            "nodes {by} and {node} applied index {index} differently: {} vs {}",
                            brief(first),
                            brief(r)
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    m.last_index = union.keys().next_back().copied().unwrap_or(0);
    let missing: Vec<u64> = (1..=m.last_index)
        .filter(|i| !union.contains_key(i))
        .collect();
    if !missing.is_empty() {
        m.violations.push(format!(
            "no node archived indexes {:?} (of 1..={}): the history has a hole",
            &missing[..missing.len().min(10)],
            m.last_index
        ));
    }
    for (r, _) in union.values() {
        if let Record::Applied {
            index,
            at_ms,
            op,
            events,
        } = r
        {
            m.steps.push(Step {
                index: *index,
                at_ms: *at_ms,
                op: op.clone(),
                events: events.clone(),
            });
        }
    }
    m
}

/// A record in a few words, for a disagreement's message.
fn brief(r: &Record) -> String {
    let s = format!("{r:?}");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}
