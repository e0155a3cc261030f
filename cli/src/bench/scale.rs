//! `bench scale`: N sessions each holding a seat. Measures, in order: how fast they open,
//! each node's resident memory with them, how long the cluster takes to expire them all
//! once their heartbeats stop (no leader change meanwhile); then, with `--pid-dir`, opens
//! N again and kills the leader: the time until a write succeeds on the new leader, how
//! many live sessions the failover lost, and the mass expiry again on the new leader.
//! The Raft term is read at the start, before the kill and at the end: any election
//! before the kill was unplanned (overload made a follower campaign).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::licensing_client::LicensingClient;
use tally_client::{Cluster, ConnectOptions};
use tokio::sync::watch;

use super::fleet::{Fleet, Round};
use super::raw::{self, Opener};
use crate::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Sessions to open (each takes one seat).
    #[arg(long)]
    sessions: u64,
    /// The cluster's directory of three-nodes.sh (DIR/nodeN.pid): enables the memory
    /// figures and the failover phase (which kills the leader; restarting it is yours).
    #[arg(long, value_name = "DIR")]
    pid_dir: Option<PathBuf>,
    /// Connections to the leader the sessions share.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Session TTL in seconds [default: 2, or N/40,000 when larger, so that renewing
    /// every session every TTL/3 stays within what two cores can do].
    #[arg(long)]
    ttl: Option<u64>,
    /// The feature each session takes a seat of (uncounted in the demo license).
    #[arg(long, default_value = "viewer")]
    feature: String,
    /// Seconds the second fleet lives before the leader is killed [default: 3 × TTL].
    #[arg(long)]
    settle: Option<u64>,
}

/// The user the fleet's sessions are opened as; expiry is watched through it.
const USER: &str = "tally-bench-scale";

/// A running heartbeat loop.
struct Keeper {
    stop: watch::Sender<bool>,
    rounds: watch::Receiver<Option<Round>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Keeper {
    fn start(fleet: &Arc<Fleet>, every: Duration) -> Keeper {
        let (stop, stop_rx) = watch::channel(false);
        let (rounds_tx, rounds) = watch::channel(None);
        let task = tokio::spawn(fleet.clone().keep_alive(every, stop_rx, rounds_tx));
        Keeper { stop, rounds, task }
    }

    /// Waits for a complete round that started after `t`.
    async fn round_after(&mut self, t: Instant) -> anyhow::Result<Round> {
        let r = self
            .rounds
            .wait_for(|r| r.is_some_and(|r| r.started > t))
            .await
            .context("the heartbeat loop ended")?;
        r.ok_or_else(|| anyhow::anyhow!("no heartbeat round"))
    }

    /// Stops heartbeating; when the sessions were last renewed.
    async fn stop(self) -> anyhow::Result<Instant> {
        let _ = self.stop.send(true);
        self.task.await.context("heartbeat task")??;
        let last = *self.rounds.borrow();
        last.map(|r| r.ended)
            .ok_or_else(|| anyhow::anyhow!("no heartbeat round completed"))
    }
}

/// Opens `n` sessions from number `from`, printing progress every few seconds.
async fn open(
    fleet: &Arc<Fleet>,
    from: u64,
    n: u64,
    a: &Args,
) -> anyhow::Result<(Duration, super::Latencies)> {
    let opened = Arc::new(AtomicU64::new(0));
    let progress = {
        let (opened, fleet) = (opened.clone(), fleet.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let k = opened.load(Ordering::Relaxed);
                eprintln!(
                    "bench scale: {k}/{n} sessions opened ({:.0}/s), {} lost so far",
                    k as f64 / t.elapsed().as_secs_f64(),
                    fleet.lost()
                );
            }
        })
    };
    let t = Instant::now();
    let lat = fleet.open(from, n, a.concurrency, opened).await;
    progress.abort();
    let took = t.elapsed();
    eprintln!(
        "bench scale: {n} sessions opened in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    Ok((took, lat?))
}

