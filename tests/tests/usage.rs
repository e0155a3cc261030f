//! The usage history end to end (issue 16), with the real `tallyctl` against three real
//! `tallyd` processes: a feature metered every 2 s with a 2 s minimum, count 1 and an
//! overdraft of 2. Two seats held for 6 s show over-count intervals; a 1 s checkout is
//! not metered; the true-up shows the peak; the alert metric rises at once; and every
//! node gives the same reports, also after a leader kill and after a node is rebuilt
//! from a snapshot.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{feature, free_ports, tallyctl, Holder, ThreeNodes};

fn hold(cluster: &ThreeNodes, user: &str) -> Holder {
    tally_tests::hold(cluster, "meter", (user, "ws"), 300).0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `tallyctl --json report ARGS` asked of one node (`port`), parsed.
fn report(cluster: &ThreeNodes, port: u16, args: &[&str]) -> Value {
    let endpoint = format!("127.0.0.1:{port}");
    let mut all = vec!["--json", "--endpoints", &endpoint, "report"];
    all.extend_from_slice(args);
    let o = tallyctl(cluster, &all);
    assert!(
        o.status.success(),
        "report {args:?} from {endpoint}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `/metrics` of the node whose HTTP port is `port`, by curl with the cluster's CA.
fn metrics(cluster: &ThreeNodes, port: u16) -> String {
    let pki = cluster.dir.join("pki");
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl (Debian's curl; .ci/run installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn leader(cluster: &ThreeNodes) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = tallyctl(cluster, &["--json", "status"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
            if let Some(id) = v["leader_id"].as_u64().filter(|id| *id > 0) {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reports every node must agree on, for a window that has ended.
fn reports(cluster: &ThreeNodes, port: u16, from: &str, to: &str) -> Vec<Value> {
    let w = ["--from", from, "--to", to];
    let with = |kind: &str, extra: &[&str]| {
        let mut a = vec![kind];
        a.extend_from_slice(&w);
        a.extend_from_slice(extra);
        report(cluster, port, &a)
    };
    vec![
        with("overuse", &["--feature", "meter"]),
        with("trueup", &["--feature", "meter"]),
        with("usage", &["--feature", "meter", "--interval", "2s"]),
        with("denials", &[]),
    ]
}

#[test]
fn overuse_is_metered_alerted_and_reported_alike_by_every_node() {
    let dir = tempfile::tempdir().unwrap();
    // Snapshots every 40 entries, keeping 10 behind, so a node wiped later must be
    // rebuilt from a snapshot rather than from the log.
    let node_toml = dir.path().join("node.toml");
    std::fs::write(
        &node_toml,
        "snapshot_every = 40\nkeep_log_after_snapshot = 10\n",
    )
    .unwrap();
    let http = free_ports(3);
    let cluster = ThreeNodes::start_with_env(
        dir.path(),
        vec![
            (
                "TALLY_NODE_CONFIG".into(),
                node_toml.to_str().unwrap().into(),
            ),
            ("TALLY_HTTP_BASE".into(), http.to_string()),
        ],
    );
    let grpc: Vec<u16> = cluster
        .endpoints
        .split(',')
        .map(|e| e.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    let d = &cluster.dir;
    std::fs::write(
        d.join("meter.txt"),
        "VENDOR demo\nFEATURE meter demo 1.0 permanent 1 OVERDRAFT=2 METER_INTERVAL=2 METER_MIN=2\n",
    )
    .unwrap();
    let (txt, lic, key) = (
        d.join("meter.txt"),
        d.join("meter.lic"),
        d.join("vendor.key"),
    );
    let args = [
        "license",
        "sign",
        txt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        lic.to_str().unwrap(),
    ];
    assert!(tallyctl(&cluster, &args).status.success());
    let o = tallyctl(&cluster, &["license", "load", lic.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let from = now_ms().to_string();
    let ann = hold(&cluster, "ann");
    let bob = hold(&cluster, "bob");
    // The alert: at once, on every node (a follower within a heartbeat or two).
    for port in http..http + 3 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let m = metrics(&cluster, port);
            if m.contains("tally_feature_short{feature=\"meter\"} 1\n")
                && m.contains("tally_short_alerts_total 1\n")
            {
                break;
            }
            assert!(Instant::now() < deadline, "node at {port}: {m}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    // A third seat for 1 s: under METER_MIN, so never metered; the true-up sees it.
    let o = tallyctl(
        &cluster,
        &[
            "checkout", "meter", "--user", "cyd", "--host", "ws", "--hold", "1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_secs(3));
    ann.release();
    bob.release();
    let deadline = Instant::now() + Duration::from_secs(20);
    while feature(&cluster, "meter")["in_use"] != 0 {
        assert!(Instant::now() < deadline, "the seats never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let to = (now_ms() + 1_000).to_string();
    std::thread::sleep(Duration::from_millis(1_500));

    let first = reports(&cluster, grpc[0], &from, &to);
    let over = &first[0];
    assert_eq!(over["licensed"], 1, "{over}");
    let intervals = over["intervals"].as_array().unwrap();
    // About 6 s of two seats, the first 2 s of each not metered: 1 or 2 intervals of
    // 2 s, each with two seats counted, one over. Never three: Cyd's 1 s is not metered.
    assert!(
        (1..=3).contains(&intervals.len()),
        "over-count intervals: {over}"
    );
    for i in intervals {
        assert_eq!(
            (i["counted"].as_u64(), i["over"].as_u64()),
            (Some(2), Some(1)),
            "{over}"
        );
    }
    assert_eq!(over["overuse_days"].as_array().unwrap().len(), 1, "{over}");
    let tu = first[1].as_array().unwrap();
    assert_eq!(tu.len(), 1, "{tu:?}");
    assert_eq!(
        (
            tu[0]["peak"].as_u64(),
            tu[0]["licensed"].as_u64(),
            tu[0]["short"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{tu:?}"
    );
    let peak = first[2]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["peak"].as_u64())
        .max();
    assert_eq!(peak, Some(3), "{}", first[2]);
    // The history names who held what, and the alert.
    let hist = tallyctl(
        &cluster,
        &[
            "--json",
            "report",
            "history",
            "--from",
            &from,
            "--to",
            &to,
            "--feature",
            "meter",
        ],
    );
    let hist = String::from_utf8_lossy(&hist.stdout);
    let kinds: Vec<Value> = hist
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        kinds.iter().any(|r| r["kind"] == "short"),
        "no alert in the history: {hist}"
    );
    assert!(
        kinds
            .iter()
            .any(|r| r["kind"] == "grant" && r["user"] == "cyd"),
        "{hist}"
    );
    // CSV has a header and a line per record.
    let csv = tallyctl(
        &cluster,
        &[
            "report",
            "history",
            "--from",
            &from,
            "--to",
            &to,
            "--feature",
            "meter",
            "--csv",
        ],
    );
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(
        csv.starts_with("index,at_ms,kind,feature,user,host,count,id,detail,by\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), kinds.len() + 1, "{csv}");

    // Every node, the same.
    for port in &grpc[1..] {
        assert_eq!(
            reports(&cluster, *port, &from, &to),
            first,
            "node at {port}"
        );
    }
    // The leader killed (-9): the others still agree.
    let l = leader(&cluster);
    let pid = cluster.pid(l);
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let survivors: Vec<u16> = (1..=3u64)
        .filter(|n| *n != l)
        .map(|n| grpc[(n - 1) as usize])
        .collect();
    leader(&cluster);
    for port in &survivors {
        assert_eq!(
            reports(&cluster, *port, &from, &to),
            first,
            "after the kill, {port}"
        );
    }
    // The killed node comes back with its history from its own disk.
    assert!(cluster
        .script("restart", Some(&l.to_string()))
        .status
        .success());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        reports(&cluster, grpc[(l - 1) as usize], &from, &to),
        first,
        "restarted {l}"
    );

    // A node rebuilt from nothing: stopped, its data gone, started again. Enough
    // entries meanwhile that the leader's log no longer reaches back: it is sent a
    // snapshot, and the history with it.
    let victim = (1..=3u64).find(|n| *n != leader(&cluster)).unwrap();
    let pid = cluster.pid(victim);
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(d.join(format!("node{victim}"))).unwrap();
    for i in 0..30 {
        let user = format!("u{i}");
        let o = tallyctl(
            &cluster,
            &[
                "checkout", "meter", "--user", &user, "--host", "ws", "--hold", "0",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(cluster
        .script("restart", Some(&victim.to_string()))
        .status
        .success());
    let port = grpc[(victim - 1) as usize];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = format!("127.0.0.1:{port}");
        let o = tallyctl(
            &cluster,
            &[
                "--json",
                "--endpoints",
                &endpoint,
                "report",
                "overuse",
                "--feature",
                "meter",
                "--from",
                &from,
                "--to",
                &to,
            ],
        );
        if o.status.success()
            && serde_json::from_slice::<Value>(&o.stdout).ok().as_ref() == Some(&first[0])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuilt node never caught up: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        reports(&cluster, port, &from, &to),
        first,
        "rebuilt node {victim}"
    );
    let log = std::fs::read_to_string(d.join(format!("node{victim}.log"))).unwrap();
    assert!(
        log.contains("installed a snapshot at log index"),
        "node {victim} was not rebuilt from a snapshot: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(cluster.script("stop", None).status.success());
}
