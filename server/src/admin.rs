//! The `Admin` gRPC service: cluster status, listings (after a linearizable read, so an
//! admin never sees older state than a client was told), admin removal, license loads
//! (signatures checked against the configured vendor keys before proposing) and
//! membership changes (learner first, then voter).

use std::collections::{BTreeMap, BTreeSet};

use tally_core::ledger::{Event, Op, Reply};
use tally_core::license::{parse, verify_file, Count, Expiry};
use tally_proto::v1 as pb;
use tally_proto::v1::admin_server;
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status};

use crate::convert::{dup_name, lease_info, load_error};
use crate::node::Shared;
use crate::types::TallyNode;

/// Most log records in one export page.
const EXPORT_PAGE: u64 = 10_000;

/// The size of a backup's chunks: well under any client's 4 MiB message limit.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Largest license file accepted over the wire (the parser refuses more than 4 MiB).
pub const MAX_ADMIN_MESSAGE: usize = 8 << 20;

/// The service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    shared: Shared,
}

impl Admin {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// Before a listing: confirms this node's state is current (a leader's ReadIndex
    /// round), or with `allow_stale`, answers `true` ("stale") when that cannot be done
    /// (no leader, no quorum) instead of failing.
    async fn current_or_stale(&self, allow_stale: bool) -> Result<bool, Status> {
        if !allow_stale {
            return self.shared.linearizable().await.map(|()| false);
        }
        // A leader that lost its quorum may wait a long time for acknowledgements that
        // will not come: a stale answer is wanted precisely then, so do not wait long.
        let bound = std::time::Duration::from_secs(2);
        Ok(!matches!(
            tokio::time::timeout(bound, self.shared.linearizable()).await,
            Ok(Ok(()))
        ))
    }
}

#[tonic::async_trait]
impl admin_server::Admin for Admin {
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let m = self.shared.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let leader = m.current_leader.unwrap_or(0);
        let nodes = membership
            .nodes()
            .map(|(id, n)| {
                let role = if Some(*id) == m.current_leader {
                    pb::NodeRole::Leader
                } else if voters.contains(id) {
                    pb::NodeRole::Follower
                } else {
                    pb::NodeRole::Learner
                };
                // The leader knows how far each follower's log matches its own.
                let matched = matched_index(&m, *id);
                let own = *id == self.shared.id;
                let clock = self.shared.clock.member(*id);
                pb::NodeStatus {
                    id: *id,
                    grpc_addr: n.addr.clone(),
                    http_addr: n.http.clone(),
                    role: role as i32,
                    term: if own { m.current_term } else { 0 },
                    last_log_index: if own {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        matched.unwrap_or(0)
                    },
                    commit_index: 0,
                    applied_index: if own {
                        m.last_applied.map_or(0, |l| l.index)
                    } else {
                        0
                    },
                    reachable: own || matched.is_some() || m.replication.is_none(),
                    error: String::new(),
                    clock_offset_ms: clock.offset_ms,
                    clock_measured_ms_ago: clock.measured_ms_ago,
                    clock_ok: clock.ok,
                    clock_problem: clock.problem,
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterStatusResponse {
            leader_id: leader,
            term: m.current_term,
            nodes,
            voters: voters.into_iter().collect(),
            learners,
            answered_by: self.shared.id,
            cluster_id: self
                .shared
                .sm
                .read()
                .ledger
                .cluster_id()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            max_clock_offset_ms: self.shared.cfg.max_clock_offset_ms,
            time_zone: self
                .shared
                .sm
                .read()
                .ledger
                .time_zone_name()
                .unwrap_or_default()
                .to_owned(),
        }))
    }

