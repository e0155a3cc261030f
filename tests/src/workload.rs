//! The workload: concurrent clients on a few contended features, each checking out (some
//! waiting in the queue), heartbeating (in the background), checking in, closing or
//! crashing, and an administrator reloading licenses and removing leases (see
//! `admin_work.rs`), with every operation recorded for the checker: start, end,
//! outcome, lease and fencing token.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_client::{
    CheckoutOptions, Client, ClientOptions, ConnectOptions, Error, SessionState, Wait,
};

use crate::admin_work::Licensor;

/// The features clients check out: the harness license's three (no grouping) and
/// `admin_work::DUP_LICENSE`'s two (`DUP_GROUP=U` and `UH`).
pub const FEATURES: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];

/// Milliseconds since the Unix epoch: the clock the leaders stamp entries with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A small deterministic generator: schedules must replay from their seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// What one operation ended in, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Opened {
        session: u64,
    },
    Granted {
        lease: u64,
        token: u64,
    },
    Denied(String),
    CheckedIn,
    Closed,
    /// An administrator's operation was acknowledged (what it said).
    Admin(String),
    Crashed,
    /// The call failed without an answer: it may or may not have taken effect.
    Unknown(String),
}

#[derive(Debug, Clone)]
pub struct Op {
    pub client: usize,
    pub session: u64,
    pub what: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

/// What the cluster acknowledged about one session.
#[derive(Debug, Clone, Default)]
pub struct SessionRecord {
    pub ttl_ms: u64,
    /// The latest deadline an acknowledged heartbeat (or the open) promised.
    pub acked_deadline_ms: u64,
    /// When the client crashed (stopped heartbeating without closing).
    pub crashed_ms: Option<u64>,
}

/// Everything the clients saw.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub sessions: BTreeMap<u64, SessionRecord>,
}

/// Clients run until `stop` is set; the history is complete once every task returned.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Session TTL the workload asks for: short, so crashes are reclaimed within a test.
pub const TTL_MS: u64 = 3_000;

impl Workload {
    /// `clients` clients, and with `admin` an administrator beside them.
    pub fn start(
        endpoints: Vec<String>,
        clients: usize,
        seed: u64,
        admin: Option<Licensor>,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(History::default()));
        let mut tasks: Vec<_> = (0..clients)
            .map(|c| {
                let w = Worker {
                    id: c,
                    endpoints: endpoints.clone(),
                    rng: Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)),
                    stop: stop.clone(),
                    history: history.clone(),
                };
                tokio::spawn(w.run())
            })
            .collect();
        if let Some(lic) = admin {
            let rng = Rng::new(seed ^ 0xAD_0115);
            tasks.push(tokio::spawn(crate::admin_work::run(
                lic,
                rng,
                stop.clone(),
                history.clone(),
            )));
        }
        Workload {
            stop,
            history,
            tasks,
        }
    }

    /// Checkouts granted and checkins answered so far among the operations that started
    /// at or after `from_ms`.
    pub fn progress_since(&self, from_ms: u64) -> (usize, usize) {
        let Ok(h) = self.history.lock() else {
            return (0, 0);
        };
        h.ops
            .iter()
            .filter(|o| o.start_ms >= from_ms)
            .fold((0, 0), |(g, c), o| match o.outcome {
                Outcome::Granted { .. } => (g + 1, c),
                Outcome::CheckedIn => (g, c + 1),
                _ => (g, c),
            })
    }

    /// Stops the clients (each closes or crashes where it stands) and returns the history.
    pub async fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let h = self.history.lock().map(|h| h.clone());
        h.unwrap_or_default()
    }
}

struct Worker {
    id: usize,
    endpoints: Vec<String>,
    rng: Rng,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
}

impl Worker {
    fn record(&self, session: u64, what: String, start_ms: u64, outcome: Outcome) {
        if let Ok(mut h) = self.history.lock() {
            h.ops.push(Op {
                client: self.id,
                session,
                what,
                start_ms,
                end_ms: now_ms(),
                outcome,
            });
        }
    }

