//! Overload without loss (issue 24), the bounded slice CI runs: a real three-process
//! cluster driven past what this machine can serve by `tallyctl bench scale` (256 session
//! opens in flight over 16 connections while every open session heartbeats, on a 2-core
//! machine where the three nodes and the load share the CPU), then its leader killed.
//! What must hold: no live, heartbeating session is expired, while the sessions open or
//! across the failover; no heartbeat batch fails while they open; no election happens
//! but the planned one; and every session is expired once its heartbeats stop.
//!
//! The figures at 20,000 and 100,000 sessions are sittings of `tests/overload/scale.sh`
//! (BENCHMARKS.md, "Overload"); this slice has the same shape at a size CI affords.
//! Before 10183d1 it failed here: every session of the bench has one owner, and linger
//! reuse scanned all that owner's seats on each checkout, so applying the opens was
//! quadratic and the followers campaigned while the leader's runtime was held.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use serde_json::Value;
use tally_tests::{tallyctl, ThreeNodes};

const SESSIONS: u64 = 6_000;

#[test]
fn overload_loses_no_live_session_and_elects_only_after_the_planned_kill() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let n = SESSIONS.to_string();
    let out = tallyctl(
        &cluster,
        &[
            "bench",
            "scale",
            "--sessions",
            &n,
            "--ttl",
            "6",
            "--settle",
            "6",
            "--pid-dir",
            dir.path().to_str().unwrap(),
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench scale failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?}: {e}"));
    let why = format!("{v}\n{stderr}");

    assert_eq!(
        v["lost_while_open"], 0,
        "sessions lost while opening: {why}"
    );
    assert_eq!(v["lost_at_failover"], 0, "sessions lost at failover: {why}");
    assert_eq!(
        v["heartbeat_batch_failures_while_open"],
        serde_json::json!({}),
        "heartbeat batches failed while opening: {why}"
    );
    assert_eq!(
        v["elections_before_kill"], 0,
        "a follower campaigned under load: {why}"
    );
    assert!(
        v["term_end"].as_u64().unwrap() > v["term_before_kill"].as_u64().unwrap(),
        "the kill elected a new leader: {why}"
    );
    assert_eq!(v["expired"], SESSIONS, "{why}");
    assert_eq!(v["expired_after_failover"], SESSIONS, "{why}");
}
