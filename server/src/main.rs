//! `tallyd` entry point. Thin by design: parse flags, set up logging, call the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tallyd", version, about = "The Tally license server")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// A local three-node cluster on loopback with a signed demo license, in the foreground.
    Dev {
        /// First of three consecutive ports (0: any free ports).
        #[arg(long, default_value_t = 27000)]
        base_port: u16,
        /// Where the nodes keep their data (default: a fresh temporary directory, removed
        /// on exit).
        #[arg(long)]
        data: Option<PathBuf>,
        /// No TLS and no roles: anyone on this machine may do anything. For debugging
        /// with plain gRPC tools only.
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// Run one node of a cluster, from a TOML config file and/or flags (flags win).
    Run(Box<RunArgs>),
    /// Print the demo license, unsigned (sign it with `tallyctl license sign`).
    DemoLicense,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML config file (keys as in deploy/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cluster's name: every node of one cluster must give the same (default
    /// "tally"); Raft calls from another cluster are refused.
    #[arg(long)]
    cluster_name: Option<String>,
    /// This node's id (from 1).
    #[arg(long)]
    id: Option<u64>,
    /// gRPC listen address, e.g. 0.0.0.0:27000.
    #[arg(long)]
    listen: Option<String>,
    /// The address others dial to reach this node, e.g. host1.example.com:27000.
    #[arg(long)]
    advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// HTTP listen address (dashboard, /metrics, /healthz, /readyz); "" switches it off.
    #[arg(long)]
    http: Option<String>,
    /// Trust a vendor's public key: NAME=FILE. Repeatable.
    #[arg(long = "vendor-key")]
    vendor_keys: Vec<String>,
    /// Form a NEW cluster of these members, e.g. 1=h1:27000,2=h2:27000,3=h3:27000.
    /// Give it to one node of a fresh cluster only; restarted nodes rejoin by themselves.
    #[arg(long)]
    init: Option<String>,
    /// This node's TLS certificate (role peer), PEM. With --tls-key and --tls-ca.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// This node's private key, PEM.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// The site CA's certificate: who may be a peer, an admin or a client.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// Refuse Licensing calls from clients without a certificate from the site CA.
    #[arg(long)]
    require_client_cert: bool,
    /// No TLS, no roles: anyone who reaches the port may do anything, including join
    /// the cluster. For a loopback test bench only; logged loudly.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Allow --insecure-plaintext on a non-loopback address (otherwise refused).
    #[arg(long, requires = "insecure_plaintext")]
    insecure_plaintext_beyond_loopback: bool,
}

async fn run_node(a: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (file, base) = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let base = p.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            (
                tally_server::config::FileConfig::parse(&text)
                    .with_context(|| p.display().to_string())?,
                base,
            )
        }
        None => (Default::default(), PathBuf::from(".")),
    };
    let mut cfg = file.into_config(&base)?;
    if let Some(name) = a.cluster_name {
        cfg.cluster_name = name;
    }
    if let Some(id) = a.id {
        cfg.id = id;
    }
    if let Some(h) = a.http {
        cfg.http = h;
    }
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(adv) = a.advertise {
        cfg.advertise = adv;
    }
    if let Some(d) = a.data {
        cfg.data_dir = d;
    }
    if let (Some(cert), Some(key), Some(ca)) = (a.tls_cert, a.tls_key, a.tls_ca) {
        cfg.tls = Some(tally_server::config::TlsFiles { cert, key, ca });
    }
    cfg.require_client_cert |= a.require_client_cert;
    cfg.insecure_plaintext |= a.insecure_plaintext;
    cfg.insecure_plaintext_beyond_loopback |= a.insecure_plaintext_beyond_loopback;
    for vk in &a.vendor_keys {
        let (name, path) = vk.split_once('=').context("--vendor-key takes NAME=FILE")?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading vendor key {path}"))?;
        cfg.vendor_keys.push((
            name.to_owned(),
            tally_core::license::VendorKey::from_text(&text)?,
        ));
    }
    cfg.validate()?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let node = tally_server::node::start(cfg, listener).await?;
    if let Some(init) = a.init {
        let mut members = std::collections::BTreeMap::new();
        for m in init.split(',') {
            let (id, addr) = m.split_once('=').context("--init takes ID=HOST:PORT,...")?;
            let id: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("bad node id {id:?} in --init"))?;
            members.insert(
                id,
                tally_server::types::TallyNode {
                    addr: addr.trim().to_owned(),
                    http: String::new(),
                },
            );
        }
        if let Err(e) = tally_server::node::initialize(&node.shared, members).await {
            // A node restarted with --init still on its command line is already part of
            // the cluster: that is fine, and says so.
            tracing::warn!("not initializing: {e}");
        }
    }
    tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            node.stop().await;
            Ok(())
        }
        why = node.failed() => {
            // A supervisor (systemd, Kubernetes) restarts a process that exits non-zero;
            // the drain lets calls in flight get their UNAVAILABLE and go elsewhere.
            tracing::error!("consensus stopped: {why}; draining for {} s, then exiting", FATAL_DRAIN.as_secs());
            tokio::time::sleep(FATAL_DRAIN).await;
            node.stop().await;
            anyhow::bail!("consensus stopped: {why} (check the data directory's disk; a restart recovers once it is fixed)")
        }
    }
}

