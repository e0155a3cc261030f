//! `tallyctl status` and the table printer the listings share.

use std::time::Duration;

use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::{Cluster, ConnectOptions};

use crate::Ctx;

#[derive(clap::Subcommand, Debug)]
pub enum NodeCmd {
    /// Add a started node as a learner; returns once it has caught up with the log.
    Add {
        /// The new node's id (its `--id`), unused in the cluster so far.
        id: u64,
        /// The address other nodes and clients dial, HOST:PORT.
        addr: String,
    },
    /// Set the complete list of voters (e.g. 1,2,3,4 to promote learner 4; 1,2,3 to
    /// demote node 4, which can then be stopped).
    Voters {
        /// Every voter's id, comma-separated.
        #[arg(value_delimiter = ',', required = true)]
        ids: Vec<u64>,
    },
    /// Take a node out of the cluster: out of the voters first if it is one (refused
    /// when the voters left that answer would be short of a quorum), then out of the
    /// members. Stop it afterwards.
    Remove {
        /// The node's id.
        id: u64,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCmd {
    /// Set the ledger's time back to the leader's clock, for the day a wrong time got
    /// into the log (every clock of the site was wrong at once, say): fix the clocks
    /// first. Sessions' TTLs restart; seats revoked meanwhile stay revoked.
    RepairClock {
        /// Why, for the server's log (with your certificate's name).
        #[arg(long, default_value = "repaired with tallyctl")]
        reason: String,
    },
    /// Show the time zone license dates are read in, or set it. A date such as
    /// 31-dec-2027 ends at midnight in this zone (FlexNet reads dates in its server's
    /// local calendar); UTC until set. It is a cluster setting, the same on every node:
    /// setting it moves every license's start and end at once, and seats of a term
    /// that has ended in the new zone are revoked.
    TimeZone {
        /// An IANA zone name to set (Europe/Berlin, America/Los_Angeles, UTC; any
        /// case). Without it, the current zone is shown.
        zone: Option<String>,
        /// Why, for the server's log (with your certificate's name).
        #[arg(long, default_value = "set with tallyctl")]
        reason: String,
    },
}

pub async fn cluster(ctx: &Ctx, cmd: ClusterCmd) -> anyhow::Result<()> {
    let reason = match cmd {
        ClusterCmd::RepairClock { reason } => reason,
        ClusterCmd::TimeZone { zone, reason } => return time_zone(ctx, zone, reason).await,
    };
    let req = pb::RepairClockRequest { reason };
    let r = ctx
        .cluster()?
        .call("cluster repair-clock", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).repair_clock(req).await }
        })
        .await?;
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"from_ms": r.from_ms, "to_ms": r.to_ms, "repaired": r.from_ms != r.to_ms})
        );
    } else if r.from_ms == r.to_ms {
        println!("ledger time is not ahead of the leader's clock: nothing to repair");
    } else {
        println!(
            "ledger time set back by {} ms (from {} to {} ms since the epoch)",
            r.from_ms - r.to_ms,
            r.from_ms,
            r.to_ms
        );
    }
    Ok(())
}

/// `tallyctl cluster time-zone [ZONE]`.
async fn time_zone(ctx: &Ctx, zone: Option<String>, reason: String) -> anyhow::Result<()> {
    let c = ctx.cluster()?;
    let r = match &zone {
        None => {
            c.call("cluster time-zone", |ch| async move {
                AdminClient::new(ch)
                    .get_time_zone(pb::GetTimeZoneRequest {})
                    .await
            })
            .await?
        }
        Some(zone) => {
            let req = pb::SetTimeZoneRequest {
                zone: zone.clone(),
                reason,
            };
            c.call("cluster time-zone", |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).set_time_zone(req).await }
            })
            .await?
        }
    };
    if ctx.json {
        let mut j = serde_json::json!({
            "time_zone": r.zone, "set": r.set, "tzdb_version": r.tzdb_version,
        });
        if let (Some(m), Some(_)) = (j.as_object_mut(), &zone) {
            m.insert("previous".into(), r.previous.clone().into());
            m.insert("changed".into(), r.changed.into());
            m.insert("revoked_leases".into(), r.revoked_leases.clone().into());
        }
        println!("{j}");
        return Ok(());
    }
    print!("{}", time_zone_text(&r, zone.is_some()));
    Ok(())
}