    async fn list_features(
        &self,
        req: Request<pb::ListFeaturesRequest>,
    ) -> Result<Response<pb::ListFeaturesResponse>, Status> {
        let stale = self.current_or_stale(req.get_ref().allow_stale).await?;
        let sm = self.shared.sm.read();
        let l = &sm.ledger;
        // Dates become instants in the cluster's zone, as the ledger counts them: in one
        // zone, the earliest date is also the earliest instant.
        let zone = l.time_zone();
        // The lines as they count: a package's components, not the package; no
        // superseded line.
        let mut lines: BTreeMap<&str, Vec<&tally_core::license::FeatureLine>> = BTreeMap::new();
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in l.effective_lines() {
            lines.entry(e.line.name.as_str()).or_default().push(&e.line);
            let g = groups.entry(e.line.name.as_str()).or_default();
            if !g.contains(&dup_name(e.group)) {
                g.push(dup_name(e.group));
            }
        }
        let features = l
            .features()
            .into_iter()
            .map(|f| {
                let ls = lines.get(f.name.as_str()).cloned().unwrap_or_default();
                let mut versions: Vec<String> = ls.iter().map(|x| x.version.to_string()).collect();
                versions.sort();
                versions.dedup();
                versions.reverse();
                // A suite's users hold its seat through their components' leases.
                let holders = l
                    .leases()
                    .filter_map(|(id, lease)| {
                        if lease.feature == f.name {
                            return Some(lease_info(&sm, id, lease));
                        }
                        let suite_seat = lease.suite_seat?;
                        let seat = l.seat(suite_seat)?;
                        (seat.feature == f.name).then(|| pb::LeaseInfo {
                            feature: f.name.clone(),
                            seat_id: suite_seat,
                            count: seat.count,
                            ..lease_info(&sm, id, lease)
                        })
                    })
                    .collect();
                let queued = l.waiters().filter(|(_, w)| w.feature == f.name).count();
                // The earliest START and the latest expiry (none if any line is permanent).
                let start = ls.iter().filter_map(|x| x.start).min();
                let expiry = if ls.iter().any(|x| x.expiry == Expiry::Permanent) {
                    None
                } else {
                    ls.iter()
                        .filter_map(|x| match x.expiry {
                            Expiry::On(d) => Some(d),
                            Expiry::Permanent => None,
                        })
                        .max()
                };
                pb::FeatureInfo {
                    queued: u32::try_from(queued).unwrap_or(u32::MAX),
                    vendor: ls.first().map(|x| x.vendor.clone()).unwrap_or_default(),
                    versions,
                    issued: f.issued,
                    in_use: f.in_use,
                    lingering: f.lingering,
                    overdraft_limit: f.overdraft_limit,
                    overdraft_in_use: f.in_use.saturating_sub(f.issued),
                    // One pool per grouping, in the order checkouts try them.
                    dup_group: groups
                        .get(f.name.as_str())
                        .map_or_else(|| "NONE".to_owned(), |g| g.join(",")),
                    linger_ms: f.linger_ms,
                    start_ms: start.map_or(0, |d| zone.day_start_ms(d)),
                    start_date: start.map(|d| d.to_string()).unwrap_or_default(),
                    expiry_ms: expiry.map_or(0, |d| zone.day_end_ms(d)),
                    expiry_date: expiry.map(|d| d.to_string()).unwrap_or_default(),
                    model: match f.model {
                        tally_core::license::LicenseModel::Floating => "floating",
                        tally_core::license::LicenseModel::NamedUser { .. } => "named_user",
                    }
                    .into(),
                    term_state: crate::convert::term_name(&f.term).into(),
                    term_until_ms: crate::convert::term_until(&f.term),
                    demo_seats: match f.term {
                        tally_core::ledger::TermState::Demo { seats } => seats,
                        _ => 0,
                    },
                    assigned: f.assigned,
                    window_ends_ms: f.window_ends_ms.unwrap_or(0),
                    policy: l
                        .options()
                        .about(&f.name)
                        .map(ToString::to_string)
                        .collect(),
                    name: f.name,
                    holders,
                }
            })
            .collect();
        Ok(Response::new(pb::ListFeaturesResponse {
            features,
            time_zone: zone.name().to_owned(),
            at_ms: l.now_ms(),
            stale,
            answered_by: self.shared.id,
            applied_index: l.last_applied(),
        }))
    }