    async fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            let start = now_ms();
            let opts = ClientOptions {
                // Three users on two hosts: with six clients, every user runs on both
                // hosts, so DUP_GROUP=U shares seats across clients and UH does not.
                user: format!("user{}", self.id % 3),
                host: format!("ws{}", self.id % 2),
                ttl: Duration::from_millis(TTL_MS),
                connect: ConnectOptions {
                    retry_for: Duration::from_secs(5),
                    request_timeout: Duration::from_secs(2),
                    connect_timeout: Duration::from_millis(500),
                    tls: None,
                },
                ..ClientOptions::default()
            };
            let client = match Client::connect(&self.endpoints, opts).await {
                Ok(c) => c,
                Err(e) => {
                    self.record(0, "open".into(), start, Outcome::Unknown(e.to_string()));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let session = client.session_id();
            let ttl_ms = client.ttl().as_millis() as u64;
            if let Ok(mut h) = self.history.lock() {
                h.sessions.insert(
                    session,
                    SessionRecord {
                        ttl_ms,
                        // Nothing promised yet: `start + TTL` on this client's clock is no
                        // bound on the cluster's, which may run behind it by up to
                        // `max_clock_offset` (the clock nemeses make it so, and soak
                        // seeds 10, 11 and 15 flagged expiries 150-500 ms "early" from
                        // it). The model checks an expiry against the session's own open
                        // entry; heartbeats record what the leader promised, on its clock.
                        acked_deadline_ms: 0,
                        crashed_ms: None,
                    },
                );
            }
            self.record(session, "open".into(), start, Outcome::Opened { session });
            let watcher = watch_deadlines(&client, session, self.history.clone());
            self.session(client, session).await;
            watcher.abort();
        }
    }

    /// Operations on one session until it ends (closed, crashed, lost) or `stop`.
    async fn session(&mut self, client: Client, session: u64) {
        let mut held = Vec::new();
        loop {
            if matches!(client.state(), SessionState::Lost { .. }) {
                return;
            }
            if self.stop.load(Ordering::Relaxed) {
                // Half the clients leave cleanly, half crash: both must end right.
                if self.rng.below(2) == 0 {
                    self.crash(client, session, held);
                } else {
                    let start = now_ms();
                    let r = client.close().await;
                    self.record(session, "close".into(), start, close_outcome(r));
                }
                return;
            }
            let start = now_ms();
            match self.rng.below(12) {
                0..=5 if held.len() < 2 => {
                    let feature = FEATURES[self.rng.below(FEATURES.len() as u64) as usize];
                    let count = 1 + u32::from(self.rng.below(4) == 0);
                    // A third of the checkouts wait in the queue for a while.
                    let wait = if self.rng.below(3) == 0 {
                        Wait::For(Duration::from_millis(1_500))
                    } else {
                        Wait::No
                    };
                    let opts = CheckoutOptions {
                        count,
                        wait,
                        ..CheckoutOptions::default()
                    };
                    let what = format!("checkout {feature} x{count} {wait:?}");
                    match client.checkout(feature, opts).await {
                        Ok(seat) => {
                            let o = Outcome::Granted {
                                lease: seat.lease_id(),
                                token: seat.fencing_token(),
                            };
                            self.record(session, what, start, o);
                            held.push(seat);
                        }
                        Err(Error::Denied { message, .. }) => {
                            self.record(session, what, start, Outcome::Denied(message))
                        }
                        Err(e) => {
                            self.record(session, what, start, Outcome::Unknown(e.to_string()))
                        }
                    }
                }
                0..=9 if !held.is_empty() => {
                    let i = self.rng.below(held.len() as u64) as usize;
                    let seat = held.swap_remove(i);
                    let what = format!("checkin {}", seat.lease_id());
                    let o = match seat.checkin().await {
                        Ok(_) => Outcome::CheckedIn,
                        Err(e) => Outcome::Unknown(e.to_string()),
                    };
                    self.record(session, what, start, o);
                }
                10 => {
                    self.crash(client, session, held);
                    return;
                }
                11 => {
                    let r = client.close().await;
                    drop(held); // already released by the close
                    self.record(session, "close".into(), start, close_outcome(r));
                    return;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(self.rng.below(150))).await;
        }
    }

    fn crash(&self, client: Client, session: u64, held: Vec<tally_client::Seat>) {
        let at = now_ms();
        client.abandon();
        drop(held); // not checked in: the session is abandoned
        if let Ok(mut h) = self.history.lock() {
            if let Some(s) = h.sessions.get_mut(&session) {
                s.crashed_ms = Some(at);
            }
        }
        self.record(session, "crash".into(), at, Outcome::Crashed);
    }
}

fn close_outcome(r: Result<u32, Error>) -> Outcome {
    match r {
        Ok(_) => Outcome::Closed,
        Err(e) => Outcome::Unknown(e.to_string()),
    }
}

/// Records the latest deadline the cluster acknowledged for the session.
fn watch_deadlines(
    client: &Client,
    session: u64,
    history: Arc<Mutex<History>>,
) -> tokio::task::JoinHandle<()> {
    let mut rx = client.watch();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let deadline = match &*rx.borrow_and_update() {
                SessionState::Healthy { deadline_ms, .. } => *deadline_ms,
                _ => continue,
            };
            if let Ok(mut h) = history.lock() {
                if let Some(s) = h.sessions.get_mut(&session) {
                    s.acked_deadline_ms = s.acked_deadline_ms.max(deadline);
                }
            }
        }
    })
}
