//! The licensing models end to end, with the real `tallyctl` against three real `tallyd`
//! processes: a named-user feature with a fair-use window, and term licenses in grace
//! and in demo.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::process::Command;

use serde_json::Value;
use tally_core::license::Date;
use tally_tests::{feature, tallyctl, tallyctl_json, Holder, ThreeNodes};

fn hold(cluster: &ThreeNodes, feature: &str, user: &str, host: &str) -> (Holder, Value) {
    tally_tests::hold(cluster, feature, (user, host), 300)
}

/// A checkout that is expected to be denied: its exit code and stderr.
fn try_checkout(cluster: &ThreeNodes, feature: &str, user: &str) -> (Option<i32>, String) {
    let o = tallyctl(
        cluster,
        &[
            "checkout", feature, "--user", user, "--host", "ws9", "--hold", "0",
        ],
    );
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Signs `text` with the cluster's vendor key, loads it, and returns what `license load`
/// printed.
fn sign_and_load(cluster: &ThreeNodes, name: &str, text: &str) -> String {
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
        ]
        .iter()
        .copied()
        .chain(["--out", lic.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tallyctl(cluster, &["license", "load", lic.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn named_users_share_by_device_wait_their_turn_and_strangers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    sign_and_load(
        &cluster,
        "pbx.lic",
        "VENDOR demo\nFEATURE pbx demo 1.0 permanent 2 USER_BASED=30\n",
    );
    let a = tallyctl_json(&cluster, &["users", "assign", "pbx", "ann", "bob", "cy"]);
    assert_eq!(a["changed"], 3, "{a}");
    // Three users on two seats: the third is inside the fair-use window.
    let users = tallyctl_json(&cluster, &["users", "list", "pbx"]);
    let states: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), u["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![("ann", "licensed"), ("bob", "licensed"), ("cy", "fair_use")]
    );
    assert!(users[2]["until"].as_u64().unwrap() > 0, "{users}");
    let f = feature(&cluster, "pbx");
    assert_eq!(
        (f["model"].as_str(), f["assigned"].as_u64()),
        (Some("named_user"), Some(3))
    );
    assert!(f["window_ends"].as_u64().is_some(), "{f}");

    // Two hold; ann's second device shares her seat.
    let (_ann, _) = hold(&cluster, "pbx", "ann", "desk");
    let (bob, _) = hold(&cluster, "pbx", "bob", "desk");
    let (_ann2, g) = hold(&cluster, "pbx", "ann", "laptop");
    assert_eq!(g["shared"], true, "{g}");
    assert_eq!(feature(&cluster, "pbx")["in_use"], 2);
    // The third is refused, with the reason, until one leaves.
    let (code, err) = try_checkout(&cluster, "pbx", "cy");
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("2 of 2 are in use"), "{err}");
    // A stranger is refused for not being a named user.
    let (code, err) = try_checkout(&cluster, "pbx", "dan");
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("licensed to named users, and you are not one of them"),
        "{err}"
    );
    // Bob leaves (SIGTERM: tallyctl checks in and closes its session).
    let pid = bob.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut bob = bob;
    assert!(bob.0.wait().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while feature(&cluster, "pbx")["in_use"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's seat never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_cy, g) = hold(&cluster, "pbx", "cy", "desk");
    assert_eq!(g["feature"], "pbx", "{g}");
    assert!(cluster.script("stop", None).status.success());
}

#[test]
fn a_term_license_in_grace_works_and_one_in_demo_grants_its_demo_seats_only() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let day = 86_400_000;
    let yesterday = Date::of_ms(now - day);
    let long_ago = Date::of_ms(now - 40 * day);
    let said = sign_and_load(
        &cluster,
        "terms.lic",
        &format!(
            "VENDOR demo\nFEATURE old demo 1.0 {yesterday} 3 GRACE=30 DEMO=1\nFEATURE gone demo 1.0 {long_ago} 5 GRACE=1 DEMO=2\n"
        ),
    );
    // The load itself says which lines do not count as a fresh license would.
    assert!(
        said.contains(&format!(
            "\"old\" expired at the end of {yesterday}: it counts until its grace ends on"
        )) && said.contains(&format!(
            "\"gone\" expired at the end of {long_ago}: only its 2 demo seat(s) count"
        )),
        "{said}"
    );
    let old = feature(&cluster, "old");
    assert_eq!(old["term_state"], "grace", "{old}");
    assert!(old["grace_until"].as_u64().unwrap() > now, "{old}");
    assert_eq!(old["issued"], 3, "grace seats are licensed seats: {old}");
    let text = tallyctl(&cluster, &["features"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("WARNING: expired; in its grace period until"),
        "{text}"
    );
    assert!(
        text.contains("WARNING: expired and past its grace: 2 demo seat(s)"),
        "{text}"
    );
    let (_o, _) = hold(&cluster, "old", "ann", "a");
    let gone = feature(&cluster, "gone");
    assert_eq!(
        (
            gone["term_state"].as_str(),
            gone["demo_seats"].as_u64(),
            gone["issued"].as_u64()
        ),
        (Some("demo"), Some(2), Some(2)),
        "{gone}"
    );
    let (_a, _) = hold(&cluster, "gone", "ann", "a");
    let (_b, _) = hold(&cluster, "gone", "bob", "b");
    let (code, err) = try_checkout(&cluster, "gone", "cy");
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("2 of 2 are in use"), "{err}");
    assert!(cluster.script("stop", None).status.success());
}

/// A file the way FlexNet vendors write them, signed with Tally's kit: a FEATURE line,
/// its renewal FEATURE line (a newer ISSUED), two INCREMENT packs, a decimal version,
/// DUP_GROUP=UHD. FlexNet's rules ("FEATURE and INCREMENT Lines" in the FNP License
/// Administration Guide): only the first FEATURE line counts, ordered by version then
/// newer ISSUED, and INCREMENT lines add: 12 + 3 + 2 = 17, not 27; `2025.1` serves a
/// request for `2025.0506` (versions compare as decimals); under UHD one user's checkouts
/// on one host and display share a seat.
#[test]
fn a_flexnet_style_file_loads_and_counts_as_flexnet_documents() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(dir.path());
    let said = sign_and_load(
        &cluster,
        "solver.lic",
        "VENDOR demo\n\
         FEATURE solver demo 2025.1 permanent 10 ISSUED=01-jan-2025 DUP_GROUP=UHD\n\
         FEATURE solver demo 2025.1 permanent 12 ISSUED=15-jan-2026 DUP_GROUP=UHD\n\
         INCREMENT solver demo 2025.1 permanent 3 DUP_GROUP=UHD NOTICE=\"pack 1\"\n\
         INCREMENT solver demo 2025.1 permanent 2 DUP_GROUP=UHD NOTICE=\"pack 2\"\n",
    );
    let f = feature(&cluster, "solver");
    assert_eq!(f["issued"], 17, "{f}");
    assert!(
        said.contains("2 FEATURE lines of \"solver\": only one counts"),
        "{said}"
    );
    assert_eq!(f["dup_group"], "UHD", "{f}");

    let checkout = |user: &str, host: &str, version: &str| {
        tallyctl_json(
            &cluster,
            &[
                "checkout",
                "solver",
                "--user",
                user,
                "--host",
                host,
                "--version",
                version,
                "--hold",
                "0",
            ],
        )
    };
    let older = checkout("ann", "ws1", "2025.0506");
    assert_eq!(older["feature"], "solver", "{older}");
    // A version above every line is refused, naming the highest.
    let o = tallyctl(
        &cluster,
        &[
            "checkout",
            "solver",
            "--user",
            "ann",
            "--host",
            "ws1",
            "--version",
            "2025.2",
            "--hold",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(4));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2025.1"), "{err}");

    // UHD: ann's two checkouts on ws1 share one seat; on ws2 she takes another.
    let (_a1, g1) = hold(&cluster, "solver", "ann", "ws1");
    let (_a2, g2) = hold(&cluster, "solver", "ann", "ws1");
    assert_eq!(g2["shared"], true, "{g2}");
    assert_eq!(g1["seat"], g2["seat"], "{g1} {g2}");
    let (_a3, g3) = hold(&cluster, "solver", "ann", "ws2");
    assert_eq!(g3["shared"], false, "{g3}");
    assert_eq!(feature(&cluster, "solver")["in_use"], 2);

    // The rest of FlexNet's line vocabulary, in a second file of the same vendor:
    // a PACKAGE of components ("equivalent to" a line per component, count times the
    // component's), a SUITE (its own seat taken with every component, shared per user by
    // SUITE_DUP_GROUP=U), a renewal that SUPERSEDEs the earlier-issued line, an UPGRADE,
    // and a pack of `solver` with no DUP_GROUP (a pool of its own, counted apart).
    let said = sign_and_load(
        &cluster,
        "more.lic",
        "VENDOR demo\n\
         PACKAGE office demo 2025.1 COMPONENTS=\"writer calc:2025.0506:2\"\n\
         INCREMENT office demo 2025.1 permanent 3\n\
         PACKAGE studio demo COMPONENTS=\"render model\" OPTIONS=SUITE\n\
         FEATURE studio demo 1.0 permanent 2 SUITE_DUP_GROUP=U\n\
         INCREMENT mesh demo 1.0 permanent 4 ISSUED=01-jan-2025\n\
         INCREMENT mesh demo 1.0 permanent 6 ISSUED=01-jun-2026 SUPERSEDE\n\
         UPGRADE mesh demo 1.0 2.0 permanent 2 ISSUED=02-jun-2026\n\
         INCREMENT solver demo 2025.1 permanent 2 NOTICE=\"floating pack\"\n",
    );
    let issued = |name: &str| feature(&cluster, name)["issued"].clone();
    assert_eq!(
        ["writer", "calc", "studio", "render", "model", "mesh", "solver"].map(issued),
        [3, 6, 2, 2, 2, 6, 19].map(Value::from),
        "{said}"
    );
    assert_eq!(feature(&cluster, "solver")["dup_group"], "UHD,NONE");
    let o = tallyctl(&cluster, &["features", "--json"]);
    let all = String::from_utf8_lossy(&o.stdout);
    assert!(
        !all.contains("\"office\""),
        "a package is no feature: {all}"
    );
    let listed = tallyctl_json(&cluster, &["license", "list"]);
    let notes: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["lines"].as_array().unwrap().clone())
        .filter_map(|l| l["note"].as_str().map(str::to_owned))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("superseded by more.lic line ")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("enables the package of more.lic line ")),
        "{notes:?}"
    );
    let at = |feature: &str, version: &str| {
        tallyctl_json(
            &cluster,
            &[
                "checkout",
                feature,
                "--user",
                "cy",
                "--version",
                version,
                "--hold",
                "0",
            ],
        )
    };
    assert_eq!(at("calc", "2025.0506")["feature"], "calc");
    assert_eq!(at("writer", "2025.1")["feature"], "writer");
    assert_eq!(at("mesh", "2.0")["feature"], "mesh");
    let (_r, _) = hold(&cluster, "render", "ann", "ws1");
    // Ann's model shares her suite seat (SUITE_DUP_GROUP=U); with dan's, the suite's two
    // seats are taken, so bob is refused a model seat that is free.
    let (_m2, _) = hold(&cluster, "model", "ann", "ws2");
    assert_eq!(feature(&cluster, "studio")["in_use"], 1);
    let (_d, _) = hold(&cluster, "render", "dan", "ws3");
    assert_eq!(feature(&cluster, "studio")["in_use"], 2);
    assert_eq!(feature(&cluster, "model")["in_use"], 1);
    let (code, err) = try_checkout(&cluster, "model", "bob");
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("component of the suite \"studio\""), "{err}");
    assert!(cluster.script("stop", None).status.success());
}