    async fn list_leases(
        &self,
        req: Request<pb::ListLeasesRequest>,
    ) -> Result<Response<pb::ListLeasesResponse>, Status> {
        let r = req.into_inner();
        let stale = self.current_or_stale(r.allow_stale).await?;
        let sm = self.shared.sm.read();
        let mut leases: Vec<pb::LeaseInfo> = sm
            .ledger
            .leases()
            .filter(|(_, l)| r.feature.as_ref().is_none_or(|f| *f == l.feature))
            .filter(|(_, l)| r.session_id.is_none_or(|s| s == l.session))
            .map(|(id, l)| lease_info(&sm, id, l))
            .filter(|l| r.user.as_ref().is_none_or(|u| *u == l.user))
            .collect();
        // Lingering seats have no lease; list them too, owned by their last user.
        leases.extend(
            sm.ledger
                .seats()
                .filter(|(_, s)| s.lingering_until.is_some())
                .filter(|(_, s)| r.feature.as_ref().is_none_or(|f| *f == s.feature))
                .filter(|(_, s)| r.user.as_ref().is_none_or(|u| *u == s.key.user))
                .filter(|_| r.session_id.is_none())
                .map(|(id, s)| pb::LeaseInfo {
                    seat_id: id,
                    feature: s.feature.clone(),
                    version: s.version.to_string(),
                    count: s.count,
                    user: s.key.user.clone(),
                    host: s.key.host.clone().unwrap_or_default(),
                    fencing_token: s.fencing_token,
                    state: pb::LeaseState::Lingering as i32,
                    lingering_until_ms: s.lingering_until.unwrap_or(0),
                    ..Default::default()
                }),
        );
        Ok(Response::new(pb::ListLeasesResponse {
            leases,
            stale,
            answered_by: self.shared.id,
            applied_index: sm.ledger.last_applied(),
        }))
    }

    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        self.shared.linearizable().await?;
        let sm = self.shared.sm.read();
        let sessions = sm
            .ledger
            .sessions()
            .map(|(id, s)| pb::SessionInfo {
                session_id: id,
                user: s.holder.user.clone(),
                host: s.holder.host.clone(),
                display: s.holder.display.clone(),
                pid: s.holder.pid,
                client_id: s.client.to_vec(),
                ttl_ms: s.ttl_ms,
                opened_at_ms: s.opened_ms,
                last_heartbeat_ms: s.last_heartbeat_ms,
                leases: u32::try_from(s.leases.len()).unwrap_or(u32::MAX),
                client_addr: s.origin.addr.clone(),
                cert_name: s.origin.cert.clone().unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn close_session(
        &self,
        req: Request<pb::AdminCloseSessionRequest>,
    ) -> Result<Response<pb::AdminCloseSessionResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        tracing::Span::current().record("session", r.session_id);
        tracing::info!(%admin, reason = %r.reason, "admin closes a session");
        let op = Op::CloseSessionByAdmin {
            session: r.session_id,
        };
        match self.shared.propose_by(op, Some(admin.clone())).await?.reply {
            Reply::Done { affected: 1 } => Ok(Response::new(pb::AdminCloseSessionResponse {})),
            Reply::Done { .. } => Err(Status::not_found(format!(
                "no session {} is open",
                r.session_id
            ))),
            other => Err(Status::internal(format!(
                "unexpected ledger reply: {other:?}"
            ))),
        }
    }

    async fn assign_users(
        &self,
        req: Request<pb::AssignUsersRequest>,
    ) -> Result<Response<pb::AssignUsersResponse>, Status> {
        crate::users::change(&self.shared, req, true).await
    }

    async fn unassign_users(
        &self,
        req: Request<pb::AssignUsersRequest>,
    ) -> Result<Response<pb::AssignUsersResponse>, Status> {
        crate::users::change(&self.shared, req, false).await
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        crate::users::list(&self.shared, req).await
    }

    async fn list_queue(
        &self,
        _: Request<pb::ListQueueRequest>,
    ) -> Result<Response<pb::ListQueueResponse>, Status> {
        self.shared.linearizable().await?;
        let sm = self.shared.sm.read();
        let l = &sm.ledger;
        let waiters = l
            .waiters()
            .map(|(place, w)| {
                let holder = l.session(w.session).map(|s| &s.holder);
                pb::Waiter {
                    place,
                    feature: w.feature.clone(),
                    version: w.version.to_string(),
                    count: w.count,
                    session_id: w.session,
                    user: holder.map(|h| h.user.clone()).unwrap_or_default(),
                    host: holder.map(|h| h.host.clone()).unwrap_or_default(),
                    queued_at_ms: w.queued_ms,
                    deadline_ms: w.deadline_ms.unwrap_or(0),
                    position: l.queue_position(place).unwrap_or(0),
                }
            })
            .collect();
        Ok(Response::new(pb::ListQueueResponse { waiters }))
    }

    async fn cancel_wait(
        &self,
        req: Request<pb::CancelWaitRequest>,
    ) -> Result<Response<pb::CancelWaitResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        tracing::info!(%admin, place = r.place, reason = %r.reason, "admin cancels a wait");
        match self
            .shared
            .propose_by(Op::CancelWait { place: r.place }, Some(admin.clone()))
            .await?
            .reply
        {
            Reply::Done { affected: 1 } => Ok(Response::new(pb::CancelWaitResponse {})),
            Reply::Done { .. } => Err(Status::not_found(format!(
                "nobody waits at place {}",
                r.place
            ))),
            other => Err(Status::internal(format!(
                "unexpected ledger reply: {other:?}"
            ))),
        }
    }

