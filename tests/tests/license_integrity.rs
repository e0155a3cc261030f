//! License integrity end to end, with the real `tallyctl` against three real `tallyd`
//! processes: one signed line counts once however it is loaded; a line locked to another
//! cluster is refused; unloading, and the end of a term's grace, revoke held seats.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_core::license::Date;
use tally_tests::{bin, faketime_env, feature, tallyctl, tallyctl_json, ThreeNodes};

/// A `tallyctl checkout --hold` in the background; killed by pid when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hold(cluster: &ThreeNodes, feature: &str, user: &str) -> (Holder, serde_json::Value) {
    let mut child = Command::new(bin("tallyctl"))
        .env("TALLY_CONFIG", cluster.dir.join("tally.env"))
        .envs(cluster.env.iter().map(|(k, v)| (k, v)))
        .args([
            "--json", "checkout", feature, "--user", user, "--hold", "300",
        ])
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

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sign(cluster: &ThreeNodes, text: &str, name: &str, lock: Option<&str>) -> String {
    let d = &cluster.dir;
    let unsigned = d.join(format!("{name}.txt"));
    std::fs::write(&unsigned, text).unwrap();
    let out = d.join(name);
    let key = d.join("vendor.key");
    let mut args = vec![
        "license",
        "sign",
        unsigned.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(id) = lock {
        args.extend(["--cluster", id]);
    }
    let o = tallyctl(cluster, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    out.to_str().unwrap().to_owned()
}

fn cluster_id(cluster: &ThreeNodes) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = tally_tests::tallyctl_status(cluster);
        let id = st["cluster_id"].as_str().unwrap_or_default().to_owned();
        if id.len() == 16 {
            return id;
        }
        assert!(Instant::now() < deadline, "no cluster id: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_signed_line_counts_once_and_a_locked_line_loads_only_on_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let a = sign(
        &cluster,
        "VENDOR demo\nFEATURE cad demo 1.0 permanent 2\n",
        "a.lic",
        None,
    );
    let load = tallyctl(&cluster, &["license", "load", &a]);
    assert!(load.status.success(), "{}", stderr(&load));
    assert_eq!(feature(&cluster, "cad")["issued"], 2);

    // The same file under another name; the same line in another layout; and a file
    // with the line pasted twice. None adds a seat, and each load says why.
    let b = tallyctl(&cluster, &["license", "load", &a, "--source", "b.lic"]);
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(
        stdout(&b).contains("note: line 2 is the same line as a.lic line 2: it counts once"),
        "{}",
        stdout(&b)
    );
    let signed = std::fs::read_to_string(&a).unwrap();
    let relaid = signed
        .replace(" \\\n    ", "   ")
        .replace("FEATURE cad demo 1.0", "feature  cad demo 1.00");
    let twice = format!(
        "{relaid}{}",
        signed.lines().skip(1).collect::<Vec<_>>().join("\n")
    );
    let path = cluster.dir.join("twice.lic");
    std::fs::write(&path, format!("{twice}\n")).unwrap();
    let t = tallyctl(&cluster, &["license", "load", path.to_str().unwrap()]);
    assert!(t.status.success(), "{}", stderr(&t));
    assert_eq!(
        stdout(&t).matches("it counts once").count(),
        2,
        "{}",
        stdout(&t)
    );
    assert_eq!(feature(&cluster, "cad")["issued"], 2, "one line, one count");
    let list = tallyctl_json(&cluster, &["license", "list"]);
    let dups = list
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["lines"].as_array().unwrap().iter())
        .filter(|l| l["duplicate_of"]["source"] == "a.lic")
        .count();
    assert_eq!(dups, 3, "{list}");

    // Unloading the copy that counts leaves the count to another copy, and the seat held
    // meanwhile is not touched.
    let (_ann, grant) = hold(&cluster, "cad", "ann");
    let u = tallyctl(&cluster, &["license", "unload", "a.lic"]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert_eq!(feature(&cluster, "cad")["issued"], 2);
    let leases = tallyctl_json(&cluster, &["leases", "--feature", "cad"]);
    assert_eq!(leases[0]["id"], grant["lease_id"], "{leases}");

    // A line locked to another cluster is refused, naming both ids; locked to this one,
    // it loads.
    let ours = cluster_id(&cluster);
    let theirs = if ours == "0123456789abcdef" {
        "fedcba9876543210"
    } else {
        "0123456789abcdef"
    };
    let text = "VENDOR demo\nFEATURE cam demo 1.0 permanent 3\n";
    let foreign = sign(&cluster, text, "foreign.lic", Some(theirs));
    let refused = tallyctl(&cluster, &["license", "load", &foreign]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!(
            "locked to cluster {theirs} (CLUSTER={theirs}), but this is cluster {ours}"
        )),
        "{}",
        stderr(&refused)
    );
    assert!(tallyctl_json(&cluster, &["features"])
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["name"] != "cam"));
    let local = sign(&cluster, text, "local.lic", Some(&ours));
    let loaded = tallyctl(&cluster, &["license", "load", &local]);
    assert!(loaded.status.success(), "{}", stderr(&loaded));
    assert_eq!(feature(&cluster, "cam")["issued"], 3);

    // Unloading it revokes the seats it granted.
    let (_bob, _) = hold(&cluster, "cam", "bob");
    let u = tallyctl(&cluster, &["license", "unload", "local.lic"]);
    assert!(u.status.success(), "{}", stderr(&u));
    assert_eq!(
        tallyctl_json(&cluster, &["leases", "--feature", "cam"]),
        serde_json::json!([])
    );
    assert!(cluster.script("stop", None).status.success());
}