/// What `cluster time-zone` prints: what the zone is, and after a set what changed.
fn time_zone_text(r: &pb::TimeZoneResponse, asked_to_set: bool) -> String {
    let mut out = String::new();
    let previous = if r.previous.is_empty() {
        "UTC (none set)"
    } else {
        &r.previous
    };
    if asked_to_set && r.changed {
        out.push_str(&format!(
            "time zone set to {} (was {previous}): license dates end at midnight there from now on\n",
            r.zone
        ));
        if !r.revoked_leases.is_empty() {
            out.push_str(&format!(
                "revoked {} lease(s) whose license term has ended in {}: {:?}\n",
                r.revoked_leases.len(),
                r.zone,
                r.revoked_leases
            ));
        }
    } else if asked_to_set {
        out.push_str(&format!(
            "time zone is already {}: nothing changed\n",
            r.zone
        ));
    } else if r.set {
        out.push_str(&format!(
            "time zone: {}: license dates end at midnight there (zone rules: IANA {})\n",
            r.zone, r.tzdb_version
        ));
    } else {
        out.push_str(&format!(
            "time zone: {} (none set): license dates end at midnight UTC; `tallyctl cluster time-zone ZONE` sets one\n",
            r.zone
        ));
    }
    out
}

pub async fn node(ctx: &Ctx, cmd: NodeCmd) -> anyhow::Result<()> {
    let c = ctx.cluster()?;
    let r = match cmd {
        NodeCmd::Add { id, addr } => {
            let req = pb::AddLearnerRequest {
                node_id: id,
                grpc_addr: addr,
                http_addr: String::new(),
            };
            // The leader answers once the learner caught up, or after its own bound
            // (40 s at most): wait longer than that for the answer.
            let c = c.with_options(tally_client::ConnectOptions {
                request_timeout: std::time::Duration::from_secs(60),
                ..c.options().clone()
            });
            c.call("node add", |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).add_learner(req).await }
            })
            .await?
        }
        NodeCmd::Voters { ids } => {
            let req = pb::ChangeMembershipRequest { voters: ids };
            c.call("node voters", |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).change_membership(req).await }
            })
            .await?
        }
        NodeCmd::Remove { id } => {
            let req = pb::RemoveNodeRequest { node_id: id };
            c.call("node remove", |ch| async move {
                AdminClient::new(ch).remove_node(req).await
            })
            .await?
        }
    };
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"voters": r.voters, "learners": r.learners, "log_index": r.log_index})
        );
    } else {
        println!(
            "voters {:?}, learners {:?} (at log index {})",
            r.voters, r.learners, r.log_index
        );
    }
    Ok(())
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

pub fn role_name(r: i32) -> &'static str {
    match pb::NodeRole::try_from(r) {
        Ok(pb::NodeRole::Leader) => "leader",
        Ok(pb::NodeRole::Follower) => "follower",
        Ok(pb::NodeRole::Candidate) => "candidate",
        Ok(pb::NodeRole::Learner) => "learner",
        _ => "unknown",
    }
}

async fn ask(c: &Cluster, addr: &str) -> Result<pb::ClusterStatusResponse, tally_client::Error> {
    c.call_node(addr, "status", |ch| async move {
        AdminClient::new(ch)
            .cluster_status(pb::ClusterStatusRequest {})
            .await
    })
    .await
}

