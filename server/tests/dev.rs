//! `tallyd dev` as a library: three nodes come up on free ports with TLS from a throwaway
//! CA, the signed demo license is loaded, and a client trusting that CA can check out a
//! demo seat; one that dials plaintext cannot.

// Helpers of a test file are test code: a failed unwrap is a failed test, which is the point.
#![allow(clippy::unwrap_used)]

use tally_proto::v1 as pb;
use tally_proto::v1::licensing_client::LicensingClient;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dev_cluster_serves_the_demo_license() {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tally_server::dev::start(0, tmp.path(), Default::default())
        .await
        .unwrap();
    assert_eq!(cluster.endpoints.len(), 3);
    assert!(tmp.path().join("demo.lic").exists() && tmp.path().join("vendor.pub").exists());
    let env = std::fs::read_to_string(tmp.path().join("tally.env")).unwrap();
    assert!(
        env.contains("TALLY_CA=") && env.contains("TALLY_CERT="),
        "{env}"
    );
    let ca = std::fs::read_to_string(tmp.path().join("pki/ca.crt")).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let connect = |addr: String| {
        let tls = tls.clone();
        async move {
            let ch = Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            LicensingClient::new(ch)
        }
    };

    // Plaintext gets nowhere: the listener speaks only TLS.
    let plain = LicensingClient::connect(format!("http://{}", cluster.endpoints[0])).await;
    if let Ok(mut c) = plain {
        let r = c.heartbeat(pb::HeartbeatRequest::default()).await;
        assert!(r.is_err(), "a plaintext call was answered: {r:?}");
    }

    // Find the leader by asking: followers answer UNAVAILABLE with its address.
    let mut addr = cluster.endpoints[0].clone();
    let mut opened = None;
    for _ in 0..5 {
        let mut c = connect(addr.clone()).await;
        let r = c
            .open_session(pb::OpenSessionRequest {
                request: Some(pb::RequestId {
                    client_id: vec![1; 16],
                    seq: 1,
                }),
                user: "ann".into(),
                host: "ws1".into(),
                secret: vec![5; 32],
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => {
                opened = Some((c, r.into_inner()));
                break;
            }
            Err(s) => {
                addr = s
                    .metadata()
                    .get(tally_proto::LEADER_ADDR_METADATA)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .into();
            }
        }
    }
    let (mut c, s) = opened.expect("reached the leader");
    let r = c
        .checkout(pb::CheckoutRequest {
            request: Some(pb::RequestId {
                client_id: vec![1; 16],
                seq: 2,
            }),
            auth: Some(pb::SessionAuth {
                session_id: s.session_id,
                secret: vec![5; 32],
            }),
            feature: "solid_modeler".into(),
            version: "2026.1".into(),
            count: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(r.result, Some(pb::checkout_response::Result::Granted(_))),
        "{r:?}"
    );
    cluster.stop().await;
}
