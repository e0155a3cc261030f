//! What the HTTP port shows, as plain data taken from one node under a brief lock, and
//! the three renderings of it: Prometheus text, the dashboard page and readiness. Pure
//! functions of a [`View`], so they are tested without a server.

use std::fmt::Write as _;

use openraft::ServerState;

use crate::node::Shared;

/// One node's picture of the cluster and of its applied ledger.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub node: u64,
    pub cluster: String,
    pub term: u64,
    /// 0: no leader known.
    pub leader: u64,
    pub state: &'static str,
    /// Leader only: it heard from a quorum recently enough to serve heartbeats.
    pub sure_leader: bool,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// The leader's time as of the last applied entry (ms since the epoch).
    pub ledger_ms: u64,
    pub sessions: u64,
    pub leases: u64,
    pub members: Vec<Member>,
    pub features: Vec<Feature>,
    /// Why this node's clock may not lead (`None`: it agrees with a quorum of voters).
    pub clock_problem: Option<String>,
    /// Each measured peer's wall clock minus this node's (ms).
    pub clock_offsets: Vec<(u64, i64)>,
    /// Heartbeat refusals and quorum-ack ages (see `stats.rs`).
    pub stats: crate::stats::StatsView,
    /// The log store's durable writes (see `store::log`).
    pub log_write_ms: crate::stats::HistogramView,
    /// Seat events this node applied since it started, per kind of audit line, and
    /// denials per reason (see `store/audit.rs`).
    pub seat_events: Vec<(&'static str, u64)>,
    pub denials: Vec<(String, u64)>,
    /// Under-licensing alerts this node applied since it started (usage history).
    pub short_alerts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
    pub voter: bool,
    /// Leader only: how far this member's log matches the leader's.
    pub matched: Option<u64>,
    /// How long ago this node last heard the member answer a clock ping (pinged twice a
    /// second): 0 for this node itself, `None` if never.
    pub heard_ms_ago: Option<u64>,
}