    async fn remove_lease(
        &self,
        req: Request<pb::RemoveLeaseRequest>,
    ) -> Result<Response<pb::RemoveLeaseResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        tracing::Span::current().record("lease", r.lease_id);
        tracing::info!(%admin, reason = %r.reason, "admin removes a lease");
        let hold = self.shared.cfg.min_remove_hold_ms;
        if hold > 0 {
            // Checked against the ledger's grant time and the leader's clock before
            // proposing: a refused removal costs no log entry.
            let granted = self
                .shared
                .sm
                .read()
                .ledger
                .lease(r.lease_id)
                .map(|l| l.granted_ms);
            if let Some(why) =
                granted.and_then(|g| too_soon_to_remove(r.lease_id, g, self.shared.now_ms(), hold))
            {
                return Err(Status::failed_precondition(why));
            }
        }
        match self
            .shared
            .propose_by(Op::RemoveLease { lease: r.lease_id }, Some(admin.clone()))
            .await?
            .reply
        {
            Reply::Done { affected: 1 } => {
                Ok(Response::new(pb::RemoveLeaseResponse { removed: true }))
            }
            Reply::Done { .. } => Err(Status::not_found(format!(
                "no lease {} is held",
                r.lease_id
            ))),
            other => Err(Status::internal(format!(
                "unexpected ledger reply: {other:?}"
            ))),
        }
    }

    async fn load_license(
        &self,
        req: Request<pb::LoadLicenseRequest>,
    ) -> Result<Response<pb::LoadLicenseResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        tracing::info!(%admin, source = %r.source, "admin loads a license file");
        if r.source.is_empty() || r.source.len() > 256 {
            return Err(Status::invalid_argument(
                "`source` must name the file (1 to 256 bytes)",
            ));
        }
        let file =
            parse(&r.text).map_err(|e| Status::invalid_argument(format!("{}: {e}", r.source)))?;
        verify_file(&file, &self.shared.cfg.vendor_keys)
            .map_err(|e| Status::permission_denied(format!("{}: {e}", r.source)))?;
        let features: BTreeSet<String> = file.lines.iter().map(|l| l.name.clone()).collect();
        let (now, zone) = {
            let sm = self.shared.sm.read();
            (sm.ledger.now_ms(), sm.ledger.time_zone())
        };
        let warnings = crate::loadcheck::load_warnings(&file, now, zone);
        let op = Op::LoadLicense {
            source: r.source.clone(),
            license: file,
        };
        let out = self.shared.propose_by(op, Some(admin.clone())).await?;
        let revoked_leases = revoked(&out.events);
        match out.reply {
            Reply::LicenseLoaded {
                source,
                lines,
                duplicates,
            } => Ok(Response::new(pb::LoadLicenseResponse {
                warnings,
                revoked_leases,
                source,
                lines,
                features: features.into_iter().collect(),
                duplicates: duplicates
                    .into_iter()
                    .map(|d| pb::DuplicateLine {
                        line: d.line,
                        of_source: d.of_source,
                        of_line: d.of_line,
                    })
                    .collect(),
            })),
            Reply::LoadRefused(e) => Err(load_error(&e)),
            other => Err(Status::internal(format!(
                "unexpected ledger reply: {other:?}"
            ))),
        }
    }

    async fn unload_license(
        &self,
        req: Request<pb::UnloadLicenseRequest>,
    ) -> Result<Response<pb::UnloadLicenseResponse>, Status> {
        let admin = admin_name(&req);
        let source = req.into_inner().source;
        tracing::info!(%admin, %source, "admin unloads a license file");
        let out = self
            .shared
            .propose_by(Op::UnloadLicense { source }, Some(admin.clone()))
            .await?;
        match out.reply {
            Reply::Done { .. } => Ok(Response::new(pb::UnloadLicenseResponse {
                revoked_leases: revoked(&out.events),
            })),
            Reply::LoadRefused(e) => Err(load_error(&e)),
            other => Err(Status::internal(format!(
                "unexpected ledger reply: {other:?}"
            ))),
        }
    }

    async fn list_licenses(
        &self,
        _: Request<pb::ListLicensesRequest>,
    ) -> Result<Response<pb::ListLicensesResponse>, Status> {
        self.shared.linearizable().await?;
        let sm = self.shared.sm.read();
        let licenses = sm
            .ledger
            .licenses()
            .map(|(source, f)| pb::LicenseInfo {
                source: source.to_owned(),
                vendors: f.vendors.clone(),
                lines: f
                    .lines
                    .iter()
                    .map(|l| pb::LicenseLineInfo {
                        line: l.line_no,
                        kind: l.kind.name().into(),
                        feature: l.name.clone(),
                        version: l.version.to_string(),
                        expiry: match l.expiry {
                            Expiry::Permanent => "permanent".into(),
                            Expiry::On(d) => d.to_string(),
                        },
                        count: match l.count {
                            Count::Uncounted => "uncounted".into(),
                            Count::Seats(n) => n.to_string(),
                        },
                        duplicate_of: sm.ledger.duplicate_of(source, l.line_no).map(
                            |(of_source, of_line)| pb::DuplicateLine {
                                line: l.line_no,
                                of_source: of_source.to_owned(),
                                of_line,
                            },
                        ),
                        cluster: l.cluster.map(|c| c.to_string()).unwrap_or_default(),
                        note: sm
                            .ledger
                            .line_notes()
                            .iter()
                            .find(|((s, n), _)| s == source && *n == l.line_no)
                            .map(|(_, why)| why.to_string())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListLicensesResponse { licenses }))
    }

    /// Sets ledger time back to the leader's term clock (which runs from a wall clock
    /// its peers agreed with): the repair for a wrong time that got into the log. Ledger
    /// time at or behind the leader's clock is left alone.
    async fn repair_clock(
        &self,
        req: Request<pb::RepairClockRequest>,
    ) -> Result<Response<pb::RepairClockResponse>, Status> {
        let admin = admin_name(&req);
        let reason = req.into_inner().reason;
        let to_ms = self.shared.now_ms();
        let out = self
            .shared
            .propose_by(Op::RepairClock { to_ms }, Some(admin.clone()))
            .await?;
        let (from_ms, to_ms) = out
            .events
            .iter()
            .find_map(|e| match e {
                Event::ClockRepaired { from_ms, to_ms } => Some((*from_ms, *to_ms)),
                _ => None,
            })
            .unwrap_or_else(|| {
                let now = self.shared.sm.read().ledger.now_ms();
                (now, now)
            });
        if from_ms == to_ms {
            tracing::info!(%admin, %reason, "clock repair asked: ledger time is not ahead, nothing to repair");
        } else {
            tracing::warn!(%admin, %reason, from_ms, to_ms, "ledger clock repaired: time set back");
        }
        Ok(Response::new(pb::RepairClockResponse { from_ms, to_ms }))
    }

    async fn get_time_zone(
        &self,
        _: Request<pb::GetTimeZoneRequest>,
    ) -> Result<Response<pb::TimeZoneResponse>, Status> {
        self.shared.linearizable().await?;
        let sm = self.shared.sm.read();
        Ok(Response::new(time_zone_response(&sm.ledger)))
    }

    /// Sets the cluster's time zone for license dates. The name is checked here first
    /// (a refused name costs no log entry); the ledger checks it again, deterministically,
    /// and is what decides.
    async fn set_time_zone(
        &self,
        req: Request<pb::SetTimeZoneRequest>,
    ) -> Result<Response<pb::TimeZoneResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        let zone = tally_core::license::Zone::parse(&r.zone)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let op = Op::SetTimeZone {
            zone: zone.name().to_owned(),
            only_if_unset: false,
        };
        let out = self.shared.propose_by(op, Some(admin.clone())).await?;
        let changed = match out.reply {
            Reply::Done { affected } => affected > 0,
            // Only a node whose zone database differs from the leader's gets here.
            Reply::UnknownTimeZone { zone } => {
                return Err(Status::invalid_argument(format!(
                    "the cluster refused \"{zone}\": it is not in the zone database of the node that applied it; every node must run the same tallyd release"
                )))
            }
            other => return Err(crate::convert::unexpected(&other)),
        };
        let previous = out.events.iter().find_map(|e| match e {
            Event::TimeZoneSet { previous, .. } => Some(previous.clone().unwrap_or_default()),
            _ => None,
        });
        let revoked_leases = revoked(&out.events);
        if changed {
            tracing::warn!(
                %admin,
                reason = %r.reason,
                zone = zone.name(),
                previous = previous.as_deref().unwrap_or_default(),
                revoked = revoked_leases.len(),
                "cluster time zone set: license dates are read in it from now on"
            );
        } else {
            tracing::info!(%admin, reason = %r.reason, zone = zone.name(), "cluster time zone asked for is already set");
        }
        let sm = self.shared.sm.read();
        Ok(Response::new(pb::TimeZoneResponse {
            previous: previous.unwrap_or_else(|| zone.name().to_owned()),
            changed,
            revoked_leases,
            ..time_zone_response(&sm.ledger)
        }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = req.into_inner();
        if r.node_id == 0 || r.grpc_addr.is_empty() {
            return Err(Status::invalid_argument(
                "node_id (from 1) and grpc_addr are required",
            ));
        }
        let addr = r.grpc_addr.clone();
        let node = TallyNode {
            addr: r.grpc_addr,
            http: r.http_addr,
        };
        let id = r.node_id;
        // Blocking: openraft returns once the learner caught up, but it was seen to
        // answer at once for an address where nothing listened; so this node checks the
        // learner's matched index itself, within a bound, and says what to do if not.
        let add = self.shared.raft.add_learner(id, node, true);
        let resp = match tokio::time::timeout(CATCH_UP, add).await {
            Ok(r) => {
                r.map_err(|e| membership_error(&format!("adding node {id} as a learner"), e))?
            }
            Err(_) => return Err(not_caught_up(id, &addr, None, 0)),
        };
        let want = resp.log_id.index;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let matched = matched_index(&self.shared.metrics(), id);
            if matched.is_some_and(|m| m >= want) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_caught_up(id, &addr, matched, want));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Response::new(membership_response(
            &self.shared,
            resp.log_id.index,
        )))
    }

    async fn change_membership(
        &self,
        req: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let voters: BTreeSet<u64> = req.into_inner().voters.into_iter().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument(
                "the new membership needs at least one voter",
            ));
        }
        let resp = self
            .shared
            .raft
            .change_membership(voters, false)
            .await
            .map_err(|e| membership_error("changing the voters", e))?;
        Ok(Response::new(membership_response(
            &self.shared,
            resp.log_id.index,
        )))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let admin = admin_name(&req);
        let id = req.into_inner().node_id;
        let (voters, members) = {
            let m = self.shared.metrics();
            let mem = m.membership_config.membership();
            let voters: BTreeSet<u64> = mem.voter_ids().collect();
            let members: BTreeSet<u64> = mem.nodes().map(|(id, _)| *id).collect();
            (voters, members)
        };
        if !members.contains(&id) {
            return Err(Status::not_found(format!(
                "node {id} is not a member (members: {members:?})"
            )));
        }
        if voters.contains(&id) {
            let left: BTreeSet<u64> = voters.iter().copied().filter(|v| *v != id).collect();
            let answering: BTreeSet<u64> = left
                .iter()
                .copied()
                .filter(|v| self.shared.clock.answers(*v))
                .collect();
            removal_keeps_quorum(id, &left, &answering).map_err(Status::failed_precondition)?;
            tracing::info!(%admin, node = id, "admin removes a voter");
            self.shared
                .raft
                .change_membership(
                    openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                    false,
                )
                .await
                .map_err(|e| membership_error(&format!("removing node {id} from the voters"), e))?;
        }
        tracing::info!(%admin, node = id, "admin removes a node");
        let resp = self
            .shared
            .raft
            .change_membership(
                openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                false,
            )
            .await
            .map_err(|e| membership_error(&format!("removing node {id}"), e))?;
        Ok(Response::new(membership_response(
            &self.shared,
            resp.log_id.index,
        )))
    }

    type ExportLogStream = tokio_stream::Iter<std::vec::IntoIter<Result<pb::LogRecord, Status>>>;

    /// One page of the applied log from `from_index` (at most [`EXPORT_PAGE`] records);
    /// the caller asks again after the last index it got, until a page comes back empty.
    async fn export_log(
        &self,
        req: Request<pb::ExportLogRequest>,
    ) -> Result<Response<Self::ExportLogStream>, Status> {
        use openraft::storage::RaftLogStorage as _;
        use openraft::{EntryPayload, RaftLogReader as _};
        let from = req.into_inner().from_index.max(1);
        let mut log = self.shared.log.clone();
        let state = log
            .get_log_state()
            .await
            .map_err(|e| Status::internal(format!("reading the log state: {e}")))?;
        if let Some(p) = state.last_purged_log_id {
            if from <= p.index {
                return Err(Status::failed_precondition(format!(
                    "entries up to {} were purged after a snapshot; the log starts at {}",
                    p.index,
                    p.index + 1
                )));
            }
        }
        // Applied entries only: they are committed, so no later leader can replace them.
        let applied = self.shared.metrics().last_applied.map_or(0, |l| l.index);
        let to = applied.min(from.saturating_add(EXPORT_PAGE - 1));
        if from > to {
            return Ok(Response::new(tokio_stream::iter(Vec::new())));
        }
        let entries = log
            .try_get_log_entries(from..=to)
            .await
            .map_err(|e| Status::internal(format!("reading log entries {from}..={to}: {e}")))?;
        let records = entries
            .into_iter()
            .map(|e| {
                let entry_json = match e.payload {
                    EntryPayload::Normal(cmd) => serde_json::to_vec(&tally_core::ledger::Entry {
                        index: e.log_id.index,
                        at_ms: cmd.at_ms,
                        op: cmd.op,
                    })
                    .map_err(|err| Status::internal(format!("encoding entry: {err}")))?,
                    _ => Vec::new(),
                };
                Ok(pb::LogRecord {
                    index: e.log_id.index,
                    term: e.log_id.leader_id.term,
                    entry_json,
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(records)))
    }

    async fn ledger_digest(
        &self,
        _: Request<pb::LedgerDigestRequest>,
    ) -> Result<Response<pb::LedgerDigestResponse>, Status> {
        use sha2::Digest as _;
        let sm = self.shared.sm.read();
        Ok(Response::new(pb::LedgerDigestResponse {
            node_id: self.shared.id,
            applied_index: sm.ledger.last_applied(),
            sha256: sha2::Sha256::digest(sm.ledger.snapshot()).to_vec(),
        }))
    }

    type SaveSnapshotStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::BackupChunk, Status>>>;

    /// A backup (see `backup.rs`): after the leader's read index is applied here, so the
    /// copy holds every entry any client was told of, the state at the index applied
    /// then, as the bytes of a backup file in chunks.
    async fn save_snapshot(
        &self,
        req: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let admin = admin_name(&req);
        self.shared.linearizable().await?;
        let started = std::time::Instant::now();
        let (header, file) = crate::backup::take(&self.shared.sm, &self.shared.cfg.cluster_name)
            .await
            .map_err(|e| match e {
                crate::backup::BackupError::Empty => Status::failed_precondition(e.to_string()),
                e => Status::internal(format!("taking the backup: {e}")),
            })?;
        tracing::info!(
            %admin,
            index = header.index,
            term = header.term,
            bytes = file.len(),
            leases = header.leases,
            ms = started.elapsed().as_millis() as u64,
            "admin saves a backup"
        );
        use sha2::Digest as _;
        let sha256 = sha2::Sha256::digest(&file).to_vec();
        let total = file.len() as u64;
        let chunks = file
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, data)| {
                let first = i == 0;
                Ok(pb::BackupChunk {
                    data: data.to_vec(),
                    total_bytes: if first { total } else { 0 },
                    sha256: if first { sha256.clone() } else { Vec::new() },
                    index: if first { header.index } else { 0 },
                    term: if first { header.term } else { 0 },
                    cluster_name: if first {
                        header.cluster_name.clone()
                    } else {
                        String::new()
                    },
                })
            })
            .collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(chunks)))
    }

    /// A usage report (see `reports.rs`), made on a blocking thread.
    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let r = req.into_inner();
        let sm = self.shared.sm.clone();
        tokio::task::spawn_blocking(move || crate::reports::make(&sm, &r))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
    }

    /// Replaces the options file. Parsed here first, every mistake reported with its
    /// line and column, so bad input costs no log entry; reservations are checked here
    /// too (against the counts this node knows) and again by the ledger, which decides.
    async fn load_options(
        &self,
        req: Request<pb::LoadOptionsRequest>,
    ) -> Result<Response<pb::LoadOptionsResponse>, Status> {
        let admin = admin_name(&req);
        let r = req.into_inner();
        let source = if r.source.is_empty() {
            "options file".to_owned()
        } else {
            r.source.chars().take(256).collect()
        };
        let (options, errors) = tally_core::options::parse_all(&r.text);
        if !errors.is_empty() {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(Status::invalid_argument(format!(
                "{source}: {} mistake(s), nothing loaded:\n{}",
                errors.len(),
                lines.join("\n")
            )));
        }
        {
            let sm = self.shared.sm.read();
            let seats = sm
                .ledger
                .licensed()
                .iter()
                .filter_map(|(f, (issued, _))| u32::try_from(*issued).ok().map(|n| (f.clone(), n)))
                .collect();
            options.check_reservations(&seats).map_err(|e| {
                Status::failed_precondition(format!("{source}: {e}; nothing loaded"))
            })?;
        }
        let directives = u32::try_from(options.lines().len()).unwrap_or(u32::MAX);
        let not_enforced = not_enforced(&options);
        let op = if options.lines().is_empty() {
            Op::ClearOptions
        } else {
            Op::LoadOptions { options }
        };
        let out = self.shared.propose_by(op, Some(admin.clone())).await?;
        match out.reply {
            Reply::OptionsLoaded { lines } => {
                tracing::warn!(%admin, %source, directives = lines, "options file loaded: the new policy holds from now on; held seats are kept");
                Ok(Response::new(pb::LoadOptionsResponse {
                    directives,
                    not_enforced,
                }))
            }
            Reply::OptionsRefused {
                feature,
                reserved,
                seats,
                lines,
            } => {
                let e = tally_core::options::OptionsError::Overbooked {
                    feature,
                    reserved,
                    seats,
                    lines,
                };
                Err(Status::failed_precondition(format!(
                    "{source}: {e}; nothing loaded"
                )))
            }
            other => Err(crate::convert::unexpected(&other)),
        }
    }

    async fn get_options(
        &self,
        _: Request<pb::GetOptionsRequest>,
    ) -> Result<Response<pb::GetOptionsResponse>, Status> {
        self.shared.linearizable().await?;
        let sm = self.shared.sm.read();
        let options = sm.ledger.options();
        Ok(Response::new(pb::GetOptionsResponse {
            text: options.to_string(),
            directives: u32::try_from(options.lines().len()).unwrap_or(u32::MAX),
            not_enforced: not_enforced(options),
        }))
    }
}

