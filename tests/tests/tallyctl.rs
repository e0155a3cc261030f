//! The real `tallyctl` against a real three-process cluster: load a signed license,
//! check out, list in both formats, remove, deny, and refuse a tampered file.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use tally_tests::{bin, feature, session_users, tallyctl, tallyctl_json, ThreeNodes};

/// A `tallyctl checkout` holding its seat in the background; killed by pid when dropped.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hold(
    cluster: &ThreeNodes,
    feature: &str,
    user: &str,
    more: &[&str],
) -> (Holder, serde_json::Value) {
    // The user and host from the environment, as the flags (which other tests use).
    let mut child = Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .env("TALLY_USER", user)
        .env("TALLY_HOST", format!("ws-{user}"))
        .args(["--json", "checkout", feature])
        .args(["--hold", "120"])
        .args(more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let holder = Holder(child);
    let grant =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("checkout printed {line:?}: {e}"));
    (holder, grant)
}

/// The exit code and standard error of a holding `tallyctl checkout` that must end
/// within 10 s (a revoked or removed seat is reported within a couple of heartbeats).
fn exit_of(holder: &mut Holder) -> (Option<i32>, String) {
    let since = std::time::Instant::now();
    let code = loop {
        if let Some(st) = holder.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(10),
            "tallyctl checkout kept holding a seat taken away"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(holder.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    (code, err)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn an_admin_runs_the_cluster_from_tallyctl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = ThreeNodes::start(d);
    let path = |f: &str| d.join(f).to_str().unwrap().to_owned();

    // status: the scripting contract.
    let st = tallyctl_json(&cluster, &["status"]);
    assert!(st["leader_id"].as_u64().unwrap() >= 1, "{st}");
    let nodes = st["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert!(n["id"].is_u64() && n["addr"].is_string(), "{n}");
        assert!(["leader", "follower"].contains(&n["role"].as_str().unwrap()));
        // The clock columns: an offset (null until measured), and the node's verdict.
        assert!(
            n["clock_offset_ms"].is_i64() || n["clock_offset_ms"].is_null(),
            "{n}"
        );
        assert!(
            n["clock_ok"].is_boolean() && n["clock_problem"].is_string(),
            "{n}"
        );
    }
    assert_eq!(st["max_clock_offset_ms"], 500, "{st}");
    assert!(
        st["cluster_id"].is_string() && st["clock_reference"].is_u64(),
        "{st}"
    );
    let text = tallyctl(&cluster, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("\ncluster id: ") && text.contains("CLOCK"),
        "{text}"
    );

    // The vendor signs a second file with the cluster's key; the admin loads it.
    std::fs::write(
        path("cad.txt"),
        "VENDOR demo\nFEATURE cad demo 1.0 permanent 2\n",
    )
    .unwrap();
    let sign = tallyctl(
        &cluster,
        &[
            "license",
            "sign",
            &path("cad.txt"),
            "--key",
            &path("vendor.key"),
            "--out",
            &path("cad.lic"),
        ],
    );
    assert!(sign.status.success(), "{}", stderr(&sign));
    let load = tallyctl(&cluster, &["license", "load", &path("cad.lic")]);
    assert!(load.status.success(), "{}", stderr(&load));
    let list = tallyctl_json(&cluster, &["license", "list"]);
    let sources: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["cad.lic", "demo.lic"]);

    // Check out, and see it in every listing.
    let (holder, grant) = hold(&cluster, "cad", "ann", &[]);
    let lease = grant["lease_id"].as_u64().unwrap();
    assert!(grant["fencing_token"].as_u64().unwrap() >= lease);
    let cad = feature(&cluster, "cad");
    assert_eq!(
        (cad["issued"].as_u64(), cad["in_use"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(cad["lingering"], 0);
    assert_eq!(cad["uncounted"], false);
    // The demo's uncounted feature has no number of seats, not the ledger's sentinel.
    let viewer = feature(&cluster, "viewer");
    assert_eq!(
        (&viewer["issued"], &viewer["uncounted"]),
        (&serde_json::Value::Null, &serde_json::Value::Bool(true)),
        "{viewer}"
    );
    let leases = tallyctl_json(&cluster, &["leases", "--feature", "cad"]);
    let l = &leases[0];
    assert_eq!(
        (
            l["id"].as_u64(),
            l["feature"].as_str(),
            l["user"].as_str(),
            l["state"].as_str()
        ),
        (Some(lease), Some("cad"), Some("ann"), Some("active")),
        "{leases}"
    );
    assert_eq!(l["session"], grant["session_id"]);
    // No version asked for: "any", as the table shows it.
    assert_eq!(l["version"], "any", "{l}");
    assert_eq!(l["host"], "ws-ann", "TALLY_HOST: {l}");
    let table = tallyctl(&cluster, &["features"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("Users of cad:  (Total of 2 licenses issued;  Total of 1 license in use)"),
        "{text}"
    );
    assert!(
        text.contains("ann ") && text.contains(&format!("lease {lease}")),
        "{text}"
    );
    let table = tallyctl(&cluster, &["leases", "--user", "ann"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("LEASE") && text.contains("cad"), "{text}");
    // Times are shown in the local zone, as lmstat does, and in UTC with --utc. `XYZ+5`
    // is a POSIX zone five hours west of UTC, needing no zone database.
    let in_zone = |extra: &[&str]| {
        let out = std::process::Command::new(tally_tests::bin("tallyctl"))
            .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
            .env("HOME", "/nonexistent")
            .env("TZ", "XYZ+5")
            .args(extra)
            .args(["leases", "--user", "ann"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let local = in_zone(&[]);
    assert!(local.contains(" -05:00"), "{local}");
    let utc = in_zone(&["--utc"]);
    assert!(!utc.contains(" -05:00") && utc.contains('Z'), "{utc}");
    // FlexNet's lmstat layout, as a scraper reads it (the layout's own table test is in
    // cli/src/lmstat/tests.rs): the feature's totals and ann's line with its handle.
    let lm = tallyctl(&cluster, &["lmstat", "-a"]);
    let text = String::from_utf8_lossy(&lm.stdout);
    assert!(lm.status.success(), "{}", stderr(&lm));
    assert!(
        text.lines().any(|l| l == "Users of cad:  (Total of 2 licenses issued;  Total of 1 license in use)"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("    ann ") && l.contains(&format!(" {lease}), start "))),
        "{text}"
    );
    let missing = tallyctl(&cluster, &["lmstat", "-f", "nope"]);
    assert!(
        stderr(&missing).contains("no feature \"nope\""),
        "{}",
        stderr(&missing)
    );

    // No seats left for three more: exit code 4 and the reason.
    let denied = tallyctl(
        &cluster,
        &[
            "checkout", "cad", "--count", "2", "--hold", "1", "--user", "dan",
        ],
    );
    assert_eq!(denied.status.code(), Some(4), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("denied: 2 seat(s) of \"cad\" requested, but 1 of 2 are in use")
    );
    // A denied checkout holds nothing, its session included: closed before it exits.
    let users = session_users(&cluster);
    assert!(users.iter().all(|u| u != "dan"), "{users:?}");

    // The admin removes the lease: the seat is free at once, without linger.
    let rm = tallyctl(&cluster, &["remove", &lease.to_string()]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert_eq!(
        tallyctl_json(&cluster, &["leases", "--feature", "cad"]),
        serde_json::json!([])
    );
    drop(holder);
    // Every node wrote the lmgrd-style lines as it applied them, without colour codes.
    for n in 1..=3 {
        let log = std::fs::read_to_string(cluster.dir.join(format!("node{n}.log"))).unwrap();
        assert!(!log.contains('\x1b'), "node{n}.log has escape codes");
        for want in [
            "OUT: \"cad\" ",
            "DENIED: \"cad\" ",
            "REMOVED by admin: \"cad\" ",
        ] {
            assert!(log.contains(want), "node{n}.log has no {want:?}");
        }
        assert!(
            log.contains(&format!("(lease {lease}, ")),
            "node{n}.log: no lease {lease}"
        );
    }

    // lmremove's form: every lease of a user on a host; another user's stays, and the
    // holder (TTL 3 s, heartbeating every second) is told and exits 6.
    let (bob_holder, bob) = hold(&cluster, "cad", "bob", &[]);
    let (mut ann_holder, ann) = hold(&cluster, "cad", "ann", &["--ttl", "3"]);
    let host = tallyctl_json(&cluster, &["leases", "--user", "ann"])[0]["host"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong_host = tallyctl_json(
        &cluster,
        &["remove", "--user", "ann", "--host", "elsewhere"],
    );
    assert_eq!(wrong_host["removed"], serde_json::json!([]), "{wrong_host}");
    let rm = tallyctl_json(&cluster, &["remove", "--user", "ann", "--host", &host]);
    assert_eq!(rm["removed"], serde_json::json!([ann["lease_id"]]), "{rm}");
    let left = tallyctl_json(&cluster, &["leases", "--feature", "cad"]);
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left[0]["id"], bob["lease_id"], "{left}");
    let neither = tallyctl(&cluster, &["remove"]);
    assert!(!neither.status.success());
    let (code, err) = exit_of(&mut ann_holder);
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("seat of \"cad\" removed by an administrator"),
        "{err}"
    );
    drop((ann_holder, bob_holder));

    // A tampered file: verify says which line and exits 5; the cluster refuses it too.
    let text = std::fs::read_to_string(path("cad.lic")).unwrap();
    std::fs::write(path("bad.lic"), text.replace(" 2 ", " 20 ")).unwrap();
    let verify = tallyctl(
        &cluster,
        &[
            "license",
            "verify",
            &path("bad.lic"),
            "--pubkey",
            &path("vendor.pub"),
        ],
    );
    assert_eq!(verify.status.code(), Some(5));
    assert!(stderr(&verify).contains("line 2 (FEATURE/INCREMENT cad): signature does not match"));
    let ok = tallyctl(
        &cluster,
        &[
            "license",
            "verify",
            &path("cad.lic"),
            "--pubkey",
            &path("vendor.pub"),
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let refused = tallyctl(&cluster, &["license", "load", &path("bad.lic")]);
    // Refused by the cluster for its signature: an invalid file, exit code 5.
    assert_eq!(refused.status.code(), Some(5), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("signature does not match"),
        "{}",
        stderr(&refused)
    );
    let features = tallyctl_json(&cluster, &["features"]);
    assert!(features
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "cad" && f["issued"] == 2));

    // Unloading cad.lic revokes a held seat: the holder (heartbeating every second, TTL
    // 3 s) prints why and exits 6 within a couple of heartbeats.
    let (mut holder, grant) = hold(&cluster, "cad", "bob", &["--ttl", "3"]);
    let lease = grant["lease_id"].as_u64().unwrap();
    let unload = tallyctl(&cluster, &["license", "unload", "cad.lic"]);
    assert!(unload.status.success(), "{}", stderr(&unload));
    // The admin is told what the unload did to held seats, naming the leases.
    let said = String::from_utf8_lossy(&unload.stdout);
    let named = said
        .lines()
        .find(|l| l.contains("held seat(s) taken back"))
        .and_then(|l| l.split("(leases ").nth(1))
        .unwrap_or_default();
    assert!(
        named
            .split([',', ')'])
            .any(|id| id.trim() == lease.to_string()),
        "{said}"
    );
    let (code, err) = exit_of(&mut holder);
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("seat of \"cad\" revoked: the license file \"cad.lic\" was unloaded"),
        "{err}"
    );
    let leases = tallyctl_json(&cluster, &["leases"]);
    assert!(
        !leases
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"].as_u64() == Some(lease)),
        "{leases}"
    );
    // The time zone of license dates: UTC until set, then a cluster setting that moves
    // a line's end (the instant), never its date as the file writes it.
    std::fs::write(
        path("tz.txt"),
        "VENDOR demo\nFEATURE tz demo 1.0 31-dec-2030 1\n",
    )
    .unwrap();
    let sign = tallyctl(
        &cluster,
        &[
            "license",
            "sign",
            &path("tz.txt"),
            "--key",
            &path("vendor.key"),
            "--out",
            &path("tz.lic"),
        ],
    );
    assert!(sign.status.success(), "{}", stderr(&sign));
    let load = tallyctl(&cluster, &["license", "load", &path("tz.lic")]);
    assert!(load.status.success(), "{}", stderr(&load));
    let shown = tallyctl(&cluster, &["cluster", "time-zone"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).starts_with("time zone: UTC (none set)"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let end = |f: &serde_json::Value| {
        (
            f["expiry_ms"].as_u64(),
            f["valid_through"].as_str().map(str::to_owned),
            f["time_zone"].as_str().map(str::to_owned),
        )
    };
    // 31-dec-2030 ends at midnight UTC, then at 08:00 UTC (midnight in California).
    let (utc_end, la_end) = (1_924_992_000_000, 1_925_020_800_000);
    assert_eq!(
        end(&feature(&cluster, "tz")),
        (
            Some(utc_end),
            Some("31-dec-2030".into()),
            Some("UTC".into())
        )
    );
    let set = tallyctl(&cluster, &["cluster", "time-zone", "America/Los_Angeles"]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert!(
        String::from_utf8_lossy(&set.stdout)
            .starts_with("time zone set to America/Los_Angeles (was UTC (none set))"),
        "{}",
        String::from_utf8_lossy(&set.stdout)
    );
    assert_eq!(
        end(&feature(&cluster, "tz")),
        (
            Some(la_end),
            Some("31-dec-2030".into()),
            Some("America/Los_Angeles".into())
        )
    );
    let tz = tallyctl_json(&cluster, &["cluster", "time-zone"]);
    assert_eq!(
        (&tz["time_zone"], &tz["set"]),
        (&"America/Los_Angeles".into(), &true.into())
    );
    assert_eq!(
        tallyctl_json(&cluster, &["status"])["time_zone"],
        "America/Los_Angeles"
    );
    let text = tallyctl(&cluster, &["features"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("valid through 31-dec-2030 (America/Los_Angeles)"),
        "{text}"
    );
    let text = tallyctl(&cluster, &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("\ntime zone: America/Los_Angeles "), "{text}");
    let bad = tallyctl(&cluster, &["cluster", "time-zone", "Mars/Olympus_Mons"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("not a time zone"), "{}", stderr(&bad));
    assert_eq!(end(&feature(&cluster, "tz")).0, Some(la_end));

    // The exit codes are listed in --help.
    let help = Command::new(bin("tallyctl"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("6  a held seat was taken back"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );

    assert!(cluster.script("stop", None).status.success());
}

#[test]
fn errors_are_one_line_with_an_exit_code() {
    // Nothing listens on port 9 of loopback.
    let out = Command::new(bin("tallyctl"))
        .args(["--endpoints", "127.0.0.1:9", "status"])
        .env("TALLY_TIMEOUT", "0.5")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("127.0.0.1:9") && err.contains("--endpoints"),
        "{err}"
    );

    let out = Command::new(bin("tallyctl"))
        .args(["--endpoints", "nonsense", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad endpoint \"nonsense\""));
}

#[test]
fn a_minimum_hold_keeps_a_young_lease_from_removal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("hold.toml");
    std::fs::write(&config, "min_remove_hold_ms = 60000\n").unwrap();
    let cluster = ThreeNodes::start_with_env(
        d,
        vec![(
            "TALLY_NODE_CONFIG".into(),
            config.to_str().unwrap().to_owned(),
        )],
    );
    let (holder, grant) = hold(&cluster, "fea_solver", "ann", &[]);
    let lease = grant["lease_id"].as_u64().unwrap().to_string();
    let rm = tallyctl(&cluster, &["remove", &lease]);
    assert!(!rm.status.success());
    assert!(
        stderr(&rm).contains("min_remove_hold_ms = 60000 lets it be removed in"),
        "{}",
        stderr(&rm)
    );
    let by_user = tallyctl_json(&cluster, &["remove", "--user", "ann"]);
    assert_eq!(by_user["removed"], serde_json::json!([]), "{by_user}");
    assert_eq!(by_user["kept"][0]["lease"].to_string(), lease, "{by_user}");
    // Nothing was removed, and nothing was written: the seat is still held.
    let leases = tallyctl_json(&cluster, &["leases", "--feature", "fea_solver"]);
    assert_eq!(leases[0]["id"].to_string(), lease, "{leases}");
    drop(holder);
}
