//! A leader that was paused (SIGSTOP: a VM freeze, a stalled host) wakes up believing it
//! still leads. It must promise no heartbeat deadline from then on: another node has
//! been elected meanwhile and runs the sessions' clocks. The fault soak caught a leader
//! doing exactly that (it read a quorum-ack age from metrics published before the
//! pause), and the new leader then expired sessions before the deadlines the old one
//! had acknowledged.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::Duration;

use tally_client::proto::v1::licensing_client::LicensingClient;
use tally_client::proto::v1::{
    HeartbeatRequest, OpenSessionRequest, RequestId, SessionAuth, SessionState,
};
use tally_tests::harness::{Harness, ELECTION_MAX_MS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_promises_nothing_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), 3).await.unwrap();
    let old = h.wait_leader(Duration::from_secs(20)).await.unwrap();
    let (addr, _) = h.direct(old).unwrap();
    let mut rpc = LicensingClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let secret = vec![7u8; 32];
    let open = rpc
        .open_session(OpenSessionRequest {
            request: Some(RequestId {
                client_id: vec![9; 16],
                seq: 1,
            }),
            user: "ann".into(),
            host: "ws1".into(),
            ttl_ms: 60_000,
            secret: secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let beat = HeartbeatRequest {
        sessions: vec![SessionAuth {
            session_id: open.session_id,
            secret,
        }],
    };
    // A leader just elected is still loading deadlines: it says so, and is retried.
    let mut tries = 0;
    let alive = loop {
        match rpc.heartbeat(beat.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(s) if tries < 50 && s.code() == tonic::Code::Unavailable => tries += 1,
            Err(s) => panic!("{s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alive.sessions[0].state(), SessionState::Alive);

    h.pause(old);
    // Well past any election timeout: the others elect a leader of their own.
    tokio::time::sleep(Duration::from_millis(5 * ELECTION_MAX_MS)).await;
    // Heartbeats written to the paused node's socket now are read the instant it wakes,
    // racing its Raft core's first look at the world.
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut rpc = rpc.clone();
            let beat = beat.clone();
            tokio::spawn(async move { rpc.heartbeat(beat).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.resume(old);
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => panic!(
                "node {old} answered a heartbeat after its pause, as if it still led: {:?}",
                r.into_inner()
            ),
            Err(s) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        }
    }
    // And the others did elect a leader of their own (the woken node may still call
    // itself leader for a moment, so ask until the answer settles).
    let mut new = old;
    for _ in 0..100 {
        new = h.wait_leader(Duration::from_secs(10)).await.unwrap();
        if new != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(new, old, "no other node leads after the pause");
}
