//! The long soak: many random nemesis schedules against real processes, a summary table
//! at the end. Exits non-zero if any schedule found a violation (its seed is printed).
//!
//!     cargo run --release -p tally-tests --bin soak -- [SCHEDULES] [FAULTS] [CLIENTS] [FIRST_SEED]
//!
//! Defaults: 200 schedules of 4 faults with 6 clients, seeds from 1. Uses the `tallyd`
//! and `tallyctl` next to this binary's profile (built first if missing or stale).

use std::time::{Duration, Instant};

use tally_tests::nemesis;

/// Longest one schedule may run (they take about 20 s) before it is called stuck.
const SCHEDULE_LIMIT: Duration = Duration::from_secs(180);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!("arguments are numbers: SCHEDULES FAULTS CLIENTS FIRST_SEED ({e})")
        })?;
    let schedules = args.first().copied().unwrap_or(200);
    let faults = args.get(1).copied().unwrap_or(4) as usize;
    let clients = args.get(2).copied().unwrap_or(6) as usize;
    let first = args.get(3).copied().unwrap_or(1);
    let started = Instant::now();
    let (mut ops, mut entries, mut injected, mut failed) = (0usize, 0usize, 0usize, Vec::new());
    // What the model saw over all schedules, and snapshot installs: evidence that the
    // queue, revocations, sharing and installs were exercised, not just possible.
    let mut seen: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut installs = 0usize;
    for seed in first..first + schedules {
        let dir = tempfile::tempdir()?;
        // On Ctrl-C or SIGTERM the run is dropped, and with it the harness, which kills
        // its nodes: no orphaned tallyd is left behind.
        // A schedule takes about 20 s. One that is still running after SCHEDULE_LIMIT is
        // stuck (a node that stopped answering, say) and counts as a failure with its
        // logs kept, instead of holding up the soak forever.
        let r = tokio::select! {
            r = tokio::time::timeout(SCHEDULE_LIMIT, nemesis::run(seed, dir.path(), faults, clients)) => match r {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "still running after {} s; logs kept in {}",
                    SCHEDULE_LIMIT.as_secs(),
                    dir.path().display()
                )),
            },
            _ = interrupted() => anyhow::bail!("interrupted during seed {seed}"),
        };
        match r {
            Ok(r) => {
                ops += r.ops;
                entries += r.entries;
                injected += r.faults.len();
                installs += r.installs;
                for (k, v) in &r.seen {
                    *seen.entry(k).or_default() += v;
                }
                // A healed cluster that granted nothing is a failure too: see faults.rs.
                let stalled = r.granted_after_heal == 0 || r.checked_in_after_heal == 0;
                let status = if !r.violations.is_empty() {
                    "VIOLATIONS"
                } else if stalled {
                    "NO-PROGRESS"
                } else {
                    "ok"
                };
                println!(
                    "seed {seed:>5}  {status:<10} {:>5} ops  {:>5} entries  {}",
                    r.ops,
                    r.entries,
                    r.faults.join("; ")
                );
                if !r.violations.is_empty() || stalled {
                    if stalled {
                        println!(
                            "    after the heal: {} grants, {} checkins",
                            r.granted_after_heal, r.checked_in_after_heal
                        );
                    }
                    for v in &r.violations {
                        println!("    {v}");
                    }
                    println!("    logs kept in {}", dir.keep().display());
                    failed.push(seed);
                }
            }
            Err(e) => {
                println!("seed {seed:>5}  RUN FAILED {e:#}");
                if e.to_string().contains("logs kept in") {
                    let _ = dir.keep();
                }
                failed.push(seed);
            }
        }
    }
    println!();
    println!("| schedules | operations | log entries | faults injected | violations | time |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {schedules} | {ops} | {entries} | {injected} | {} | {:.0} s |",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("snapshot installs: {installs}");
    for (k, v) in &seen {
        println!("{k}: {v}");
    }
    if !failed.is_empty() {
        anyhow::bail!("failing seeds (rerun one with TALLY_SEED=<seed> cargo test -p tally-tests --test faults schedules): {failed:?}");
    }
    Ok(())
}

async fn interrupted() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
