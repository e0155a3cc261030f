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
    /// Benchmark the usage history: generate a site's use through the real ledger into a
    /// history store, then time the span's `report usage` (figures as JSON).
    BenchHistory {
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 100)]
        features: u32,
        #[arg(long, default_value_t = 2000)]
        users: u32,
        /// Checkouts per user per day.
        #[arg(long, default_value_t = 3)]
        per_day: u32,
        /// Seats of each feature (its overdraft is a fifth of that).
        #[arg(long, default_value_t = 30)]
        seats: u32,
        /// Where the store goes (default: a temporary directory, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Seed a NEW cluster's first node from a backup (`tallyctl snapshot save`): checks
    /// the file, refuses a data directory that is not empty, and writes the backup's
    /// ledger and usage history there as the node's snapshot, with the membership given
    /// by --init. Then start the node with `tallyd run` on that directory; the other
    /// members start empty and receive the snapshot. See deploy/README.md, "Backup and
    /// disaster recovery".
    Restore(RestoreArgs),
    /// After a quorum is lost for good: make this (stopped) node the only member of its
    /// cluster, with everything its log holds, so it starts and leads alone; then add new
    /// nodes with `tallyctl node add`. Without --i-understand-this-forgets-the-other-nodes
    /// it only says what it would do. The lost nodes must never return with their data.
    Recover(RecoverArgs),
    /// GET a node's /readyz (or any URL of its HTTP port) and exit 0 on 200, 1 otherwise,
    /// printing what it answered: a container health check for images without curl.
    Healthcheck(HealthArgs),
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The new node's data directory: absent or empty.
    #[arg(long)]
    data: PathBuf,
    /// The new cluster's members, ID=HOST:PORT,... as `tallyd run --init` takes them
    /// (e.g. 1=h1:27000 for one node, or all three).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    init: String,
    /// This node's id among them (default: the only one --init names).
    #[arg(long)]
    id: Option<u64>,
    /// The new cluster's name (default: the backup's). Every node's cluster_name must
    /// match it.
    #[arg(long)]
    cluster_name: Option<String>,
    /// Only check the backup and say what it holds; write nothing.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args, Debug)]
struct RecoverArgs {
    /// The surviving node's data directory (the node stopped).
    #[arg(long)]
    data: PathBuf,
    /// The node's id (its `--id`).
    #[arg(long)]
    id: u64,
    /// The address it serves on, if not the one the old membership records.
    #[arg(long)]
    advertise: Option<String>,
    /// Do it: without this flag, recover only reports what it found and would do.
    #[arg(long = "i-understand-this-forgets-the-other-nodes")]
    confirmed: bool,
}

#[derive(clap::Args, Debug)]
struct HealthArgs {
    /// The URL to GET: http(s)://HOST:PORT[/PATH] (default path /readyz).
    #[arg(default_value = "https://127.0.0.1:27080/readyz")]
    url: String,
    /// The site CA's certificate (PEM), to verify an https:// node.
    #[arg(long, env = "TALLY_CA")]
    ca: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
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
    /// Take the id from a Kubernetes StatefulSet pod name: its ordinal plus one
    /// (tally-0 is node 1). Give it the pod's name (the downward API's metadata.name).
    #[arg(long, conflicts_with = "id", value_name = "POD_NAME")]
    id_from_ordinal: Option<String>,
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
    /// Give it to one node of a fresh cluster only, or to every member with the same
    /// list; restarted nodes rejoin by themselves. Empty: none (what a manifest that
    /// takes it from a variable gives once the cluster is formed).
    #[arg(long)]
    init: Option<String>,
    /// Dial these peers here instead of at their advertised addresses, e.g.
    /// 1=node1:27000,2=node2:27000 (as the config's [dial]): for nodes whose clients
    /// reach them through published or NATed ports that the nodes themselves cannot
    /// reach (Docker Compose).
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    dial: Option<String>,
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
    if let Some(pod) = &a.id_from_ordinal {
        cfg.id = tally_server::config::id_from_ordinal(pod)?;
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
    for m in a
        .dial
        .iter()
        .flat_map(|d| d.split(','))
        .filter(|m| !m.trim().is_empty())
    {
        let (id, addr) = m.split_once('=').context("--dial takes ID=HOST:PORT,...")?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("bad node id {id:?} in --dial"))?;
        cfg.dial.insert(id, addr.trim().to_owned());
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
    let notify = systemd();
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let node = tally_server::node::start(cfg, listener).await?;
    if let Some(init) = a.init.filter(|i| !i.trim().is_empty()) {
        let members = members(&init)?;
        if let Err(e) = tally_server::node::initialize(&node.shared, members).await {
            // A node restarted with --init still on its command line is already part of
            // the cluster: that is fine, and says so.
            tracing::warn!("not initializing: {e}");
        }
    }
    // READY=1 means: this process serves. Its gRPC and HTTP ports are bound (and accept
    // from here on), its data is open, its Raft node runs, and a --init was applied. Not
    // that the cluster has a leader or that this node may serve clients: that is
    // readiness (/readyz, gRPC health), which the status line follows below. Waiting for
    // it here would make `systemctl start` of the first node of a site hang until its
    // peers came up, and then fail it after TimeoutStartSec, so a cluster rebooted one
    // machine at a time could never start.
    let serving = format!(
        "serving on {} (node {}); {}",
        node.addr,
        node.shared.id,
        match tally_server::health::readiness(&node.shared) {
            Ok(s) => s,
            Err(why) => format!("not ready yet: {why}"),
        }
    );
    let watcher = notify.map(|n| {
        if let Err(e) = n.ready(&serving) {
            tracing::warn!("systemd notification (READY=1) not sent: {e}");
        }
        let n = std::sync::Arc::new(n);
        (
            n.clone(),
            tokio::spawn(tell_systemd(n, node.readiness.clone())),
        )
    });
    let notify = watcher.as_ref().map(|(n, _)| n.clone());
    let stopping = |why: &str| {
        if let Some(n) = &notify {
            if let Err(e) = n.stopping(why) {
                tracing::warn!("systemd notification (STOPPING=1) not sent: {e}");
            }
        }
    };
    let result = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            stopping("stopping (signal)");
            node.stop().await;
            Ok(())
        }
        why = node.failed() => {
            stopping(&format!("consensus stopped: {why}; draining, then exiting"));
            // A supervisor (systemd, Kubernetes) restarts a process that exits non-zero;
            // the drain lets calls in flight get their UNAVAILABLE and go elsewhere.
            tracing::error!("consensus stopped: {why}; draining for {} s, then exiting", FATAL_DRAIN.as_secs());
            tokio::time::sleep(FATAL_DRAIN).await;
            node.stop().await;
            Err(anyhow::anyhow!("consensus stopped: {why} (check the data directory's disk; a restart recovers once it is fixed)"))
        }
    };
    if let Some((_, task)) = watcher {
        task.abort();
    }
    result
}

