//! `deploy/local/three-nodes.sh`: three real `tallyd` processes, keys, license, kill -9
//! and restart of the leader, full stop.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{alive, free_ports, tallyctl, tallyctl_json, three_nodes_script, ThreeNodes};

/// Polls `tallyctl status` until `ok` holds, for up to 20 s.
fn wait_status(cluster: &ThreeNodes, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = tallyctl(cluster, &["--json", "status"]);
        // Status prints its JSON whatever it concludes, and exits by the verdict.
        if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
            let code = match v["verdict"].as_str() {
                Some("healthy") => Some(0),
                Some("degraded") => Some(7),
                _ => Some(3),
            };
            assert_eq!(out.status.code(), code, "{what}: exit code for {v}");
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: last status {v}");
        } else {
            assert!(
                Instant::now() < deadline,
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn max_applied(v: &Value) -> Option<u64> {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["applied_index"].as_u64())
        .max()
}

fn healthy(v: &Value) -> usize {
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["healthy"] == true)
        .count()
}

#[test]
fn demo_cluster_survives_kill_9_of_its_leader_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = ThreeNodes::start(d);
    let eps = cluster.endpoints.clone();
    let base: u16 = eps
        .split(',')
        .next()
        .and_then(|e| e.strip_prefix("127.0.0.1:"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        eps,
        format!(
            "127.0.0.1:{base},127.0.0.1:{},127.0.0.1:{}",
            base + 1,
            base + 2
        )
    );
    for f in [
        "vendor.key",
        "vendor.pub",
        "demo.lic",
        "node1.pid",
        "node3.pid",
    ] {
        assert!(d.join(f).exists(), "{f} missing");
    }
    let lic = tallyctl_json(&cluster, &["license", "list"]);
    assert_eq!(lic[0]["source"], "demo.lic", "{lic}");
    let verify = tallyctl(
        &cluster,
        &[
            "license",
            "verify",
            d.join("demo.lic").to_str().unwrap(),
            "--pubkey",
            d.join("vendor.pub").to_str().unwrap(),
        ],
    );
    assert!(verify.status.success());

    let st = wait_status(&cluster, "three healthy nodes", |v| healthy(v) == 3);
    let leader = st["leader_id"].as_u64().unwrap();
    let killed = cluster.pid(leader);
    Command::new("kill")
        .args(["-9", killed.trim()])
        .status()
        .unwrap();
    let st = wait_status(&cluster, "a new leader", |v| {
        let l = v["leader_id"].as_u64().unwrap();
        l != 0 && l != leader && healthy(v) == 2
    });
    // Degraded, saying who does not answer; the dead node is not shown with a guessed role.
    assert_eq!(st["verdict"], "degraded", "{st}");
    assert!(
        st["problem"]
            .as_str()
            .unwrap()
            .contains(&format!("node {leader} unreachable")),
        "{st}"
    );
    let dead = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == leader)
        .unwrap();
    assert_eq!(dead["role"], "unreachable", "{st}");
    assert!(!alive(&killed));
    // A write while the old leader is down, so it restarts behind and must catch up.
    let load = tallyctl(
        &cluster,
        &["license", "load", d.join("demo.lic").to_str().unwrap()],
    );
    assert!(load.status.success(), "{load:?}");
    let before = max_applied(&st).unwrap();
    let behind = wait_status(&cluster, "the write is applied", |v| {
        max_applied(v).unwrap() > before
    });

    let out = cluster.script("restart", Some(&leader.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(cluster.pid(leader), killed);
    // The restarted node catches up from its own log and the leader.
    let caught_up = wait_status(&cluster, "the restarted node catches up", |v| {
        let nodes = v["nodes"].as_array().unwrap();
        healthy(v) == 3
            && nodes
                .iter()
                .all(|n| n["applied_index"] == nodes[0]["applied_index"])
    });
    assert!(caught_up["term"].as_u64() >= st["term"].as_u64());
    assert!(caught_up["nodes"][0]["applied_index"].as_u64() >= max_applied(&behind));

    let pids: Vec<String> = (1..=3).map(|n| cluster.pid(n)).collect();
    let out = cluster.script("stop", None);
    assert!(out.status.success());
    for p in &pids {
        assert!(!alive(p), "pid {p} still running after stop");
    }
    assert!(!d.join("node1.pid").exists());
}

#[test]
fn trusts_a_given_vendor_key_and_loads_the_given_license() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let kit = tempfile::tempdir().unwrap();
    let ctl = |args: &[&str]| {
        let o = tallyctl("", args);
        assert!(o.status.success(), "{args:?}: {o:?}");
    };
    ctl(&["license", "keygen", "--out", kit.path().to_str().unwrap()]);
    std::fs::copy(kit.path().join("vendor.pub"), d.join("vendor.pub")).unwrap();
    let unsigned = kit.path().join("acme.lic");
    std::fs::write(
        &unsigned,
        "VENDOR acme\nFEATURE rocket acme 2.0 permanent 7\n",
    )
    .unwrap();
    ctl(&[
        "license",
        "sign",
        unsigned.to_str().unwrap(),
        "--key",
        kit.path().join("vendor.key").to_str().unwrap(),
        "--out",
        d.join("license.lic").to_str().unwrap(),
    ]);

    let cluster = ThreeNodes::start(d);
    // It trusted the given key: no secret key was made next to it.
    assert!(!d.join("vendor.key").exists());
    let lic = tallyctl_json(&cluster, &["license", "list"]);
    assert_eq!(lic[0]["source"], "license.lic", "{lic}");
    assert_eq!(lic[0]["lines"][0]["feature"], "rocket", "{lic}");
    assert_eq!(lic[0]["lines"][0]["count"], "7", "{lic}");
    assert!(cluster.script("stop", None).status.success());
}

#[test]
fn refuses_bad_arguments_with_a_reason() {
    let out = three_nodes_script(&["start", "/tmp/unused", "port"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BASE_PORT must be a number"));
    let out = three_nodes_script(&["restart", "/tmp/unused", "7"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("node number, 1 to 3"));
}

/// The dashboards listen on BASE_PORT+80.. by default, and `start` prints where; a port
/// already taken stops `start` before any node runs, with a sentence naming it; and
/// http:// on a dashboard's HTTPS port is answered with a sentence naming the right URL.
#[test]
fn dashboards_have_fixed_ports_and_a_taken_port_is_named() {
    let base = free_ports(83);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (port, whose) in [
        (base + 1, "node 2's gRPC port"),
        (base + 82, "node 3's HTTP port"),
    ] {
        let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let out = three_nodes_script(&["start", d.to_str().unwrap(), &base.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("port {port} ({whose}) is taken")),
            "{err}"
        );
        assert!(!d.join("node1.pid").exists(), "a node started: {err}");
        drop(squatter);
    }
    let cluster = ThreeNodes::start_at(d, base, Vec::new());
    let dash = base + 80;
    assert!(
        cluster.said.contains(&format!(
            "dashboards: https://127.0.0.1:{dash}/ https://127.0.0.1:{}/ https://127.0.0.1:{}/",
            dash + 1,
            dash + 2
        )),
        "{}",
        cluster.said
    );
    for port in dash..dash + 3 {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: tally\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400")
                && answer.contains(&format!(
                    "ask for https://127.0.0.1:{port}/ instead of http://"
                )),
            "{answer}"
        );
    }
    assert!(cluster.script("stop", None).status.success());
}
