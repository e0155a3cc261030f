//! `deploy/prometheus/`: the alerting rules pass `promtool check rules`, their unit tests
//! pass `promtool test rules` (the under-licensing alert fires on the first scrape that
//! shows a shortfall, once per feature), and every metric they name is one `tallyd`
//! exports.
//!
//! promtool comes from Debian's `prometheus` package, which `.ci/run` installs. Where it
//! cannot be had (not in CI) the checks say SKIPPED on stderr and pass; in CI (`CI` set)
//! a missing promtool fails them.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `promtool ARGS` in deploy/prometheus, or `None` (after saying SKIPPED) without it.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir())
        .output()
    {
        Ok(o) => Some(o),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing in CI ({e}): .ci/run installs Debian's prometheus"
            );
            eprintln!("SKIPPED: promtool not found ({e}); install Debian's prometheus");
            None
        }
    }
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        ["check", "rules", "tally-alerts.yml"],
        ["test", "rules", "tally-alerts.test.yml"],
    ] {
        let Some(o) = promtool(&args) else { return };
        assert!(
            o.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn every_metric_the_rules_name_is_one_tallyd_exports() {
    let rules = std::fs::read_to_string(dir().join("tally-alerts.yml")).unwrap();
    let exported = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src/http/view.rs"),
    )
    .unwrap();
    let named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("tally_"))
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    for m in named {
        assert!(
            exported.contains(&format!("\"{m}\"")) || exported.contains(&format!(" {m} ")),
            "the rules name {m}, which tallyd does not export"
        );
    }
}