/// The lines of an options file that are kept but have no effect yet, each with why:
/// what `options load` and `options show` warn about.
fn not_enforced(options: &tally_core::options::Options) -> Vec<String> {
    use tally_core::options::{Directive as D, Target};
    let about_project = |who: &Target| matches!(who, Target::Project(_));
    options
        .lines()
        .iter()
        .filter_map(|l| {
            let why = match &l.directive {
                D::Timeout { .. } | D::TimeoutAll { .. } => {
                    "idle timeouts are kept but not enforced yet (clients do not report idle time)"
                }
                D::MaxBorrowHours { .. }
                | D::BorrowLowwater { .. }
                | D::IncludeBorrow { .. }
                | D::ExcludeBorrow { .. } => "borrowing is not built yet",
                D::Include { who, .. }
                | D::IncludeAll { who }
                | D::Exclude { who, .. }
                | D::ExcludeAll { who }
                | D::Reserve { who, .. }
                | D::Max { who, .. }
                    if about_project(who) =>
                {
                    "clients send no project tag yet, so PROJECT matches nobody"
                }
                _ => return None,
            };
            Some(format!("{l}: {why}"))
        })
        .collect()
}

/// The administrator's certificate name, as the Guard proved it, for the server's log of
/// admin actions.
pub(crate) fn admin_name<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<crate::security::Caller>()
        .and_then(|c| c.cert_name.as_deref().map(str::to_owned))
        .unwrap_or_else(|| "(no certificate: insecure_plaintext)".into())
}

