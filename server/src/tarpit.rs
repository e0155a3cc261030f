//! Held refusals for callers that keep failing authentication (`limits.failed_auth_rps`
//! and `failed_auth_delay_ms`).
//!
//! A refusal before proposing costs the leader about 0.1 ms of CPU (TLS, HTTP/2 and
//! protobuf, mostly), and the flooder several times that to produce the request: on a
//! machine where both share the cores, the honest clients' latency doubled under the
//! hostile suite's floods (BENCHMARKS.md, "Under attack"). Refusing faster saves little
//! and answering sooner only lets the flooder send sooner. Holding each refusal past a
//! caller's budget instead makes a flooder that waits for its answers (every gRPC client
//! does, and a connection carries at most 1,024 open streams) send at most its open
//! streams per delay. Honest requests are never held, only refusals, so charging a
//! shared address (a terminal server, a NAT) costs its honest users nothing but the speed
//! of their own failures.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::Request;

use crate::config::Limits;
use crate::security::{Caller, RateLimiter};

/// Who a failed authentication is charged to: what the caller proved, by the rule of
/// `Origin::identity` (the certificate, else the address), which the ledger keeps as a
/// string per session; this form allocates nothing, since every call computes it. A
/// certificate's name rather than its bytes: the site CA vouches for the name, and a
/// caller holding two certificates of one name is one caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Culprit {
    Cert(Arc<str>),
    Addr(IpAddr),
    /// Neither a certificate nor an address (a test's in-process transport).
    Nobody,
}

impl Culprit {
    pub fn of<T>(req: &Request<T>) -> Culprit {
        if let Some(name) = req
            .extensions()
            .get::<Caller>()
            .and_then(|c| c.cert_name.clone())
        {
            return Culprit::Cert(name);
        }
        req.remote_addr()
            .map_or(Culprit::Nobody, |a| Culprit::Addr(a.ip()))
    }
}

/// The failure budgets, one token bucket per culprit. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tarpit {
    budgets: Option<Arc<RateLimiter<Culprit>>>,
    delay: Duration,
}

impl Tarpit {
    pub fn new(limits: &Limits) -> Self {
        Tarpit {
            budgets: RateLimiter::new(limits.failed_auth_rps),
            delay: Duration::from_millis(limits.failed_auth_delay_ms),
        }
    }

    /// Charges one failure to `who`: how long its refusal is to be held (zero within the
    /// budget, or with the limit off).
    pub fn charge(&self, who: &Culprit) -> Duration {
        match &self.budgets {
            Some(b) if !b.allow(who.clone()) => self.delay,
            _ => Duration::ZERO,
        }
    }

    /// Charges one failure to `who` and holds the caller's refusal as long as that says.
    pub async fn hold(&self, who: &Culprit) {
        let d = self.charge(who);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_its_failure_budget_is_held_and_others_are_not() {
        let t = Tarpit::new(&Limits {
            failed_auth_rps: 5,
            failed_auth_delay_ms: 700,
            ..Limits::default()
        });
        let mallory = Culprit::Cert("mallory".into());
        let held: Vec<Duration> = (0..12).map(|_| t.charge(&mallory)).collect();
        // A burst of twice the rate passes at once; the rest are held the whole delay.
        assert!(held[..10].iter().all(|d| d.is_zero()), "{held:?}");
        assert!(held[10..].iter().all(|d| d.as_millis() == 700), "{held:?}");
        // Another certificate, an address, the same name's address: budgets of their own.
        assert!(t.charge(&Culprit::Cert("ann".into())).is_zero());
        assert!(t.charge(&Culprit::Addr([127, 0, 0, 1].into())).is_zero());
        let off = Tarpit::new(&Limits {
            failed_auth_rps: 0,
            ..Limits::default()
        });
        assert!((0..100).all(|_| off.charge(&mallory).is_zero()), "0 = off");
    }
}