impl Member {
    pub fn up(&self) -> bool {
        self.heard_ms_ago
            .is_some_and(|a| a <= crate::clock::MEMBER_DOWN_AFTER_MS)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub name: String,
    /// For an `uncounted` feature, a number far above any count.
    pub issued: u64,
    pub in_use: u64,
    pub lingering: u64,
    pub overdraft_limit: u64,
    pub queued: u64,
    /// Use beyond the licensed count: seats in use, or named users assigned, over it.
    pub short: u64,
    /// `active`, `expiring`, `grace`, `demo`, `expired` or `not_started`.
    pub term: &'static str,
    /// Whole days until the term's next change (end, grace's end, start); `None` when
    /// there is none (permanent, demo, expired).
    pub days_left: Option<u64>,
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

impl View {
    /// Reads the node's Raft metrics and applied state. The state machine's read lock
    /// is held only while counting, so applies wait at most that long.
    pub fn of(shared: &Shared) -> View {
        let m = shared.metrics();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                matched: crate::admin::matched_index(&m, *id),
                heard_ms_ago: if *id == shared.id {
                    Some(0)
                } else {
                    let c = shared.clock.member(*id);
                    c.offset_ms.map(|_| c.measured_ms_ago)
                },
            })
            .collect();
        let state = state_name(m.state);
        let sm = shared.sm.read();
        let l = &sm.ledger;
        let mut queued = std::collections::BTreeMap::<&str, u64>::new();
        for (_, w) in l.waiters() {
            *queued.entry(w.feature.as_str()).or_default() += 1;
        }
        let features = l
            .features()
            .into_iter()
            .map(|f| Feature {
                queued: queued.get(f.name.as_str()).copied().unwrap_or(0),
                term: crate::convert::term_name(&f.term),
                days_left: match crate::convert::term_until(&f.term) {
                    0 => None,
                    t => Some(t.saturating_sub(l.now_ms()) / 86_400_000),
                },
                short: f.in_use.max(f.assigned).saturating_sub(f.issued),
                name: f.name,
                issued: f.issued,
                in_use: f.in_use,
                lingering: f.lingering,
                overdraft_limit: f.overdraft_limit,
            })
            .collect();
        let (sessions, leases) = (l.sessions().len() as u64, l.leases().len() as u64);
        let (seat_events, denials) = sm.audit_counts();
        let short_alerts = sm.short_alerts;
        View {
            node: shared.id,
            cluster: shared.cfg.cluster_name.clone(),
            term: m.current_term,
            leader: m.current_leader.unwrap_or(0),
            state,
            sure_leader: shared.sure_leader(),
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |x| x.index),
            ledger_ms: l.now_ms(),
            sessions,
            leases,
            members,
            features,
            clock_problem: shared.clock.check().err(),
            clock_offsets: shared
                .clock
                .estimates()
                .into_iter()
                .map(|(id, e)| (id, e.offset_ms))
                .collect(),
            stats: shared.stats.view(),
            log_write_ms: shared.log.write_ms(),
            seat_events,
            denials,
            short_alerts,
        }
    }

    /// Only what [`View::readiness`] reads, without counting the ledger's features and
    /// sessions under its lock: cheap enough to ask every quarter second (the readiness
    /// watcher behind the gRPC health service and systemd's status does).
    pub fn for_readiness(shared: &Shared) -> View {
        let (term, leader, state, last_log_index, applied_index) = {
            let metrics = shared.raft.metrics();
            let m = metrics.borrow();
            (
                m.current_term,
                m.current_leader.unwrap_or(0),
                state_name(m.state),
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |x| x.index),
            )
        };
        // After the metrics' borrow is released: the lease reads them too.
        View {
            node: shared.id,
            cluster: shared.cfg.cluster_name.clone(),
            term,
            leader,
            state,
            sure_leader: shared.sure_leader(),
            last_log_index,
            applied_index,
            clock_problem: shared.clock.check().err(),
            ..View::default()
        }
    }

    /// Ready to serve: part of a cluster that has a leader, with a clock that agrees with
    /// its peers', and if this node is that leader, one a quorum still follows.
    /// Otherwise the reason, for the load balancer's log and the person reading it.
    pub fn readiness(&self) -> Result<String, String> {
        if self.leader == 0 {
            return Err(format!(
                "node {} knows no leader (term {}): an election is running, or this node cannot reach a quorum",
                self.node, self.term
            ));
        }
        if let Some(p) = &self.clock_problem {
            return Err(format!("node {}'s clock is off: {p}", self.node));
        }
        if self.leader == self.node && !self.sure_leader {
            return Err(format!(
                "node {} is leader of term {} but has not heard from a quorum within the election timeout",
                self.node, self.term
            ));
        }
        Ok(format!(
            "ready: node {} ({}), leader {}, term {}, applied {}",
            self.node, self.state, self.leader, self.term, self.applied_index
        ))
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn metrics(&self) -> String {
        let mut o = String::new();
        let mut gauge = |name: &str, help: &str, rows: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let one = |v: u64| [(String::new(), v.to_string())];
        gauge(
            "tally_node_info",
            "This node's id and cluster name.",
            &[(
                format!(
                    "{{node=\"{}\",cluster=\"{}\",state=\"{}\"}}",
                    self.node,
                    label(&self.cluster),
                    self.state
                ),
                "1".into(),
            )],
        );
        gauge("tally_raft_term", "Current Raft term.", &one(self.term));
        gauge(
            "tally_raft_leader_id",
            "The leader this node knows of (0: none).",
            &one(self.leader),
        );
        gauge(
            "tally_raft_is_leader",
            "1 if this node is leader and a quorum follows it.",
            &one(u64::from(self.leader == self.node && self.sure_leader)),
        );
        gauge(
            "tally_raft_last_log_index",
            "Last index in this node's log.",
            &one(self.last_log_index),
        );
        gauge(
            "tally_raft_applied_index",
            "Last index this node applied to its ledger.",
            &one(self.applied_index),
        );
        let matched: Vec<(String, String)> = self
            .members
            .iter()
            .filter_map(|m| {
                m.matched
                    .map(|i| (format!("{{member=\"{}\"}}", m.id), i.to_string()))
            })
            .collect();
        gauge(
            "tally_raft_member_matched_index",
            "Leader only: the last index each member's log matches.",
            &matched,
        );
        let up: Vec<(String, String)> = self
            .members
            .iter()
            .map(|m| {
                (
                    format!("{{member=\"{}\"}}", m.id),
                    u64::from(m.up()).to_string(),
                )
            })
            .collect();
        gauge(
            "tally_raft_member_up",
            "1 if this node heard the member answer within the last 3 s (clock pings), 0 if not: every member keeps a series while it is down.",
            &up,
        );
        gauge(
            "tally_clock_ok",
            "1 if this node's wall clock agrees with a quorum of the voters' (it may lead).",
            &one(u64::from(self.clock_problem.is_none())),
        );
        let offsets: Vec<(String, String)> = self
            .clock_offsets
            .iter()
            .map(|(id, off)| (format!("{{peer=\"{id}\"}}"), off.to_string()))
            .collect();
        gauge(
            "tally_clock_offset_ms",
            "Each peer's wall clock minus this node's, as last measured.",
            &offsets,
        );
        gauge(
            "tally_sessions",
            "Live sessions in the applied ledger.",
            &one(self.sessions),
        );
        gauge(
            "tally_leases",
            "Checkouts held in the applied ledger.",
            &one(self.leases),
        );
        let per = |f: fn(&Feature) -> String| -> Vec<(String, String)> {
            self.features
                .iter()
                .map(|x| (format!("{{feature=\"{}\"}}", label(&x.name)), f(x)))
                .collect()
        };
        let issued = per(|f| {
            if uncounted(f.issued) {
                "+Inf".to_owned()
            } else {
                f.issued.to_string()
            }
        });
        gauge(
            "tally_feature_seats_issued",
            "Licensed seats counting now, per feature (+Inf: uncounted).",
            &issued,
        );
        gauge(
            "tally_feature_seats_in_use",
            "Seats charged (held or lingering), per feature.",
            &per(|f| f.in_use.to_string()),
        );
        gauge(
            "tally_feature_seats_lingering",
            "Of the seats in use, those lingering after release.",
            &per(|f| f.lingering.to_string()),
        );
        gauge(
            "tally_feature_overdraft_limit",
            "Seats grantable beyond the count, per feature.",
            &per(|f| f.overdraft_limit.to_string()),
        );
        gauge(
            "tally_feature_overdraft_in_use",
            "Seats in use beyond the count, per feature.",
            &per(|f| f.in_use.saturating_sub(f.issued).to_string()),
        );
        gauge(
            "tally_feature_short",
            "Use beyond the licensed count, per feature: seats in use (or named users assigned) over it. Above 0 is under-licensing: the site owes a true-up.",
            &per(|f| f.short.to_string()),
        );
        gauge(
            "tally_feature_queued",
            "Checkouts waiting in the queue, per feature.",
            &per(|f| f.queued.to_string()),
        );
        let terms: Vec<(String, String)> = self
            .features
            .iter()
            .map(|f| {
                (
                    format!("{{feature=\"{}\",state=\"{}\"}}", label(&f.name), f.term),
                    "1".to_owned(),
                )
            })
            .collect();
        gauge(
            "tally_feature_term_state",
            "The feature's license term state (1 for the state it is in): active, expiring, grace, demo, expired or not_started.",
            &terms,
        );
        let days: Vec<(String, String)> = self
            .features
            .iter()
            .filter_map(|f| {
                f.days_left
                    .map(|d| (format!("{{feature=\"{}\"}}", label(&f.name)), d.to_string()))
            })
            .collect();
        gauge(
            "tally_feature_term_days_left",
            "Whole days until the feature's term changes next (its end, its grace's end, or its start).",
            &days,
        );
        let s = &self.stats;
        let _ = writeln!(
            o,
            "# HELP tally_heartbeats_refused_total Heartbeat calls refused, by reason: not the leader; leading but not sure of it (no quorum acknowledgement within the lease); leading but deadlines not loaded yet.\n# TYPE tally_heartbeats_refused_total counter"
        );
        for (reason, n) in [
            ("not_leader", s.refused_not_leader),
            ("unsure", s.refused_unsure),
            ("not_loaded", s.refused_not_loaded),
        ] {
            let _ = writeln!(
                o,
                "tally_heartbeats_refused_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP tally_heartbeats_waited_total Heartbeat calls that waited (at most twice election_max_ms) for the leader to be sure of its lead again, or for its deadlines to load, instead of being refused at once; by reason.\n# TYPE tally_heartbeats_waited_total counter"
        );
        for (reason, n) in [
            ("unsure", s.waited_unsure),
            ("not_loaded", s.waited_not_loaded),
        ] {
            let _ = writeln!(
                o,
                "tally_heartbeats_waited_total{{reason=\"{reason}\"}} {n}"
            );
        }
        histogram(
            &mut o,
            "tally_raft_quorum_ack_age_ms",
            "Leader only: the age of its last quorum acknowledgement, sampled every 100 ms.",
            &s.ack_age,
        );
        histogram(
            &mut o,
            "tally_raft_append_rtt_ms",
            "Leader only: how long each answered AppendEntries took, from send to answer, including answers that came after openraft's own deadline (the heartbeat interval).",
            &s.append_rtt,
        );
        histogram(
            &mut o,
            "tally_runtime_lag_ms",
            "How late a 10 ms timer on this node's async runtime woke, sampled continuously: high while the thread lag is low means long tasks hold the runtime.",
            &s.runtime_lag,
        );
        histogram(
            &mut o,
            "tally_raft_runtime_lag_ms",
            "How late a 10 ms timer on the runtime that runs Raft (its core, replication and peer connections) woke: it stays low while client work holds the main runtime.",
            &s.raft_runtime_lag,
        );
        histogram(
            &mut o,
            "tally_thread_lag_ms",
            "How late a 10 ms sleep on a plain OS thread woke, sampled continuously: high means the machine has no CPU for this process.",
            &s.thread_lag,
        );
        histogram(
            &mut o,
            "tally_log_write_ms",
            "How long each durable write of the Raft log took (one fsync), waiting for a blocking thread included; the Raft core waits for it.",
            &self.log_write_ms,
        );
        let _ = writeln!(
            o,
            "# HELP tally_raft_appends_overran_total AppendEntries answered after openraft's deadline (the heartbeat interval): the transport kept them in flight instead of sending the entries again.\n# TYPE tally_raft_appends_overran_total counter\ntally_raft_appends_overran_total {}",
            s.appends_overran
        );
        let _ = writeln!(
            o,
            "# HELP tally_writes_busy_total Client writes answered \"busy\" because limits.max_pending_writes were in flight (clients retry them).\n# TYPE tally_writes_busy_total counter\ntally_writes_busy_total {}",
            s.writes_busy
        );
        let _ = writeln!(
            o,
            "# HELP tally_seat_events_total Seat events this node applied since it started, by the kind of its audit line (out, in, expired, removed, revoked, denied, queued, dequeued).\n# TYPE tally_seat_events_total counter"
        );
        for (event, n) in &self.seat_events {
            let _ = writeln!(o, "tally_seat_events_total{{event=\"{event}\"}} {n}");
        }
        let _ = writeln!(
            o,
            "# HELP tally_short_alerts_total Under-licensing alerts this node applied since it started: use went beyond a feature's licensed count.\n# TYPE tally_short_alerts_total counter\ntally_short_alerts_total {}",
            self.short_alerts
        );
        let _ = writeln!(
            o,
            "# HELP tally_checkouts_denied_total Checkouts denied since this node started, by reason.\n# TYPE tally_checkouts_denied_total counter"
        );
        for (reason, n) in &self.denials {
            let _ = writeln!(
                o,
                "tally_checkouts_denied_total{{reason=\"{}\"}} {n}",
                label(reason)
            );
        }
        o
    }

    /// The dashboard: cluster health and current use per feature, refreshed every 5 s.
    /// User and host names are not shown here: they are an administrator's view
    /// (`tallyctl leases`, over the Admin service and its certificate check).
    pub fn dashboard(&self) -> String {
        let mut o = String::new();
        let _ = write!(
            o,
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
             <title>Tally: {cluster}</title><style>body{{font-family:sans-serif;margin:2em}}\
             table{{border-collapse:collapse;margin-bottom:2em}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
             td:first-child,th:first-child{{text-align:left}}.over{{color:#b00}}</style></head><body>\
             <h1>Tally cluster {cluster}</h1><p>Node {node} ({state}), term {term}, leader {leader}, \
             applied index {applied}; {sessions} sessions, {leases} checkouts. {ready}</p>",
            cluster = html(&self.cluster),
            node = self.node,
            state = self.state,
            term = self.term,
            leader = if self.leader == 0 {
                "none".to_owned()
            } else {
                self.leader.to_string()
            },
            applied = self.applied_index,
            sessions = self.sessions,
            leases = self.leases,
            ready = html(&match self.readiness() {
                Ok(_) => "Ready.".to_owned(),
                Err(e) => format!("NOT READY: {e}."),
            }),
        );
        let down: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.up())
            .map(|m| match m.heard_ms_ago {
                Some(a) => format!("node {} (last heard {} s ago)", m.id, a / 1000),
                None => format!("node {} (never heard)", m.id),
            })
            .collect();
        if !down.is_empty() {
            let _ = write!(
                o,
                "<p class=\"over\"><b>DEGRADED</b>: {} not answering.</p>",
                html(&down.join(", "))
            );
        }
        o.push_str("<h2>Features</h2><table><tr><th>feature</th><th>in use</th><th>issued</th><th>overdraft</th><th>lingering</th><th>queued</th><th>term</th></tr>");
        for f in &self.features {
            let over = if f.in_use > f.issued {
                " class=\"over\""
            } else {
                ""
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td{over}>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td><td{warn}>{}</td></tr>",
                html(&f.name),
                f.in_use,
                if uncounted(f.issued) {
                    "uncounted".to_owned()
                } else {
                    f.issued.to_string()
                },
                f.in_use.saturating_sub(f.issued),
                f.overdraft_limit,
                f.lingering,
                f.queued,
                match f.days_left {
                    Some(d) if f.term != "active" => format!("{} ({d} days)", f.term),
                    _ => f.term.to_owned(),
                },
                warn = if matches!(f.term, "active" | "not_started") {
                    ""
                } else {
                    " class=\"over\""
                },
            );
        }
        o.push_str("</table><h2>Members</h2><table><tr><th>node</th><th>address</th><th>role</th><th>log matched (as the leader sees it)</th><th>clock (minus this node's)</th></tr>");
        for m in &self.members {
            let role = if m.id == self.leader {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            let role = if m.up() {
                role.to_owned()
            } else {
                format!("{role}, DOWN")
            };
            let matched = m.matched.map_or("-".to_owned(), |i| i.to_string());
            let clock = if m.id == self.node {
                "this node".to_owned()
            } else {
                self.clock_offsets
                    .iter()
                    .find(|(id, _)| *id == m.id)
                    .map_or("?".to_owned(), |(_, off)| format!("{off:+} ms"))
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{role}</td><td>{matched}</td><td>{clock}</td></tr>",
                m.id,
                html(&m.addr)
            );
        }
        o.push_str("</table></body></html>\n");
        o
    }
}

/// An `uncounted` feature's issued seats: the ledger reports "no limit" as a number far
/// above any count (the same threshold as `tallyctl features`).
/// Writes one Prometheus histogram (cumulative buckets, +Inf, sum, count).
fn histogram(o: &mut String, name: &str, help: &str, h: &crate::stats::HistogramView) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (i, bound) in h.bounds.iter().enumerate() {
        let n = h.cumulative.get(i).copied().unwrap_or(0);
        let _ = writeln!(o, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let count = h.cumulative.last().copied().unwrap_or(0);
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_sum {}", h.sum_ms);
    let _ = writeln!(o, "{name}_count {count}");
}

fn uncounted(issued: u64) -> bool {
    issued >= u64::from(u32::MAX)
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Escapes text for HTML.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View {
            node: 2,
            cluster: "acme".into(),
            term: 7,
            leader: 1,
            state: "follower",
            applied_index: 40,
            last_log_index: 41,
            sessions: 3,
            leases: 4,
            members: vec![Member {
                id: 1,
                addr: "h1:27000".into(),
                voter: true,
                matched: None,
                heard_ms_ago: Some(400),
            }],
            features: vec![Feature {
                name: "cad".into(),
                issued: 2,
                in_use: 3,
                lingering: 1,
                overdraft_limit: 1,
                queued: 5,
                short: 1,
                term: "grace",
                days_left: Some(3),
            }],
            ..View::default()
        }
    }

    #[test]
    fn readiness_needs_a_leader_and_a_leader_needs_its_quorum() {
        let v = view();
        assert!(v.readiness().unwrap().contains("leader 1"));
        let none = View {
            leader: 0,
            ..view()
        };
        assert!(none.readiness().unwrap_err().contains("knows no leader"));
        let lonely = View {
            leader: 2,
            sure_leader: false,
            ..view()
        };
        assert!(lonely.readiness().unwrap_err().contains("quorum"));
        let leader = View {
            leader: 2,
            sure_leader: true,
            ..view()
        };
        assert!(leader.readiness().is_ok());
        let skewed = View {
            clock_problem: Some("this node's clock is 30000 ms ahead of node 1".into()),
            ..view()
        };
        let e = skewed.readiness().unwrap_err();
        assert!(
            e.contains("clock is off") && e.contains("30000 ms ahead of node 1"),
            "{e}"
        );
    }

    #[test]
    fn clock_metrics_show_the_verdict_and_each_peers_offset() {
        let good = View {
            clock_offsets: vec![(1, -3), (3, 157_680_000_123)],
            ..view()
        };
        let m = good.metrics();
        assert!(
            m.contains("# TYPE tally_clock_ok gauge\ntally_clock_ok 1\n"),
            "{m}"
        );
        assert!(m.contains("# TYPE tally_clock_offset_ms gauge\n"));
        assert!(m.contains("tally_clock_offset_ms{peer=\"1\"} -3\n"));
        assert!(m.contains("tally_clock_offset_ms{peer=\"3\"} 157680000123\n"));
        let bad = View {
            clock_problem: Some("off".into()),
            ..good
        };
        assert!(bad.metrics().contains("\ntally_clock_ok 0\n"));
        let h = bad.dashboard();
        assert!(h.contains("<td>-3 ms</td></tr>"), "{h}");
        assert!(h.contains("NOT READY: node 2's clock is off"), "{h}");
    }

    #[test]
    fn metrics_are_prometheus_text_with_escaped_labels() {
        let v = View {
            features: vec![Feature {
                name: "we\"ird\\".into(),
                ..view().features[0].clone()
            }],
            ..view()
        };
        let m = v.metrics();
        assert!(
            m.contains("# TYPE tally_feature_seats_in_use gauge\n"),
            "{m}"
        );
        assert!(m.contains("tally_feature_seats_in_use{feature=\"we\\\"ird\\\\\"} 3\n"));
        assert!(m.contains("tally_feature_overdraft_in_use{feature=\"we\\\"ird\\\\\"} 1\n"));
        assert!(m.contains("tally_feature_short{feature=\"we\\\"ird\\\\\"} 1\n"));
        assert!(m.contains("tally_raft_is_leader 0\n"));
        assert!(
            m.contains("tally_feature_term_state{feature=\"we\\\"ird\\\\\",state=\"grace\"} 1\n"),
            "{m}"
        );
        assert!(
            m.contains("tally_feature_term_days_left{feature=\"we\\\"ird\\\\\"} 3\n"),
            "{m}"
        );
        assert!(m.contains("tally_node_info{node=\"2\",cluster=\"acme\",state=\"follower\"} 1\n"));
        let counted = View {
            seat_events: vec![("out", 4), ("denied", 1)],
            denials: vec![("no_seats".into(), 1)],
            ..view()
        }
        .metrics();
        assert!(
            counted.contains("tally_seat_events_total{event=\"out\"} 4\n"),
            "{counted}"
        );
        assert!(counted.contains("tally_checkouts_denied_total{reason=\"no_seats\"} 1\n"));
        // Every sample line is `name{labels} value` or `name value`.
        let v = View {
            clock_offsets: vec![(1, -7)],
            ..v
        };
        for line in v.metrics().lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<i64>().is_ok(), "{line}");
        }
        let free = View {
            features: vec![Feature {
                issued: u64::MAX / 4,
                ..view().features[0].clone()
            }],
            ..view()
        };
        assert!(free
            .metrics()
            .contains("tally_feature_seats_issued{feature=\"cad\"} +Inf\n"));
        assert!(free.dashboard().contains("<td>uncounted</td>"));
    }

    #[test]
    fn the_dashboard_escapes_names_and_marks_overdraft() {
        let v = View {
            cluster: "a<b".into(),
            ..view()
        };
        let h = v.dashboard();
        assert!(h.contains("Tally cluster a&lt;b") && !h.contains("a<b"));
        assert!(h.contains("<td class=\"over\">3</td>"), "{h}");
        assert!(h.contains("1 of 1") && h.contains("Ready."));
        assert!(!h.contains("DEGRADED"));
        // A member not heard from: a banner, DOWN in its row, and its series stays at 0.
        let v = View {
            members: vec![
                view().members[0].clone(),
                Member {
                    id: 3,
                    addr: "h3:27000".into(),
                    voter: true,
                    matched: None,
                    heard_ms_ago: Some(12_345),
                },
            ],
            ..view()
        };
        let h = v.dashboard();
        assert!(
            h.contains("<b>DEGRADED</b>: node 3 (last heard 12 s ago) not answering."),
            "{h}"
        );
        assert!(h.contains("voter, DOWN"), "{h}");
        let m = v.metrics();
        assert!(m.contains("tally_raft_member_up{member=\"3\"} 0\n"), "{m}");
        assert!(m.contains("tally_raft_member_up{member=\"1\"} 1\n"), "{m}");
        assert!(h.contains("<td class=\"over\">grace (3 days)</td>"), "{h}");
    }
}
