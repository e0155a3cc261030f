//! Backup and disaster recovery (issue 18) with real processes: `tallyctl snapshot save`
//! from three real TLS nodes holding seats and some usage history; damaged, cut and
//! foreign files refused by name; `tallyd restore` into a new data directory and a
//! one-node cluster started from it, whose features, licenses, leases and history are
//! the saved ones; and `tallyd recover` of the last of three nodes after the other two
//! are lost with their data: it leads alone, grants checkouts, keeps every held seat,
//! and takes a new member with `tallyctl node add`.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{bin, free_ports, tallyctl, tallyctl_json, ThreeNodes};

/// A `tallyctl checkout --hold` in the background; killed by pid when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Holder {
    /// Whether the holder still runs (it exits 6 if the cluster takes its seats back).
    fn holding(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

/// Holds `feature` as `user` for `secs`, with a session TTL of `ttl` s, from all of the
/// cluster's endpoints; returns once the seat is granted, with its lease id.
fn hold(cluster: &ThreeNodes, feature: &str, user: &str, ttl: &str) -> (Holder, u64) {
    let mut child = Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .env("HOME", "/nonexistent")
        .args([
            "--json", "checkout", feature, "--user", user, "--host", "ws",
        ])
        .args(["--hold", "600", "--ttl", ttl])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{user}: {e}: {line:?}"));
    let lease = v["lease_id"].as_u64().unwrap_or_else(|| panic!("{line}"));
    (Holder(child), lease)
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}): {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tallyd(args: &[&str]) -> Output {
    Command::new(bin("tallyd"))
        .args(args)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits until `endpoints` name `want` (any, if `None`) as leader; returns it.
fn leader(cluster: &ThreeNodes, endpoints: &str, want: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = tallyctl(cluster, &["--json", "--endpoints", endpoints, "status"]);
        if let Ok(v) = serde_json::from_slice::<Value>(&o.stdout) {
            if let Some(id) = v["leader_id"].as_u64().filter(|id| *id > 0) {
                if want.is_none_or(|w| w == id) {
                    return id;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader{} at {endpoints}: {}",
            want.map(|w| format!(" {w}")).unwrap_or_default(),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What must survive a backup: every lease as (id, feature, user, host, count, fencing
/// token, session, grant time), each feature's seats in use, the licenses loaded.
fn state(cluster: &ThreeNodes, endpoints: &str) -> (Vec<Value>, Vec<Value>, Value) {
    let get = |args: &[&str]| {
        let mut all = vec!["--endpoints", endpoints];
        all.extend_from_slice(args);
        tallyctl_json(cluster, &all)
    };
    let mut leases: Vec<Value> = get(&["leases"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            serde_json::json!([
                l["id"],
                l["feature"],
                l["user"],
                l["host"],
                l["count"],
                l["fencing_token"],
                l["session"],
                l["granted_at_ms"]
            ])
        })
        .collect();
    leases.sort_by_key(|l| l[0].as_u64());
    let features = get(&["features"])
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::json!([f["name"], f["issued"], f["in_use"]]))
        .collect();
    (leases, features, get(&["license", "list"]))
}

/// The usage history's records up to log index `upto`, as JSON lines.
fn history(cluster: &ThreeNodes, endpoints: &str, upto: u64) -> Vec<Value> {
    let o = tallyctl(
        cluster,
        &[
            "--json",
            "--endpoints",
            endpoints,
            "report",
            "history",
            "--from",
            "0",
        ],
    );
    ok(&o, "report history")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["index"].as_u64().unwrap() <= upto)
        .collect()
}

/// A `tallyd run` of one node with the three-node cluster's certificates and vendor key;
/// killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_node(cluster: &ThreeNodes, name: &str, id: u64, port: u16, data: &Path, init: &str) -> Node {
    let pki = cluster.dir.join("pki");
    let (cert, key) = (format!("node{id}.crt"), format!("node{id}.key"));
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let child = Command::new(bin("tallyd"))
        .args(["run", "--cluster-name", name, "--id", &id.to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--http", ""])
        .args(["--data", s(data), "--init", init])
        .arg("--vendor-key")
        .arg(format!("demo={}", s(&cluster.dir.join("vendor.pub"))))
        .args(["--tls-cert", s(&pki.join(cert))])
        .args(["--tls-key", s(&pki.join(key))])
        .args(["--tls-ca", s(&pki.join("ca.crt"))])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Node(child)
}

#[test]
fn a_backup_restores_into_a_new_cluster_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let all = cluster.endpoints.clone();
    // Some history: a checkout and its checkin, then two seats held.
    ok(
        &tallyctl(
            &cluster,
            // Uncounted, no linger: nothing of it is left in the listings.
            &["checkout", "viewer", "--user", "cyd", "--hold", "1"],
        ),
        "a short checkout",
    );
    let (_ann, ann) = hold(&cluster, "solid_modeler", "ann", "30");
    let (_bob, bob) = hold(&cluster, "fea_solver", "bob", "30");

    let file = dir.path().join("site.tallybak");
    let saved = tallyctl_json(&cluster, &["snapshot", "save", s(&file)]);
    let header = &saved["header"];
    let index = header["index"].as_u64().unwrap();
    let bytes = saved["bytes"].as_u64().unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), bytes);
    assert_eq!(header["leases"], 2, "{saved}");
    assert!(header["history_records"].as_u64().unwrap() >= 4, "{saved}");
    assert_eq!(header["members"].as_array().unwrap().len(), 3, "{saved}");
    let name = header["cluster_name"].as_str().unwrap().to_owned();
    println!(
        "BACKUP {bytes} bytes at index {index} in {:.3} s: {header}",
        saved["seconds"]
    );
    let (leases, features, licenses) = state(&cluster, &all);
    assert_eq!(leases.len(), 2);
    assert!(leases.iter().any(|l| l[0] == ann) && leases.iter().any(|l| l[0] == bob));
    let hist = history(&cluster, &all, index);
    assert!(!hist.is_empty());
    // The header is readable as it is, and `inspect` checks the file.
    let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()[..200]).into_owned();
    assert!(
        text.starts_with("TALLYBK\0") && text.contains(&name),
        "{text}"
    );
    let o = tallyctl("", &["snapshot", "inspect", s(&file)]);
    assert!(ok(&o, "inspect").contains("a whole Tally backup"));

    // Damaged files, refused by name; nothing is written.
    let whole = std::fs::read(&file).unwrap();
    let mut flipped = whole.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x01;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("cut", whole[..whole.len() / 2].to_vec(), "truncated"),
        ("flipped", flipped, "checksum mismatch"),
        (
            "foreign",
            std::fs::read(cluster.dir.join("demo.lic")).unwrap(),
            "not a Tally backup",
        ),
        (
            "appended",
            [whole.as_slice(), b"junk"].concat(),
            "follow the end",
        ),
    ];
    let port = free_ports(1);
    let init = format!("1=127.0.0.1:{port}");
    for (what, bytes, says) in cases {
        let bad = dir.path().join(format!("{what}.tallybak"));
        std::fs::write(&bad, bytes).unwrap();
        let data = dir.path().join(format!("never-{what}"));
        let o = tallyd(&[
            "restore",
            "--from",
            s(&bad),
            "--data",
            s(&data),
            "--init",
            &init,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{what}: {err}");
        assert!(!data.exists(), "{what}: a refused restore wrote {data:?}");
        let o = tallyctl("", &["snapshot", "inspect", s(&bad)]);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains(says),
            "inspect {what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A directory with data in it is refused.
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("tally.redb"), b"x").unwrap();
    let o = tallyd(&[
        "restore",
        "--from",
        s(&file),
        "--data",
        s(&full),
        "--init",
        &init,
    ]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The restore, and a one-node cluster started from it.
    let data = dir.path().join("restored");
    let started = Instant::now();
    let o = tallyd(&[
        "restore",
        "--from",
        s(&file),
        "--data",
        s(&data),
        "--init",
        &init,
    ]);
    let restore_ms = started.elapsed().as_millis();
    let said = ok(&o, "restore");
    assert!(said.contains(&format!("log index {index}")), "{said}");
    let node = run_node(&cluster, &name, 1, port, &data, &init);
    let one = format!("127.0.0.1:{port}");
    leader(&cluster, &one, Some(1));
    let up_ms = started.elapsed().as_millis();
    println!("RESTORE {restore_ms} ms (tallyd restore), leader of the new cluster {up_ms} ms after the restore began");
    let (l2, f2, lic2) = state(&cluster, &one);
    assert_eq!(l2, leases, "leases");
    assert_eq!(f2, features, "features");
    assert_eq!(lic2, licenses, "licenses");
    assert_eq!(history(&cluster, &one, index), hist, "history");
    // The new cluster is its own: one member, and it grants.
    let st = tallyctl_json(&cluster, &["--endpoints", &one, "status"]);
    assert_eq!(st["voters"], serde_json::json!([1]), "{st}");
    ok(
        &tallyctl(
            &cluster,
            &["--endpoints", &one, "checkout", "viewer", "--hold", "0"],
        ),
        "a checkout on the restored cluster",
    );
    // Its fencing tokens go on from the old log: never below a token already handed out.
    let newest = tallyctl_json(&cluster, &["--endpoints", &one, "leases"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["fencing_token"].as_u64())
        .max()
        .unwrap();
    assert!(newest >= leases.iter().filter_map(|l| l[5].as_u64()).max().unwrap());
    drop(node);

    // The same backup seeds a new three-node cluster: node 1 restored, nodes 2 and 3
    // started empty (no --init); they vote for node 1 and receive the snapshot from it,
    // usage history included (a report is made by the node asked).
    let base = free_ports(3);
    let addrs: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let init3 = format!("1={},2={},3={}", addrs[0], addrs[1], addrs[2]);
    let d3 = dir.path().join("three");
    let o = tallyd(&[
        "restore",
        "--from",
        s(&file),
        "--data",
        s(&d3.join("n1")),
        "--init",
        &init3,
        "--id",
        "1",
    ]);
    ok(&o, "restore into a three-node membership");
    let _nodes: Vec<Node> = (1..=3u64)
        .map(|id| {
            let init = if id == 1 { init3.as_str() } else { "" };
            run_node(
                &cluster,
                &name,
                id,
                base + id as u16 - 1,
                &d3.join(format!("n{id}")),
                init,
            )
        })
        .collect();
    let three = addrs.join(",");
    leader(&cluster, &three, Some(1));
    let (l3, f3, lic3) = state(&cluster, &three);
    assert_eq!(
        (l3, f3, lic3),
        (leases, features, licenses),
        "the three-node restore"
    );
    for a in &addrs[1..] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while history(&cluster, a, index) != hist {
            assert!(Instant::now() < deadline, "{a} never got the history");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let st = tallyctl_json(&cluster, &["--endpoints", &three, "status"]);
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3]), "{st}");
}

#[test]
fn the_last_node_recovers_alone_with_every_held_seat_and_takes_new_members() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let all = cluster.endpoints.clone();
    let (mut ann, ann_lease) = hold(&cluster, "solid_modeler", "ann", "6");
    let (mut bob, bob_lease) = hold(&cluster, "fea_solver", "bob", "6");
    let (before, _, _) = state(&cluster, &all);
    assert_eq!(before.len(), 2);
    // Replicated everywhere (loopback: at once; a second is plenty).
    std::thread::sleep(Duration::from_secs(1));

    // The leader and one follower are lost with their data; the other follower stays.
    let lost_leader = leader(&cluster, &all, None);
    let survivor = (1..=3).find(|n| *n != lost_leader).unwrap();
    let lost_follower = (1..=3)
        .find(|n| *n != lost_leader && *n != survivor)
        .unwrap();
    for n in [lost_leader, lost_follower, survivor] {
        let pid = cluster.pid(n);
        assert!(Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success());
    }
    std::thread::sleep(Duration::from_millis(300));
    for n in [lost_leader, lost_follower] {
        std::fs::remove_dir_all(cluster.dir.join(format!("node{n}"))).unwrap();
    }
    let data: PathBuf = cluster.dir.join(format!("node{survivor}"));
    let id = survivor.to_string();

    // Without the flag: what it would do, and nothing done.
    let o = tallyd(&["recover", "--data", s(&data), "--id", &id]);
    let said = ok(&o, "recover (dry run)");
    assert!(
        said.contains("dry run") && said.contains("2 lease(s)"),
        "{said}"
    );
    let files = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        files(&data),
        ["tally.redb"],
        "a dry run changed the directory"
    );

    let started = Instant::now();
    let o = tallyd(&[
        "recover",
        "--data",
        s(&data),
        "--id",
        &id,
        "--i-understand-this-forgets-the-other-nodes",
    ]);
    let said = ok(&o, "recover");
    let recover_ms = started.elapsed().as_millis();
    assert!(said.contains("is now the only member"), "{said}");
    let kept = files(&data);
    assert!(
        kept.iter()
            .any(|f| f.starts_with("tally.redb.before-recover-"))
            && kept.iter().any(|f| f.ends_with(".tallybak")),
        "{kept:?}"
    );

    // Started as before (three-nodes.sh's flags, no --init), it leads alone.
    ok(&cluster.script("restart", Some(&id)), "restart");
    let port: u16 = cluster
        .endpoints
        .split(',')
        .nth(survivor as usize - 1)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let one = format!("127.0.0.1:{port}");
    leader(&cluster, &one, Some(survivor));
    println!(
        "RECOVER {recover_ms} ms (tallyd recover), node {survivor} leading alone {} ms after it began",
        started.elapsed().as_millis()
    );
    let st = tallyctl_json(&cluster, &["--endpoints", &one, "status"]);
    assert_eq!(st["voters"], serde_json::json!([survivor]), "{st}");
    // It grants.
    ok(
        &tallyctl(
            &cluster,
            &["--endpoints", &one, "checkout", "viewer", "--hold", "0"],
        ),
        "a checkout on the recovered node",
    );
    // The held seats are there, and stay: their holders heartbeat the recovered node
    // (one of their endpoints) and keep them past two TTLs.
    std::thread::sleep(Duration::from_secs(12));
    let (after, _, _) = state(&cluster, &one);
    assert_eq!(after, before, "the held seats after the recovery");
    assert!(ann.holding() && bob.holding(), "a holder lost its seat");
    let leases: Vec<u64> = after.iter().filter_map(|l| l[0].as_u64()).collect();
    assert_eq!(leases, {
        let mut v = vec![ann_lease, bob_lease];
        v.sort();
        v
    });

    // A lost node comes back with an empty data directory and joins as a new member.
    ok(
        &cluster.script("restart", Some(&lost_follower.to_string())),
        "start an empty node",
    );
    let addr = cluster
        .endpoints
        .split(',')
        .nth(lost_follower as usize - 1)
        .unwrap()
        .to_owned();
    ok(
        &tallyctl(
            &cluster,
            &[
                "--endpoints",
                &one,
                "node",
                "add",
                &lost_follower.to_string(),
                &addr,
            ],
        ),
        "node add",
    );
    let voters = format!("{survivor},{lost_follower}");
    ok(
        &tallyctl(&cluster, &["--endpoints", &one, "node", "voters", &voters]),
        "node voters",
    );
    let st = tallyctl_json(&cluster, &["--endpoints", &one, "status"]);
    let mut want = vec![survivor, lost_follower];
    want.sort();
    assert_eq!(st["voters"], serde_json::json!(want), "{st}");
    // The new member got the state: its own usage history (a report is made by the node
    // asked) matches the leader's.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let theirs = history(&cluster, &addr, u64::MAX);
        let ours = history(&cluster, &one, u64::MAX);
        let upto = |h: &[Value]| h.last().and_then(|r| r["index"].as_u64()).unwrap_or(0);
        let common = upto(&theirs).min(upto(&ours));
        let cut = |h: Vec<Value>| -> Vec<Value> {
            h.into_iter()
                .filter(|r| r["index"].as_u64().unwrap() <= common)
                .collect()
        };
        let (theirs, ours) = (cut(theirs), cut(ours));
        if !ours.is_empty() && theirs == ours {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new member's history differs: {theirs:?} vs {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
