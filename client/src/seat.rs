//! A held seat: a guard that checks the seat in when dropped, unless the cluster took it
//! back.

use std::sync::Arc;

use tally_proto::v1 as pb;
use tally_proto::v1::licensing_client::LicensingClient;

use crate::session::Core;
use crate::{Error, Revoked};

/// Seats of one feature, held until [`Seat::checkin`] or drop, or until the cluster
/// revokes them ([`Seat::revoked`]). Holding a seat keeps the session's heartbeat running
/// even if the [`Client`](crate::Client) itself was dropped.
///
/// ```no_run
/// # async fn demo(client: tally_client::Client) -> Result<(), tally_client::Error> {
/// let seat = client.checkout("fea_solver", Default::default()).await?;
/// // Hand the token to a shared resource (a solver farm, a license-aware file server):
/// // it can refuse any holder whose token is older than one it has already seen.
/// let token = seat.fencing_token();
/// # let _ = token;
/// match seat.checkin().await? {
///     Some(until_ms) => println!("the seat lingers for this user until {until_ms}"),
///     None => println!("the seat is back in the pool"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Seat {
    core: Arc<Core>,
    grant: pb::Grant,
    /// Set once checked in, so drop does not check in again.
    released: bool,
}

impl Seat {
    pub(crate) fn new(core: Arc<Core>, grant: pb::Grant) -> Seat {
        Seat {
            core,
            grant,
            released: false,
        }
    }

    /// The lease id (what `tallyctl leases` lists and `tallyctl remove` takes).
    pub fn lease_id(&self) -> u64 {
        self.grant.lease_id
    }

    /// Grows with every grant in the cluster: a resource shared by several holders can
    /// refuse any holder whose token is older than one it has already seen.
    pub fn fencing_token(&self) -> u64 {
        self.grant.fencing_token
    }

    pub fn feature(&self) -> &str {
        &self.grant.feature
    }

    pub fn count(&self) -> u32 {
        self.grant.count
    }

    /// Seats of this grant beyond the licensed count (overdraft).
    pub fn overdraft(&self) -> u32 {
        self.grant.overdraft_seats
    }

    /// The grant took back a seat lingering for the same user.
    pub fn reused_lingering(&self) -> bool {
        self.grant.reused_lingering
    }

    /// The whole grant as the cluster sent it.
    pub fn grant(&self) -> &pb::Grant {
        &self.grant
    }

    /// Whether the cluster took this lease back (a license unloaded, a term ended), and
    /// why, as the session's heartbeat last learnt it: within a heartbeat period or so of
    /// the revocation. A revoked seat is no longer held: stop using what it licenses.
    ///
    /// ```no_run
    /// # async fn demo(client: tally_client::Client) -> Result<(), tally_client::Error> {
    /// let seat = client.checkout("solid_modeler", Default::default()).await?;
    /// let mut state = client.watch();
    /// let lease = seat.lease_id();
    /// let _ = state
    ///     .wait_for(|s| s.revoked().iter().any(|r| r.lease_id == lease))
    ///     .await;
    /// if let Some(r) = seat.revoked() {
    ///     eprintln!("license taken back, saving and stopping: {}", r.message);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn revoked(&self) -> Option<Revoked> {
        self.core.revocation_of(self.grant.lease_id)
    }

    /// Gives the seats back. Returns when they linger until (Unix ms), if they do. A seat
    /// the cluster revoked is not held any more: that is [`Error::Revoked`], without a
    /// call to the cluster.
    pub async fn checkin(mut self) -> Result<Option<u64>, Error> {
        self.released = true;
        if let Some(r) = self.revoked() {
            return Err(Error::Revoked {
                lease_id: r.lease_id,
                feature: r.feature,
                message: r.message,
            });
        }
        checkin(&self.core, self.grant.lease_id).await
    }
}

async fn checkin(core: &Core, lease_id: u64) -> Result<Option<u64>, Error> {
    let req = pb::CheckinRequest {
        request: Some(core.request_id()),
        auth: Some(core.auth.clone()),
        lease_id,
    };
    let r = core
        .cluster
        .call("checkin", |ch| {
            let req = req.clone();
            async move { LicensingClient::new(ch).checkin(req).await }
        })
        .await;
    match r {
        Ok(r) => Ok(r.lingering_until_ms),
        Err(Error::Refused {
            code: tonic::Code::NotFound,
            ..
        }) => Err(Error::LeaseGone { lease_id }),
        Err(e) => Err(e),
    }
}

impl Drop for Seat {
    /// Checks in from a background task when a runtime is there to run it; otherwise the
    /// seat is freed when the session expires.
    fn drop(&mut self) {
        // A lost (or abandoned) session has nothing left to check in, nor has a revoked
        // seat.
        if self.released
            || self.core.check_alive().is_err()
            || self.core.revocation_of(self.grant.lease_id).is_some()
        {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (core, lease) = (self.core.clone(), self.grant.lease_id);
            rt.spawn(async move {
                match checkin(&core, lease).await {
                    Ok(_) => {}
                    // Taken back (revoked or removed) before the heartbeat said so:
                    // nothing was left to give back.
                    Err(Error::LeaseGone { .. }) => {
                        tracing::debug!(lease, "a dropped seat was no longer held")
                    }
                    Err(e) => tracing::warn!(lease, "checkin of a dropped seat failed: {e}"),
                }
            });
        }
    }
}
