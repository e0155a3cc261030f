//! Readiness, kept current, and `grpc.health.v1.Health` on the gRPC port.
//!
//! One verdict, [`readiness`], answers `/readyz`, the gRPC health service and the status
//! line `tallyd` gives systemd: ready when the node knows a leader, its clock agrees with
//! a quorum of voters, and, if it is the leader, a quorum follows it (see
//! [`View::readiness`]); never while its consensus has stopped.
//!
//! The service is ours, on tonic-health's generated server and messages, rather than
//! tonic-health's `HealthReporter`: that one's `Watch` streams never end (its status
//! senders live as long as the service), and the gRPC server's graceful shutdown waits
//! for every open stream, so one load balancer watching a node would hold up its stop
//! for ever. Here a `Watch` ends, after a last `NOT_SERVING`, when the node stops.

use std::time::Duration;

use tally_proto::v1::licensing_server::SERVICE_NAME as LICENSING;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::http::View;
use crate::node::Shared;

/// How often the watcher looks. Readiness turns on Raft's view, the clock pings (twice a
/// second) and the lease, not all of which publish changes; four looks a second is
/// quick enough for a load balancer and costs a few atomic reads.
const POLL: Duration = Duration::from_millis(250);

/// This node's readiness now: `Ok` with a summary when it is ready to serve clients, or
/// the reason it is not.
pub fn readiness(shared: &Shared) -> Result<String, String> {
    if shared.fatal().is_some() {
        return Err("not ready: consensus stopped (see /healthz)".into());
    }
    View::for_readiness(shared).readiness()
}

/// What the watcher publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// The node began to stop: nothing is served any more.
    pub stopping: bool,
    /// The leader and term the verdict was taken in (0, 0 before the first look).
    pub leader: u64,
    pub term: u64,
    /// [`readiness`]'s summary or reason.
    pub text: String,
}

impl Readiness {
    fn starting() -> Readiness {
        Readiness {
            ready: false,
            stopping: false,
            leader: 0,
            term: 0,
            text: "starting".into(),
        }
    }

    /// Whether watchers should hear of `new`: a flip, a new leader or term, or a new
    /// reason not to be ready. Not the applied index a ready node's summary carries,
    /// which moves with every entry.
    fn differs(&self, new: &Readiness) -> bool {
        (self.ready, self.stopping, self.leader, self.term)
            != (new.ready, new.stopping, new.leader, new.term)
            || (!new.ready && self.text != new.text)
    }

    /// The gRPC serving status of `service`: `None` for a service this node does not
    /// report on.
    fn status_of(&self, service: &str) -> Option<ServingStatus> {
        if !reported(service) {
            return None;
        }
        Some(if self.ready && !self.stopping {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

/// The services health is reported for: the server as a whole (`""`, what probes ask by
/// default) and Licensing, the one clients use. Admin and Raft answer whenever the
/// process runs, which `/healthz` says.
fn reported(service: &str) -> bool {
    service.is_empty() || service == LICENSING
}

/// Keeps `tx` current until `shutdown` fires, then publishes `stopping` (not serving)
/// and returns.
pub async fn watch_readiness(
    shared: Shared,
    tx: watch::Sender<Readiness>,
    mut shutdown: broadcast::Receiver<()>,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        let view = View::for_readiness(&shared);
        let verdict = readiness(&shared);
        let new = Readiness {
            ready: verdict.is_ok(),
            stopping: false,
            leader: view.leader,
            term: view.term,
            text: verdict.unwrap_or_else(|e| e),
        };
        tx.send_if_modified(|cur| {
            let differs = cur.differs(&new);
            if differs {
                *cur = new;
            }
            differs
        });
    }
    tx.send_modify(|r| {
        r.ready = false;
        r.stopping = true;
        r.text = "stopping".into();
    });
}

/// A readiness channel and its first value, for [`watch_readiness`] to keep.
pub fn channel() -> (watch::Sender<Readiness>, watch::Receiver<Readiness>) {
    watch::channel(Readiness::starting())
}

/// `grpc.health.v1.Health` over [`Readiness`].
#[derive(Debug)]
pub struct HealthService {
    shared: Shared,
    readiness: watch::Receiver<Readiness>,
}

impl HealthService {
    pub fn server(shared: Shared, readiness: watch::Receiver<Readiness>) -> HealthServer<Self> {
        HealthServer::new(HealthService { shared, readiness })
    }
}

fn answer(s: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: s as i32 }
}

fn unknown(service: &str) -> Status {
    Status::not_found(format!(
        "no health is reported for service {:?}: ask for \"\" (the node) or \"{}\"",
        service.escape_debug().to_string(),
        LICENSING
    ))
}

#[tonic::async_trait]
impl Health for HealthService {
    /// Decided now, like `/readyz`, rather than from the watcher's last look: a probe
    /// right after a change sees it.
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if !reported(service) {
            return Err(unknown(service));
        }
        let serving = !self.readiness.borrow().stopping && readiness(&self.shared).is_ok();
        Ok(Response::new(answer(if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    /// The status now, then each change, as the protocol asks (an unknown service is
    /// answered `SERVICE_UNKNOWN` and the call stays open). Ends after `NOT_SERVING` when
    /// the node stops.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let mut rx = self.readiness.clone();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let (status, stopping) = {
                    let r = rx.borrow_and_update();
                    (
                        r.status_of(&service)
                            .unwrap_or(ServingStatus::ServiceUnknown),
                        r.stopping,
                    )
                };
                if last != Some(status) {
                    if tx.send(Ok(answer(status))).await.is_err() {
                        return;
                    }
                    last = Some(status);
                }
                if stopping {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The watcher is gone: the node stopped.
                            let _ = tx.send(Ok(answer(ServingStatus::NotServing))).await;
                            return;
                        }
                    }
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(ready: bool, leader: u64, text: &str) -> Readiness {
        Readiness {
            ready,
            stopping: false,
            leader,
            term: 3,
            text: text.into(),
        }
    }

    #[test]
    fn watchers_hear_of_flips_and_leaders_not_of_every_applied_entry() {
        let a = r(
            true,
            1,
            "ready: node 2 (follower), leader 1, term 3, applied 10",
        );
        assert!(!a.differs(&r(
            true,
            1,
            "ready: node 2 (follower), leader 1, term 3, applied 11"
        )));
        assert!(a.differs(&r(true, 3, "ready")));
        assert!(a.differs(&r(false, 1, "node 2's clock is off")));
        let b = r(false, 0, "knows no leader");
        assert!(b.differs(&r(false, 0, "clock is off")));
        assert!(b.differs(&Readiness {
            stopping: true,
            ..b.clone()
        }));
    }

    #[test]
    fn the_node_and_licensing_are_reported_and_nothing_else() {
        let ready = r(true, 1, "ready");
        assert_eq!(ready.status_of(""), Some(ServingStatus::Serving));
        assert_eq!(
            ready.status_of("tally.v1.Licensing"),
            Some(ServingStatus::Serving)
        );
        assert_eq!(ready.status_of("tally.v1.Nope"), None);
        assert_eq!(
            r(false, 0, "no leader").status_of(""),
            Some(ServingStatus::NotServing)
        );
        let stopping = Readiness {
            stopping: true,
            ..ready
        };
        assert_eq!(stopping.status_of(""), Some(ServingStatus::NotServing));
    }
}