/// The membership from any node, then each member's own view of itself, asked in
/// parallel with a short timeout so one dead node does not stall the report.
pub async fn status(ctx: &Ctx) -> anyhow::Result<()> {
    let first = ctx
        .cluster()?
        .call("status", |ch| async move {
            AdminClient::new(ch)
                .cluster_status(pb::ClusterStatusRequest {})
                .await
        })
        .await?;
    let quick = Cluster::new(
        &ctx.endpoints,
        ConnectOptions {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            ..ctx.connect_options()?
        },
    )?;
    let mut asks = Vec::new();
    for n in &first.nodes {
        let (c, addr) = (quick.clone(), n.grpc_addr.clone());
        asks.push(tokio::spawn(async move { ask(&c, &addr).await }));
    }
    let mut nodes = Vec::new();
    let mut leader_id = first.leader_id;
    let mut term = first.term;
    for (n, a) in first.nodes.iter().zip(asks) {
        let own = match a.await {
            Ok(Ok(r)) => {
                if r.term > term {
                    term = r.term;
                    leader_id = r.leader_id;
                }
                r.nodes
                    .into_iter()
                    .find(|x| x.id == r.answered_by)
                    .ok_or_else(|| format!("node {} answered without its own entry", r.answered_by))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("status task failed: {e}")),
        };
        nodes.push((n, own));
    }
    let unreachable: Vec<u64> = nodes
        .iter()
        .filter(|(_, own)| own.is_err())
        .map(|(n, _)| n.id)
        .collect();
    let members: Vec<u64> = first.nodes.iter().map(|n| n.id).collect();
    let verdict = crate::verdict::judge(&members, &first.voters, &unreachable, leader_id, term);
    if ctx.json {
        let v: Vec<_> = nodes
            .iter()
            .map(|(n, own)| {
                let mut j = match own {
                    Ok(o) => serde_json::json!({
                        "id": n.id, "addr": n.grpc_addr, "role": role_name(o.role),
                        "term": o.term, "last_log_index": o.last_log_index,
                        "applied_index": o.applied_index, "healthy": true,
                    }),
                    Err(e) => serde_json::json!({
                        "id": n.id, "addr": n.grpc_addr, "role": "unreachable",
                        "healthy": false, "error": e,
                    }),
                };
                let c = Clock::of(n, own.as_ref().ok());
                if let Some(m) = j.as_object_mut() {
                    m.insert("clock_offset_ms".into(), c.offset_ms.into());
                    m.insert("clock_measured_ms_ago".into(), c.measured_ms_ago.into());
                    m.insert("clock_ok".into(), c.ok.into());
                    m.insert("clock_problem".into(), c.problem.into());
                }
                j
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "leader_id": leader_id, "term": term, "nodes": v,
                "voters": first.voters, "learners": first.learners,
                "cluster_id": first.cluster_id,
                "time_zone": (!first.time_zone.is_empty()).then_some(&first.time_zone),
                "max_clock_offset_ms": first.max_clock_offset_ms,
                "clock_reference": first.answered_by,
                "verdict": verdict.word(), "problem": verdict.problem(),
            })
        );
        return verdict_exit(&verdict);
    }
    let leader = if leader_id == 0 {
        "none (election in progress)".to_owned()
    } else if unreachable.contains(&leader_id) {
        format!("none reachable (node {leader_id} led and does not answer)")
    } else {
        format!("node {leader_id}")
    };
    println!("leader: {leader}, term {term}");
    if let Some(p) = verdict.problem() {
        println!("{}", p.to_uppercase().split_at(1).0.to_owned() + &p[1..]);
    }
    if first.cluster_id.is_empty() {
        println!("cluster id: none yet (the first leader makes it)");
    } else {
        println!(
            "cluster id: {} (for CLUSTER= locked licenses)",
            first.cluster_id
        );
    }
    if first.time_zone.is_empty() {
        println!("time zone: UTC (none set; license dates end at midnight UTC)");
    } else {
        println!(
            "time zone: {} (license dates end at midnight there)",
            first.time_zone
        );
    }
    println!(
        "clock: each node's wall clock minus node {}'s, as node {} measured it; a node more than {} ms off a quorum does not lead",
        first.answered_by, first.answered_by, first.max_clock_offset_ms
    );
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|(n, own)| {
            let mut row = match own {
                Ok(o) => vec![
                    n.id.to_string(),
                    n.grpc_addr.clone(),
                    role_name(o.role).into(),
                    o.term.to_string(),
                    o.last_log_index.to_string(),
                    o.applied_index.to_string(),
                    "ok".into(),
                ],
                Err(e) => vec![
                    n.id.to_string(),
                    n.grpc_addr.clone(),
                    "unreachable".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("DOWN: {e}"),
                ],
            };
            row.push(Clock::of(n, own.as_ref().ok()).cell());
            row
        })
        .collect();
    table(
        &[
            "ID", "ADDRESS", "ROLE", "TERM", "LAST LOG", "APPLIED", "HEALTH", "CLOCK",
        ],
        &rows,
    );
    verdict_exit(&verdict)
}

