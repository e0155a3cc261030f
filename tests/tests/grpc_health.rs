//! `grpc.health.v1.Health` on the client port of three real `tallyd` processes over TLS,
//! asked the way a load balancer asks (no client certificate): SERVING on every node of
//! a healthy cluster, NOT_SERVING on a node cut off from both peers (told to an open
//! `Watch` as it happens, and to `Check`), and a node with a `Watch` open still stops at
//! once on SIGTERM, the stream ending with it.
#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use tally_tests::{alive, ThreeNodes};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A health client for one node: trusts the site CA, presents no certificate.
async fn health(cluster: &ThreeNodes, endpoint: &str) -> HealthClient<Channel> {
    let ca = std::fs::read_to_string(cluster.dir.join("pki/ca.crt")).unwrap();
    let channel = Endpoint::from_shared(format!("https://{endpoint}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

async fn check(
    c: &mut HealthClient<Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let r = c
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(r.into_inner().status())
}

/// Asks until `want` comes, for up to `within`; panics naming the last answer.
async fn until(c: &mut HealthClient<Channel>, want: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = check(c, "").await;
        if got.as_ref().ok() == Some(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {want:?} within {within:?}, last answer {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// gRPC server reflection (what grpcurl asks first), without a client certificate:
/// the services are listed, and the file declaring the Admin service is served.
async fn reflection_lists_the_services(cluster: &ThreeNodes, endpoint: &str) {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let ca = std::fs::read_to_string(cluster.dir.join("pki/ca.crt")).unwrap();
    let channel = Endpoint::from_shared(format!("https://{endpoint}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| {
        tonic::codegen::tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        }])
    };
    let mut answers = c
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let listed = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("{listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "tally.v1.Licensing",
        "tally.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }
    let mut answers = c
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "tally.v1.Admin".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let file = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(f)) = file.message_response else {
        panic!("{file:?}");
    };
    assert!(!f.file_descriptor_proto.is_empty());
}

fn kill(sig: &str, pid: &str) {
    let st = Command::new("kill").args([sig, pid]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_readiness_and_a_watch_does_not_hold_up_a_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = ThreeNodes::start(tmp.path());
    let endpoints: Vec<String> = cluster.endpoints.split(',').map(str::to_owned).collect();
    assert_eq!(endpoints.len(), 3, "{}", cluster.endpoints);

    // Every node: the node as a whole and Licensing are reported, and nothing else.
    let mut clients = Vec::new();
    for ep in &endpoints {
        let mut c = health(&cluster, ep).await;
        // The script returns once a leader is elected; each node's readiness also wants
        // its first clock pings answered, a moment later.
        until(&mut c, ServingStatus::Serving, Duration::from_secs(20)).await;
        assert_eq!(
            check(&mut c, "tally.v1.Licensing").await.unwrap(),
            ServingStatus::Serving,
            "{ep}"
        );
        let e = check(&mut c, "tally.v1.Admin").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{ep}: {e:?}");
        clients.push(c);
    }
    reflection_lists_the_services(&cluster, &endpoints[0]).await;

    // Node 1 alone: a Watch sees SERVING at once, then NOT_SERVING when both of its
    // peers are killed (a follower loses its leader; a leader loses its quorum).
    let mut c1 = clients.swap_remove(0);
    let mut watch = c1
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    kill("-9", &cluster.pid(2));
    kill("-9", &cluster.pid(3));
    let next = tokio::time::timeout(Duration::from_secs(20), watch.message())
        .await
        .expect("no NOT_SERVING within 20 s of both peers dying")
        .unwrap()
        .unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    until(&mut c1, ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert_eq!(
        check(&mut c1, "tally.v1.Licensing").await.unwrap(),
        ServingStatus::NotServing
    );

    // A stop with a Watch open: the stream ends and the process exits, well inside the
    // 10 s three-nodes.sh and systemd's TimeoutStopSec give it.
    let mut held = c1
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        held.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    let pid = cluster.pid(1);
    let asked = Instant::now();
    kill("-TERM", &pid);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match held.message().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the Watch stream did not end within 10 s of SIGTERM"
    );
    while alive(&pid) {
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "node 1 still runs 10 s after SIGTERM with a health Watch open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
