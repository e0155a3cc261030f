//! Named users of `USER_BASED` features, for the Admin service: assignments go through
//! Raft; the listing reads the ledger after a linearizable read.

use tally_core::ledger::{NamedState, Op, Reply, USERS_PER_ENTRY};
use tally_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert::{deny_message, unexpected};
use crate::shared::Shared;

/// Longest user name accepted, as for sessions.
const MAX_NAME: usize = 256;

fn check(r: &pb::AssignUsersRequest) -> Result<(), Status> {
    if r.feature.is_empty() || r.feature.len() > MAX_NAME {
        return Err(Status::invalid_argument("`feature` must name a feature"));
    }
    if r.users.is_empty() || r.users.len() > USERS_PER_ENTRY {
        return Err(Status::invalid_argument(format!(
            "name 1 to {USERS_PER_ENTRY} users"
        )));
    }
    if let Some(u) = r
        .users
        .iter()
        .find(|u| u.is_empty() || u.len() > MAX_NAME || u.chars().any(char::is_control))
    {
        return Err(Status::invalid_argument(format!(
            "user {:?} is not a user name (1 to {MAX_NAME} bytes of printable text)",
            u.escape_debug().to_string()
        )));
    }
    Ok(())
}

/// Assigns (`assign`) or unassigns users; answers how many changed.
pub async fn change(
    shared: &Shared,
    req: Request<pb::AssignUsersRequest>,
    assign: bool,
) -> Result<Response<pb::AssignUsersResponse>, Status> {
    let admin = crate::admin::admin_name(&req);
    let r = req.into_inner();
    check(&r)?;
    tracing::info!(%admin, feature = %r.feature, users = r.users.len(), assign, "admin changes named users");
    let op = if assign {
        Op::AssignUsers {
            feature: r.feature.clone(),
            users: r.users,
        }
    } else {
        Op::UnassignUsers {
            feature: r.feature.clone(),
            users: r.users,
        }
    };
    match shared.propose_by(op, Some(admin.clone())).await?.reply {
        Reply::Done { affected } => {
            Ok(Response::new(pb::AssignUsersResponse { changed: affected }))
        }
        Reply::Denied(d) => {
            let zone = shared.sm.read().ledger.time_zone();
            Err(Status::failed_precondition(deny_message(
                &d, &r.feature, zone,
            )))
        }
        other => Err(unexpected(&other)),
    }
}

pub async fn list(
    shared: &Shared,
    req: Request<pb::ListUsersRequest>,
) -> Result<Response<pb::ListUsersResponse>, Status> {
    let only = req.into_inner().feature;
    shared.linearizable().await?;
    let sm = shared.sm.read();
    let l = &sm.ledger;
    let features: Vec<String> = l
        .named_features()
        .filter(|f| only.as_deref().is_none_or(|o| o == *f))
        .map(str::to_owned)
        .collect();
    let users = features
        .iter()
        .flat_map(|f| {
            l.assigned_users(f)
                .into_iter()
                .map(move |(user, a, state)| {
                    let (state, until_ms) = match state {
                        NamedState::Licensed => ("licensed", 0),
                        NamedState::FairUse { until_ms } => ("fair_use", until_ms),
                        NamedState::Blocked { since_ms } => ("blocked", since_ms),
                    };
                    pb::NamedUser {
                        feature: f.clone(),
                        user: user.to_owned(),
                        assigned_at_ms: a.at_ms,
                        state: state.into(),
                        until_ms,
                    }
                })
        })
        .collect();
    Ok(Response::new(pb::ListUsersResponse { users }))
}
