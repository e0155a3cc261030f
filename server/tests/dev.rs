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
    // The throwaway vendor key is kept, owner-only, and signs what vendor.pub verifies.
    {
        use std::os::unix::fs::PermissionsExt as _;
        use tally_core::license::{parse, sign_file, verify_file, VendorKey, VendorSigningKey};
        let key_path = tmp.path().join("vendor.key");
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "vendor.key mode {mode:o}");
        let key =
            VendorSigningKey::from_text(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        let public =
            VendorKey::from_text(&std::fs::read_to_string(tmp.path().join("vendor.pub")).unwrap())
                .unwrap();
        let mine = sign_file("VENDOR demo\nFEATURE mine demo 1.0 permanent 1\n", &key).unwrap();
        verify_file(&parse(&mine).unwrap(), &[("demo".into(), public)]).unwrap();
    }
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

    // The HTTP port speaks TLS with the node's certificate: a client trusting the CA
    // reads /healthz from every node.
    for n in &cluster.nodes {
        let addr = n.http_addr.clone().unwrap();
        assert_eq!(
            https_get(&addr, &tmp.path().join("pki/ca.crt"), "/healthz").await,
            "ok\n"
        );
        // http:// on the HTTPS port: a sentence naming the right address.
        let plain = http_get(&addr, "/").await;
        assert!(
            plain.starts_with("HTTP/1.1 400")
                && plain.contains(&format!("ask for https://{addr}/ instead of http://")),
            "{plain}"
        );
    }
    cluster.stop().await;
}

/// GET in plain HTTP; the whole answer.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    String::from_utf8(raw).unwrap()
}

/// GET over TLS, trusting only `ca`; the body of a 200 answer.
async fn https_get(addr: &str, ca: &std::path::Path, path: &str) -> String {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject as _, pki_types::CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As a browser or curl offers: the node must pick the protocol it serves.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ip: std::net::IpAddr = addr.rsplit_once(':').unwrap().0.parse().unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ip.into(), tcp)
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the node must not agree to h2 on a port that speaks HTTP/1.1 (browsers then fail)"
    );
    let req = format!("GET {path} HTTP/1.1\r\nHost: tally\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A peer that closes without close_notify is fine here: the body is complete.
    let _ = s.read_to_end(&mut raw).await;
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    raw.split_once("\r\n\r\n").unwrap().1.to_owned()
}
