//! The scraper test: `lmstat -a` output parsed with regular expressions written from
//! FlexNet's documented `lmstat` layout (License Administration Guide, "lmstat"), the
//! way monitoring exporters parse it, must yield every feature, holder, lingering seat
//! and waiter with the right fields.

use regex::Regex;
use tally_client::proto::v1 as pb;

use super::{expiry, render, start};

// 2026-12-02 13:09:44 UTC, a Wednesday.
const NOW: u64 = 1_796_216_984_000;

fn holder(lease: u64, user: &str, host: &str, display: &str, count: u32) -> pb::LeaseInfo {
    pb::LeaseInfo {
        lease_id: lease,
        seat_id: 100 + lease,
        feature: "solver".into(),
        version: "2025.0506".into(),
        count,
        session_id: 7,
        user: user.into(),
        host: host.into(),
        display: display.into(),
        granted_at_ms: NOW - 3_600_000,
        state: pb::LeaseState::Active as i32,
        ..Default::default()
    }
}

fn listing() -> (Vec<pb::FeatureInfo>, Vec<pb::Waiter>) {
    let mut lingering = holder(0, "carol", "ws3", "", 1);
    lingering.seat_id = 42;
    lingering.state = pb::LeaseState::Lingering as i32;
    lingering.version = String::new();
    let solver = pb::FeatureInfo {
        name: "solver".into(),
        vendor: "demo".into(),
        versions: vec!["2025.1".into()],
        issued: 4,
        in_use: 4,
        linger_ms: 300_000,
        expiry_ms: 1_830_297_600_000, // 2028-01-01 00:00Z: the end of 31-dec-2027
        holders: vec![
            holder(5, "ann", "ws1", ":0.0", 1),
            holder(6, "bob", "ws2", "", 2),
            lingering,
        ],
        ..Default::default()
    };
    let viewer = pb::FeatureInfo {
        name: "viewer".into(),
        vendor: "demo".into(),
        versions: vec!["1.0".into()],
        issued: 1,
        ..Default::default()
    };
    let free = pb::FeatureInfo {
        name: "reader".into(),
        vendor: "other".into(),
        versions: vec!["3".into()],
        issued: u64::from(u32::MAX),
        ..Default::default()
    };
    let waiter = pb::Waiter {
        place: 9,
        feature: "solver".into(),
        version: "2025.0506".into(),
        count: 2,
        user: "dan".into(),
        host: "ws4".into(),
        ..Default::default()
    };
    (vec![solver, viewer, free], vec![waiter])
}

#[test]
fn scrapers_find_every_feature_holder_lingering_seat_and_waiter() {
    let (features, waiters) = listing();
    let out = render(&features, &waiters, None, ("lic1", "7000"), NOW, &|ms| ms);
    let users_of = Regex::new(
        r"^Users of (\S+):  \(Total of (\d+) licenses? issued;  Total of (\d+) licenses? in use\)$",
    )
    .unwrap();
    let uncounted = Regex::new(r"^Users of (\S+):  \(Uncounted, node-locked\)$").unwrap();
    let detail = Regex::new(
        r#"^  "(\S+)" v(\S+), vendor: (\S+), expiry: (\S+(?:\(no expiration date\))?)$"#,
    )
    .unwrap();
    let user = Regex::new(
        r"^    (\S+) (\S+) (\S+) \(v([\d.]+)\) \((\S+)/(\d+) (\d+)\), start (Sun|Mon|Tue|Wed|Thu|Fri|Sat) (\d{1,2})/(\d{1,2}) (\d{1,2}):(\d{2})(?:, (\d+) licenses)?(?: \(linger: (\d+)\))?$",
    )
    .unwrap();
    let queued = Regex::new(
        r"^    (\S+) (\S+) (\S+) \(v([\d.]+)\) \((\S+)/(\d+) (\d+)\) queued for (\d+) licenses?$",
    )
    .unwrap();
    let server = Regex::new(r"^License server status: (\d+)@(\S+)$").unwrap();

    let (mut features_seen, mut users, mut waits, mut details) = (vec![], vec![], vec![], vec![]);
    let mut servers = vec![];
    for line in out.lines() {
        if let Some(c) = users_of.captures(line) {
            features_seen.push(format!("{} {}/{}", &c[1], &c[3], &c[2]));
        } else if let Some(c) = uncounted.captures(line) {
            features_seen.push(format!("{} uncounted", &c[1]));
        } else if let Some(c) = detail.captures(line) {
            details.push(format!("{} {} {} {}", &c[1], &c[2], &c[3], &c[4]));
        } else if let Some(c) = user.captures(line) {
            let count = c.get(13).map_or("1", |m| m.as_str());
            let linger = c.get(14).map_or("-", |m| m.as_str());
            users.push(format!(
                "{} {} {} v{} {}/{} #{} {} {}/{} {}:{} x{count} linger {linger}",
                &c[1],
                &c[2],
                &c[3],
                &c[4],
                &c[5],
                &c[6],
                &c[7],
                &c[8],
                &c[9],
                &c[10],
                &c[11],
                &c[12]
            ));
        } else if let Some(c) = queued.captures(line) {
            waits.push(format!(
                "{} {} v{} #{} x{}",
                &c[1], &c[2], &c[4], &c[7], &c[8]
            ));
        } else if let Some(c) = server.captures(line) {
            servers.push(format!("{}@{}", &c[1], &c[2]));
        }
    }
    assert_eq!(servers, ["7000@lic1"], "{out}");
    assert_eq!(
        features_seen,
        ["solver 4/4", "viewer 0/1", "reader uncounted"],
        "{out}"
    );
    assert_eq!(details, ["solver 2025.1 demo 31-dec-2027"], "{out}");
    assert_eq!(
        users,
        [
            "ann ws1 :0.0 v2025.0506 lic1/7000 #5 Wed 12/2 12:09 x1 linger -",
            // No display given: FlexNet shows the host there.
            "bob ws2 ws2 v2025.0506 lic1/7000 #6 Wed 12/2 12:09 x2 linger -",
            // A lingering seat: its seat id as the handle, the feature's newest version.
            "carol ws3 ws3 v2025.1 lic1/7000 #42 Wed 12/2 12:09 x1 linger 300",
        ],
        "{out}"
    );
    assert_eq!(waits, ["dan ws4 v2025.0506 #9 x2"], "{out}");
}

#[test]
fn one_feature_alone_with_f() {
    let (features, waiters) = listing();
    let out = render(
        &features,
        &waiters,
        Some("viewer"),
        ("lic1", "7000"),
        NOW,
        &|ms| ms,
    );
    assert!(
        out.contains("Users of viewer:  (Total of 1 license issued;  Total of 0 licenses in use)"),
        "{out}"
    );
    assert!(!out.contains("Users of solver"), "{out}");
}

#[test]
fn dates_read_as_flexnet_writes_them() {
    assert_eq!(start(NOW), "Wed 12/2 13:09");
    // 1970-01-01 was a Thursday.
    assert_eq!(start(0), "Thu 1/1 0:00");
    assert_eq!(expiry(1_830_297_600_000), "31-dec-2027");
    assert_eq!(expiry(0), "permanent(no expiration date)");
}
