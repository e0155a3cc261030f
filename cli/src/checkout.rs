//! `tallyctl checkout`: a real client session that holds seats, heartbeating, until the
//! time is up, it is interrupted, or the session is lost.

use std::time::Duration;

use tally_client::{CheckoutOptions, Client, ClientOptions, SessionState, Wait};

use crate::{Ctx, Denied};

#[derive(clap::Args, Debug)]
pub struct Args {
    feature: String,
    /// Seats to take, all or none.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Lowest acceptable version, e.g. 2026.1.
    #[arg(long, default_value = "")]
    version: String,
    /// Wait in the feature's queue when no seat is free: up to SECS, or with no value for
    /// as long as it takes.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "0")]
    wait: Option<u64>,
    /// Hold the seats this many seconds, then check in (default: until Ctrl-C).
    #[arg(long)]
    hold: Option<u64>,
    /// Session TTL to ask for, in seconds (the cluster clamps it).
    #[arg(long)]
    ttl: Option<u64>,
    /// Check out as this user (default: $USER).
    #[arg(long)]
    user: Option<String>,
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
    let client = Client::connect(&ctx.endpoints, opts).await?;
    let seat = match client
        .checkout(
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
        )
        .await
    {
        Ok(s) => s,
        Err(tally_client::Error::Denied { message, .. }) => {
            return Err(Denied(message).into());
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({
                "lease_id": seat.lease_id(), "fencing_token": seat.fencing_token(),
                "session_id": client.session_id(), "feature": seat.feature(),
                "count": seat.count(), "overdraft_seats": seat.overdraft(),
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
    let mut watch = client.watch();
    tokio::select! {
        _ = hold => {}
        _ = interrupted() => {}
        _ = watch.wait_for(|s| matches!(s, SessionState::Lost { .. })) => {
            let why = match client.state() {
                SessionState::Lost { reason } => reason,
                other => format!("{other:?}"),
            };
            anyhow::bail!("lost the seats: {why}");
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
