//! The `tallyctl` commands the other end-to-end tests leave out, against three real
//! `tallyd` processes: the queue and sessions listings, an admin cancelling a wait and
//! closing a hung client's session (the next in line gets the seat), license unload, the
//! "no leader" exit code, and the failover and scale benches.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{bin, session_users, tallyctl, tallyctl_json, ThreeNodes};

/// A `tallyctl` running in the background; killed by pid when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cluster: &ThreeNodes, args: &[&str]) -> Bg {
    Bg(Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .env("HOME", "/nonexistent")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap())
}

trait WaitOutput {
    /// Waits for the process and returns its status and standard error.
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String);
}

impl WaitOutput for Child {
    fn wait_with_output_ref(&mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read as _;
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (self.wait().unwrap(), err)
    }
}

fn first_line(bg: &mut Bg) -> Value {
    let mut line = String::new();
    std::io::BufReader::new(bg.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("printed {line:?}: {e}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sign_and_load(cluster: &ThreeNodes, name: &str, text: &str) {
    let d = &cluster.dir;
    let (txt, lic) = (d.join(format!("{name}.txt")), d.join(name));
    std::fs::write(&txt, text).unwrap();
    let key = d.join("vendor.key");
    let o = tallyctl(
        cluster,
        &[
            "license",
            "sign",
            txt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            lic.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tallyctl(cluster, &["license", "load", lic.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn admins_list_and_end_waits_and_sessions_and_no_leader_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    sign_and_load(
        &cluster,
        "solo.lic",
        "VENDOR demo\nFEATURE solo demo 1.0 permanent 1\n",
    );
    let mut ann = spawn(
        &cluster,
        &[
            "--json", "checkout", "solo", "--user", "ann", "--hold", "300",
        ],
    );
    let held = first_line(&mut ann);
    // Bob waits in the queue (he would be denied without --wait).
    let mut bob = spawn(
        &cluster,
        &[
            "--json", "checkout", "solo", "--user", "bob", "--wait", "60", "--hold", "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = tallyctl_json(&cluster, &["features"]);
        let queued = f
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "solo")
            .map_or(0, |x| x["queued"].as_u64().unwrap_or(0));
        if queued == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "bob never queued: {f}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cy queues too; the admin sees both waits and cancels cy's, whose checkout ends
    // with the reason (exit 4: denied).
    let mut cy = spawn(
        &cluster,
        &[
            "checkout", "solo", "--user", "cy", "--wait", "60", "--hold", "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let queue = loop {
        let q = tallyctl_json(&cluster, &["queue"]);
        if q.as_array().unwrap().len() == 2 {
            break q;
        }
        assert!(Instant::now() < deadline, "cy never queued: {q}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (queue[0]["user"].as_str(), queue[0]["position"].as_u64()),
        (Some("bob"), Some(1)),
        "{queue}"
    );
    assert_eq!(queue[1]["user"], "cy", "{queue}");
    // Past one long poll (20 s), cy's tallyctl has been told its place (checked below).
    std::thread::sleep(Duration::from_secs(22));
    let place = queue[1]["place"].as_u64().unwrap().to_string();
    let cancel = tallyctl(&cluster, &["queue", "cancel", &place]);
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let out = cy.0.wait_with_output_ref();
    assert_eq!(out.0.code(), Some(4), "{}", out.1);
    assert!(
        out.1.contains("an administrator cancelled this wait"),
        "{}",
        out.1
    );
    // While it waited it said where it stood: second in line, behind bob.
    assert!(
        out.1.contains("queued for \"solo\": place 2 in line"),
        "{}",
        out.1
    );

    // The sessions listing says who proved what: tallyctl runs with the admin's
    // certificate from 127.0.0.1.
    let sessions = tallyctl_json(&cluster, &["sessions"]);
    let ann_s = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"] == "ann")
        .unwrap_or_else(|| panic!("no session of ann: {sessions}"));
    assert_eq!(ann_s["client_addr"], "127.0.0.1", "{ann_s}");
    assert_eq!(ann_s["cert_name"], "admin", "{ann_s}");
    assert_eq!(ann_s["id"], held["session_id"], "{ann_s}");

    // Ann's client hangs; the admin closes her session: the seat is free at once and
    // bob, first in line, gets it.
    let id = held["session_id"].as_u64().unwrap().to_string();
    let close = tallyctl(&cluster, &["sessions", "close", &id]);
    assert!(close.status.success(), "{}", stderr(&close));
    let granted = first_line(&mut bob);
    assert_eq!(granted["feature"], "solo", "{granted}");
    assert_ne!(granted["lease_id"], held["lease_id"]);
    let status = bob.0.wait().unwrap();
    assert!(status.success(), "bob's checkout ended {status:?}");

    // Unload: the feature is gone from the listings.
    let u = tallyctl(&cluster, &["license", "unload", "solo.lic"]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert!(tallyctl_json(&cluster, &["features"])
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"] != "solo"));
    drop(ann);

    // Two of three nodes dead: no leader can be elected, and an exact read says so with
    // exit code 3 ("unreachable or no leader: retry later"), in one line.
    for n in [1, 2] {
        let pid = cluster.pid(n);
        assert!(Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success());
    }
    let out = Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .env("HOME", "/nonexistent")
        .env("TALLY_TIMEOUT", "3")
        .args(["features"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
    // The listing is still shown, from the node that answers, marked stale.
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.starts_with("WARNING: no leader answers: this is node 3's view as of log index ")
            && shown.contains("Users of "),
        "{shown}"
    );
    assert!(stderr(&out).contains("possibly stale"), "{}", stderr(&out));
    // Status says so too, from the one node that answers, and exits 3.
    let out = Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .env("HOME", "/nonexistent")
        .env("TALLY_TIMEOUT", "3")
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No quorum: 2 of 3 voters unreachable (nodes 1 and 2)"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" unreachable ") && (l.starts_with("1 ") || l.starts_with("2 ")))
            .count(),
        2,
        "{text}"
    );
    let _ = cluster.script("stop", None);
}

#[test]
fn the_failover_and_scale_benches_run_against_real_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let d = cluster.dir.to_str().unwrap().to_owned();
    let key = cluster.dir.join("vendor.key");
    let last_json = |args: &[&str]| -> Value {
        let out = tallyctl(&cluster, args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let last = stdout.lines().last().unwrap_or_default().to_owned();
        serde_json::from_str(&last).unwrap_or_else(|e| panic!("{last:?}: {e}"))
    };
    let f = last_json(&[
        "bench",
        "failover",
        "--pid-dir",
        &d,
        "--clients",
        "4",
        "--duration",
        "6",
        "--license-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(f["workload"], "failover", "{f}");
    assert_eq!(f["lost"], 0, "no acknowledged seat may be lost: {f}");
    let killed = f["killed_node"].as_u64().unwrap();
    assert!((1..=3).contains(&killed), "{f}");
    assert_ne!(f["new_leader"].as_u64(), Some(killed), "{f}");
    assert!(f["max_gap_ms"].as_f64().unwrap() > 0.0, "{f}");
    let r = cluster.script("restart", Some(&killed.to_string()));
    assert!(r.status.success(), "{}", stderr(&r));

    let s = last_json(&[
        "bench",
        "scale",
        "--sessions",
        "300",
        "--ttl",
        "5",
        "--settle",
        "3",
        "--pid-dir",
        &d,
    ]);
    assert_eq!(s["workload"], "scale", "{s}");
    assert_eq!(s["sessions"], 300, "{s}");
    assert!(s["killed_node"].as_u64().is_some(), "{s}");
    assert!(s["failover_write_ms"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["memory"].is_object(), "{s}");
    let _ = cluster.script("stop", None);
}

/// Membership from tallyctl: a fourth node (its certificate from the site CA) joins as a
/// learner, becomes a voter, and is demoted again.
#[test]
fn a_fourth_node_joins_as_a_learner_then_votes_then_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let d = cluster.dir.clone();
    let pki = d.join("pki");
    let o = tallyctl(
        &cluster,
        &[
            "pki",
            "issue",
            pki.to_str().unwrap(),
            "--role",
            "peer",
            "--name",
            "node4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // three-nodes.sh names its cluster after a checksum of its directory.
    let sum = Command::new("bash")
        .arg("-c")
        .arg("printf %s \"$1\" | cksum | cut -d' ' -f1")
        .arg("_")
        .arg(&d)
        .output()
        .unwrap();
    let name = format!("local-{}", String::from_utf8_lossy(&sum.stdout).trim());
    let port = tally_tests::free_ports(1);
    let addr = format!("127.0.0.1:{port}");
    let p = |f: &str| pki.join(f).to_str().unwrap().to_owned();
    let node4 = Bg(Command::new(bin("tallyd"))
        .args([
            "run",
            "--cluster-name",
            &name,
            "--id",
            "4",
            "--listen",
            &addr,
        ])
        .args([
            "--data",
            d.join("node4").to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--vendor-key",
            &format!("demo={}", d.join("vendor.pub").display()),
        ])
        .args(["--tls-cert", &p("node4.crt"), "--tls-key", &p("node4.key")])
        .args(["--tls-ca", &p("ca.crt")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let add = tallyctl_json(&cluster, &["node", "add", "4", &addr]);
    assert_eq!(add["voters"], serde_json::json!([1, 2, 3]), "{add}");
    assert_eq!(add["learners"], serde_json::json!([4]), "{add}");
    let voters = tallyctl_json(&cluster, &["node", "voters", "1,2,3,4"]);
    assert_eq!(
        voters["voters"],
        serde_json::json!([1, 2, 3, 4]),
        "{voters}"
    );
    let st = tallyctl_json(&cluster, &["status"]);
    assert_eq!(st["nodes"].as_array().unwrap().len(), 4, "{st}");
    assert_eq!(st["voters"], serde_json::json!([1, 2, 3, 4]), "{st}");
    // Asked of a follower only, membership commands follow the leader.
    let leader = st["leader_id"].as_u64().unwrap();
    let follower = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"].as_u64() != Some(leader) && n["id"].as_u64() != Some(4))
        .unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = tallyctl(
        &cluster,
        &[
            "--endpoints",
            &follower,
            "--json",
            "node",
            "voters",
            "1,2,3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let back: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back["voters"], serde_json::json!([1, 2, 3]), "{back}");
    // Leaving the voters took node 4 out of the cluster; back as a learner, node remove
    // takes it out of the members.
    let again = tallyctl_json(&cluster, &["node", "add", "4", &addr]);
    assert_eq!(again["learners"], serde_json::json!([4]), "{again}");
    let gone = tallyctl_json(&cluster, &["node", "remove", "4"]);
    assert_eq!(gone["learners"], serde_json::json!([]), "{gone}");
    drop(node4);
    let unknown = tallyctl(&cluster, &["node", "remove", "9"]);
    assert!(
        stderr(&unknown).contains("node 9 is not a member"),
        "{}",
        stderr(&unknown)
    );
    // With node 2 dead, removing node 3 would leave voters 1 and 2 with one answering:
    // refused, saying why.
    let pid = cluster.pid(2);
    assert!(Command::new("kill")
        .args(["-9", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_secs(4));
    let refused = tallyctl(&cluster, &["node", "remove", "3"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("short of a quorum of 2"),
        "{}",
        stderr(&refused)
    );
    // Adding a node where nothing listens is not reported as done: it says the learner
    // never caught up, and how to take it out again.
    let nobody = format!("127.0.0.1:{}", tally_tests::free_ports(1));
    let out = tallyctl(&cluster, &["node", "add", "5", &nobody]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("has not caught up")
            && stderr(&out).contains("tallyctl node remove 5"),
        "{}",
        stderr(&out)
    );
    let gone = tallyctl_json(&cluster, &["node", "remove", "5"]);
    assert_eq!(gone["learners"], serde_json::json!([]), "{gone}");
    let _ = cluster.script("stop", None);
}

/// A waiter killed while it waits leaves the queue at once, not when its session's TTL
/// ends: its place held everyone behind it, with seats free, for the rest of the TTL
/// (issue 21: "denied: ... 3 of 11 are in use" while 8 were free).
#[test]
fn a_waiter_whose_call_ends_leaves_the_queue_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    sign_and_load(
        &cluster,
        "pair.lic",
        "VENDOR demo\nFEATURE pair demo 1.0 permanent 2\n",
    );
    let mut ann = spawn(
        &cluster,
        &[
            "--json", "checkout", "pair", "--user", "ann", "--hold", "300",
        ],
    );
    first_line(&mut ann);
    // Bob asks for both seats, waits, and is killed while he waits; his session lives on
    // for its 120 s TTL (the process that renewed it is gone, but nobody closed it).
    let bob = spawn(
        &cluster,
        &[
            "checkout", "pair", "--count", "2", "--user", "bob", "--wait", "600", "--ttl", "120",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q = tallyctl_json(&cluster, &["queue"]);
        if q.as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "bob never queued: {q}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(bob);
    let killed = Instant::now();
    // The queue empties long before the TTL: the node saw the call end.
    loop {
        let q = tallyctl_json(&cluster, &["queue"]);
        if q.as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "the dead waiter is still queued {:?} after its call ended: {q}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // With the dead waiter gone, the free seat goes to the next one who asks, at once
    // (queued behind bob, cy's request would have been denied as "queued ahead").
    let cy = tallyctl(
        &cluster,
        &["checkout", "pair", "--user", "cy", "--hold", "0"],
    );
    assert!(cy.status.success(), "{}", stderr(&cy));
    let users = session_users(&cluster);
    assert!(
        users.iter().any(|u| u == "bob"),
        "bob's session lives on (only his wait ended): {users:?}"
    );
}
