//! `bench cycle`: C clients (one `tally_client::Client` each, so one session and one
//! connection each, like C application processes), each looping checkout of one seat
//! then checkin. The latency measured is the checkout's. `failover` drives the same loop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::{CheckoutOptions, Client, ClientOptions, Error};
use tally_core::license::{sign_file, VendorSigningKey};

use super::Latencies;
use crate::Ctx;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Concurrent clients, each with its own session and connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    #[command(flatten)]
    pub pool: Pool,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

/// Which features the clients take seats of.
#[derive(clap::Args, Debug)]
pub struct Pool {
    /// Features to spread checkouts over (bench0..bench{F-1}); needs --license-key.
    #[arg(long, default_value_t = 16)]
    pub features: usize,
    /// A vendor secret key (e.g. DIR/vendor.key of three-nodes.sh): sign and load a
    /// license "bench.lic" of F permanent features with plenty of seats and no linger.
    /// Without it, every checkout takes the demo license's uncounted `viewer`.
    #[arg(long, value_name = "PATH")]
    pub license_key: Option<PathBuf>,
}

/// Seats per bench feature: more than any run can hold at once, so nobody ever waits.
const BENCH_SEATS: u32 = 100_000_000;

/// Loads the bench license if a key was given; the feature names to use.
pub async fn features(ctx: &Ctx, pool: &Pool) -> anyhow::Result<Arc<Vec<String>>> {
    let Some(key) = &pool.license_key else {
        eprintln!(
            "bench: no --license-key, so every checkout takes the uncounted `viewer` \
             (the demo license's counted features would run out of seats and linger)"
        );
        return Ok(Arc::new(vec!["viewer".to_owned()]));
    };
    anyhow::ensure!(pool.features >= 1, "--features must be at least 1");
    let names: Vec<String> = (0..pool.features).map(|i| format!("bench{i}")).collect();
    load_license(ctx, key, &names).await?;
    Ok(Arc::new(names))
}

/// Signs and loads `bench.lic` (vendor `demo`, the vendor three-nodes.sh trusts).
async fn load_license(ctx: &Ctx, key: &Path, names: &[String]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let key = VendorSigningKey::from_text(&text)
        .map_err(|e| anyhow::Error::new(e).context(key.display().to_string()))?;
    let mut lic = String::from("VENDOR demo\n");
    for n in names {
        lic.push_str(&format!("FEATURE {n} demo 1.0 permanent {BENCH_SEATS}\n"));
    }
    let req = pb::LoadLicenseRequest {
        source: "bench.lic".into(),
        text: sign_file(&lic, &key)?,
    };
    let r = ctx
        .cluster()?
        .call("load bench license", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).load_license(req).await }
        })
        .await?;
    eprintln!(
        "bench: loaded {} ({} features, {BENCH_SEATS} seats each, no linger)",
        r.source,
        r.features.len()
    );
    Ok(())
}

/// Opens `n` sessions at once.
pub async fn connect(ctx: &Ctx, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut tasks = Vec::with_capacity(n);
    for c in 0..n {
        let eps = ctx.endpoints.clone();
        let opts = ClientOptions {
            client_info: format!("tallyctl bench client {c}"),
            connect: ctx.connect_options()?,
            ..ClientOptions::default()
        };
        tasks.push(tokio::spawn(
            async move { Client::connect(&eps, opts).await },
        ));
    }
    let mut clients = Vec::with_capacity(n);
    for t in tasks {
        clients.push(t.await.context("connect task")??);
    }
    Ok(clients)
}

/// What one client did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Completed cycles (checkout and checkin both acknowledged).
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub lat: Latencies,
    /// When each acknowledged checkout arrived, in µs since the start (if asked for).
    pub done_at: Vec<u64>,
    /// Leases granted whose checkin failed without the cluster saying the lease was gone:
    /// the cluster must still hold them (unless the failed checkin was applied after all,
    /// which only a retryable error leaves open: those are in `uncertain`).
    pub kept: Vec<u64>,
    pub uncertain: Vec<u64>,
}

