//! `tallyd bench-history`: a month (or any span) of a site's use, generated through the
//! real ledger and recorder into a real history store, then the month's `report usage`
//! made from it as the Admin RPC makes it: what BENCHMARKS.md's history figures are.
//!
//! The site: `users` people, each with one session for the whole span, who on every day
//! check out `per_day` features at random (a fixed seed: every run is the same) for 10
//! minutes to 4 hours between 08:00 and 18:00 UTC; `features` features of `seats` seats
//! each with an overdraft of a fifth of that, so that busy hours deny and overdraw.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tally_core::history::report::{self, Source};
use tally_core::history::Recorder;
use tally_core::ledger::{Entry, Holder, Ledger, Op, Reply, RequestId, SessionAuth};
use tally_core::license::{Count, Expiry, FeatureLine, LicenseFile, LineKind, Version};
use tally_core::usage::Span;

use crate::store::history::{HistoryError, Writer};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub days: u32,
    pub features: u32,
    pub users: u32,
    pub per_day: u32,
    pub seats: u32,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub entries: u64,
    pub records: u64,
    pub generate_s: f64,
    pub disk_bytes: u64,
    pub disk_bytes_per_record: f64,
    pub report_rows: u64,
    /// Reading the window's records and making `report usage` (1 h intervals, every
    /// feature) from them, as the RPC does.
    pub report_s: f64,
    /// The process's peak resident memory after the report (Linux `VmHWM`), MiB.
    pub peak_rss_mib: f64,
}

/// xorshift64*: deterministic, good enough to scatter checkouts.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

const DAY: u64 = 86_400_000;
/// 2026-11-01 00:00 UTC: the month generated starts here.
const START: u64 = 1_793_491_200_000;

/// Generates the site's span into a history store in `dir` and makes the report.
pub fn run(site: Site, dir: &std::path::Path) -> Result<Figures, HistoryError> {
    let store = |e: redb::DatabaseError| HistoryError::Store(e.to_string());
    let path = dir.join("history-bench.redb");
    let db = Arc::new(redb::Database::create(&path).map_err(store)?);
    let writer = Writer::start(db)?;
    let began = Instant::now();
    let mut ledger = Ledger::new();
    let mut rec = Recorder::default();
    let mut index = 0u64;
    let mut records = 0u64;
    let mut apply = |ledger: &mut Ledger, rec: &mut Recorder, at_ms: u64, op: Op| {
        index += 1;
        let out = ledger.apply(&Entry { index, at_ms, op });
        let mut r = rec.record(index, at_ms, None, &out.events);
        rec.after(ledger, &mut r);
        records += r.len() as u64;
        writer.write(r);
        out.reply
    };
    let lines = (0..site.features)
        .map(|f| FeatureLine {
            overdraft: site.seats / 5,
            ..FeatureLine::new(
                LineKind::Feature,
                format!("f{f:03}"),
                "bench".into(),
                Version::whole(1),
                Expiry::Permanent,
                Count::Seats(site.seats),
                1,
            )
        })
        .collect();
    let license = LicenseFile {
        vendors: vec!["bench".into()],
        lines,
    };
    apply(
        &mut ledger,
        &mut rec,
        START,
        Op::LoadLicense {
            source: "bench.lic".into(),
            license,
        },
    );
    let mut sessions = Vec::new();
    for u in 0..site.users {
        let req = RequestId {
            client: client_id(u),
            seq: 1,
        };
        let holder = Holder {
            user: format!("user{u:04}"),
            host: format!("ws{u:04}"),
            display: ":0".into(),
            pid: 1,
        };
        let op = Op::OpenSession {
            req,
            holder,
            ttl_ms: 60_000,
            secret: [7; 32],
            origin: Default::default(),
        };
        if let Reply::SessionOpened { session, .. } = apply(&mut ledger, &mut rec, START, op) {
            sessions.push(session);
        }
    }
    // Every checkout and checkin of the span, in time order.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut plan: Vec<(u64, bool, u32, u32)> = Vec::new(); // (at, is_start, user, feature)
    for d in 0..u64::from(site.days) {
        for u in 0..site.users {
            for _ in 0..site.per_day {
                let f = u32::try_from(rng.below(u64::from(site.features))).unwrap_or(0);
                let start = START + d * DAY + 8 * 3_600_000 + rng.below(10 * 3_600_000);
                let len = 600_000 + rng.below(4 * 3_600_000 - 600_000);
                plan.push((start, true, u, f));
                plan.push((start + len, false, u, f));
            }
        }
    }
    plan.sort_unstable();
    let mut seq: BTreeMap<u32, u64> = BTreeMap::new();
    let mut held: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
    for (at, is_start, u, f) in plan {
        let s = seq.entry(u).or_insert(1);
        *s += 1;
        let req = RequestId {
            client: client_id(u),
            seq: *s,
        };
        let auth = SessionAuth {
            session: sessions[u as usize],
            secret: [7; 32],
        };
        if is_start {
            let op = Op::Checkout {
                req,
                auth,
                feature: format!("f{f:03}"),
                version: Version::whole(1),
                count: 1,
                wait_ms: None,
            };
            if let Reply::Granted(g) = apply(&mut ledger, &mut rec, at, op) {
                held.entry((u, f)).or_default().push(g.lease);
            }
        } else if let Some(lease) = held.get_mut(&(u, f)).and_then(Vec::pop) {
            apply(&mut ledger, &mut rec, at, Op::Checkin { req, auth, lease });
        }
    }
    writer.flush()?;
    let generate_s = began.elapsed().as_secs_f64();
    let disk_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());

    // The report, as `reports::make` makes it.
    let began = Instant::now();
    let from_ms = START;
    let to_ms = START + u64::from(site.days) * DAY;
    let all = writer.read(from_ms, usize::MAX)?;
    let steps = writer.steps()?;
    let open: Vec<(String, Span)> = ledger
        .seats()
        .map(|(_, s)| {
            let span = Span {
                start_ms: s.charged_ms,
                end_ms: None,
                count: s.count,
            };
            (s.feature.clone(), span)
        })
        .collect();
    let assigned = BTreeMap::new();
    let src = Source {
        records: &all,
        open: &open,
        licensed: &steps,
        assigned_now: &assigned,
        now_ms: ledger.now_ms(),
    };
    let rows = report::usage(&src, &src.features(), from_ms, to_ms, 3_600_000)
        .map_err(|e| HistoryError::Store(e.to_string()))?;
    let report_s = began.elapsed().as_secs_f64();
    Ok(Figures {
        entries: index,
        records,
        generate_s,
        disk_bytes,
        disk_bytes_per_record: disk_bytes as f64 / records.max(1) as f64,
        report_rows: rows.len() as u64,
        report_s,
        peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
    })
}

fn client_id(u: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&u.to_le_bytes());
    id
}

/// `VmHWM` of this process in KiB (0 where /proc says nothing).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