/// A cluster whose clocks all read two minutes before the end of a term license's grace
/// (the margin covers starting three nodes on a loaded machine): the seats beyond its
/// demo count are revoked when the grace ends, newest grants first.
#[test]
fn when_grace_ends_the_seats_beyond_the_demo_count_are_revoked() {
    let real_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let expiry = Date::of_ms(real_now + 400 * 86_400_000);
    let grace_end = expiry.end_ms() + 86_400_000; // GRACE=1
    const MARGIN_S: i64 = 120;
    let offset_s = (grace_end as i64 - real_now as i64) / 1000 - MARGIN_S;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start_with_env(dir.path(), faketime_env(offset_s));
    let lic = sign(
        &cluster,
        &format!("VENDOR demo\nFEATURE cad demo 1.0 {expiry} 3 GRACE=1 DEMO=1\n"),
        "term.lic",
        None,
    );
    let load = tallyctl(&cluster, &["license", "load", &lic]);
    assert!(load.status.success(), "{}", stderr(&load));
    // In grace: all three seats still count.
    assert_eq!(
        feature(&cluster, "cad")["issued"],
        3,
        "still in grace, unless starting took longer than {MARGIN_S} s (it took {:?})",
        started.elapsed()
    );
    let holders: Vec<(Holder, serde_json::Value)> = ["ann", "bob", "cyd"]
        .iter()
        .map(|u| hold(&cluster, "cad", u))
        .collect();
    let first = holders[0].1["lease_id"].as_u64().unwrap();
    // When the grace ends (and a little after, for a loaded machine) the newest two
    // grants are gone and the oldest is kept under the demo count.
    let deadline = started + Duration::from_secs(MARGIN_S as u64 + 60);
    loop {
        let f = feature(&cluster, "cad");
        if f["issued"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "grace never ended: {f}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let leases = tallyctl_json(&cluster, &["leases", "--feature", "cad"]);
    let ids: Vec<u64> = leases
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![first], "{leases}");
    assert_eq!(feature(&cluster, "cad")["in_use"], 1);
    drop(holders);
    assert!(cluster.script("stop", None).status.success());
}