/// Leader only: the last log index `id`'s log is known to match the leader's.
/// How long `node add` waits for a new learner to catch up with the log.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(20);

/// `node add`'s answer when the learner did not catch up in time: it is a member now
/// (the cluster keeps trying it), so say how to take it out.
fn not_caught_up(id: u64, addr: &str, matched: Option<u64>, want: u64) -> Status {
    Status::failed_precondition(format!(
        "node {id} at {addr} was added as a learner but has not caught up within {} s ({}): check that it runs, with this cluster's name and certificates, and that {addr} reaches it; `tallyctl node remove {id}` takes it out",
        CATCH_UP.as_secs(),
        match matched {
            None => "it has not answered".to_owned(),
            Some(m) => format!("its log matches to index {m} of {want}"),
        }
    ))
}

pub(crate) fn matched_index(
    m: &openraft::RaftMetrics<crate::types::NodeId, crate::types::TallyNode>,
    id: u64,
) -> Option<u64> {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map(|l| l.index)
}

/// A membership change's failure as the admin should read it: on a follower, "not the
/// leader" with the leader's address (so tallyctl follows it), not openraft's debug text
/// ("has to forward request to: Some(3), Some(TallyNode { .. })").
fn membership_error(
    what: &str,
    e: openraft::error::RaftError<u64, openraft::error::ClientWriteError<u64, TallyNode>>,
) -> Status {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            crate::shared::not_leader(f.leader_id.zip(f.leader_node.as_ref()))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(format!("{what}: {c}"))
        }
        RaftError::Fatal(f) => Status::unavailable(format!(
            "{what}: this node's consensus stopped ({f}); retry on another node"
        )),
    }
}

