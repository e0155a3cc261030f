//! The site's options file end to end, against three real `tallyd` processes driven by
//! the real `tallyctl`: a policy with EXCLUDE, RESERVE and MAX lines, denials that name
//! the directive and its line, bad files refused with line and column (changing
//! nothing), a replaced file taking effect without a restart, held seats surviving a
//! policy change, and every node holding the same policy after the leader is killed.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::process::Output;
use std::time::{Duration, Instant};

use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::{LedgerDigestRequest, LoadOptionsRequest};
use tally_tests::harness::Harness;
use tally_tests::{tallyctl, tallyctl_json, Holder};

/// Holds one seat of `feature` as `user`; returns the holder and its lease id.
fn hold(endpoints: &str, feature: &str, user: &str) -> (Holder, u64) {
    let host = format!("ws-{user}");
    let (holder, grant) = tally_tests::hold(endpoints, feature, (user, &host), 300);
    (holder, grant["lease_id"].as_u64().unwrap())
}

/// A checkout that checks in at once: its exit code and what it said on stderr.
fn checkout(endpoints: &str, feature: &str, user: &str) -> (Option<i32>, String) {
    let host = format!("ws-{user}");
    let o = tallyctl(
        endpoints,
        &[
            "checkout", feature, "--user", user, "--host", &host, "--hold", "0",
        ],
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn denied_with(endpoints: &str, feature: &str, user: &str, says: &str) {
    let (code, err) = checkout(endpoints, feature, user);
    assert_eq!(code, Some(4), "{user} on {feature}: {err}");
    assert!(
        err.contains(says),
        "{user} on {feature}: expected {says:?} in {err}"
    );
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn options_text(endpoints: &str) -> String {
    tallyctl_json(endpoints, &["options", "show"])["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn lease_ids(endpoints: &str) -> Vec<u64> {
    tallyctl_json(endpoints, &["leases"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["id"].as_u64())
        .collect()
}

const POLICY: &str = "\
# the site's policy
GROUP design ann ed
EXCLUDE alpha USER eve
RESERVE 1 alpha GROUP design
MAX 1 beta USER cy
INCLUDE gamma USER ann
";

const REPLACED: &str = "\
EXCLUDE alpha USER bob
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_options_file_is_enforced_by_every_node_and_survives_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), 3).await.unwrap();
    let endpoints = h.endpoints.join(",");
    let ep = endpoints.as_str();

    // bob holds a seat of alpha (3 seats) before any policy.
    let (mut bob, bob_lease) = hold(ep, "alpha", "bob");

    // A file with mistakes: `check` lists each with line and column, offline, and
    // `load` refuses it; nothing changes in the cluster.
    let bad = dir.path().join("bad.opt");
    std::fs::write(
        &bad,
        "EXCLUDE alpha USER eve\nRESERVE x alpha USER ann\nNOLOG IN\n",
    )
    .unwrap();
    let o = tallyctl(ep, &["options", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let said = text(&o);
    assert!(said.contains("line 2, column 9"), "{said}");
    assert!(
        said.contains("line 3, column 1: NOLOG is not supported"),
        "{said}"
    );
    let o = tallyctl(ep, &["options", "load", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    // The server parses too: a client that skips the local check gets line and column.
    let c = h.cluster(Duration::from_secs(10)).unwrap();
    let e = c
        .call("options load", |ch| async move {
            AdminClient::new(ch)
                .load_options(LoadOptionsRequest {
                    text: "EXCLUDE alpha USER eve\nRESERVE x alpha USER ann\n".into(),
                    source: "bad.opt".into(),
                })
                .await
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2, column 9"), "{e}");
    // Reservations beyond a pool are refused naming the lines.
    let over = dir.path().join("over.opt");
    std::fs::write(&over, "RESERVE 2 alpha USER ann\nRESERVE 2 alpha USER cy\n").unwrap();
    let o = tallyctl(ep, &["options", "load", over.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("RESERVE on line 2 for alpha"),
        "{}",
        text(&o)
    );
    assert_eq!(options_text(ep), "");

    // The policy.
    let good = dir.path().join("site.opt");
    std::fs::write(&good, POLICY).unwrap();
    let o = tallyctl(ep, &["options", "load", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("5 directive(s) loaded"), "{}", text(&o));
    // A bad load afterwards leaves it as it is.
    let o = tallyctl(ep, &["options", "load", over.to_str().unwrap()]);
    assert!(!o.status.success());
    let shown = options_text(ep);
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        [
            "",
            "GROUP design ann ed",
            "EXCLUDE alpha USER eve",
            "RESERVE 1 alpha GROUP design",
            "MAX 1 beta USER cy",
            "INCLUDE gamma USER ann"
        ]
    );

    // EXCLUDE: eve is refused, citing line 3.
    denied_with(
        ep,
        "alpha",
        "eve",
        "EXCLUDED_BY_POLICY (options line 3: EXCLUDE alpha USER eve)",
    );
    // RESERVE for a group: dan takes the second seat; the third is kept for the design
    // group, so cy is refused and ann, of the group, gets it.
    let (_dan, _) = hold(ep, "alpha", "dan");
    denied_with(
        ep,
        "alpha",
        "cy",
        "RESERVED_FOR_OTHERS (options line 4: RESERVE 1 alpha GROUP design)",
    );
    let (_ann, _) = hold(ep, "alpha", "ann");
    // MAX: cy may hold one seat of beta, not two.
    let (_cy, _) = hold(ep, "beta", "cy");
    denied_with(
        ep,
        "beta",
        "cy",
        "MAX_REACHED_BY_POLICY (options line 5: MAX 1 beta USER cy)",
    );
    // INCLUDE: gamma is ann's alone.
    denied_with(
        ep,
        "gamma",
        "eve",
        "EXCLUDED_BY_POLICY (options line 6: INCLUDE gamma USER ann)",
    );
    let (code, err) = checkout(ep, "gamma", "ann");
    assert_eq!(code, Some(0), "{err}");
    // `features` shows the lines per feature.
    let features = tallyctl_json(ep, &["features"]);
    let alpha = features
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "alpha")
        .unwrap();
    assert_eq!(
        alpha["policy"],
        serde_json::json!([
            "line 3: EXCLUDE alpha USER eve",
            "line 4: RESERVE 1 alpha GROUP design"
        ])
    );

    // A new file replaces the old one at once, without a restart: bob is excluded now
    // and eve is not; bob's seat, taken before, is kept.
    let replaced = dir.path().join("replaced.opt");
    std::fs::write(&replaced, REPLACED).unwrap();
    let o = tallyctl(ep, &["options", "load", replaced.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    denied_with(
        ep,
        "alpha",
        "bob",
        "EXCLUDED_BY_POLICY (options line 1: EXCLUDE alpha USER bob)",
    );
    // alpha is full (bob, dan, ann); cy's second beta seat is no longer capped.
    let (code, err) = checkout(ep, "beta", "cy");
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = checkout(ep, "alpha", "eve");
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("in use"), "a full pool, not a policy: {err}");
    assert!(lease_ids(ep).contains(&bob_lease));
    assert!(bob.running());

    // Kill the leader: the new one enforces the same policy, and every node that is
    // left holds the same ledger (policy included) at the same index.
    let leader = h.wait_leader(Duration::from_secs(10)).await.unwrap();
    h.kill(leader).await;
    let new = h.wait_leader(Duration::from_secs(20)).await.unwrap();
    assert_ne!(new, leader);
    denied_with(
        ep,
        "alpha",
        "bob",
        "EXCLUDED_BY_POLICY (options line 1: EXCLUDE alpha USER bob)",
    );
    assert_eq!(options_text(ep), "EXCLUDE alpha USER bob\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for id in h.ids().into_iter().filter(|id| h.running(*id)) {
            let (addr, c) = h.direct(id).unwrap();
            let d = c
                .call_node(&addr, "digest", |ch| async move {
                    AdminClient::new(ch)
                        .ledger_digest(LedgerDigestRequest {})
                        .await
                })
                .await
                .unwrap();
            seen.push((d.applied_index, d.sha256));
        }
        assert_eq!(seen.len(), 2);
        if seen[0].0 == seen[1].0 {
            assert_eq!(seen[0].1, seen[1].1, "same index, different ledgers");
            break;
        }
        assert!(Instant::now() < deadline, "the nodes never met: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // bob's seat survived the policy change and the failover.
    assert!(lease_ids(ep).contains(&bob_lease));
    assert!(bob.running());
}
