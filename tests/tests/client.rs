//! tally-client against a real in-process cluster (`tallyd dev`'s): checkout, denial,
//! checkin and close; a retry after a lost reply; a leader stop the application does not
//! notice; a cut shorter than the TTL that keeps the seats.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_client::proto::v1::DenialReason;
use tally_client::{CheckoutOptions, Client, ClientOptions, Error, SessionState};
use tally_server::dev::{self, DevCluster};
use tally_tests::proxy::{Fault, Proxy};

async fn cluster() -> (tempfile::TempDir, DevCluster) {
    let dir = tempfile::tempdir().unwrap();
    // Plaintext: these tests are about the client's behaviour; tls.rs runs it over TLS.
    let c = dev::start(
        0,
        dir.path(),
        dev::DevOptions {
            plaintext: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (dir, c)
}

fn leader(c: &DevCluster) -> usize {
    let id = c.nodes[0].shared.raft.metrics().borrow().current_leader;
    c.nodes
        .iter()
        .position(|n| Some(n.shared.id) == id)
        .unwrap()
}

/// Leases of a session in the leader's ledger.
fn leases_of(c: &DevCluster, session: u64) -> Vec<u64> {
    c.nodes[leader(c)]
        .shared
        .sm
        .read()
        .ledger
        .leases()
        .filter(|(_, l)| l.session == session)
        .map(|(id, _)| id)
        .collect()
}

fn opts(ttl_s: u64) -> ClientOptions {
    ClientOptions {
        user: "ann".into(),
        host: "ws1".into(),
        ttl: Duration::from_secs(ttl_s),
        ..Default::default()
    }
}

fn count(n: u32) -> CheckoutOptions {
    CheckoutOptions {
        count: n,
        ..Default::default()
    }
}

/// Every state the session passes through, recorded in the background.
fn record(client: &Client) -> Arc<Mutex<Vec<SessionState>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (mut rx, out) = (client.watch(), seen.clone());
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            out.lock().unwrap().push(rx.borrow_and_update().clone());
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkout_denials_checkin_and_close() {
    let (_d, c) = cluster().await;
    let client = Client::connect(&c.endpoints, opts(30)).await.unwrap();
    assert_eq!(client.ttl(), Duration::from_secs(30));
    let seat = client.checkout("fea_solver", count(2)).await.unwrap();
    assert_eq!((seat.feature(), seat.count()), ("fea_solver", 2));
    assert!(seat.fencing_token() > 0);
    assert_eq!(leases_of(&c, client.session_id()), vec![seat.lease_id()]);

    match client.checkout("fea_solver", count(1)).await {
        Err(Error::Denied {
            reason: DenialReason::NoSeats,
            in_use: 2,
            available: 2,
            message,
            ..
        }) => assert!(message.contains("in use"), "{message}"),
        other => panic!("expected no seats, got {other:?}"),
    }
    match client.checkout("no_such_feature", count(1)).await {
        Err(Error::Denied {
            reason: DenialReason::UnknownFeature,
            ..
        }) => {}
        other => panic!("expected unknown feature, got {other:?}"),
    }
    // fea_solver lingers 10 s after checkin.
    let lingering = seat.checkin().await.unwrap();
    assert!(lingering.is_some());
    assert!(leases_of(&c, client.session_id()).is_empty());

    let session = client.session_id();
    let extra = client.clone();
    client.close().await.unwrap();
    assert!(c.nodes[leader(&c)]
        .shared
        .sm
        .read()
        .ledger
        .session(session)
        .is_none());
    assert!(matches!(extra.state(), SessionState::Lost { .. }));
    assert!(matches!(
        extra.checkout("viewer", count(1)).await,
        Err(Error::SessionLost { .. })
    ));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_lost_reply_takes_no_second_seat() {
    let (_d, c) = cluster().await;
    let proxy = Proxy::start(&c.endpoints[leader(&c)]).await.unwrap();
    // Only the proxy: the retry must go the same way, and the TTL is long enough that
    // no heartbeat shares the connection during the test.
    let client = Client::connect([&proxy.addr], opts(120)).await.unwrap();
    proxy.set(Fault::SwallowNextReply);
    let seat = client.checkout("solid_modeler", count(1)).await.unwrap();
    assert_eq!(proxy.fault(), Fault::None, "the reply was swallowed once");
    assert_eq!(leases_of(&c, client.session_id()), vec![seat.lease_id()]);
    let in_use: u32 = c.nodes[leader(&c)]
        .shared
        .sm
        .read()
        .ledger
        .leases()
        .map(|(_, l)| l.count)
        .sum();
    assert_eq!(in_use, 1, "one seat, not two");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seats_survive_a_leader_stop_without_the_application_noticing() {
    let (_d, mut c) = cluster().await;
    let client = Client::connect(&c.endpoints, opts(6)).await.unwrap();
    let seen = record(&client);
    let seat = client.checkout("solid_modeler", count(2)).await.unwrap();
    let old = c.nodes.remove(leader(&c));
    old.stop().await;
    // A whole TTL: without heartbeats reaching the new leader the session would expire.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(matches!(client.state(), SessionState::Healthy { .. }));
    let states = seen.lock().unwrap().clone();
    assert!(
        states
            .iter()
            .all(|s| matches!(s, SessionState::Healthy { .. })),
        "the application saw {states:?}"
    );
    assert_eq!(leases_of(&c, client.session_id()), vec![seat.lease_id()]);
    // The new leader serves both directions.
    let more = client.checkout("viewer", count(1)).await.unwrap();
    assert!(more.fencing_token() > seat.fencing_token());
    seat.checkin().await.unwrap();
    more.checkin().await.unwrap();
    assert!(leases_of(&c, client.session_id()).is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_shorter_than_the_ttl_keeps_the_seats() {
    let (_d, c) = cluster().await;
    let proxy = Proxy::start(&c.endpoints[leader(&c)]).await.unwrap();
    // Heartbeats every 3 s: a whole round fails while the link is down, and the next
    // round still has 3 s before the deadline once it is back.
    let client = Client::connect([&proxy.addr], opts(9)).await.unwrap();
    let seen = record(&client);
    let seat = client.checkout("solid_modeler", count(1)).await.unwrap();
    proxy.set(Fault::Down);
    let mut rx = client.watch();
    tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| matches!(s, SessionState::InDanger { .. })),
    )
    .await
    .expect("heartbeats failing are reported")
    .unwrap();
    proxy.set(Fault::None);
    tokio::time::timeout(
        Duration::from_secs(3),
        rx.wait_for(|s| matches!(s, SessionState::Healthy { .. })),
    )
    .await
    .expect("the session recovers once the link is back")
    .unwrap();
    assert_eq!(leases_of(&c, client.session_id()), vec![seat.lease_id()]);
    let states = seen.lock().unwrap().clone();
    assert!(
        !states
            .iter()
            .any(|s| matches!(s, SessionState::Lost { .. })),
        "{states:?}"
    );
    seat.checkin().await.unwrap();
    c.stop().await;
}

/// Removes a lease through `Admin`, as `tallyctl remove` does (no linger).
async fn admin_remove(endpoints: &[String], lease: u64) {
    use tally_client::proto::v1::{admin_client::AdminClient, RemoveLeaseRequest};
    let cluster = tally_client::Cluster::new(endpoints, Default::default()).unwrap();
    let r = cluster
        .call("remove", |ch| async move {
            AdminClient::new(ch)
                .remove_lease(RemoveLeaseRequest {
                    lease_id: lease,
                    reason: "test".into(),
                })
                .await
        })
        .await
        .unwrap();
    assert!(r.removed);
}

fn waiting(c: &DevCluster) -> usize {
    c.nodes[leader(c)].shared.sm.read().ledger.waiters().count()
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_are_served_in_order_across_a_failover_and_time_out() {
    use tally_client::Wait;
    let (_d, mut c) = cluster().await;
    let eps = c.endpoints.clone();
    let connect = |user: &'static str| {
        let eps = eps.clone();
        async move {
            Client::connect(
                &eps,
                ClientOptions {
                    user: user.into(),
                    host: format!("{user}-ws"),
                    ttl: Duration::from_secs(30),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let (ann, bob, cy, di) = (
        connect("ann").await,
        connect("bob").await,
        connect("cy").await,
        connect("di").await,
    );
    let a1 = ann.checkout("fea_solver", count(1)).await.unwrap();
    let a2 = ann.checkout("fea_solver", count(1)).await.unwrap();
    let forever = CheckoutOptions {
        wait: Wait::Forever,
        ..count(1)
    };
    let b = {
        let (bob, o) = (bob.clone(), forever.clone());
        tokio::spawn(async move { bob.checkout("fea_solver", o).await })
    };
    until("bob to queue", || waiting(&c) == 1).await;
    let cwait = {
        let (cy, o) = (cy.clone(), forever.clone());
        tokio::spawn(async move { cy.checkout("fea_solver", o).await })
    };
    until("cy to queue", || waiting(&c) == 2).await;

    // Without waiting: denied. Waiting a second: denied with a timeout, nobody served.
    assert!(matches!(
        di.checkout("fea_solver", count(1)).await,
        Err(Error::Denied {
            reason: DenialReason::NoSeats,
            ..
        })
    ));
    let started = std::time::Instant::now();
    let short = CheckoutOptions {
        wait: Wait::For(Duration::from_secs(1)),
        ..count(1)
    };
    match di.checkout("fea_solver", short).await {
        Err(Error::Denied {
            reason: DenialReason::QueueTimeout,
            ..
        }) => assert!(started.elapsed() >= Duration::from_secs(1)),
        other => panic!("expected a queue timeout, got {other:?}"),
    }

    // The queue is in the log: a new leader serves it in the same order.
    let old = c.nodes.remove(leader(&c));
    let old_addr = old.addr.clone();
    old.stop().await;
    let live: Vec<String> = c
        .endpoints
        .iter()
        .filter(|e| **e != old_addr)
        .cloned()
        .collect();
    admin_remove(&live, a1.lease_id()).await;
    let bs = tokio::time::timeout(Duration::from_secs(15), b)
        .await
        .expect("bob is served once a seat is free")
        .unwrap()
        .unwrap();
    assert_eq!(leases_of(&c, bob.session_id()), vec![bs.lease_id()]);
    assert!(!cwait.is_finished(), "cy is second in line");
    admin_remove(&live, a2.lease_id()).await;
    let cs = tokio::time::timeout(Duration::from_secs(15), cwait)
        .await
        .expect("cy is served next")
        .unwrap()
        .unwrap();
    assert!(cs.fencing_token() > bs.fencing_token());
    drop((a1, a2));
    c.stop().await;
}
