//! `tallyd dev`: a local three-node cluster in one process, on loopback, with a throwaway
//! vendor key and a signed demo license. For trying Tally in one command; data lives in a
//! directory of the caller's choice (a fresh temporary one by default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tally_core::ledger::{Op, Reply};
use tally_core::license::{parse, sign_file, verify_file, VendorSigningKey};
use tokio::net::TcpListener;

use crate::config::{Limits, NodeConfig, TlsFiles};
use crate::node::{self, NodeHandle};
use crate::types::TallyNode;
use tally_pki::Role;

/// The demo license: a few features, with linger, grouping, overdraft and a term line.
pub const DEMO_LICENSE: &str = "\
VENDOR demo
FEATURE solid_modeler demo 2026.1 permanent 5 LINGER=30 DUP_GROUP=U OVERDRAFT=1 \\
    NOTICE=\"Tally demo license\"
INCREMENT solid_modeler demo 2026.1 permanent 5 LINGER=30 DUP_GROUP=U
FEATURE fea_solver demo 3.2 permanent 2 LINGER=10
FEATURE viewer demo 1.0 permanent uncounted
";

/// A running dev cluster.
#[derive(Debug)]
pub struct DevCluster {
    pub nodes: Vec<NodeHandle>,
    pub endpoints: Vec<String>,
    pub data_dir: PathBuf,
}

impl DevCluster {
    pub async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
    }
}

/// The dev cluster's certificates under `dir/pki`: a throwaway site CA (kept if `dir` is
/// reused, so a restarted dev cluster keeps its identity), a peer certificate per node and
/// an administrator's, and `dir/tally.env` for `tallyctl`. Returns each node's TLS files.
fn dev_pki(dir: &Path, endpoints: &[String]) -> anyhow::Result<Vec<TlsFiles>> {
    let pki = dir.join("pki");
    let ca = if pki.join(tally_pki::CA_KEY).exists() {
        tally_pki::load_dir(&pki)?
    } else {
        tally_pki::init_dir(&pki, "tally dev", 30)?
    };
    // Kept when the directory is reused, like the CA: the pki tool never replaces a key.
    let issue = |role, name: &str| -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (cert, key) = (
            pki.join(format!("{name}.crt")),
            pki.join(format!("{name}.key")),
        );
        if cert.exists() && key.exists() {
            return Ok((cert, key));
        }
        Ok(tally_pki::issue_into(&ca, &pki, role, name, &[], 30)?)
    };
    let mut files = Vec::new();
    for i in 1..=endpoints.len() {
        let (cert, key) = issue(Role::Peer, &format!("node{i}"))?;
        files.push(TlsFiles {
            cert,
            key,
            ca: pki.join(tally_pki::CA_CERT),
        });
    }
    // A workstation's certificate, for trying `require_client_cert`.
    issue(Role::Client, "dev-client")?;
    let (cert, key) = issue(Role::Admin, "dev-admin")?;
    write_env(
        &dir.join("tally.env"),
        &endpoints.join(","),
        Some((&pki.join(tally_pki::CA_CERT), &cert, &key)),
    )?;
    Ok(files)
}

