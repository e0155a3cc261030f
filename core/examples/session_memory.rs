//! Measures the ledger's memory per session: opens N sessions (one client each, as a
//! fleet of workstations does) and reports the resident-set growth per session. The
//! figure BENCHMARKS.md quotes comes from this; run it in release mode:
//!
//! ```sh
//! cargo run --release -p tally-core --example session_memory -- 200000
//! ```

use tally_core::ledger::{Entry, Holder, Ledger, Op, RequestId};

/// Resident set size in bytes, from /proc (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let mut ledger = Ledger::new();
    let before = rss_bytes();
    for i in 1..=n {
        let mut client = [0u8; 16];
        client[..8].copy_from_slice(&i.to_le_bytes());
        ledger.apply(&Entry {
            index: i,
            at_ms: 1_780_000_000_000 + i,
            op: Op::OpenSession {
                req: RequestId { client, seq: 1 },
                holder: Holder {
                    user: format!("user{}", i % 5_000),
                    host: format!("ws{i}.example.com"),
                    display: ":0".into(),
                    pid: 4_242,
                },
                ttl_ms: 30_000,
                secret: [7; 32],
                origin: Default::default(),
            },
        });
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{{\"sessions\":{n},\"rss_delta_bytes\":{},\"bytes_per_session\":{per:.0},\"snapshot_bytes\":{}}}",
        after.saturating_sub(before),
        ledger.snapshot().len()
    );
}