/// Whether the voters `left` after removing `id` still elect a leader with those of them
/// that `answering` now: a majority of `left` must answer. `Err` says why not.
pub fn removal_keeps_quorum(
    id: u64,
    left: &BTreeSet<u64>,
    answering: &BTreeSet<u64>,
) -> Result<(), String> {
    if left.is_empty() {
        return Err(format!("node {id} is the last voter: a cluster needs one"));
    }
    let up = left.intersection(answering).count();
    let quorum = left.len() / 2 + 1;
    if up < quorum {
        let down: Vec<String> = left.difference(answering).map(u64::to_string).collect();
        return Err(format!(
            "removing node {id} would leave {} voter(s) of which {up} answer (node(s) {} do not), short of a quorum of {quorum}: bring them back first",
            left.len(),
            down.join(", ")
        ));
    }
    Ok(())
}

/// The cluster's time zone as `GetTimeZone` reports it.
fn time_zone_response(ledger: &tally_core::ledger::Ledger) -> pb::TimeZoneResponse {
    pb::TimeZoneResponse {
        zone: ledger.time_zone().name().to_owned(),
        set: ledger.time_zone_name().is_some(),
        tzdb_version: tally_core::license::TZDB_VERSION.to_owned(),
        ..Default::default()
    }
}

/// The leases an entry took back.
fn revoked(events: &[tally_core::ledger::Event]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            tally_core::ledger::Event::Revoked { lease, .. } => Some(*lease),
            _ => None,
        })
        .collect()
}