/// `status` exits 0 only for a healthy cluster (see `EXIT_CODES`).
fn verdict_exit(v: &crate::verdict::Verdict) -> anyhow::Result<()> {
    use crate::verdict::Verdict;
    match v {
        Verdict::Healthy => Ok(()),
        Verdict::Degraded(p) => Err(crate::Unhealthy {
            code: 7,
            what: p.clone(),
        }
        .into()),
        Verdict::NoLeader(p) => Err(crate::Unhealthy {
            code: 3,
            what: p.clone(),
        }
        .into()),
    }
}

/// One node's clock in status: the offset as the reference node (the one that answered
/// the membership question) measured it, and the node's own verdict when it answered
/// itself, else what it last told the reference node.
#[derive(Debug)]
struct Clock {
    offset_ms: Option<i64>,
    measured_ms_ago: u64,
    ok: bool,
    problem: String,
}

impl Clock {
    fn of(reference: &pb::NodeStatus, own: Option<&pb::NodeStatus>) -> Clock {
        let verdict = own.unwrap_or(reference);
        Clock {
            offset_ms: reference.clock_offset_ms,
            measured_ms_ago: reference.clock_measured_ms_ago,
            ok: verdict.clock_ok,
            problem: verdict.clock_problem.clone(),
        }
    }

    /// `+0 ms`, `+157680000123 ms BAD: <why>`, `?` when never measured. The reason is
    /// cut to its first clause (who is off by how much); `--json` has all of it.
    fn cell(&self) -> String {
        let Some(off) = self.offset_ms else {
            return "?".into();
        };
        if self.ok {
            format!("{off:+} ms")
        } else if self.problem.is_empty() {
            format!("{off:+} ms (no verdict yet)")
        } else {
            let short = self.problem.split(';').next().unwrap_or_default();
            format!("{off:+} ms BAD: {short}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::time_zone_text;
    use tally_client::proto::v1 as pb;

    #[test]
    fn time_zone_answers_read_as_what_happened() {
        let la = |set, previous: &str, changed, revoked: Vec<u64>| pb::TimeZoneResponse {
            zone: "America/Los_Angeles".into(),
            set,
            previous: previous.into(),
            changed,
            tzdb_version: "2025b".into(),
            revoked_leases: revoked,
        };
        // (answer, whether a zone was given, what is printed)
        let table = [
            (
                la(true, "", false, vec![]),
                false,
                "time zone: America/Los_Angeles: license dates end at midnight there (zone rules: IANA 2025b)\n",
            ),
            (
                pb::TimeZoneResponse {
                    zone: "UTC".into(),
                    ..la(false, "", false, vec![])
                },
                false,
                "time zone: UTC (none set): license dates end at midnight UTC; `tallyctl cluster time-zone ZONE` sets one\n",
            ),
            (
                la(true, "", true, vec![]),
                true,
                "time zone set to America/Los_Angeles (was UTC (none set)): license dates end at midnight there from now on\n",
            ),
            (
                la(true, "UTC", true, vec![7, 9]),
                true,
                "time zone set to America/Los_Angeles (was UTC): license dates end at midnight there from now on\nrevoked 2 lease(s) whose license term has ended in America/Los_Angeles: [7, 9]\n",
            ),
            (
                la(true, "America/Los_Angeles", false, vec![]),
                true,
                "time zone is already America/Los_Angeles: nothing changed\n",
            ),
        ];
        for (r, set, want) in table {
            assert_eq!(time_zone_text(&r, set), want, "{r:?}");
        }
    }
}