/// Writes the `TALLY_*` variables that give `tallyctl` admin access once sourced.
fn write_env(
    path: &Path,
    endpoints: &str,
    tls: Option<(&Path, &Path, &Path)>,
) -> anyhow::Result<()> {
    let mut text = format!("export TALLY_ENDPOINTS={endpoints}\n");
    if let Some((ca, cert, key)) = tls {
        text += &format!(
            "export TALLY_CA={}\nexport TALLY_CERT={}\nexport TALLY_KEY={}\n",
            ca.display(),
            cert.display(),
            key.display()
        );
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// How a dev cluster differs from the defaults.
#[derive(Debug, Clone, Default)]
pub struct DevOptions {
    /// No TLS and no roles (`tallyd dev --insecure-plaintext`).
    pub plaintext: bool,
    /// Refuse Licensing calls without a client certificate (dev issues `dev-client`).
    pub require_client_cert: bool,
    pub limits: Limits,
    /// Where sessions' user and host come from (`[security] identity`).
    pub identity: crate::config::Identity,
}

/// Starts three nodes on `127.0.0.1:base_port..base_port+2` (0: any free ports) with data
/// under `data_dir`, forms the cluster, and loads the signed demo license. TLS with a
/// throwaway CA in `data_dir/pki` unless plaintext; either way `data_dir/tally.env` says
/// how to connect as an administrator.
pub async fn start(
    base_port: u16,
    data_dir: &Path,
    opts: DevOptions,
) -> anyhow::Result<DevCluster> {
    let plaintext = opts.plaintext;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for the dev key: {e}"))?;
    let key = VendorSigningKey::from_bytes(&secret);
    let signed = sign_file(DEMO_LICENSE, &key)?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    std::fs::write(data_dir.join("demo.lic"), &signed)?;
    std::fs::write(data_dir.join("vendor.pub"), key.public().to_text())?;
    // The dev cluster's vendor key is kept (owner-only), so someone trying Tally can sign
    // a file of their own with `tallyctl license sign` and load it: a throwaway key for a
    // throwaway cluster, never a real vendor's.
    write_private(&data_dir.join("vendor.key"), &key.to_text())?;

    let mut listeners = Vec::new();
    for i in 0..3u16 {
        let port = if base_port == 0 { 0 } else { base_port + i };
        let l = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| {
                format!("binding 127.0.0.1:{port} (is another tallyd running? try --base-port)")
            })?;
        listeners.push(l);
    }
    let endpoints: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let mut tls = if plaintext {
        write_env(&data_dir.join("tally.env"), &endpoints.join(","), None)?;
        Vec::new()
    } else {
        dev_pki(data_dir, &endpoints)?
    }
    .into_iter();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let cfg = NodeConfig {
            id,
            data_dir: data_dir.join(format!("node{id}")),
            vendor_keys: vec![("demo".into(), key.public())],
            tls: tls.next(),
            // Next to the gRPC ports: 27080-27082 for the default 27000-27002, as a
            // single node's default; any free port when the gRPC ports are.
            http: match base_port {
                0 => "127.0.0.1:0".into(),
                b => format!("127.0.0.1:{}", b.checked_add(80 + i as u16).unwrap_or(0)),
            },
            insecure_plaintext: plaintext,
            require_client_cert: opts.require_client_cert,
            limits: opts.limits,
            identity: opts.identity,
            ..NodeConfig::default()
        };
        nodes.push(node::start(cfg, l).await?);
    }
    let members: BTreeMap<u64, TallyNode> = endpoints
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                i as u64 + 1,
                TallyNode {
                    addr: a.clone(),
                    http: String::new(),
                },
            )
        })
        .collect();
    node::initialize(&nodes[0].shared, members).await?;

    // Load the license through the leader, signature-checked like any load.
    let license = parse(&signed)?;
    verify_file(&license, &nodes[0].shared.cfg.vendor_keys)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let leader = nodes[0].shared.metrics().current_leader;
        if let Some(n) = leader.and_then(|l| nodes.iter().find(|n| n.shared.id == l)) {
            let op = Op::LoadLicense {
                source: "demo.lic".into(),
                license: license.clone(),
            };
            match n.shared.propose(op).await {
                Ok(out) if matches!(out.reply, Reply::LicenseLoaded { .. }) => break,
                Ok(out) => anyhow::bail!("the demo license was refused: {:?}", out.reply),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("load: {}", e.message())
                }
                Err(e) => anyhow::bail!("loading the demo license: {}", e.message()),
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no leader was elected within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(DevCluster {
        nodes,
        endpoints,
        data_dir: data_dir.to_owned(),
    })
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
