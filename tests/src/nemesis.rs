//! Nemesis schedules and the run that ties harness, workload, faults and checker
//! together. A schedule is a list of faults drawn from a seed, so a failure reproduces
//! from the seed it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin_work::{Licensor, DUP_LICENSE};
use crate::checker::{check, Rules};
use crate::collect::collect;
use crate::harness::{Harness, NodeEnv, MAX_LINGER_MS};
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
    /// One node restarted with its wall clock off (seconds to minutes either way, or
    /// five years ahead), meanwhile perhaps the leader killed; then restarted on true
    /// time. Needs libfaketime.
    ClockSkew,
    /// One node's wall clock jumps while it runs (often the leader's), then jumps back.
    /// Needs libfaketime.
    ClockJump,
}

const ALL: [Fault; 12] = [
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
    Fault::ClockSkew,
    Fault::ClockJump,
];

/// Whether the clock faults can run: they move nodes' wall clocks with Debian's
/// libfaketime (which CI installs); `TALLY_NEMESES=basic` leaves them out.
pub fn clock_faults() -> bool {
    std::env::var("TALLY_NEMESES").as_deref() != Ok("basic")
        && std::path::Path::new(crate::FAKETIME_SO).exists()
}

/// `len` faults drawn from `seed`.
/// Without libfaketime the clock faults are left out, so a seed names another schedule
/// on such a machine.
pub fn schedule(seed: u64, len: usize) -> Vec<Fault> {
    let n = if clock_faults() {
        ALL.len()
    } else {
        ALL.len() - 2
    };
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| ALL[rng.below(n as u64) as usize])
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
    /// Snapshot installs the archives recorded (a node caught up from a snapshot).
    pub installs: usize,
    /// What the model saw: grants from the queue, shared seats, revocations, ...
    pub seen: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
}

/// Extra time, beyond TTL and linger, allowed for cleanup after the heal: expiry batches,
/// a keeper tick, an election that the heal itself may trigger.
pub const CLEANUP_BOUND_MS: u64 = 4_000;

/// The file node `id`'s libfaketime reads its offset from (re-read every second), so a
/// running node's clock can jump.
fn clock_file(h: &Harness, id: u64) -> PathBuf {
    h.dir.join(format!("faketime{id}"))
}

