//! Two probes of how promptly this node gets to run, for `/metrics`: a timer on the
//! async runtime and a sleep on a plain OS thread, each asking for 10 ms and recording
//! how late it woke. Under overload they tell apart the two ways a node falls silent
//! (and its followers campaign): the machine has no CPU for it (both late), or its
//! runtime's workers are held by long tasks (only the runtime's timer late).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::stats::Stats;

const PERIOD: Duration = Duration::from_millis(10);

fn late_ms(asked_at: Instant) -> u64 {
    let late = asked_at.elapsed().saturating_sub(PERIOD);
    u64::try_from(late.as_millis()).unwrap_or(u64::MAX)
}

/// Samples the timer lag of the runtime it runs on until shutdown, into `record`
/// (`Stats::runtime_lag` for the main runtime, `Stats::raft_runtime_lag` for Raft's).
pub async fn runtime(
    stats: Arc<Stats>,
    record: fn(&Stats, u64),
    mut shutdown: broadcast::Receiver<()>,
) {
    loop {
        let asked = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => record(&stats, late_ms(asked)),
            _ = shutdown.recv() => return,
        }
    }
}

/// Samples an OS thread's sleep lag on a thread of its own, until shutdown.
pub fn thread(stats: Arc<Stats>, mut shutdown: broadcast::Receiver<()>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tally-lag-probe".into())
        .spawn(move || {
            while let Err(broadcast::error::TryRecvError::Empty) = shutdown.try_recv() {
                let asked = Instant::now();
                std::thread::sleep(PERIOD);
                stats.thread_lag(late_ms(asked));
            }
        })
        .map(|_| ())
}
