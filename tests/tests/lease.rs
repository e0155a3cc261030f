//! The heartbeat deadlines a leader promises are kept by whoever leads next, in the two
//! ways the fault soak once broke that promise (CI seed 1796234347935):
//! - A leader that was paused (SIGSTOP: a VM freeze, a stalled host) wakes up believing
//!   it still leads. It must promise nothing from then on: another node has been elected
//!   meanwhile and runs the sessions' clocks. It used to read a quorum-ack age from
//!   metrics published before the pause, and answered.
//! - A leader killed and restarted quickly comes back as leader of the same term
//!   (openraft restores it at once), while its state machine still replays the log. Its
//!   keeper used to load deadlines from that partial state, earlier than promised. (The
//!   test below guards the promise across such a restart; it did not catch the old code
//!   in three runs: the partial replay needs entries still uncommitted at the kill, which
//!   the soak's busy workload has and this quiet one does not.)
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::time::Duration;

use tally_client::proto::v1::licensing_client::LicensingClient;
use tally_client::proto::v1::{
    HeartbeatRequest, HeartbeatResponse, OpenSessionRequest, RequestId, SessionAuth, SessionState,
};
use tally_tests::harness::{Harness, ELECTION_MAX_MS};
use tonic::transport::Channel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_promises_nothing_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), 3).await.unwrap();
    let old = h.wait_leader(Duration::from_secs(20)).await.unwrap();
    let (addr, _) = h.direct(old).unwrap();
    let (mut rpc, beat) = open_at(&addr, 7, "ann").await;
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

/// Opens a session of `user` (TTL 60 s, secret and client id made of `tag`) at the node
/// at `addr`: a connection to it and the heartbeat that renews the session.
async fn open_at(addr: &str, tag: u8, user: &str) -> (LicensingClient<Channel>, HeartbeatRequest) {
    let mut rpc = LicensingClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let secret = vec![tag; 32];
    let open = rpc
        .open_session(OpenSessionRequest {
            request: Some(RequestId {
                client_id: vec![tag; 16],
                seq: 1,
            }),
            user: user.into(),
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
    (rpc, beat)
}

/// Heartbeats `beat` at whoever of `addrs` leads, retrying for `within`.
async fn beat_leader(
    addrs: &[String],
    beat: &HeartbeatRequest,
    within: Duration,
) -> Option<HeartbeatResponse> {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        for a in addrs {
            let Ok(mut rpc) = LicensingClient::<Channel>::connect(format!("http://{a}")).await
            else {
                continue;
            };
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_millis(500), rpc.heartbeat(beat.clone())).await
            {
                return Some(r.into_inner());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_in_its_term_keeps_the_deadlines_it_promised() {
    const TTL_MS: u64 = 4_000;
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), 3).await.unwrap();
    let leader = h.wait_leader(Duration::from_secs(20)).await.unwrap();
    let addrs: Vec<String> = h.ids().iter().map(|id| h.direct(*id).unwrap().0).collect();
    let mut rpc = LicensingClient::connect(format!("http://{}", h.direct(leader).unwrap().0))
        .await
        .unwrap();
    let mut auth = Vec::new();
    for i in 0..10u8 {
        let secret = vec![i + 1; 32];
        let open = rpc
            .open_session(OpenSessionRequest {
                request: Some(RequestId {
                    client_id: vec![i + 1; 16],
                    seq: 1,
                }),
                user: format!("u{i}"),
                host: "ws".into(),
                ttl_ms: TTL_MS,
                secret: secret.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        auth.push(SessionAuth {
            session_id: open.session_id,
            secret,
        });
    }
    let beat = HeartbeatRequest { sessions: auth };
    // Beat for under a second: deadlines move past the sessions' opening, yet no
    // checkpoint or clock tick follows the last open, so the commit mark saved with the
    // next durable append does not cover it when the leader dies.
    let mut promised = Vec::new();
    for _ in 0..8 {
        let r = beat_leader(&addrs, &beat, Duration::from_secs(5))
            .await
            .unwrap();
        promised = r.sessions.iter().map(|s| s.deadline_ms).collect();
        assert!(
            r.sessions.iter().all(|s| s.state() == SessionState::Alive),
            "{r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promised = promised.into_iter().min().unwrap();
    // Gone and back before anyone's election timeout: it still leads the same term.
    h.kill(leader).await;
    h.restart(leader).unwrap();
    // Just before the promised deadlines, every session must still be alive.
    let now = tally_tests::workload::now_ms();
    let ask_at = promised.saturating_sub(500);
    tokio::time::sleep(Duration::from_millis(ask_at.saturating_sub(now))).await;
    let r = beat_leader(&addrs, &beat, Duration::from_millis(400))
        .await
        .expect("some node leads and answers before the promised deadline");
    for s in &r.sessions {
        assert_eq!(
            s.state(),
            SessionState::Alive,
            "session {} was promised {promised} and is gone at {}: {s:?}",
            s.session_id,
            tally_tests::workload::now_ms()
        );
    }
}

/// Under load a leader's quorum acknowledgements can come later than its lease (followers
/// slow to fsync); a heartbeat that arrives then is held until the lease is back (at most
/// two election timeouts) instead of being refused at once: renewals come late under
/// overload, they do not fail. Both followers are paused past the lease (paused, they
/// cannot campaign), a heartbeat is sent, and the followers are resumed while it waits.
/// Refused at once, it fails with UNAVAILABLE "not sure it still does" (checked: with the
/// hold set to 0 it does, 2 runs of 2). In practice the resumed followers' election
/// timers have run out and they campaign before the leader's appends reach them, so the
/// held call usually ends in "not the leader" (3 runs of 3): what this proves is that
/// nothing is refused as "unsure" while the lease may still come back, and that a hold
/// never answers for a deposed leader. The overload sitting (tests/overload/scale.sh)
/// measures what the hold buys under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_unsure_for_a_moment_holds_heartbeats_instead_of_refusing() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(dir.path(), 3).await.unwrap();
    let leader = h.wait_leader(Duration::from_secs(20)).await.unwrap();
    let (addr, _) = h.direct(leader).unwrap();
    let (rpc, beat) = open_at(&addr, 3, "bo").await;
    // Deadlines loaded and the lease held: an answer at once.
    let alive = beat_leader(std::slice::from_ref(&addr), &beat, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(alive.sessions[0].state(), SessionState::Alive);

    let followers: Vec<u64> = h.ids().into_iter().filter(|&n| n != leader).collect();
    for &f in &followers {
        h.pause(f);
    }
    // Past the lease (0.95 of the longest election timeout) since the last acknowledgement.
    tokio::time::sleep(Duration::from_millis(ELECTION_MAX_MS + 200)).await;
    let call = {
        let (mut rpc, beat) = (rpc.clone(), beat.clone());
        tokio::spawn(async move { rpc.heartbeat(beat).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for &f in &followers {
        h.resume(f);
    }
    match call.await.unwrap() {
        Ok(r) => {
            assert_eq!(r.into_inner().sessions[0].state(), SessionState::Alive);
            eprintln!("held, then answered: alive");
        }
        // The resumed followers may campaign before they hear from the leader (their
        // election timers ran out while paused); then the leader rightly steps down,
        // and the answer says so, not "unsure".
        Err(s) => {
            assert!(
                s.message().contains("not the leader") || s.message().contains("leader is"),
                "a heartbeat sent while the leader was unsure was refused instead of held: {s:?}"
            );
            eprintln!("held, then refused after an election: {}", s.message());
        }
    }
}