/// VmRSS and VmHWM of every node whose pid file is in `dir`, in MiB.
fn memory(dir: Option<&Path>) -> serde_json::Value {
    let Some(dir) = dir else {
        return serde_json::Value::Null;
    };
    let mut out = serde_json::Map::new();
    for n in 1..=3u64 {
        let status = super::node_pid(dir, n)
            .ok()
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let field = |name: &str| {
            status.as_deref().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .map(|kb| kb / 1024)
            })
        };
        out.insert(
            format!("node{n}"),
            json!({"rss_mib": field("VmRSS:"), "peak_mib": field("VmHWM:")}),
        );
    }
    eprintln!(
        "bench scale: memory per node: {}",
        serde_json::Value::Object(out.clone())
    );
    serde_json::Value::Object(out)
}

/// Waits until the cluster holds no session of [`USER`]. Cheap while many remain: it
/// asks for the leases of the session expired last (`probe`), and lists sessions only
/// once that one is gone.
async fn wait_gone(ctx: &Ctx, probe: Option<u64>, limit: Duration) -> anyhow::Result<()> {
    let cluster = ctx.cluster()?;
    let give_up = Instant::now() + limit;
    let mut probe = probe;
    loop {
        anyhow::ensure!(
            Instant::now() < give_up,
            "sessions still there after {} s",
            limit.as_secs()
        );
        if let Some(id) = probe {
            let req = pb::ListLeasesRequest {
                session_id: Some(id),
                ..Default::default()
            };
            let r = cluster
                .call("list leases", |ch| {
                    let req = req.clone();
                    async move { AdminClient::new(ch).list_leases(req).await }
                })
                .await?;
            if r.leases.is_empty() {
                probe = None;
            }
        } else {
            let r = cluster
                .call("list sessions", |ch| async move {
                    AdminClient::new(ch)
                        .max_decoding_message_size(1 << 30)
                        .list_sessions(pb::ListSessionsRequest {})
                        .await
                })
                .await?;
            let left = r.sessions.iter().filter(|s| s.user == USER).count();
            if left == 0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the heartbeats and times the expiry of every session: (sessions that were
/// alive, seconds from their last renewal until none was left).
async fn expire(
    ctx: &Ctx,
    fleet: &Fleet,
    keeper: Keeper,
    ttl: Duration,
) -> anyhow::Result<(usize, f64)> {
    let probe = fleet.max_id();
    let alive = fleet.count();
    let last = keeper.stop().await?;
    eprintln!(
        "bench scale: heartbeats stopped; waiting for {alive} sessions to expire (TTL {} s)",
        ttl.as_secs()
    );
    let limit = ttl + Duration::from_secs(600 + alive as u64 / 100);
    wait_gone(ctx, probe, limit).await?;
    let took = last.elapsed().as_secs_f64();
    eprintln!("bench scale: all expired {took:.1} s after their last heartbeat");
    fleet.clear();
    Ok((alive, took))
}

/// Kills the leader; times the first write (an OpenSession) the new leader acknowledges.
async fn failover(ctx: &Ctx, dir: &Path, fleet: &Fleet) -> anyhow::Result<(u64, Instant, f64)> {
    let leader = super::leader_id(&ctx.cluster()?).await?;
    anyhow::ensure!(leader != 0, "no leader to kill (election in progress)");
    let pid = super::node_pid(dir, leader)?;
    super::kill9(pid)?;
    let killed = Instant::now();
    eprintln!("bench scale: killed node {leader} (pid {pid}, the leader)");
    // Short attempts, repeated with the same request id (so a retry never opens a second
    // session): the first success is seen within a few tens of milliseconds.
    let cluster = Cluster::new(
        &ctx.endpoints,
        ConnectOptions {
            retry_for: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(5),
            ..ctx.connect_options()?
        },
    )?;
    let (client, secret) = fleet.ids.of(u64::MAX);
    let req = pb::OpenSessionRequest {
        request: Some(raw::request(client, 1)),
        user: USER.into(),
        host: fleet.opener.host.clone(),
        display: String::new(),
        pid: std::process::id(),
        ttl_ms: fleet.opener.ttl_ms,
        client_info: "tallyctl bench scale: failover probe".into(),
        secret: secret.to_vec(),
    };
    loop {
        let r = cluster
            .call("open session", |ch| {
                let req = req.clone();
                async move { LicensingClient::new(ch).open_session(req).await }
            })
            .await;
        match r {
            Ok(_) => break,
            Err(e) if e.is_retryable() && killed.elapsed() < Duration::from_secs(120) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let took = killed.elapsed().as_secs_f64();
    eprintln!(
        "bench scale: the new leader acknowledged a write {:.0} ms after the kill",
        took * 1e3
    );
    Ok((leader, killed, took))
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.sessions >= 1 && a.connections >= 1,
        "--sessions and --connections must be at least 1"
    );
    let n = a.sessions;
    let ttl = Duration::from_secs(a.ttl.unwrap_or((n / 40_000).max(2)));
    let every = ttl / 3;
    let dir = a.pid_dir.as_deref();
    let fleet = Fleet::new(
        &ctx.endpoints,
        a.connections,
        Opener::new(USER, ttl),
        a.feature.clone(),
    )
    .await?;
    eprintln!(
        "bench scale: opening {n} sessions (TTL {} s, one `{}` seat each) over {} connections, {} at a time",
        ttl.as_secs(), a.feature, a.connections, a.concurrency
    );

    let term_start = super::leader_and_term(&ctx.cluster()?).await?.1;
    let mut keeper = Keeper::start(&fleet, every);
    let (open_took, lat) = open(&fleet, 0, n, &a).await?;
    keeper.round_after(Instant::now()).await?;
    let lost_opening = fleet.lost();
    let mem = memory(dir);
    let (expired, expire_s) = expire(ctx, &fleet, keeper, ttl).await?;
    let mem_after_expiry = memory(dir);
    let mut extra = json!({
        "sessions": n,
        "ttl_s": ttl.as_secs(),
        "connections": a.connections,
        "concurrency": a.concurrency,
        "open_s": super::ms(open_took.as_secs_f64()),
        "lost_while_open": lost_opening,
        "heartbeat_batch_failures_while_open": fleet.failures(),
        "memory": mem,
        "expired": expired,
        "expire_s": super::ms(expire_s),
        "expire_after_ttl_s": super::ms(expire_s - ttl.as_secs_f64()),
        "memory_after_expiry": mem_after_expiry,
        "term_start": term_start,
    });

    if let (Some(dir), Some(e)) = (dir, extra.as_object_mut()) {
        let mut keeper = Keeper::start(&fleet, every);
        open(&fleet, n, n, &a).await?;
        let settle = Duration::from_secs(a.settle.unwrap_or(3 * ttl.as_secs()));
        eprintln!(
            "bench scale: letting the fleet live {} s before the kill",
            settle.as_secs()
        );
        tokio::time::sleep(settle).await;
        let before = keeper.round_after(Instant::now()).await?;
        e.insert("memory_before_failover".into(), memory(Some(dir)));
        let term_before_kill = super::leader_and_term(&ctx.cluster()?).await?.1;
        e.insert("term_before_kill".into(), json!(term_before_kill));
        e.insert(
            "elections_before_kill".into(),
            json!(term_before_kill.saturating_sub(term_start)),
        );
        eprintln!(
            "bench scale: {} election(s) before the kill (term {term_start} -> {term_before_kill})",
            term_before_kill.saturating_sub(term_start)
        );
        let (killed_node, killed, write_s) = failover(ctx, dir, &fleet).await?;
        let after = keeper.round_after(Instant::now()).await?;
        let lost = after.lost_total - before.lost_total;
        eprintln!(
            "bench scale: every session renewed on the new leader {:.1} s after the kill; {lost} of {n} were lost",
            (after.ended - killed).as_secs_f64()
        );
        let (expired2, expire2_s) = expire(ctx, &fleet, keeper, ttl).await?;
        e.insert(
            "term_end".into(),
            json!(super::leader_and_term(&ctx.cluster()?).await?.1),
        );
        e.insert("killed_node".into(), json!(killed_node));
        e.insert("failover_write_ms".into(), json!(super::ms(write_s * 1e3)));
        e.insert(
            "renewed_all_after_kill_s".into(),
            json!(super::ms((after.ended - killed).as_secs_f64())),
        );
        e.insert("lost_at_failover".into(), json!(lost));
        e.insert("heartbeat_batch_failures".into(), json!(fleet.failures()));
        e.insert("expired_after_failover".into(), json!(expired2));
        e.insert(
            "expire_after_failover_s".into(),
            json!(super::ms(expire2_s)),
        );
        eprintln!(
            "bench scale: restart the killed node with: deploy/local/three-nodes.sh restart {} {killed_node}",
            dir.display()
        );
    }
    super::report("scale", n, open_took, lat, extra);
    Ok(())
}
