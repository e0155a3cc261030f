//! Listings while the cluster has no leader: the freshest view any node still answers
//! with, marked stale, rather than nothing. An admin whose cluster lost its quorum needs
//! to see who held what more than at any other time; a script still gets exit code 3.

use std::future::Future;

use tally_client::Error as ClientError;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::Ctx;

/// Where a stale listing came from.
#[derive(Debug, Clone, Copy)]
pub struct Stale {
    pub node: u64,
    pub applied_index: u64,
}

impl Stale {
    /// The line printed above a stale listing.
    pub fn header(&self) -> String {
        format!(
            "WARNING: no leader answers: this is node {}'s view as of log index {}, possibly stale",
            self.node, self.applied_index
        )
    }

    /// The error that ends the command with exit code 3 once the listing is printed.
    pub fn exit(&self) -> anyhow::Error {
        crate::Unhealthy {
            code: 3,
            what: format!(
                "no leader: the listing is node {}'s view as of log index {}, possibly stale",
                self.node, self.applied_index
            ),
        }
        .into()
    }
}

/// Calls `call(channel, allow_stale = false)` through the leader; if no leader answers,
/// asks every endpoint with `allow_stale = true` and keeps the answer of the node that
/// applied the most (`meta` reads (answered_by, applied_index)). The original error when
/// no node answers at all.
pub async fn listing<T, F, Fut>(
    ctx: &Ctx,
    what: &str,
    call: F,
    meta: fn(&T) -> (u64, u64),
) -> anyhow::Result<(T, Option<Stale>)>
where
    F: Fn(Channel, bool) -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let cluster = ctx.cluster()?;
    let err = match cluster.call(what, |ch| call(ch, false)).await {
        Ok(r) => return Ok((r, None)),
        Err(e @ ClientError::Unavailable { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    let mut best: Option<T> = None;
    for ep in &ctx.endpoints {
        if let Ok(r) = cluster.call_node(ep, what, |ch| call(ch, true)).await {
            if best.as_ref().is_none_or(|b| meta(&r).1 > meta(b).1) {
                best = Some(r);
            }
        }
    }
    match best {
        Some(r) => {
            let (node, applied_index) = meta(&r);
            Ok((
                r,
                Some(Stale {
                    node,
                    applied_index,
                }),
            ))
        }
        None => Err(err.into()),
    }
}