/// Every node's usual environment: with the clock faults on, libfaketime reading an
/// offset ("+0" until a jump) from its clock file; monotonic time is never faked.
fn clock_env(dir: &Path, id: u64) -> Vec<(String, String)> {
    if !clock_faults() {
        return Vec::new();
    }
    let file = dir.join(format!("faketime{id}"));
    vec![
        ("LD_PRELOAD".into(), crate::FAKETIME_SO.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
    ]
}

/// Runs one schedule of `faults` faults with `clients` clients, data under `dir`.
pub async fn run(seed: u64, dir: &Path, faults: usize, clients: usize) -> anyhow::Result<Report> {
    std::fs::create_dir_all(dir)?;
    let mut env = NodeEnv::new();
    for id in 1..=3 {
        std::fs::write(dir.join(format!("faketime{id}")), "+0\n")?;
        env.insert(id, clock_env(dir, id));
    }
    let mut h = Harness::start_for_faults(dir, 3, env).await?;
    h.load_license("dup.lic", DUP_LICENSE).await?;
    let admin = Licensor {
        key: h.signer(),
        endpoints: h.endpoints.clone(),
    };
    let work = Workload::start(h.endpoints.clone(), clients, seed, Some(admin));
    let mut rng = Rng::new(seed ^ 0x5EED);
    let mut report = Report {
        seed,
        ..Report::default()
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    for fault in schedule(seed, faults) {
        let what = inject(&mut h, fault, &mut rng).await?;
        report.faults.push(what);
        h.wait_leader(Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
    }
    let healed_ms = now_ms();
    // Long enough for every client to open, check out and check in a few times on the
    // healed cluster (its calls take tens of milliseconds)...
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    // ...and, if none has yet, until one has, within the time the cluster promises to
    // free what crashed sessions hold (TTL, linger and cleanup): seats held by sessions
    // that crashed just before the heal may deny every checkout for that long, so two
    // seconds alone judged a busy machine's schedules as stalls (soak seeds 22, 33, 106
    // and 139 of 812f8e1, each passing when run again alone). Beyond it is a real stall.
    let progress_by = healed_ms + TTL_MS + MAX_LINGER_MS + CLEANUP_BOUND_MS;
    while now_ms() < progress_by {
        let (granted, checked_in) = work.progress_since(healed_ms);
        if granted > 0 && checked_in > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let merged = collect(&h).await?;
    report.entries = merged.steps.len();
    report.installs = merged.installs.len();
    report.violations.extend(merged.violations);
    let rules = Rules {
        cleanup_bound_ms: CLEANUP_BOUND_MS,
        healed_ms,
        end_ms: now_ms(),
    };
    let verdict = check(&merged.steps, &history, &rules);
    report.violations.extend(verdict.violations);
    report.seen = verdict.seen;
    Ok(report)
}

/// Applies one fault, holds it, heals it; says what it did.
async fn inject(h: &mut Harness, fault: Fault, rng: &mut Rng) -> anyhow::Result<String> {
    let hold = Duration::from_millis(800 + rng.below(1_700));
    let leader = h.wait_leader(Duration::from_secs(20)).await?;
    let ids = h.ids();
    let random = ids[rng.below(ids.len() as u64) as usize];
    Ok(match fault {
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
        Fault::ClockSkew => clock_skew(h, leader, random, hold, rng).await?,
        Fault::ClockJump => {
            // The leader's clock most of the time: a leader must step down, and nothing
            // it stamps with the wrong time may reach the log.
            let id = if rng.below(3) == 0 { random } else { leader };
            const JUMPS: [(&str, &str); 4] = [
                ("+30", "30 s ahead"),
                ("-30", "30 s back"),
                ("+3", "3 s ahead"),
                ("+157680000", "5 years ahead"),
            ];
            let (spec, name) = JUMPS[rng.below(JUMPS.len() as u64) as usize];
            std::fs::write(clock_file(h, id), format!("{spec}\n"))?;
            // libfaketime re-reads the file every second.
            tokio::time::sleep(hold + Duration::from_secs(1)).await;
            std::fs::write(clock_file(h, id), "+0\n")?;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let role = if id == leader { "leader" } else { "node" };
            format!("{role} {id}'s clock jumped {name} for {hold:?}, then back")
        }
    })
}

/// Restarts one node with its wall clock off; with a chance, kills the leader meanwhile
/// (so the skewed node is asked to vote, or tempted to lead); then restarts it on true
/// time.
async fn clock_skew(
    h: &mut Harness,
    leader: u64,
    random: u64,
    hold: Duration,
    rng: &mut Rng,
) -> anyhow::Result<String> {
    const SKEWS: [(i64, &str); 5] = [
        (-90, "90 s behind"),
        (-5, "5 s behind"),
        (3, "3 s ahead"),
        (40, "40 s ahead"),
        (157_680_000, "5 years ahead"),
    ];
    let (offset, name) = SKEWS[rng.below(SKEWS.len() as u64) as usize];
    let id = random;
    let usual = clock_env(&h.dir, id);
    h.stop(id).await;
    h.set_env(id, crate::faketime_env(offset));
    h.restart(id)?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let mut what = format!("node {id} restarted {name} for {hold:?}");
    if leader != id && rng.below(2) == 0 {
        h.kill(leader).await;
        tokio::time::sleep(hold).await;
        h.restart(leader)?;
        what.push_str(&format!(", leader {leader} killed meanwhile"));
    } else {
        tokio::time::sleep(hold).await;
    }
    h.stop(id).await;
    h.set_env(id, usual);
    h.restart(id)?;
    Ok(what)
}