/// How long a node whose consensus stopped keeps answering UNAVAILABLE before it exits.
const FATAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Ctrl-C or SIGTERM (what systemd and `kill` send).
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    // Colour only on a terminal: a log file or journal full of escape codes cannot be
    // grepped the way sites grep a license server's log.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging(cli.log_json);
    match cli.cmd {
        Cmd::Dev {
            base_port,
            data,
            insecure_plaintext,
        } => {
            let (dir, _temp) = match data {
                Some(d) => (d, None),
                None => {
                    let t = std::env::temp_dir().join(format!("tally-dev-{}", std::process::id()));
                    (t.clone(), Some(RemoveOnDrop(t)))
                }
            };
            let cluster = tally_server::dev::start(
                base_port,
                &dir,
                tally_server::dev::DevOptions {
                    plaintext: insecure_plaintext,
                    ..Default::default()
                },
            )
            .await?;
            let eps = cluster.endpoints.join(",");
            println!(
                "Tally dev cluster is up: three nodes, one process, data in {}",
                dir.display()
            );
            let scheme = if insecure_plaintext {
                "grpc (PLAINTEXT)"
            } else {
                "grpcs (TLS, throwaway CA in pki/)"
            };
            let web = if insecure_plaintext { "http" } else { "https" };
            for (i, e) in cluster.endpoints.iter().enumerate() {
                let dash = cluster.nodes[i].http_addr.as_deref().unwrap_or("(off)");
                println!("  node {}: {e}  {scheme}; dashboard {web}://{dash}/", i + 1);
            }
            println!(
                "Demo license loaded (signed with a throwaway key, {}/vendor.pub):",
                dir.display()
            );
            println!("  solid_modeler 10 seats (linger 30 s, DUP_GROUP=U, overdraft 1), fea_solver 2, viewer uncounted");
            println!("Endpoints for clients: TALLY_ENDPOINTS={eps}");
            println!("Try, in another terminal (tally.env holds the endpoints, CA and an admin certificate):");
            println!("  . {}", dir.join("tally.env").display());
            println!("  cargo run --release --bin tallyctl -- status");
            println!("  cargo run --release --bin tallyctl -- license list");
            println!(
                "Sign and load a license of your own with this cluster's throwaway vendor key:"
            );
            println!(
                "  cargo run --release --bin tallyctl -- license sign my.txt --key {} --out my.lic",
                dir.join("vendor.key").display()
            );
            println!("  cargo run --release --bin tallyctl -- license load my.lic");
            if !insecure_plaintext {
                println!("The dashboards' certificates come from the throwaway CA in pki/ca.crt: trust it, or accept the browser's warning.");
            }
            println!("Press Ctrl-C to stop.");
            shutdown_signal().await;
            println!("stopping...");
            cluster.stop().await;
            Ok(())
        }
        Cmd::Run(a) => run_node(*a).await,
        Cmd::DemoLicense => {
            print!("{}", tally_server::dev::DEMO_LICENSE);
            Ok(())
        }
    }
}

/// Removes the dev data directory when `tallyd dev` exits.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
