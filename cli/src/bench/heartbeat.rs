//! `bench heartbeat`: L sessions over C connections to the leader, each renewed in its
//! own loop (one session per call) as fast as the cluster answers, so up to L renewals
//! are in flight: the shape of many client processes behind a few NAT'ed hosts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::licensing_client::LicensingClient;
use tonic::transport::Channel;

use super::raw::{self, Ids, Opener, Session};
use super::Latencies;
use crate::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Connections (HTTP/2 channels) to the leader.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Sessions, spread evenly over the connections.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Session TTL in seconds: long, so a pause on a loaded machine expires nothing.
    #[arg(long, default_value_t = 60)]
    ttl: u64,
}

/// Sessions opened at once while setting up.
const OPEN_CONCURRENCY: usize = 64;

/// Opens sessions `0..n`, session `i` on channel `i % channels.len()`, with bounded
/// concurrency; in order of `i`.
async fn open_all(
    channels: &[Channel],
    ids: &Arc<Ids>,
    opener: &Opener,
    n: usize,
) -> anyhow::Result<Vec<Session>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..OPEN_CONCURRENCY.min(n) {
        let (next, ids, opener, chs) =
            (next.clone(), ids.clone(), opener.clone(), channels.to_vec());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n as u64 {
                    return Ok::<_, tonic::Status>(mine);
                }
                let ch = chs[i as usize % chs.len()].clone();
                mine.push((i, opener.open(ch, &ids, i).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.context("open task")?.context("opening a session")?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, s)| s).collect())
}

/// What one session's loop counted.
struct Tally {
    ok: u64,
    /// Answers that the session is not alive, and failures other than a refusal.
    errors: u64,
    /// UNAVAILABLE answers: the node was not sure it still led (no quorum ack within the
    /// election timeout), or was not the leader any more. The session is not lost by one;
    /// counted apart so that a run with refusals is not mistaken for one that lost
    /// sessions (the overload issue is about how many there are).
    refused: u64,
    lat: Latencies,
    first_error: String,
}

/// One session's loop: renew, record, again.
async fn renew(ch: Channel, s: Session, deadline: Instant) -> Tally {
    let mut client = LicensingClient::new(ch);
    let req = pb::HeartbeatRequest {
        sessions: vec![s.auth()],
    };
    let mut lat = Latencies::with_capacity(1 << 12);
    let (mut ok, mut errors, mut refused, mut first_error) = (0u64, 0u64, 0u64, String::new());
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = client.heartbeat(req.clone()).await;
        let alive = match &r {
            Ok(resp) => resp
                .get_ref()
                .sessions
                .first()
                .is_some_and(|x| x.state == pb::SessionState::Alive as i32),
            Err(_) => false,
        };
        if alive {
            lat.record(t.elapsed());
            ok += 1;
            continue;
        }
        match &r {
            Err(s) if s.code() == tonic::Code::Unavailable => refused += 1,
            _ => errors += 1,
        }
        if first_error.is_empty() {
            first_error = match r {
                Ok(resp) => format!("session not alive: {:?}", resp.get_ref().sessions),
                Err(s) => format!("{}: {}", s.code(), s.message()),
            };
        }
        // A dead leader or an expired session would otherwise spin this loop.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Tally {
        ok,
        errors,
        refused,
        lat,
        first_error,
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.clients >= 1 && a.sessions >= 1,
        "--clients and --sessions must be at least 1"
    );
    let uri = raw::find_leader(&ctx.endpoints, ctx.retry_for).await?;
    let channels = raw::connect(&uri, a.clients).await?;
    let ids = Arc::new(Ids::new()?);
    let opener = Opener::new("tally-bench", Duration::from_secs(a.ttl));
    let t = Instant::now();
    let sessions = open_all(&channels, &ids, &opener, a.sessions).await?;
    eprintln!(
        "bench heartbeat: {} sessions opened on the leader {uri} over {} connections in {:.1} s; \
         renewing for {} s",
        sessions.len(),
        a.clients,
        t.elapsed().as_secs_f64(),
        a.duration
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.duration);
    let mut tasks = Vec::with_capacity(sessions.len());
    for (i, s) in sessions.iter().enumerate() {
        let ch = channels[i % channels.len()].clone();
        tasks.push(tokio::spawn(renew(ch, *s, deadline)));
    }
    let mut lat = Latencies::with_capacity(1 << 20);
    let (mut ops, mut errors, mut refused, mut first_error) = (0, 0, 0, String::new());
    for t in tasks {
        let t = t.await.context("heartbeat task")?;
        ops += t.ok;
        errors += t.errors;
        refused += t.refused;
        lat.merge(t.lat);
        if first_error.is_empty() {
            first_error = t.first_error;
        }
    }
    let elapsed = start.elapsed();
    if errors + refused > 0 {
        eprintln!(
            "bench heartbeat: {errors} failed and {refused} refused heartbeat(s); the first: {first_error}"
        );
    }
    let mut closing = Vec::with_capacity(sessions.len());
    for (i, s) in sessions.iter().enumerate() {
        let ch = channels[i % channels.len()].clone();
        let (ids, s) = (ids.clone(), *s);
        closing.push(tokio::spawn(async move {
            raw::close(ch, &ids, i as u64, s, 2).await
        }));
    }
    for c in closing {
        if let Ok(Err(e)) = c.await {
            eprintln!("bench heartbeat: closing a session: {e:#}");
        }
    }
    super::report(
        "heartbeat",
        ops,
        elapsed,
        lat,
        serde_json::json!({
            "connections": a.clients,
            "sessions": sessions.len(),
            "errors": errors,
            "refused": refused,
        }),
    );
    Ok(())
}
