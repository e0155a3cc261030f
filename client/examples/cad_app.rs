//! A small "CAD application": checks out a seat of `solid_modeler`, works while watching
//! its session, and checks the seat in. Against `tallyd dev`:
//!
//! ```sh
//! cargo run --release --bin tallyd -- dev          # in one terminal
//! . /tmp/tally-dev-PID/tally.env                    # in another: what tallyd dev printed
//! cargo run -p tally-client --example cad_app
//! ```
//!
//! Endpoints come from `TALLY_ENDPOINTS` (default: the dev cluster's ports), TLS from
//! `TALLY_CA`, `TALLY_CERT` and `TALLY_KEY`.

use std::time::Duration;

use tally_client::{
    CheckoutOptions, Client, ClientOptions, ConnectOptions, Error, SessionState, Tls, Wait,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoints = std::env::var("TALLY_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:27000,127.0.0.1:27001,127.0.0.1:27002".into());
    let client = Client::connect(
        endpoints.split(','),
        ClientOptions {
            client_info: "cad_app example 1.0".into(),
            connect: ConnectOptions {
                tls: Tls::from_env()?,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await?;
    println!(
        "session {} open (TTL {:?})",
        client.session_id(),
        client.ttl()
    );

    let seat = match client
        .checkout(
            "solid_modeler",
            CheckoutOptions {
                count: 1,
                version: "2026.1".into(),
                // Queue for up to a minute when every seat is taken.
                wait: Wait::For(Duration::from_secs(60)),
            },
        )
        .await
    {
        Ok(seat) => seat,
        Err(Error::Denied { message, .. }) => {
            eprintln!("cannot start: {message}");
            std::process::exit(4);
        }
        Err(e) => return Err(e),
    };
    println!(
        "modelling under lease {} (fencing token {})",
        seat.lease_id(),
        seat.fencing_token()
    );

    // The work: five "operations", stopping early if the license is lost or revoked.
    // Heartbeats that fail only put the session in danger: the seat is still held.
    let mut session = client.watch();
    let lease = seat.lease_id();
    for step in 1..=5 {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => println!("  operation {step} done"),
            _ = session.wait_for(|s| {
                matches!(s, SessionState::Lost { .. })
                    || s.revoked().iter().any(|r| r.lease_id == lease)
            }) => {
                match seat.revoked() {
                    Some(r) => eprintln!("license revoked, saving and stopping: {}", r.message),
                    None => eprintln!("license lost, saving and stopping: {:?}", client.state()),
                }
                return Ok(());
            }
        }
    }

    let lingering = seat.checkin().await?;
    match lingering {
        Some(until) => println!("seat checked in; it lingers for this user until {until} ms"),
        None => println!("seat checked in"),
    }
    client.close().await?;
    Ok(())
}
