//! TLS, roles and limits against a real in-process cluster (`tallyd dev`'s, with its
//! throwaway CA): every refusal of the security issue, each with a status naming what is
//! wrong and changing nothing, and the normal flows over TLS, failover included.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::licensing_client::LicensingClient;
use tally_client::proto::v1::raft_client::RaftClient;
use tally_client::{CheckoutOptions, Client, ClientOptions, Cluster, ConnectOptions, Error, Tls};
use tally_server::config::Limits;
use tally_server::dev::{self, DevCluster, DevOptions};
use tonic::Code;

async fn cluster(opts: DevOptions) -> (tempfile::TempDir, DevCluster) {
    let dir = tempfile::tempdir().unwrap();
    let c = dev::start(0, dir.path(), opts).await.unwrap();
    (dir, c)
}

/// Trust the dev CA, presenting `who`'s certificate (`dev-admin`, `dev-client`, `node1`).
fn tls(dir: &Path, who: Option<&str>) -> Tls {
    let pki = dir.join("pki");
    let files: Option<(PathBuf, PathBuf)> =
        who.map(|w| (pki.join(format!("{w}.crt")), pki.join(format!("{w}.key"))));
    Tls::from_files(
        &pki.join("ca.crt"),
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap()
}

fn opts(tls: Tls) -> ConnectOptions {
    ConnectOptions {
        retry_for: Duration::from_secs(10),
        tls: Some(tls),
        ..Default::default()
    }
}

fn client_opts(connect: ConnectOptions) -> ClientOptions {
    ClientOptions {
        user: "ann".into(),
        host: "ws1".into(),
        ttl: Duration::from_secs(10),
        connect,
        ..Default::default()
    }
}

async fn status(c: &Cluster) -> Result<pb::ClusterStatusResponse, Error> {
    c.call("status", |ch| async move {
        AdminClient::new(ch)
            .cluster_status(pb::ClusterStatusRequest {})
            .await
    })
    .await
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, Error>, code: Code, text: &str) {
    match r {
        Err(Error::Refused {
            code: c, message, ..
        }) => {
            assert_eq!(c, code, "{message}");
            assert!(message.contains(text), "{message:?} should say {text:?}");
        }
        other => panic!("expected a {code:?} refusal saying {text:?}, got {other:?}"),
    }
}

fn request(client: u8, seq: u64) -> Option<pb::RequestId> {
    Some(pb::RequestId {
        client_id: vec![client; 16],
        seq,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn roles_secrets_and_sizes_are_enforced_with_clear_refusals() {
    let (d, c) = cluster(DevOptions {
        require_client_cert: true,
        ..Default::default()
    })
    .await;
    let (dir, eps) = (d.path(), c.endpoints.clone());
    let as_who = |who| Cluster::new(&eps, opts(tls(dir, who))).unwrap();

    // Admin: an administrator's certificate only.
    assert!(status(&as_who(Some("dev-admin"))).await.is_ok());
    assert_refused(
        status(&as_who(Some("dev-client"))).await,
        Code::PermissionDenied,
        "has role client; this call needs an administrator's certificate",
    );
    assert_refused(
        status(&as_who(None)).await,
        Code::Unauthenticated,
        "no client certificate was presented",
    );
    assert_refused(
        status(&as_who(Some("node1"))).await,
        Code::PermissionDenied,
        "has role peer",
    );
    // Changing the cluster's time zone too: it moves every license's end.
    let set_zone = |c: Cluster| async move {
        c.call("time-zone", |ch| async move {
            AdminClient::new(ch)
                .set_time_zone(pb::SetTimeZoneRequest {
                    zone: "Pacific/Apia".into(),
                    reason: String::new(),
                })
                .await
        })
        .await
    };
    assert_refused(
        set_zone(as_who(Some("dev-client"))).await,
        Code::PermissionDenied,
        "this call needs an administrator's certificate",
    );
    assert_refused(
        set_zone(as_who(None)).await,
        Code::Unauthenticated,
        "no client certificate was presented",
    );

    // Licensing: this cluster requires a client certificate.
    let r = Client::connect(&eps, client_opts(opts(tls(dir, None)))).await;
    assert_refused(r, Code::Unauthenticated, "needs a client certificate");
    let client = Client::connect(&eps, client_opts(opts(tls(dir, Some("dev-client")))))
        .await
        .unwrap();
    let seat = client
        .checkout("solid_modeler", CheckoutOptions::default())
        .await
        .unwrap();

    // Raft: nodes only. A client's certificate is refused by role; a "peer" certificate
    // from another CA does not even complete the handshake.
    let leader_ep = client_leader(&as_who(Some("dev-admin"))).await;
    // Every call names this cluster and a sender, so a call that got through the
    // handshake would reach the role check and then Raft itself.
    let raft_call = |tls: Tls| {
        let ep = leader_ep.clone();
        async move {
            let ch = opts(tls).endpoint(&ep).unwrap().connect().await;
            match ch {
                Err(e) => Err(tonic::Status::unavailable(format!("connect: {e}"))),
                Ok(ch) => {
                    let mut req = tonic::Request::new(pb::RaftRequest { payload: vec![] });
                    let md = req.metadata_mut();
                    md.insert(
                        tally_client::proto::CLUSTER_METADATA,
                        "tally".parse().unwrap(),
                    );
                    md.insert(tally_client::proto::SENDER_METADATA, "9".parse().unwrap());
                    RaftClient::new(ch).vote(req).await.map(|_| ())
                }
            }
        }
    };
    // The control: a real node's certificate gets all the way to Raft, which refuses the
    // empty message. So a refusal below comes from the certificate, not the call.
    let s = raft_call(tls(dir, Some("node1"))).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("malformed Vote"), "{s:?}");
    let s = raft_call(tls(dir, Some("dev-client"))).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("a cluster node's certificate"),
        "{s:?}"
    );
    let other = tally_pki::Ca::generate("intruder", 1).unwrap();
    let fake = other.issue(tally_pki::Role::Peer, "node9", &[], 1).unwrap();
    let ca = std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap();
    let s = raft_call(Tls::from_pem(ca).with_identity(fake.cert_pem, fake.key_pem))
        .await
        .unwrap_err();
    // Refused in the TLS handshake or by the transport it tears down: never answered
    // by the server as a gRPC status.
    let text = format!("{s:?}");
    assert!(
        matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) && (text.contains("connect:")
            || text.contains("transport error")
            || text.contains("Error(Transport")),
        "a certificate from another CA must fail the handshake: {s:?}"
    );

    // Session secrets: a wrong one renews nothing and releases nothing.
    let cluster = as_who(Some("dev-client"));
    let wrong = pb::SessionAuth {
        session_id: client.session_id(),
        secret: vec![9; 32],
    };
    let w = wrong.clone();
    let hb = cluster
        .call("heartbeat", |ch| {
            let w = w.clone();
            async move {
                LicensingClient::new(ch)
                    .heartbeat(pb::HeartbeatRequest { sessions: vec![w] })
                    .await
            }
        })
        .await
        .unwrap();
    assert_eq!(hb.sessions[0].state, pb::SessionState::BadSecret as i32);
    let lease = seat.lease_id();
    let r = cluster
        .call("checkin", |ch| {
            let w = wrong.clone();
            async move {
                LicensingClient::new(ch)
                    .checkin(pb::CheckinRequest {
                        request: request(77, 1),
                        auth: Some(w),
                        lease_id: lease,
                    })
                    .await
            }
        })
        .await;
    assert_refused(r, Code::PermissionDenied, "secret does not match");

    // An oversized message is refused before it is decoded.
    let r = cluster
        .call("heartbeat", |ch| async move {
            LicensingClient::new(ch)
                .heartbeat(pb::HeartbeatRequest {
                    sessions: vec![pb::SessionAuth {
                        session_id: 1,
                        secret: vec![0; 2 << 20],
                    }],
                })
                .await
        })
        .await;
    match r {
        Err(Error::Refused { code, message, .. }) => {
            assert!(
                matches!(code, Code::OutOfRange | Code::ResourceExhausted),
                "{code:?}: {message}"
            );
            assert!(message.contains("too large"), "{message}");
        }
        other => panic!("an oversized message was not refused: {other:?}"),
    }

    // None of it touched the seat: the real holder still checks it in.
    seat.checkin().await.unwrap();
    client.close().await.unwrap();
    c.stop().await;
}

/// The leader's endpoint, from an admin's view of the cluster.
async fn client_leader(admin: &Cluster) -> String {
    let st = status(admin).await.unwrap();
    st.nodes
        .iter()
        .find(|n| n.id == st.leader_id)
        .unwrap()
        .grpc_addr
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkouts_admin_and_failover_work_over_tls() {
    let (d, mut c) = cluster(DevOptions::default()).await;
    let dir = d.path();
    // No client certificate needed on this cluster; the CA is.
    let client = Client::connect(&c.endpoints, client_opts(opts(tls(dir, None))))
        .await
        .unwrap();
    let first = client
        .checkout("fea_solver", CheckoutOptions::default())
        .await
        .unwrap();
    let admin = Cluster::new(&c.endpoints, opts(tls(dir, Some("dev-admin")))).unwrap();
    let leader = status(&admin).await.unwrap().leader_id;
    let i = c.nodes.iter().position(|n| n.shared.id == leader).unwrap();
    c.nodes.remove(i).stop().await;

    // The new leader, found over TLS, serves checkouts, admin reads and checkins.
    let second = client
        .checkout("fea_solver", CheckoutOptions::default())
        .await
        .unwrap();
    let leases = admin
        .call("leases", |ch| async move {
            AdminClient::new(ch)
                .list_leases(pb::ListLeasesRequest::default())
                .await
        })
        .await
        .unwrap();
    let mine: Vec<u64> = leases
        .leases
        .iter()
        .filter(|l| l.session_id == client.session_id())
        .map(|l| l.lease_id)
        .collect();
    assert_eq!(mine.len(), 2, "{leases:?}");
    assert!(mine.contains(&first.lease_id()) && mine.contains(&second.lease_id()));
    first.checkin().await.unwrap();
    second.checkin().await.unwrap();
    client.close().await.unwrap();

    // A client that dials plaintext is told the cluster probably speaks TLS.
    let plain = Cluster::new(
        &c.endpoints,
        ConnectOptions {
            retry_for: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .unwrap();
    let e = status(&plain).await.unwrap_err();
    assert!(
        matches!(&e, Error::Tls { problem } if problem.contains("the cluster probably speaks TLS: give its CA")),
        "{e}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_stop_a_flood_and_others_keep_working() {
    let (d, c) = cluster(DevOptions {
        limits: Limits {
            per_address_rps: 100,
            per_session_rps: 5,
            sessions_per_identity: 2,
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    let cluster = Cluster::new(&c.endpoints, opts(tls(d.path(), None))).unwrap();
    let open = |client: u8, seq: u64| {
        let cluster = cluster.clone();
        async move {
            cluster
                .call("open", |ch| async move {
                    LicensingClient::new(ch)
                        .open_session(pb::OpenSessionRequest {
                            request: request(client, seq),
                            user: "ann".into(),
                            host: "ws1".into(),
                            secret: vec![client; 32],
                            ttl_ms: 10_000,
                            ..Default::default()
                        })
                        .await
                })
                .await
        }
    };

    // Sessions per caller (here its address: no certificate): two, then a clear refusal,
    // whatever client id the caller picks (a self-chosen id used to reset the count); a
    // retry of an applied open still gets its first answer.
    let s1 = open(1, 1).await.unwrap();
    open(1, 2).await.unwrap();
    for (client, seq) in [(1, 3), (2, 1), (77, 1)] {
        assert_refused(
            open(client, seq).await,
            Code::ResourceExhausted,
            "addr 127.0.0.1 already holds 2 live sessions (limits.sessions_per_identity)",
        );
    }
    assert_eq!(open(1, 1).await.unwrap().session_id, s1.session_id);

    // Someone who knows only the (sequential) session id cannot use up its owner's
    // budget: writes with a wrong secret are refused as such, before the limit counts.
    let mut forged = tokio::task::JoinSet::new();
    for seq in 100..130 {
        let (cluster, session_id) = (cluster.clone(), s1.session_id);
        forged.spawn(async move {
            cluster
                .call("checkin", |ch| async move {
                    LicensingClient::new(ch)
                        .checkin(pb::CheckinRequest {
                            request: request(9, seq),
                            auth: Some(pb::SessionAuth {
                                session_id,
                                secret: vec![0xEE; 32],
                            }),
                            lease_id: 424_242,
                        })
                        .await
                })
                .await
        });
    }
    while let Some(r) = forged.join_next().await {
        assert_refused(r.unwrap(), Code::PermissionDenied, "secret does not match");
    }
    // The owner's own write right after is answered on its merits, not rate-limited.
    let owner = pb::SessionAuth {
        session_id: s1.session_id,
        secret: vec![1; 32],
    };
    let r = cluster
        .call("checkin", |ch| {
            let owner = owner.clone();
            async move {
                LicensingClient::new(ch)
                    .checkin(pb::CheckinRequest {
                        request: request(1, 9),
                        auth: Some(owner),
                        lease_id: 424_242,
                    })
                    .await
            }
        })
        .await;
    assert_refused(r, Code::NotFound, "no such lease");

    // One session's flood of writes is cut off; another session's checkout goes through.
    let auth = pb::SessionAuth {
        session_id: s1.session_id,
        secret: vec![1; 32],
    };
    // All at once: the bucket holds a burst of 10 and refills 5 a second, so 30 writes
    // sent together are cut off however long each takes to commit.
    let mut writes = tokio::task::JoinSet::new();
    for seq in 10..40 {
        let (a, cluster) = (auth.clone(), cluster.clone());
        writes.spawn(async move {
            cluster
                .call("checkin", |ch| {
                    let a = a.clone();
                    async move {
                        LicensingClient::new(ch)
                            .checkin(pb::CheckinRequest {
                                request: request(1, seq),
                                auth: Some(a),
                                lease_id: 424_242,
                            })
                            .await
                    }
                })
                .await
        });
    }
    let mut limited = 0;
    while let Some(r) = writes.join_next().await {
        if let Err(Error::Refused { code, message, .. }) = &r.unwrap() {
            if *code == Code::ResourceExhausted {
                assert!(message.contains("limits.per_session_rps"), "{message}");
                limited += 1;
            }
        }
    }
    assert!(
        limited > 0,
        "30 writes at once from one session were all let through"
    );
    // Another caller (this one proves a workstation certificate) is counted apart.
    let other = Client::connect(
        &c.endpoints,
        client_opts(opts(tls(d.path(), Some("dev-client")))),
    )
    .await
    .unwrap();
    other
        .checkout("solid_modeler", CheckoutOptions::default())
        .await
        .unwrap();

    // One address's flood (from 127.0.0.2) is cut off; 127.0.0.1 is still served.
    let leader = leader_addr_of_nodes(&c);
    let flood = opts(tls(d.path(), None))
        .endpoint(&leader)
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    // Concurrent for the same reason: 1000 calls against a burst of 200.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let flood = flood.clone();
        calls.spawn(async move {
            LicensingClient::new(flood)
                .heartbeat(pb::HeartbeatRequest::default())
                .await
        });
    }
    let mut refused = 0;
    while let Some(r) = calls.join_next().await {
        if let Err(s) = r.unwrap() {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert!(s.message().contains("from 127.0.0.2"), "{s:?}");
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "1000 calls at once from one address were all let through"
    );
    let hb = cluster
        .call("heartbeat", |ch| async move {
            LicensingClient::new(ch)
                .heartbeat(pb::HeartbeatRequest::default())
                .await
        })
        .await;
    assert!(hb.is_ok(), "127.0.0.1 was starved: {hb:?}");
    other.close().await.unwrap();
    c.stop().await;
}

/// The leader's address, read from the nodes themselves.
fn leader_addr_of_nodes(c: &DevCluster) -> String {
    let id = c.nodes[0].shared.raft.metrics().borrow().current_leader;
    c.nodes
        .iter()
        .find(|n| Some(n.shared.id) == id)
        .unwrap()
        .addr
        .clone()
}

/// `[security] identity = "certificate"`: a session's user must be its certificate's name
/// and its host one the certificate names; a self-asserted name that disagrees is
/// refused, and so is a caller without a certificate. Under the default (FlexLM's
/// self-asserted identity) anyone may claim "ann" and share her seat under DUP_GROUP=U.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_identity_refuses_a_claimed_name() {
    let (d, c) = cluster(DevOptions {
        identity: tally_server::config::Identity::Certificate,
        ..Default::default()
    })
    .await;
    let pki = d.path().join("pki");
    let ca = tally_pki::load_dir(&pki).unwrap();
    tally_pki::issue_into(&ca, &pki, tally_pki::Role::Client, "ann", &["ws1"], 1).unwrap();
    let tag = std::sync::atomic::AtomicU8::new(40);
    let open = |who: Option<&str>, user: &str, host: &str| {
        let cluster = Cluster::new(&c.endpoints, opts(tls(d.path(), who))).unwrap();
        let client = tag.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (user, host) = (user.to_owned(), host.to_owned());
        async move {
            cluster
                .call("open", |ch| {
                    let (user, host) = (user.clone(), host.clone());
                    async move {
                        LicensingClient::new(ch)
                            .open_session(pb::OpenSessionRequest {
                                request: request(client, 1),
                                user,
                                host,
                                secret: vec![3; 32],
                                ..Default::default()
                            })
                            .await
                    }
                })
                .await
        }
    };
    let ann = open(Some("ann"), "ann", "ws1").await.unwrap();
    assert_refused(
        open(Some("ann"), "bob", "ws1").await,
        Code::PermissionDenied,
        "the session names user \"bob\", but your certificate is \"ann\"",
    );
    assert_refused(
        open(Some("ann"), "ann", "laptop").await,
        Code::PermissionDenied,
        "does not vouch for (it names: ws1)",
    );
    assert_refused(
        open(None, "ann", "ws1").await,
        Code::Unauthenticated,
        "takes identities from client certificates",
    );
    // An administrator may open a session in any name (tallyctl checkout --user).
    let carol = open(Some("dev-admin"), "carol", "anywhere").await.unwrap();
    assert_ne!(carol.session_id, ann.session_id);
    c.stop().await;
}
