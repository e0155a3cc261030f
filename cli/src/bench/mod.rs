//! `tallyctl bench`: load generators run against a live cluster, comparable with the etcd
//! reference in `peer-bench`. Every workload reports progress on stderr and prints, as its
//! last stdout line, one JSON object:
//! `{"system":"tally","workload":W,"ops":N,"ops_per_s":X,"p50_ms":Y,"p99_ms":Z,...}`.

mod cycle;
mod failover;
mod fleet;
mod heartbeat;
mod raw;
mod scale;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// C clients, one session each, looping: check out one seat, check it in.
    Cycle(cycle::Args),
    /// L sessions over C connections, each renewed in its own loop as fast as answered.
    Heartbeat(heartbeat::Args),
    /// `cycle` while the leader is killed (SIGKILL): the longest checkout gap, and
    /// whether any acknowledged lease was lost.
    Failover(failover::Args),
    /// N sessions holding a seat each: memory per node, failover and mass expiry.
    Scale(scale::Args),
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    raw::set_base_options(ctx.connect_options()?);
    match cmd {
        Cmd::Cycle(a) => cycle::run(ctx, a).await,
        Cmd::Heartbeat(a) => heartbeat::run(ctx, a).await,
        Cmd::Failover(a) => failover::run(ctx, a).await,
        Cmd::Scale(a) => scale::run(ctx, a).await,
    }
}

/// Per-operation latencies in nanoseconds, gathered per task without locking and merged
/// at the end: sorting a few million numbers once is cheaper than any shared histogram.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub fn with_capacity(n: usize) -> Self {
        Latencies(Vec::with_capacity(n))
    }

    pub fn record(&mut self, d: Duration) {
        self.0.push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// Sorts once, so that quantiles can be read.
    pub fn finish(mut self) -> Sorted {
        self.0.sort_unstable();
        Sorted(self.0)
    }
}

/// Latencies in ascending order.
#[derive(Debug)]
pub struct Sorted(Vec<u64>);

impl Sorted {
    /// The nearest-rank quantile `q` (0..=1) in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        let rank = (q * self.0.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.0.len()) - 1;
        self.0[i] as f64 / 1e6
    }
}

/// Rounds to microseconds, so the JSON line stays readable.
pub fn ms(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Prints the result line: the common fields, then `extra`.
pub fn report(
    workload: &str,
    ops: u64,
    elapsed: Duration,
    lat: Latencies,
    extra: serde_json::Value,
) {
    let lat = lat.finish();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut line = serde_json::json!({
        "system": "tally",
        "workload": workload,
        "ops": ops,
        "ops_per_s": (ops as f64 / secs).round(),
        "p50_ms": ms(lat.quantile_ms(0.50)),
        "p99_ms": ms(lat.quantile_ms(0.99)),
        "elapsed_s": ms(secs),
    });
    if let (Some(l), serde_json::Value::Object(e)) = (line.as_object_mut(), extra) {
        l.extend(e);
    }
    println!("{line}");
}

/// The process id `three-nodes.sh` recorded for node `n` in `dir`.
pub fn node_pid(dir: &Path, n: u64) -> anyhow::Result<u32> {
    let f = dir.join(format!("node{n}.pid"));
    let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} does not hold a process id", f.display()))
}

/// SIGKILL, as a crash would: the `kill` command keeps this tool free of libc bindings.
pub fn kill9(pid: u32) -> anyhow::Result<()> {
    let st = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(st.success(), "kill -9 {pid} failed ({st})");
    Ok(())
}

/// The id of the node leading now, as the cluster reports it (0 while electing).
pub async fn leader_id(cluster: &tally_client::Cluster) -> anyhow::Result<u64> {
    Ok(leader_and_term(cluster).await?.0)
}

/// The leader's id (0 while an election runs) and the Raft term, as the answering node
/// knows them.
pub async fn leader_and_term(cluster: &tally_client::Cluster) -> anyhow::Result<(u64, u64)> {
    use tally_client::proto::v1 as pb;
    use tally_client::proto::v1::admin_client::AdminClient;
    let st = cluster
        .call("status", |ch| async move {
            AdminClient::new(ch)
                .cluster_status(pb::ClusterStatusRequest {})
                .await
        })
        .await?;
    Ok((st.leader_id, st.term))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for i in 1..=100u64 {
            l.record(Duration::from_millis(i));
        }
        let s = l.finish();
        assert_eq!(s.quantile_ms(0.5), 50.0);
        assert_eq!(s.quantile_ms(0.99), 99.0);
        assert_eq!(s.quantile_ms(1.0), 100.0);
        assert_eq!(Latencies::default().finish().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn one_sample_is_every_quantile() {
        let mut l = Latencies::default();
        l.record(Duration::from_micros(1500));
        let s = l.finish();
        assert_eq!((s.quantile_ms(0.01), s.quantile_ms(0.99)), (1.5, 1.5));
    }
}
