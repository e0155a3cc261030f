//! `tallyctl bench` against a real three-process cluster: the result line's contract,
//! and a cycle run that leaves no seat behind.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use serde_json::Value;
use tally_tests::{tallyctl, tallyctl_json, ThreeNodes};

/// Runs a bench and returns its last stdout line, parsed and checked against the contract.
fn bench(cluster: &ThreeNodes, args: &[&str], workload: &str) -> Value {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = tallyctl(cluster, &all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{last:?}: {e}"));
    assert_eq!(v["system"], "tally", "{v}");
    assert_eq!(v["workload"], workload, "{v}");
    assert!(v["ops"].as_u64().unwrap() > 0, "{v}\n{stderr}");
    assert!(v["ops_per_s"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["p50_ms"].as_f64().unwrap() <= v["p99_ms"].as_f64().unwrap(),
        "{v}"
    );
    // Errors are sessions not alive and failures; a heartbeat refused because the leader
    // was briefly not sure it led (a loaded 2-core machine) is counted apart, as
    // `refused`, and does not fail the contract.
    assert_eq!(v["errors"], 0, "{v}\n{stderr}");
    v
}

#[test]
fn bench_cycle_and_heartbeat_print_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let key = dir.path().join("vendor.key");
    let key = key.to_str().unwrap();

    let cycle = bench(
        &cluster,
        &[
            "cycle",
            "--clients",
            "4",
            "--features",
            "2",
            "--duration",
            "2",
            "--license-key",
            key,
        ],
        "cycle",
    );
    assert_eq!(
        (cycle["clients"].as_u64(), cycle["features"].as_u64()),
        (Some(4), Some(2))
    );
    // The bench license is loaded, and every seat the run took was given back.
    let features = tallyctl_json(&cluster, &["features"]);
    for name in ["bench0", "bench1"] {
        let f = features
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {features}"));
        assert_eq!(f["in_use"], 0, "{f}");
    }

    let hb = bench(
        &cluster,
        &[
            "heartbeat",
            "--clients",
            "2",
            "--sessions",
            "20",
            "--duration",
            "2",
        ],
        "heartbeat",
    );
    assert_eq!(hb["sessions"], 20, "{hb}");
    assert!(hb["refused"].is_u64(), "{hb}");
}

/// `tallyd bench-history`, a day of a small site (the month of BENCHMARKS.md is a
/// documented command, not a test): it runs, and its figures add up.
#[test]
fn bench_history_generates_a_day_and_reports_every_hour_of_every_feature() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(tally_tests::bin("tallyd"))
        .args([
            "bench-history",
            "--days",
            "1",
            "--features",
            "3",
            "--users",
            "20",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // A load, 20 opens, then 60 checkouts and their checkins (some denied: 3 features
    // of 30 seats never run short for 20 users, so none are).
    assert_eq!(v["entries"], 1 + 20 + 120, "{v}");
    // Each checkout: a grant, a checkin, a reclaim; the load: a load and three counts.
    assert_eq!(v["records"], 60 * 3 + 1 + 3, "{v}");
    assert_eq!(v["report_rows"], 3 * 24, "{v}");
    assert!(v["disk_bytes"].as_u64().unwrap() > 0, "{v}");
}
