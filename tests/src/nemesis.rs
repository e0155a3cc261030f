//! Nemesis schedules and the run that ties harness, workload, faults and checker
//! together. A schedule is a list of faults drawn from a seed, so a failure reproduces
//! from the seed it prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::{ExportLogRequest, LedgerDigestRequest};
use tally_core::ledger::Entry;

use crate::checker::{check_events, replay, Rules};
use crate::harness::{Harness, MAX_LINGER_MS, SEATS};
use crate::workload::{now_ms, Outcome, Rng, Workload, TTL_MS};

/// One fault, applied for a while and then healed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    KillLeader,
    KillRandom,
    PauseRandom,
    IsolateLeader,
    /// The leader alone on one side, the two others on the other (for 3 nodes the same
    /// cut as isolating it, but clients still reach it).
    PartitionLeaderFromPeers,
    OneWayLoss,
    Delay,
    RollingRestart,
    KillAll,
    /// Every node alone: no majority anywhere, so nothing may be granted or expired.
    PartitionAll,
}

const ALL: [Fault; 10] = [
    Fault::KillLeader,
    Fault::KillRandom,
    Fault::PauseRandom,
    Fault::IsolateLeader,
    Fault::PartitionLeaderFromPeers,
    Fault::OneWayLoss,
    Fault::Delay,
    Fault::RollingRestart,
    Fault::KillAll,
    Fault::PartitionAll,
];

/// `len` faults drawn from `seed`.
pub fn schedule(seed: u64, len: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| ALL[rng.below(ALL.len() as u64) as usize])
        .collect()
}

/// How one schedule went.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub faults: Vec<String>,
    pub ops: usize,
    /// Checkouts granted and checkins answered that started after the last heal: a
    /// cluster that answers every call with a denial or an error also records `ops`, so
    /// progress is judged on these.
    pub granted_after_heal: usize,
    pub checked_in_after_heal: usize,
    pub entries: usize,
    pub violations: Vec<String>,
}

/// Extra time, beyond TTL and linger, allowed for cleanup after the heal: expiry batches,
/// a keeper tick, an election that the heal itself may trigger.
pub const CLEANUP_BOUND_MS: u64 = 4_000;