/// Runs every client's loop from `start` until `deadline`.
pub async fn drive(
    clients: &[Client],
    features: &Arc<Vec<String>>,
    start: Instant,
    deadline: Instant,
    record_times: bool,
) -> anyhow::Result<Vec<Outcome>> {
    let mut tasks = Vec::with_capacity(clients.len());
    for (c, client) in clients.iter().enumerate() {
        let (client, features) = (client.clone(), features.clone());
        tasks.push(tokio::spawn(async move {
            one_client(c, &client, &features, start, deadline, record_times).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.context("client task")?);
    }
    Ok(out)
}

async fn one_client(
    c: usize,
    client: &Client,
    features: &[String],
    start: Instant,
    deadline: Instant,
    record_times: bool,
) -> Outcome {
    let mut o = Outcome {
        lat: Latencies::with_capacity(1 << 14),
        done_at: Vec::with_capacity(if record_times { 1 << 14 } else { 0 }),
        ..Outcome::default()
    };
    let opts = CheckoutOptions::default();
    let mut i = 0usize;
    while Instant::now() < deadline {
        let feature = &features[(c + i) % features.len()];
        i += 1;
        let t = Instant::now();
        let seat = match client.checkout(feature, opts.clone()).await {
            Ok(s) => s,
            Err(e) => {
                let lost = matches!(e, Error::SessionLost { .. });
                o.fail(e);
                if lost {
                    break;
                }
                continue;
            }
        };
        let now = Instant::now();
        o.lat.record(now - t);
        if record_times {
            o.done_at
                .push(u64::try_from((now - start).as_micros()).unwrap_or(u64::MAX));
        }
        let lease = seat.lease_id();
        match seat.checkin().await {
            Ok(_) => o.ops += 1,
            Err(e) => {
                match &e {
                    Error::LeaseGone { .. } => {}
                    e if e.is_retryable() => o.uncertain.push(lease),
                    _ => o.kept.push(lease),
                }
                o.fail(e);
            }
        }
    }
    o
}

impl Outcome {
    fn fail(&mut self, e: Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Totals over clients: ops, errors, merged latencies; the first error goes to stderr.
pub fn totals(outcomes: &mut [Outcome]) -> (u64, u64, Latencies) {
    let mut lat = Latencies::with_capacity(outcomes.iter().map(|o| o.lat.count()).sum());
    let (mut ops, mut errors) = (0, 0);
    for o in outcomes.iter_mut() {
        ops += o.ops;
        errors += o.errors;
        lat.merge(std::mem::take(&mut o.lat));
    }
    if let Some(e) = outcomes.iter().find_map(|o| o.first_error.as_ref()) {
        eprintln!("bench: {errors} error(s); the first: {e}");
    }
    (ops, errors, lat)
}

/// Closes every session, so the cluster is left as found.
pub async fn close(clients: Vec<Client>) {
    let mut tasks = Vec::new();
    for c in clients {
        tasks.push(tokio::spawn(c.close()));
    }
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("bench: closing a session: {e}");
        }
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    let features = features(ctx, &a.pool).await?;
    let clients = connect(ctx, a.clients).await?;
    eprintln!(
        "bench cycle: {} clients connected; checkout+checkin over {} feature(s) for {} s",
        a.clients,
        features.len(),
        a.duration
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.duration);
    let mut outcomes = drive(&clients, &features, start, deadline, false).await?;
    let elapsed = start.elapsed();
    close(clients).await;
    let (ops, errors, lat) = totals(&mut outcomes);
    super::report(
        "cycle",
        ops,
        elapsed,
        lat,
        serde_json::json!({
            "clients": a.clients,
            "features": features.len(),
            "errors": errors,
        }),
    );
    Ok(())
}
