//! A fleet of raw sessions for `bench scale`: opened with bounded concurrency over a few
//! connections to the leader, each taking one seat, and kept alive by batched heartbeats
//! (many sessions per call, as a gateway for many processes would send them) every TTL/3,
//! following the leader when it changes, while opening as well as while renewing.
//! Sessions the cluster no longer knows are dropped from the fleet and counted as lost.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::licensing_client::LicensingClient;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::raw::{self, Ids, Opener, Session};
use super::Latencies;

/// Sessions per heartbeat call (the server takes at most 10,000).
const BATCH: usize = 5_000;
/// Longest wait for one heartbeat call before the leader is looked for again.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one open or checkout: a stopped or partitioned leader must not hold
/// an opener forever.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening one session keeps retrying across leader changes before giving up.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(120);

/// One completed heartbeat round: every session in the fleet was renewed or found lost.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub started: Instant,
    pub ended: Instant,
    pub lost_total: u64,
}

/// The connections to the leader as last found, and which finding that was: a task that
/// saw them fail looks for the leader again only if nobody has since.
#[derive(Debug, Default)]
struct Channels {
    generation: u64,
    list: Vec<Channel>,
}

#[derive(Debug)]
pub struct Fleet {
    endpoints: Vec<String>,
    connections: usize,
    channels: Mutex<Channels>,
    /// Held while looking for the leader, so hundreds of openers that fail together make
    /// one search, not hundreds.
    relead: tokio::sync::Mutex<()>,
    sessions: Mutex<Vec<Session>>,
    lost: AtomicU64,
    /// Why heartbeat batches failed, by cause (see [`failure_cause`]), so a run says
    /// whether the server refused (and why), timed out, or had no leader.
    failures: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub ids: Ids,
    pub opener: Opener,
    pub feature: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every holder leaves the data whole (pushes, copies, a retain), so a poisoned lock
    // is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Fleet {
    pub async fn new(
        endpoints: &[String],
        connections: usize,
        opener: Opener,
        feature: String,
    ) -> anyhow::Result<Arc<Fleet>> {
        let f = Fleet {
            endpoints: endpoints.to_vec(),
            connections,
            channels: Mutex::new(Channels::default()),
            relead: tokio::sync::Mutex::new(()),
            sessions: Mutex::new(Vec::new()),
            lost: AtomicU64::new(0),
            failures: Mutex::default(),
            ids: Ids::new()?,
            opener,
            feature,
        };
        f.relead(0).await?;
        Ok(Arc::new(f))
    }

    /// Finds the leader (waiting out an election) and reconnects to it, unless that was
    /// done since the connections of `seen` failed. The leader's URI if it looked.
    async fn relead(&self, seen: u64) -> anyhow::Result<Option<String>> {
        let _one = self.relead.lock().await;
        if lock(&self.channels).generation != seen {
            return Ok(None);
        }
        let uri = raw::find_leader(&self.endpoints, Duration::from_secs(60)).await?;
        let list = raw::connect(&uri, self.connections).await?;
        let mut chs = lock(&self.channels);
        chs.generation += 1;
        chs.list = list;
        Ok(Some(uri))
    }

    /// Connection `i` (modulo their number), and the generation it belongs to.
    fn channel(&self, i: usize) -> (u64, Channel) {
        let chs = lock(&self.channels);
        (chs.generation, chs.list[i % chs.list.len()].clone())
    }

