//! `bench failover`: the `cycle` loop while the leader is killed with SIGKILL a third of
//! the way in. Reports the longest stretch without an acknowledged checkout, and checks
//! that nothing acknowledged was lost: each client holds a second seat across the kill,
//! and afterwards the new leader must list it (and any seat whose checkin failed), and
//! nothing it acknowledged checking in.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::{CheckoutOptions, Client, Seat};

use super::cycle::{self, Outcome, Pool};
use crate::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster's directory of three-nodes.sh: the leader's pid is read from
    /// DIR/nodeN.pid.
    #[arg(long, value_name = "DIR")]
    pid_dir: PathBuf,
    /// Client sessions, each holding a seat across the kill.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[command(flatten)]
    pool: Pool,
    /// Seconds to run; the leader is killed after a third of them.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

/// The longest stretch in `[0, end_us]` without an event of `times` (µs, any order).
fn max_gap(mut times: Vec<u64>, end_us: u64) -> (u64, u64) {
    times.sort_unstable();
    let (mut best, mut at, mut prev) = (0, 0, 0);
    for t in times.into_iter().chain(std::iter::once(end_us)) {
        if t.saturating_sub(prev) > best {
            (best, at) = (t.saturating_sub(prev), prev);
        }
        prev = prev.max(t);
    }
    (best, at)
}

/// Each client's held seat, taken before the kill.
async fn hold(clients: &[Client], features: &[String]) -> anyhow::Result<Vec<Seat>> {
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        let (client, f) = (client.clone(), features[c % features.len()].clone());
        tasks.push(tokio::spawn(async move {
            client.checkout(&f, CheckoutOptions::default()).await
        }));
    }
    let mut seats = Vec::new();
    for t in tasks {
        seats.push(t.await.context("checkout task")??);
    }
    Ok(seats)
}

/// Leases the cluster says each client's session holds now.
async fn listed(ctx: &Ctx, session: u64) -> anyhow::Result<BTreeSet<u64>> {
    let req = pb::ListLeasesRequest {
        session_id: Some(session),
        ..Default::default()
    };
    let r = ctx
        .cluster()?
        .call("list leases", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).list_leases(req).await }
        })
        .await?;
    Ok(r.leases
        .iter()
        .map(|l| l.lease_id)
        .filter(|l| *l != 0)
        .collect())
}

/// (lost, resurrected): leases acknowledged and not checked in that are gone, and leases
/// listed whose checkin was acknowledged.
async fn verify(
    ctx: &Ctx,
    clients: &[Client],
    seats: &[Seat],
    outcomes: &[Outcome],
) -> anyhow::Result<(usize, usize)> {
    let (mut lost, mut resurrected) = (0, 0);
    for ((client, seat), o) in clients.iter().zip(seats).zip(outcomes) {
        let have = listed(ctx, client.session_id()).await?;
        let want: BTreeSet<u64> = o.kept.iter().copied().chain([seat.lease_id()]).collect();
        for l in want.difference(&have) {
            eprintln!(
                "bench failover: LOST lease {l} of session {}",
                client.session_id()
            );
            lost += 1;
        }
        for l in have.difference(&want) {
            if !o.uncertain.contains(l) {
                eprintln!(
                    "bench failover: lease {l} of session {} is back after its checkin was acknowledged",
                    client.session_id()
                );
                resurrected += 1;
            }
        }
    }
    Ok((lost, resurrected))
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    let features = cycle::features(ctx, &a.pool).await?;
    let clients = cycle::connect(ctx, a.clients).await?;
    let seats = hold(&clients, &features).await?;
    let duration = Duration::from_secs(a.duration);
    eprintln!(
        "bench failover: {} clients each hold a seat; cycling for {} s, killing the leader after {:.1} s",
        a.clients,
        a.duration,
        (duration / 3).as_secs_f64()
    );
    let start = Instant::now();
    let deadline = start + duration;
    let killer = {
        let (cluster, dir) = (ctx.cluster()?, a.pid_dir.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until((start + duration / 3).into()).await;
            let leader = super::leader_id(&cluster).await?;
            anyhow::ensure!(leader != 0, "no leader to kill (election in progress)");
            let pid = super::node_pid(&dir, leader)?;
            super::kill9(pid)?;
            let at = start.elapsed();
            // Wall-clock time too, to line the kill up with the nodes' logs.
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            eprintln!(
                "bench failover: killed node {leader} (pid {pid}, the leader) at {:.3} s \
                 (unix {unix_ms} ms)",
                at.as_secs_f64()
            );
            Ok((leader, at))
        })
    };
    let mut outcomes = cycle::drive(&clients, &features, start, deadline, true).await?;
    let elapsed = start.elapsed();
    let (killed, kill_at) = killer.await.context("killer task")??;
    let times: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| o.done_at.iter().copied())
        .collect();
    let end_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let (gap, gap_at) = max_gap(times, end_us);
    let (lost, resurrected) = verify(ctx, &clients, &seats, &outcomes).await?;
    let new_leader = super::leader_id(&ctx.cluster()?).await?;
    for s in seats {
        if let Err(e) = s.checkin().await {
            eprintln!("bench failover: checking in a held seat: {e}");
        }
    }
    cycle::close(clients).await;
    let (ops, errors, lat) = cycle::totals(&mut outcomes);
    eprintln!(
        "bench failover: node {new_leader} leads now; the longest checkout gap was {:.0} ms \
         (from {:.3} s); lost {lost}. Restart the killed node with: \
         deploy/local/three-nodes.sh restart {} {killed}",
        gap as f64 / 1e3,
        gap_at as f64 / 1e6,
        a.pid_dir.display()
    );
    super::report(
        "failover",
        ops,
        elapsed,
        lat,
        serde_json::json!({
            "clients": a.clients,
            "errors": errors,
            "killed_node": killed,
            "killed_at_ms": kill_at.as_millis() as u64,
            "new_leader": new_leader,
            "max_gap_ms": super::ms(gap as f64 / 1e3),
            "max_gap_from_ms": super::ms(gap_at as f64 / 1e3),
            "lost": lost,
            "resurrected": resurrected,
        }),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::max_gap;

    #[test]
    fn the_longest_gap_counts_the_edges() {
        assert_eq!(max_gap(vec![30, 10, 20], 100), (70, 30));
        assert_eq!(max_gap(vec![50, 60], 70), (50, 0));
        assert_eq!(max_gap(vec![], 5), (5, 0));
    }
}
