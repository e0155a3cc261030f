//! `tallyctl checkout`: a real client session that holds seats, heartbeating, until the
//! time is up, it is interrupted, the cluster revokes the seats or the session is lost.
//! Heartbeats that fail (a cluster that is down, however long) only put the session in
//! danger: it keeps holding, and says so on stderr.

use std::time::Duration;

use tally_client::{CheckoutOptions, Client, ClientOptions, SessionState, Wait};

use crate::{Ctx, Denied, SeatLost};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The feature to check out, as the license names it.
    feature: String,
    /// Seats to take, all or none (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Lowest acceptable version, e.g. 2026.1.
    #[arg(long, default_value = "")]
    version: String,
    /// Wait in the feature's queue when no seat is free: up to SECS, or with no value for
    /// as long as it takes.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "0")]
    wait: Option<u64>,
    /// Hold the seats this many seconds, then check in (default: until Ctrl-C or
    /// SIGTERM). Heartbeats that fail do not end the hold ("session in danger" on
    /// stderr, and "session healthy again" once they get through); seats the cluster
    /// revokes, or a session it says is gone, end it with exit code 6.
    #[arg(long)]
    hold: Option<u64>,
    /// Session TTL to ask for, in seconds (the cluster clamps it).
    #[arg(long)]
    ttl: Option<u64>,
    /// Check out as this user (default: $USER).
    #[arg(long, env = "TALLY_USER")]
    user: Option<String>,
    /// Check out as from this host (default: this machine's name): for scripted tests and
    /// service accounts. A cluster that takes identities from certificates refuses a host
    /// the caller's certificate does not name (administrators excepted).
    #[arg(long, env = "TALLY_HOST")]
    host: Option<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut opts = ClientOptions {
        client_info: format!("tallyctl {}", env!("CARGO_PKG_VERSION")),
        ttl: Duration::from_secs(a.ttl.unwrap_or(0)),
        connect: ctx.connect_options()?,
        ..ClientOptions::default()
    };
    if let Some(u) = a.user {
        opts.user = u;
    }
    if let Some(h) = a.host {
        opts.host = h;
    }
    let client = Client::connect(&ctx.endpoints, opts).await?;
    let feature = a.feature.clone();
    let seat = match client
        .checkout_reporting(
            &a.feature,
            CheckoutOptions {
                count: a.count,
                version: a.version,
                wait: match a.wait {
                    None => Wait::No,
                    Some(0) => Wait::Forever,
                    Some(s) => Wait::For(Duration::from_secs(s)),
                },
            },
            // On stderr: stdout carries the grant (JSON for scripts).
            |place| eprintln!("queued for \"{feature}\": place {place} in line"),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            // Nothing is held: close the session now. Left to the client's drop, the
            // close would be cut off by the process exiting, and the session would sit
            // in the cluster until its TTL (80 denials once left 68 sessions open).
            let _ = client.close().await;
            return Err(match e {
                tally_client::Error::Denied { message, .. } => Denied(message).into(),
                e => e.into(),
            });
        }
    };
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "lease_id": seat.lease_id(), "fencing_token": seat.fencing_token(),
                "session_id": client.session_id(), "feature": seat.feature(),
                "count": seat.count(), "overdraft_seats": seat.overdraft(),
                "seat_id": seat.grant().seat_id, "shared": seat.grant().shared,
                "reused_lingering": seat.grant().reused_lingering,
                "ttl_ms": client.ttl().as_millis() as u64,
            })
        );
    } else {
        println!(
            "checked out {} x{}: lease {}, fencing token {}, session {} (TTL {} s){}",
            seat.feature(),
            seat.count(),
            seat.lease_id(),
            seat.fencing_token(),
            client.session_id(),
            client.ttl().as_secs(),
            match a.hold {
                Some(s) => format!("; holding for {s} s"),
                None => "; holding until Ctrl-C".into(),
            }
        );
    }
    // Scripts read the grant from a pipe while we keep holding.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let hold = async {
        match a.hold {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let lease = seat.lease_id();
    let mut watch = client.watch();
    let mut hold = std::pin::pin!(hold);
    let mut interrupted = std::pin::pin!(interrupted());
    let mut in_danger = false;
    loop {
        // Status lines go to stderr: with --json, stdout holds the grant's JSON alone.
        let gone = {
            let state = watch.borrow_and_update();
            if let Some(r) = state.revoked().iter().find(|r| r.lease_id == lease) {
                Some(r.message.clone())
            } else {
                match &*state {
                    SessionState::Lost { reason } => Some(format!("session lost: {reason}")),
                    SessionState::InDanger { error, .. } if !in_danger => {
                        eprintln!("session in danger: {error}; still holding, retrying");
                        in_danger = true;
                        None
                    }
                    SessionState::Healthy { .. } if in_danger => {
                        eprintln!("session healthy again");
                        in_danger = false;
                        None
                    }
                    _ => None,
                }
            }
        };
        if let Some(why) = gone {
            // The seat is not held any more (so dropping it checks nothing in); end the
            // session if it is still open, and say why with exit code 6.
            drop(seat);
            let _ = client.close().await;
            return Err(SeatLost(why).into());
        }
        tokio::select! {
            _ = &mut hold => break,
            _ = &mut interrupted => break,
            changed = watch.changed() => {
                // The sender lives in the client, which lives here: it cannot close.
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    seat.checkin().await?;
    client.close().await?;
    if !ctx.json {
        println!("checked in");
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
