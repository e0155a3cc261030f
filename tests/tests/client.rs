//! tally-client against a real in-process cluster (`tallyd dev`'s): checkout, denial,
//! checkin and close; a retry after a lost reply; a leader stop the application does not
//! notice; a cut shorter than the TTL that keeps the seats; a revocation the holder
//! hears of. And against real `tallyd` processes (the fault harness): a full-cluster
//! outage that a live client rides out while a dead one's seat comes back.
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

    // A seat dropped without a checkin is checked in (in the background): the README's
    // promise, and what an application that forgets gets.
    let dropped = client.checkout("viewer", count(1)).await.unwrap();
    let lease = dropped.lease_id();
    assert_eq!(leases_of(&c, client.session_id()), vec![lease]);
    drop(dropped);
    until("the dropped seat checked in", || {
        leases_of(&c, client.session_id()).is_empty()
    })
    .await;

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

/// Unloads a license through `Admin`, as `tallyctl license unload` does.
async fn admin_unload(endpoints: &[String], source: &str) {
    use tally_client::proto::v1::{admin_client::AdminClient, UnloadLicenseRequest};
    let cluster = tally_client::Cluster::new(endpoints, Default::default()).unwrap();
    cluster
        .call("unload", |ch| {
            let req = UnloadLicenseRequest {
                source: source.into(),
            };
            async move { AdminClient::new(ch).unload_license(req).await }
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unloaded_license_revokes_the_seat_and_the_holder_hears_why() {
    use tally_client::proto::v1::RevocationCause;
    let (_d, c) = cluster().await;
    // TTL 3 s: a heartbeat every second.
    let client = Client::connect(&c.endpoints, opts(3)).await.unwrap();
    let period = client.ttl() / 3;
    let seat = client.checkout("fea_solver", count(1)).await.unwrap();
    let lease = seat.lease_id();
    assert_eq!(seat.revoked(), None);

    admin_unload(&c.endpoints, "demo.lic").await;
    let unloaded = tokio::time::Instant::now();
    let mut rx = client.watch();
    tokio::time::timeout(
        period * 2 + Duration::from_millis(500),
        rx.wait_for(|s| s.revoked().iter().any(|r| r.lease_id == lease)),
    )
    .await
    .expect("the revocation reaches the holder within a couple of heartbeat periods")
    .unwrap();
    eprintln!("revocation heard {:?} after the unload", unloaded.elapsed());
    let r = seat.revoked().expect("the seat knows it was revoked");
    assert_eq!((r.lease_id, r.feature.as_str()), (lease, "fea_solver"));
    assert_eq!(r.cause, RevocationCause::LicenseChanged);
    assert!(
        r.message.contains("revoked") && r.message.contains("\"demo.lic\""),
        "{}",
        r.message
    );
    // Revoked, not lost: the session lives on, once each revocation.
    match client.state() {
        SessionState::Healthy { revoked, .. } => assert_eq!(revoked, vec![r.clone()]),
        other => panic!("expected a healthy session, got {other:?}"),
    }
    assert!(leases_of(&c, client.session_id()).is_empty());
    // Checking the seat in says it is gone, and the session closes normally.
    match seat.checkin().await {
        Err(Error::Revoked {
            lease_id, message, ..
        }) => assert_eq!((lease_id, message), (lease, r.message)),
        other => panic!("expected the revocation, got {other:?}"),
    }
    assert_eq!(client.close().await.unwrap(), 0);
    c.stop().await;
}

/// How long the whole cluster stays down in the outage test: a minute, as the issue
/// asks. Far beyond the TTL (3 s) and the ledger's 5 s outage gap; the test takes about
/// this plus 20 s.
const OUTAGE: Duration = Duration::from_secs(60);

/// A `tallyctl checkout` holding a seat in the background, its stderr in a file; killed
/// by its id when dropped.
struct Tallyctl {
    child: std::process::Child,
    stderr: std::path::PathBuf,
}

impl Tallyctl {
    /// Starts `tallyctl --json ARGS` and returns once it printed its grant.
    async fn hold(
        endpoints: &[String],
        args: &[&str],
        stderr: std::path::PathBuf,
    ) -> (Tallyctl, serde_json::Value) {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(tally_tests::bin("tallyctl"))
            .env_remove("TALLY_CONFIG")
            .env("HOME", "/nonexistent")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("--json")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let holder = Tallyctl { child, stderr };
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(out).read_line(&mut line).unwrap();
            line
        })
        .await
        .unwrap();
        let grant = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("tallyctl printed {line:?}: {e}; {}", holder.err()));
        (holder, grant)
    }

    fn err(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and the exit code once it exited (within `within`).
    async fn terminate(&mut self, within: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tallyctl ignored SIGTERM: {}",
                self.err()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tallyctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every lease and lingering seat, through a linearizable `Admin` read.
async fn listed(
    admin: &tally_client::Cluster,
) -> Result<Vec<tally_client::proto::v1::LeaseInfo>, Error> {
    use tally_client::proto::v1::{admin_client::AdminClient, ListLeasesRequest};
    admin
        .call("leases", |ch| async move {
            AdminClient::new(ch)
                .list_leases(ListLeasesRequest::default())
                .await
        })
        .await
        .map(|r| r.leases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_client_rides_out_a_full_cluster_outage_and_a_dead_ones_seat_comes_back() {
    use std::collections::BTreeSet;
    use tally_core::ledger::Event;
    use tally_tests::harness::{Harness, MAX_LINGER_MS};
    use tokio::time::Instant;

    const TTL: Duration = Duration::from_secs(3);
    // alpha: LINGER=2 in the harness's license.
    let linger = Duration::from_millis(MAX_LINGER_MS);
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(dir.path(), 3).await.unwrap();
    let client = |user: &str| {
        Client::connect(
            &h.endpoints,
            ClientOptions {
                user: user.into(),
                host: format!("{user}-ws"),
                ttl: TTL,
                ..Default::default()
            },
        )
    };
    let live = client("ann").await.unwrap();
    let live_session = live.session_id();
    assert_eq!(live.ttl(), TTL);
    let seen = record(&live);
    let kept = live.checkout("alpha", count(1)).await.unwrap();
    let dead = client("bob").await.unwrap();
    let dead_session = dead.session_id();
    let dead_seat = dead.checkout("alpha", count(1)).await.unwrap();
    let (dead_lease, dead_seat_id) = (dead_seat.lease_id(), dead_seat.grant().seat_id);
    // The real tallyctl holds the third seat through it all.
    let (mut ctl, grant) = Tallyctl::hold(
        &h.endpoints,
        &[
            "checkout", "alpha", "--user", "cy", "--ttl", "3", "--hold", "600",
        ],
        dir.path().join("tallyctl.err"),
    )
    .await;
    let ctl_lease = grant["lease_id"].as_u64().unwrap();
    let ctl_session = grant["session_id"].as_u64().unwrap();

    // The whole cluster goes down.
    for id in h.ids() {
        h.stop(id).await;
    }
    let down = Instant::now();
    let mut rx = live.watch();
    tokio::time::timeout(
        TTL,
        rx.wait_for(|s| matches!(s, SessionState::InDanger { .. })),
    )
    .await
    .expect("failing heartbeats put the session in danger")
    .unwrap();
    // The second client dies during the outage: no heartbeat, no checkin, no close.
    dead.abandon();
    drop(dead_seat);
    tokio::time::sleep_until(down + OUTAGE).await;
    // Twenty TTLs without an acknowledged heartbeat: still in danger, not lost.
    match live.state() {
        SessionState::InDanger {
            deadline_ms, error, ..
        } => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            assert!(deadline_ms < now_ms, "the last known deadline is long past");
            assert!(!error.is_empty());
        }
        other => panic!("expected the session in danger after the outage, got {other:?}"),
    }

    for id in h.ids() {
        h.restart(id).unwrap();
    }
    // The return: the first linearizable read a node answers.
    let admin = h.cluster(Duration::from_millis(300)).unwrap();
    let at_return = loop {
        if let Ok(l) = listed(&admin).await {
            break l;
        }
        assert!(
            down.elapsed() < OUTAGE + Duration::from_secs(30),
            "the cluster did not come back; logs in {}",
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let back = Instant::now();
    let leases: BTreeSet<u64> = at_return.iter().map(|l| l.lease_id).collect();
    for l in [kept.lease_id(), dead_lease, ctl_lease] {
        assert!(
            leases.contains(&l),
            "lease {l} survived the outage: {leases:?}"
        );
    }

    // The live client's heartbeat gets through within its TTL of the return.
    // A bool at once: the `Ref` that `wait_for` returns holds the watch's read lock,
    // which the heartbeat needs to publish.
    let healthy = tokio::time::timeout(
        TTL,
        rx.wait_for(|s| matches!(s, SessionState::Healthy { .. })),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(
        healthy,
        "the live client's heartbeat is not acknowledged after the return: {:?}",
        live.state()
    );
    eprintln!("live client healthy {:?} after the return", back.elapsed());

    // The dead client's session expires a TTL after the return, and its seat comes back
    // a linger later: watched through the same linearizable reads.
    let admin = h.cluster(Duration::from_secs(2)).unwrap();
    let mut expired = None;
    let reclaimed = loop {
        let l = listed(&admin).await.unwrap();
        if expired.is_none() && !l.iter().any(|x| x.lease_id == dead_lease) {
            expired = Some(back.elapsed());
        }
        if !l.iter().any(|x| x.seat_id == dead_seat_id) {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < TTL + linger + Duration::from_secs(10),
            "the dead client's seat never came back: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "dead session expired {expired:?} and its seat reclaimed {reclaimed:?} after the return"
    );
    assert!(
        reclaimed >= TTL,
        "reclaimed {reclaimed:?} after the return, before its TTL"
    );
    assert!(
        reclaimed <= TTL + linger + Duration::from_secs(2),
        "reclaimed {reclaimed:?} after the return, later than TTL + linger + 2 s"
    );

    // The live holders kept their seats all along: past the dead one's expiry, their
    // leases are still listed, the library's checkin succeeds, and tallyctl held on,
    // saying once it was in danger and once it was healthy again.
    let leases: BTreeSet<u64> = listed(&admin)
        .await
        .unwrap()
        .iter()
        .map(|l| l.lease_id)
        .collect();
    assert!(
        leases.contains(&kept.lease_id()) && leases.contains(&ctl_lease),
        "{leases:?}"
    );
    let states = seen.lock().unwrap().clone();
    assert!(
        !states
            .iter()
            .any(|s| matches!(s, SessionState::Lost { .. })),
        "{states:?}"
    );
    assert!(matches!(live.state(), SessionState::Healthy { .. }));
    kept.checkin().await.unwrap();
    live.close().await.unwrap();
    assert_eq!(
        ctl.terminate(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        ctl.err()
    );
    let err = ctl.err();
    let status: Vec<&str> = err.lines().filter(|l| l.starts_with("session ")).collect();
    assert!(
        !status.is_empty(),
        "tallyctl said nothing of the outage: {err}"
    );
    for (i, line) in status.iter().enumerate() {
        let want = if i % 2 == 0 {
            "session in danger: "
        } else {
            "session healthy again"
        };
        assert!(line.starts_with(want), "{err}");
    }
    assert_eq!(status.len() % 2, 0, "tallyctl ended healthy: {err}");

    // The ledger saw the outage: in the applied history (the nodes' archives), the first entry after the
    // silence ended it, the dead session expired no earlier than TTL after that (and
    // no later than a second past it), its seat came back after its linger, and
    // neither live session expired.
    h.wait_leader(Duration::from_secs(10)).await.unwrap();
    let steps = tally_tests::collect::collect(&h).await.unwrap().steps;
    let at = |want: &dyn Fn(&Event) -> bool| {
        steps
            .iter()
            .filter(|s| s.events.iter().any(want))
            .map(|s| s.at_ms)
            .collect::<Vec<u64>>()
    };
    let resumed = at(
        &|e| matches!(e, Event::Resumed { silent_ms } if *silent_ms >= OUTAGE.as_millis() as u64),
    );
    assert_eq!(
        resumed.len(),
        1,
        "one outage of a minute or more: {resumed:?}"
    );
    let ttl_ms = TTL.as_millis() as u64;
    let expiry =
        at(&|e| matches!(e, Event::SessionExpired { session } if *session == dead_session));
    assert_eq!(expiry.len(), 1, "{expiry:?}");
    assert!(
        expiry[0] >= resumed[0] + ttl_ms && expiry[0] <= resumed[0] + ttl_ms + 1_000,
        "expired {} ms after the return (TTL {ttl_ms} ms)",
        expiry[0] as i64 - resumed[0] as i64
    );
    let reclaim = at(&|e| matches!(e, Event::Reclaimed { seat, .. } if *seat == dead_seat_id));
    assert_eq!(reclaim.len(), 1, "{reclaim:?}");
    assert!(
        reclaim[0] >= expiry[0] + MAX_LINGER_MS,
        "{reclaim:?} {expiry:?}"
    );
    let survivors = at(
        &|e| matches!(e, Event::SessionExpired { session } if *session == live_session || *session == ctl_session),
    );
    assert!(
        survivors.is_empty(),
        "a live session expired: {survivors:?}"
    );
}