fn membership_response(shared: &Shared, log_index: u64) -> pb::MembershipResponse {
    let m = shared.metrics();
    let mem = m.membership_config.membership();
    pb::MembershipResponse {
        voters: mem.voter_ids().collect(),
        learners: mem.learner_ids().collect(),
        log_index,
    }
}

/// Why lease `lease`, granted at `granted_ms`, may not be removed at `now_ms` under a
/// minimum hold of `hold_ms` (FlexNet's `MIN_LMREMOVE`); `None` when it may.
pub fn too_soon_to_remove(
    lease: u64,
    granted_ms: u64,
    now_ms: u64,
    hold_ms: u64,
) -> Option<String> {
    let held = now_ms.saturating_sub(granted_ms);
    (held < hold_ms).then(|| {
        format!(
            "lease {lease} has been held {} s; min_remove_hold_ms = {hold_ms} lets it be removed in {} s (as FlexNet's MIN_LMREMOVE)",
            held / 1000,
            (hold_ms - held).div_ceil(1000)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::{removal_keeps_quorum, too_soon_to_remove};
    use std::collections::BTreeSet;

    #[test]
    fn a_voter_is_removed_only_if_the_voters_left_that_answer_make_a_quorum() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        // (removed, voters left, answering, refusal wanted)
        type Case<'a> = (u64, &'a [u64], &'a [u64], Option<&'a str>);
        let table: &[Case] = &[
            (4, &[1, 2, 3], &[1, 2, 3], None),
            (3, &[1, 2], &[1, 2], None),
            (
                3,
                &[1, 2],
                &[1],
                Some(
                    "leave 2 voter(s) of which 1 answer (node(s) 2 do not), short of a quorum of 2",
                ),
            ),
            (5, &[1, 2, 3, 4], &[1, 2, 3], None),
            (5, &[1, 2, 3, 4], &[1, 2], Some("short of a quorum of 3")),
            (1, &[], &[], Some("node 1 is the last voter")),
        ];
        for (id, left, answering, want) in table {
            let got = removal_keeps_quorum(*id, &set(left), &set(answering));
            match want {
                None => assert_eq!(got, Ok(()), "{id} {left:?}"),
                Some(w) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(w)),
                    "{id} {left:?}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_removal_waits_for_the_minimum_hold_to_the_millisecond() {
        // (granted, now, hold, the refusal wanted)
        let table: &[(u64, u64, u64, Option<&str>)] = &[
            (1_000, 1_000, 0, None),
            (
                1_000,
                1_000,
                120_000,
                Some("held 0 s; min_remove_hold_ms = 120000 lets it be removed in 120 s"),
            ),
            (
                1_000,
                120_999,
                120_000,
                Some("held 119 s; min_remove_hold_ms = 120000 lets it be removed in 1 s"),
            ),
            (1_000, 121_000, 120_000, None),
            // A clock behind the grant (a new leader's) counts as no time held.
            (5_000, 4_000, 1_000, Some("held 0 s")),
        ];
        for (granted, now, hold, want) in table {
            let got = too_soon_to_remove(7, *granted, *now, *hold);
            match want {
                None => assert_eq!(got, None, "{granted} {now} {hold}"),
                Some(w) => assert!(
                    got.as_deref()
                        .is_some_and(|g| g.contains(w) && g.starts_with("lease 7 ")),
                    "{granted} {now} {hold}: {got:?}"
                ),
            }
        }
    }
}
