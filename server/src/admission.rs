//! Admission control for client writes: at most `limits.max_pending_writes` proposed and
//! not yet answered on this node; the next is answered "busy" at once.
//!
//! Why a bound, and why at the door: every client write becomes a Raft entry, and
//! openraft queues proposals without limit. Under a flood of opens the queue grows
//! faster than the log can be written and replicated, every write's latency grows with
//! it, and calls time out after their entries were appended anyway: the worst of both.
//! Refusing at once, before anything is proposed, costs the client one retry with
//! backoff (`UNAVAILABLE` is what `tally-client` retries) and keeps the latency of what
//! was admitted bounded by the queue's length. Only client writes pass here: the lease
//! keeper's expiries and checkpoints keep sessions alive and correct, and an
//! administrator's command is rare and must not lose to a flood.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The door. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Admission {
    /// `None`: no bound (`max_pending_writes = 0`).
    slots: Option<Arc<Semaphore>>,
    max: u32,
}

/// Held while an admitted write is in flight; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Admission {
    pub fn new(max: u32) -> Admission {
        Admission {
            slots: (max > 0).then(|| Arc::new(Semaphore::new(max as usize))),
            max,
        }
    }

    /// A slot for one write, or the sentence to answer with when all are taken.
    pub fn try_enter(&self) -> Result<Admitted, String> {
        match &self.slots {
            None => Ok(Admitted { _slot: None }),
            Some(s) => s.clone().try_acquire_owned().map_or_else(
                |_| {
                    Err(format!(
                        "busy: {} client writes are already in flight (limits.max_pending_writes); retry shortly",
                        self.max
                    ))
                },
                |p| Ok(Admitted { _slot: Some(p) }),
            ),
        }
    }

    /// Writes in flight now.
    pub fn in_flight(&self) -> u32 {
        self.slots.as_ref().map_or(0, |s| {
            self.max - u32::try_from(s.available_permits()).unwrap_or(self.max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_door_refuses_at_once_and_opens_as_writes_end() {
        let door = Admission::new(2);
        let a = door.try_enter().unwrap();
        let b = door.try_enter().unwrap();
        assert_eq!(door.in_flight(), 2);
        let busy = door.try_enter().unwrap_err();
        assert!(busy.starts_with("busy: 2 client writes") && busy.contains("max_pending_writes"));
        drop(a);
        let c = door.try_enter().unwrap();
        assert_eq!(door.in_flight(), 2);
        drop((b, c));
        assert_eq!(door.in_flight(), 0);
        // 0 switches the bound off.
        let open = Admission::new(0);
        let held: Vec<_> = (0..10_000).map(|_| open.try_enter().unwrap()).collect();
        assert_eq!((held.len(), open.in_flight()), (10_000, 0));
    }
}