    pub fn count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Forgets every session (after they expired).
    pub fn clear(&self) {
        lock(&self.sessions).clear();
    }

    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Failed heartbeat batches so far, by cause.
    pub fn failures(&self) -> std::collections::BTreeMap<&'static str, u64> {
        lock(&self.failures).clone()
    }

    /// The highest session id in the fleet: the cluster expires due sessions in id
    /// order, so this one goes last.
    pub fn max_id(&self) -> Option<u64> {
        lock(&self.sessions).iter().map(|s| s.id).max()
    }

    /// Opens sessions `from..from + n`, each checking out one seat, `concurrency` at a
    /// time. Returns the per-session latency of open + checkout.
    pub async fn open(
        self: &Arc<Self>,
        from: u64,
        n: u64,
        concurrency: usize,
        opened: Arc<AtomicU64>,
    ) -> anyhow::Result<Latencies> {
        let next = Arc::new(AtomicU64::new(from));
        let mut workers = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (fleet, next, opened) = (self.clone(), next.clone(), opened.clone());
            workers.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= from + n {
                        return Ok::<_, anyhow::Error>(lat);
                    }
                    let t = Instant::now();
                    let s = fleet.open_one(i).await?;
                    lat.record(t.elapsed());
                    lock(&fleet.sessions).push(s);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let mut lat = Latencies::with_capacity(usize::try_from(n).unwrap_or(0));
        for w in workers {
            lat.merge(w.await.context("open task")??);
        }
        Ok(lat)
    }

    /// Opens session `i` and checks out its seat, following the leader through
    /// elections. Retries carry the same client id and sequence numbers, so the cluster
    /// answers a retry of an applied request with its first answer: no second session,
    /// no second seat.
    async fn open_one(&self, i: u64) -> anyhow::Result<Session> {
        let give_up = Instant::now() + OPEN_RETRY_FOR;
        let s = loop {
            let (generation, ch) = self.channel(i as usize);
            let r = tokio::time::timeout(OPEN_TIMEOUT, self.opener.open(ch, &self.ids, i)).await;
            match r {
                Ok(Ok(s)) => break s,
                Ok(Err(st)) if !raw::leader_gone(&st) || Instant::now() > give_up => {
                    anyhow::bail!("opening session {i}: {}: {}", st.code(), st.message())
                }
                _ => self.after_failure(generation, give_up, i).await?,
            }
        };
        let (client, _) = self.ids.of(i);
        let req = pb::CheckoutRequest {
            request: Some(raw::request(client, 2)),
            auth: Some(s.auth()),
            feature: self.feature.clone(),
            version: String::new(),
            count: 1,
            wait: false,
            wait_timeout_ms: 0,
        };
        let r = loop {
            let (generation, ch) = self.channel(i as usize);
            let mut client = LicensingClient::new(ch);
            match tokio::time::timeout(OPEN_TIMEOUT, client.checkout(req.clone())).await {
                Ok(Ok(r)) => break r.into_inner(),
                Ok(Err(st)) if !raw::leader_gone(&st) || Instant::now() > give_up => {
                    anyhow::bail!("checkout for session {i}: {}: {}", st.code(), st.message())
                }
                _ => self.after_failure(generation, give_up, i).await?,
            }
        };
        match r.result {
            Some(pb::checkout_response::Result::Granted(_)) => Ok(s),
            other => anyhow::bail!("checkout of {} for session {i}: {other:?}", self.feature),
        }
    }

    /// After a call to the leader of `generation` failed for want of a leader: pause
    /// (an election takes a few hundred milliseconds; a new leader's keeper needs a tick
    /// more), then look for the leader unless another task already did.
    async fn after_failure(&self, generation: u64, give_up: Instant, i: u64) -> anyhow::Result<()> {
        anyhow::ensure!(
            Instant::now() < give_up,
            "session {i}: no leader answered for {} s",
            OPEN_RETRY_FOR.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(uri) = self.relead(generation).await? {
            eprintln!("bench scale: opening met a leader change; the leader is now {uri}");
        }
        Ok(())
    }

    /// Heartbeats every session every `every` until `stop` turns true; publishes each
    /// completed round. Ends with the last round, so that the caller knows when the
    /// fleet's sessions were last renewed.
    pub async fn keep_alive(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
        rounds: watch::Sender<Option<Round>>,
    ) -> anyhow::Result<()> {
        loop {
            let started = Instant::now();
            self.round().await?;
            rounds.send_replace(Some(Round {
                started,
                ended: Instant::now(),
                lost_total: self.lost(),
            }));
            if *stop.borrow() {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep_until((started + every).into()) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
    }

    /// Renews every session once, in batches spread over the connections; batches that
    /// met a dead or deposed leader are sent again to the new one.
    async fn round(self: &Arc<Self>) -> anyhow::Result<()> {
        let n = self.count();
        let mut pending: Vec<Range<usize>> = (0..n)
            .step_by(BATCH)
            .map(|a| a..(a + BATCH).min(n))
            .collect();
        let mut dead = HashSet::new();
        while !pending.is_empty() {
            let (generation, chs) = {
                let c = lock(&self.channels);
                (c.generation, c.list.clone())
            };
            let mut per_channel: Vec<Vec<Range<usize>>> = vec![Vec::new(); chs.len()];
            for (k, r) in pending.drain(..).enumerate() {
                per_channel[k % chs.len()].push(r);
            }
            let mut tasks = Vec::new();
            for (ch, ranges) in chs.into_iter().zip(per_channel) {
                let fleet = self.clone();
                tasks.push(tokio::spawn(async move { fleet.send(ch, ranges).await }));
            }
            let mut failed = Vec::new();
            for t in tasks {
                let (d, f) = t.await.context("heartbeat task")??;
                dead.extend(d);
                failed.extend(f);
            }
            if !failed.is_empty() {
                // A new leader answers the probe in `relead` before its lease keeper has
                // loaded deadlines, and refuses heartbeats until then: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(uri) = self.relead(generation).await? {
                    eprintln!(
                        "bench scale: {} heartbeat batch(es) failed; the leader is now {uri}",
                        failed.len()
                    );
                }
                pending = failed;
            }
        }
        if !dead.is_empty() {
            lock(&self.sessions).retain(|s| !dead.contains(&s.id));
            self.lost.fetch_add(dead.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends `ranges` of the fleet on one connection, in turn. Returns sessions the
    /// cluster no longer knows, and ranges to send again to a new leader.
    async fn send(
        &self,
        ch: Channel,
        ranges: Vec<Range<usize>>,
    ) -> anyhow::Result<(Vec<u64>, Vec<Range<usize>>)> {
        let mut client = LicensingClient::new(ch);
        let (mut dead, mut failed) = (Vec::new(), Vec::new());
        let mut it = ranges.into_iter();
        while let Some(r) = it.next() {
            let sessions: Vec<pb::SessionAuth> = {
                let all = lock(&self.sessions);
                all[r.clone()].iter().map(Session::auth).collect()
            };
            let req = pb::HeartbeatRequest { sessions };
            match tokio::time::timeout(CALL_TIMEOUT, client.heartbeat(req)).await {
                Ok(Ok(resp)) => dead.extend(
                    resp.into_inner()
                        .sessions
                        .iter()
                        .filter(|s| s.state != pb::SessionState::Alive as i32)
                        .map(|s| s.session_id),
                ),
                Ok(Err(s)) if !raw::leader_gone(&s) => {
                    anyhow::bail!("heartbeat refused: {}: {}", s.code(), s.message())
                }
                other => {
                    let cause = match &other {
                        Ok(Err(s)) => failure_cause(s),
                        _ => "timeout",
                    };
                    *lock(&self.failures).entry(cause).or_default() += 1;
                    failed.push(r);
                    failed.extend(it);
                    break;
                }
            }
        }
        Ok((dead, failed))
    }
}

/// Why a heartbeat batch failed, from the server's refusal: the leader not sure it still
/// leads (no quorum acknowledgement within its lease), a new leader still loading
/// deadlines, not the leader (or none known), or the connection itself.
pub fn failure_cause(s: &tonic::Status) -> &'static str {
    let m = s.message();
    if m.contains("is not sure it still does") {
        "leader_unsure"
    } else if m.contains("loading session deadlines") {
        "leader_loading"
    } else if m.contains("not the leader") {
        "not_leader"
    } else if s.code() == tonic::Code::Unavailable {
        "unavailable"
    } else {
        "transport"
    }
}

#[cfg(test)]
mod tests {
    use super::failure_cause;
    use tonic::{Code, Status};

    #[test]
    fn failed_batches_are_told_apart_by_the_servers_refusal() {
        // The sentences are the server's (server/src/licensing.rs heartbeat refusals).
        let cases = [
            (Status::unavailable("node 2 leads but is not sure it still does: no quorum acknowledged it within 570 ms (last 612 ms ago); retry in a moment"), "leader_unsure"),
            (Status::unavailable("node 3 has just become the leader and is loading session deadlines; retry in a moment"), "leader_loading"),
            (Status::unavailable("not the leader; the leader is node 1 at 127.0.0.1:1"), "not_leader"),
            (Status::unavailable("connection refused"), "unavailable"),
            (Status::new(Code::Unknown, "transport error"), "transport"),
        ];
        for (s, want) in cases {
            assert_eq!(failure_cause(&s), want, "{}", s.message());
        }
    }
}