/// Runs one schedule of `faults` faults with `clients` clients, data under `dir`.
pub async fn run(seed: u64, dir: &Path, faults: usize, clients: usize) -> anyhow::Result<Report> {
    let mut h = Harness::start(dir, 3).await?;
    let work = Workload::start(h.endpoints.clone(), clients, seed);
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    for fault in schedule(seed, faults) {
        let hold = Duration::from_millis(800 + rng.below(1_700));
        let leader = h.wait_leader(Duration::from_secs(20)).await?;
        let ids = h.ids();
        let random = ids[rng.below(ids.len() as u64) as usize];
        let what = match fault {
            Fault::KillLeader | Fault::KillRandom => {
                let id = if fault == Fault::KillLeader {
                    leader
                } else {
                    random
                };
                h.kill(id).await;
                tokio::time::sleep(hold).await;
                h.restart(id)?;
                format!("kill -9 node {id} for {hold:?}")
            }
            Fault::PauseRandom => {
                h.pause(random);
                tokio::time::sleep(hold).await;
                h.resume(random);
                format!("SIGSTOP node {random} for {hold:?}")
            }
            Fault::IsolateLeader => {
                h.isolate(leader);
                tokio::time::sleep(hold).await;
                h.heal();
                format!("isolate leader {leader} for {hold:?}")
            }
            Fault::PartitionLeaderFromPeers => {
                let others: Vec<u64> = ids.iter().copied().filter(|x| *x != leader).collect();
                h.partition(&[vec![leader], others]);
                tokio::time::sleep(hold).await;
                h.heal();
                format!("partition leader {leader} from its peers for {hold:?}")
            }
            Fault::PartitionAll => {
                let alone: Vec<Vec<u64>> = ids.iter().map(|id| vec![*id]).collect();
                h.partition(&alone);
                tokio::time::sleep(hold).await;
                h.heal();
                format!("every node cut from every other for {hold:?}")
            }
            Fault::OneWayLoss => {
                // From the leader to a follower, or from a follower to the leader.
                let other = ids
                    .iter()
                    .copied()
                    .filter(|x| *x != leader)
                    .nth(rng.below(ids.len() as u64 - 1) as usize)
                    .unwrap_or(leader);
                let (from, to) = if rng.below(2) == 0 {
                    (leader, other)
                } else {
                    (other, leader)
                };
                h.one_way_loss(from, to);
                tokio::time::sleep(hold).await;
                h.heal();
                format!("drop {from}→{to} for {hold:?}")
            }
            Fault::Delay => {
                h.delay_all(Duration::from_millis(40));
                tokio::time::sleep(hold).await;
                h.heal();
                format!("40 ms delay on every link for {hold:?}")
            }
            Fault::RollingRestart => {
                for id in &ids {
                    h.stop(*id).await;
                    h.restart(*id)?;
                    h.wait_leader(Duration::from_secs(20)).await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                "rolling restart".into()
            }
            Fault::KillAll => {
                for id in &ids {
                    h.kill(*id).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                for id in &ids {
                    h.restart(*id)?;
                }
                "kill -9 of every node, then restart".into()
            }
        };
        report.faults.push(what);
        h.wait_leader(Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
    }
    let healed_ms = now_ms();
    // Long enough for every client to open, check out and check in a few times on the
    // healed cluster (its calls take tens of milliseconds).
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let history = work.finish().await;
    report.ops = history.ops.len();
    for op in history.ops.iter().filter(|o| o.start_ms >= healed_ms) {
        match op.outcome {
            Outcome::Granted { .. } => report.granted_after_heal += 1,
            Outcome::CheckedIn => report.checked_in_after_heal += 1,
            _ => {}
        }
    }

    // Let every crashed session expire and its seats come back.
    tokio::time::sleep(Duration::from_millis(
        TTL_MS + MAX_LINGER_MS + CLEANUP_BOUND_MS,
    ))
    .await;
    let (log, digests) = collect(&h).await?;
    report.entries = log.len();
    let at: BTreeSet<u64> = digests.values().map(|(i, _)| *i).collect();
    let (steps, replayed) = replay(&log, &at);
    report
        .violations
        .extend(digest_mismatches(&digests, &replayed));
    let rules = Rules {
        seats: SEATS.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
        cleanup_bound_ms: CLEANUP_BOUND_MS,
        healed_ms,
        end_ms: now_ms(),
    };
    report
        .violations
        .extend(check_events(&steps, &history, &rules));
    Ok(report)
}

/// The committed log (from the leader) and every node's ledger digest, once all nodes
/// have applied the same entries.
/// Nodes whose ledger digest (node → (applied index, digest)) differs from the digest
/// of the exported log replayed to the same index.
pub fn digest_mismatches(
    digests: &BTreeMap<u64, (u64, Vec<u8>)>,
    replayed: &BTreeMap<u64, Vec<u8>>,
) -> Vec<String> {
    digests
        .iter()
        .filter(|(_, (index, sha))| replayed.get(index) != Some(sha))
        .map(|(node, (index, _))| {
            format!("node {node}'s ledger at index {index} differs from the replayed log")
        })
        .collect()
}

async fn collect(h: &Harness) -> anyhow::Result<(Vec<Entry>, BTreeMap<u64, (u64, Vec<u8>)>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
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
            let leader = h.wait_leader(Duration::from_secs(10)).await?;
            let log = export(h, leader).await?;
            let last = log.last().map_or(0, |e| e.index);
            if indexes.iter().all(|i| *i <= last) {
                return Ok((log, digests));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Node `id`'s whole log, as ledger entries (what the checker replays).
pub async fn export(h: &Harness, id: u64) -> anyhow::Result<Vec<Entry>> {
    let (addr, c) = h.direct(id)?;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = c
            .call_node(&addr, "export", |ch| async move {
                let mut s = AdminClient::new(ch)
                    .export_log(ExportLogRequest { from_index: from })
                    .await?
                    .into_inner();
                let mut recs = Vec::new();
                while let Some(r) = s.message().await? {
                    recs.push(r);
                }
                Ok(tonic::Response::new(recs))
            })
            .await?;
        let Some(last) = page.last().map(|r| r.index) else {
            return Ok(out);
        };
        for r in page {
            if !r.entry_json.is_empty() {
                out.push(
                    serde_json::from_slice(&r.entry_json)
                        .with_context(|| format!("decoding entry {}", r.index))?,
                );
            }
        }
        from = last + 1;
    }
}