/// The members `--init` names: ID=HOST:PORT,...
fn members(
    init: &str,
) -> anyhow::Result<std::collections::BTreeMap<u64, tally_server::types::TallyNode>> {
    use anyhow::Context as _;
    let mut members = std::collections::BTreeMap::new();
    for m in init.split(',').filter(|m| !m.trim().is_empty()) {
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
    Ok(members)
}

/// `tallyd restore`.
async fn restore(a: RestoreArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let backup = tally_server::backup::read(&a.from)
        .with_context(|| format!("{} is not a usable backup", a.from.display()))?;
    let h = &backup.header;
    println!(
        "backup {}: cluster \"{}\"{}, log index {} term {}, {} session(s), {} lease(s), {} history record(s), written by tallyd {}",
        a.from.display(),
        h.cluster_name,
        if h.cluster_id.is_empty() { String::new() } else { format!(" (id {})", h.cluster_id) },
        h.index,
        h.term,
        h.sessions,
        h.leases,
        h.history_records,
        h.tallyd_version
    );
    if a.check {
        println!("the backup checks out (--check: nothing written)");
        return Ok(());
    }
    let members = members(&a.init)?;
    anyhow::ensure!(!members.is_empty(), "--init names no member");
    let id = match (a.id, members.len()) {
        (Some(id), _) => id,
        (None, 1) => *members.keys().next().context("one member")?,
        (None, _) => {
            anyhow::bail!("--init names several members: say which this node is with --id")
        }
    };
    let seeded =
        tally_server::backup::restore(backup, &a.data, id, members, a.cluster_name.as_deref())
            .await
            .with_context(|| format!("restoring into {}", a.data.display()))?;
    println!(
        "restored into {} in {} ms: node {} of cluster \"{}\" with members {}",
        a.data.display(),
        started.elapsed().as_millis(),
        seeded.id,
        seeded.cluster_name,
        seeded
            .members
            .iter()
            .map(|(i, addr)| format!("{i}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!(
        "next: tallyd run --data {} --id {} --cluster-name {} ... (the other members start empty, without --init, and receive the snapshot)",
        a.data.display(),
        seeded.id,
        seeded.cluster_name
    );
    println!(
        "held seats: their sessions' TTLs restart when the node starts (the ledger sees an outage); clients that heartbeat the new cluster within their TTL keep them, the others' seats return after TTL + linger"
    );
    Ok(())
}

/// `tallyd recover`.
async fn recover(a: RecoverArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let r = tally_server::backup::recover(&a.data, a.id, a.advertise, a.confirmed)
        .await
        .with_context(|| format!("recovering {}", a.data.display()))?;
    println!(
        "node {} of cluster \"{}\" holds log entries up to index {} (term {}; known committed up to at least {}): snapshot at {} + {} log entries",
        r.id, r.cluster_name, r.index, r.term, r.committed_at_least, r.snapshot_index, r.log_entries_applied
    );
    println!(
        "state: {} session(s), {} lease(s), {} history record(s); old members: {}",
        r.sessions,
        r.leases,
        r.history_records,
        r.old_members
            .iter()
            .map(|m| format!(
                "{}={}{}",
                m.id,
                m.addr,
                if m.voter { "" } else { " (learner)" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !r.applied {
        println!(
            "dry run, nothing changed. To make node {} at {} the only member of the cluster with this state, run again with --i-understand-this-forgets-the-other-nodes. Before that: make sure the other nodes are gone for good (if several survive, recover the one with the highest index above), and never start them again on their old data.",
            r.id, r.addr
        );
        return Ok(());
    }
    println!(
        "recovered: node {} at {} is now the only member; the old database is at {}, a backup of the recovered state at {}",
        r.id,
        r.addr,
        r.old_database.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
        r.backup.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
    );
    println!(
        "next: start it as before (tallyd run, without --init); it leads alone. Add nodes with empty data directories with `tallyctl node add ID HOST:PORT` and `tallyctl node voters ...`"
    );
    Ok(())
}

/// systemd's notification socket, when `tallyd` runs under a `Type=notify` unit. A bad
/// `NOTIFY_SOCKET` is logged, not fatal: the node serves either way, and a unit that
/// waits for READY=1 says so itself when it times out.
fn systemd() -> Option<tally_server::sdnotify::Notifier> {
    match tally_server::sdnotify::Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("not notifying systemd: {e}");
            None
        }
    }
}

/// Keeps systemd's status line (`systemctl status tallyd`) on the node's readiness, and
/// pings its watchdog when the unit has one (`WatchdogSec=`). The pings come from the
/// main runtime, so a node whose runtime hangs stops pinging and is restarted.
async fn tell_systemd(
    n: std::sync::Arc<tally_server::sdnotify::Notifier>,
    mut readiness: tokio::sync::watch::Receiver<tally_server::health::Readiness>,
) {
    let every = tally_server::sdnotify::watchdog_interval();
    let mut dog = tokio::time::interval(every.unwrap_or(std::time::Duration::from_secs(3600)));
    dog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = readiness.changed() => {
                if changed.is_err() {
                    return;
                }
                let text = readiness.borrow_and_update().text.clone();
                if let Err(e) = n.status(&text) {
                    tracing::warn!("systemd notification (STATUS) not sent: {e}");
                }
            }
            _ = dog.tick(), if every.is_some() => {
                if let Err(e) = n.watchdog() {
                    tracing::warn!("systemd notification (WATCHDOG=1) not sent: {e}");
                }
            }
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

fn logging(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
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
    // The offline commands replay entries through the state machine, which logs an
    // audit line per entry: what they print themselves is what matters there.
    let default = match cli.cmd {
        Cmd::Restore(_) | Cmd::Recover(_) => "warn,openraft=error",
        _ => "info,openraft=error",
    };
    logging(cli.log_json, default);
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
        Cmd::BenchHistory {
            days,
            features,
            users,
            per_day,
            seats,
            dir,
        } => {
            let site = tally_server::bench_history::Site {
                days,
                features,
                users,
                per_day,
                seats,
            };
            let tmp =
                std::env::temp_dir().join(format!("tally-bench-history-{}", std::process::id()));
            let (dir, remove) = match dir {
                Some(d) => (d, false),
                None => (tmp, true),
            };
            std::fs::create_dir_all(&dir)?;
            let figures = tally_server::bench_history::run(site, &dir);
            if remove {
                let _ = std::fs::remove_dir_all(&dir);
            }
            println!("{}", serde_json::to_string_pretty(&figures?)?);
            Ok(())
        }
        Cmd::DemoLicense => {
            print!("{}", tally_server::dev::DEMO_LICENSE);
            Ok(())
        }
        Cmd::Healthcheck(h) => healthcheck(h).await,
        Cmd::Restore(a) => restore(a).await,
        Cmd::Recover(a) => recover(a).await,
    }
}

/// `tallyd healthcheck`: exit 0 on a 200, 1 on anything else (what Docker's
/// HEALTHCHECK reads; 2 means something else to it), the answer on stdout either way.
async fn healthcheck(h: HealthArgs) -> anyhow::Result<()> {
    let timeout = std::time::Duration::try_from_secs_f64(h.timeout)
        .unwrap_or(std::time::Duration::from_secs(2));
    match tally_server::probe::get(&h.url, h.ca.as_deref(), timeout).await {
        Ok(a) => {
            println!("{} {}", a.status, a.body);
            if a.status != 200 {
                std::process::exit(1);
            }
            Ok(())
        }
        Err(e) => {
            println!("unhealthy: {e}");
            std::process::exit(1);
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
