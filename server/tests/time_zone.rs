//! The time zone of license dates, end to end on one in-process node over real gRPC and
//! a real redb file: the first leader writes its configured zone into the ledger, an
//! administrator reads and changes it through the Admin service, a license's end moves
//! with it in the features listing, an unknown name is refused, and after a restart with
//! another configured zone the ledger's zone still rules.

// Helpers of a test file are test code: a failed unwrap is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tally_core::ledger::Op;
use tally_core::license::{parse, Zone};
use tally_proto::v1 as pb;
use tally_proto::v1::admin_client::AdminClient;
use tally_server::config::NodeConfig;
use tally_server::node::{self, NodeHandle};
use tally_server::types::TallyNode;
use tokio::net::TcpListener;
use tonic::transport::Channel;

fn cfg(dir: PathBuf, zone: &str) -> NodeConfig {
    NodeConfig {
        id: 1,
        data_dir: dir,
        heartbeat_ms: 50,
        election_min_ms: 300,
        election_max_ms: 600,
        min_ttl_ms: 900,
        default_ttl_ms: 1_500,
        // About the ledger's setting; TLS and roles have their own tests (tests/tls.rs).
        insecure_plaintext: true,
        http: String::new(),
        time_zone: Some(Zone::parse(zone).unwrap()),
        ..NodeConfig::default()
    }
}

/// Starts the node on `addr` (or a free port) and waits until it leads and the cluster
/// has its identity: its first leader's setup (zone, then id) is done.
async fn start(dir: &std::path::Path, zone: &str, addr: Option<&str>) -> NodeHandle {
    let l = TcpListener::bind(addr.unwrap_or("127.0.0.1:0"))
        .await
        .unwrap();
    let n = node::start(cfg(dir.to_owned(), zone), l).await.unwrap();
    if addr.is_none() {
        let members = BTreeMap::from([(
            1,
            TallyNode {
                addr: n.addr.clone(),
                http: String::new(),
            },
        )]);
        node::initialize(&n.shared, members).await.unwrap();
    }
    for _ in 0..200 {
        let leads = n.shared.raft.metrics().borrow().current_leader == Some(1);
        if leads && n.shared.sm.read().ledger.cluster_id().is_some() {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node never made the cluster's identity");
}

async fn admin(n: &NodeHandle) -> AdminClient<Channel> {
    AdminClient::connect(format!("http://{}", n.addr))
        .await
        .unwrap()
}

/// The cad feature's end as the Admin listing gives it: (instant, date, zone).
async fn cad_end(a: &mut AdminClient<Channel>) -> (u64, String, String) {
    let r = a
        .list_features(pb::ListFeaturesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let f = r.features.iter().find(|f| f.name == "cad").unwrap();
    (f.expiry_ms, f.expiry_date.clone(), r.time_zone)
}

async fn set(
    a: &mut AdminClient<Channel>,
    zone: &str,
) -> Result<pb::TimeZoneResponse, tonic::Status> {
    a.set_time_zone(pb::SetTimeZoneRequest {
        zone: zone.into(),
        reason: "test".into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_clusters_zone_comes_from_the_first_config_then_only_admins_change_it() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), "Europe/Berlin", None).await;
    let addr = n.addr.clone();
    let mut a = admin(&n).await;

    // The first leader wrote its configured zone into the ledger.
    let z = a
        .get_time_zone(pb::GetTimeZoneRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((z.zone.as_str(), z.set), ("Europe/Berlin", true));
    assert_eq!(z.tzdb_version, tally_core::license::TZDB_VERSION);
    let st = a
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.time_zone, "Europe/Berlin");

    let license = parse("VENDOR acme\nFEATURE cad acme 1.0 31-dec-2027 2\n").unwrap();
    n.shared
        .propose(Op::LoadLicense {
            source: "t.lic".into(),
            license,
        })
        .await
        .unwrap();
    // 31-dec-2027 ends at midnight in Berlin: 23:00 UTC that evening.
    let berlin_end = 1_830_294_000_000;
    assert_eq!(
        cad_end(&mut a).await,
        (berlin_end, "31-dec-2027".into(), "Europe/Berlin".into())
    );

    // An administrator moves it to California: the same day ends at 08:00 UTC on 1 Jan.
    let r = set(&mut a, "america/los_angeles").await.unwrap();
    assert_eq!(
        (r.zone.as_str(), r.previous.as_str(), r.changed),
        ("America/Los_Angeles", "Europe/Berlin", true)
    );
    let la_end = 1_830_326_400_000;
    assert_eq!(
        cad_end(&mut a).await,
        (la_end, "31-dec-2027".into(), "America/Los_Angeles".into())
    );
    let again = set(&mut a, "America/Los_Angeles").await.unwrap();
    assert!(!again.changed);

    // An unknown name is refused before it costs a log entry, and changes nothing.
    let applied = n.shared.sm.read().ledger.last_applied();
    let e = set(&mut a, "Mars/Olympus_Mons").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("not a time zone"), "{}", e.message());
    assert_eq!(n.shared.sm.read().ledger.last_applied(), applied);
    assert_eq!(cad_end(&mut a).await.0, la_end);

    // Restarted with another configured zone, the node keeps the cluster's.
    drop(a);
    n.stop().await;
    let n = start(tmp.path(), "Asia/Tokyo", Some(&addr)).await;
    let mut a = admin(&n).await;
    let z = a
        .get_time_zone(pb::GetTimeZoneRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(z.zone, "America/Los_Angeles");
    assert_eq!(cad_end(&mut a).await.0, la_end);
    n.stop().await;
}
