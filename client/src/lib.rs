//! The Tally client library: what a CAD or engineering application embeds to hold
//! license seats from a Tally cluster.
//!
//! # In five steps
//!
//! 1. [`Client::connect`] to the cluster's nodes (all of them, or any): it opens a
//!    session for this process, with the user and host taken from the OS, and starts a
//!    heartbeat in the background.
//! 2. [`Client::checkout`] a feature: you get a [`Seat`], a guard holding the lease id and
//!    a fencing token, or [`Error::Denied`] with the reason (no seats free, unknown
//!    feature, expired license, ...).
//! 3. Work. Watch [`Client::watch`] to learn when the session is in danger (heartbeats
//!    failing: the heartbeat keeps trying, and the seats stay held until the cluster
//!    itself says the session is gone, even across a full-cluster outage), lost, or
//!    when the cluster revoked a seat ([`Seat::revoked`]: a license was unloaded, or its
//!    term ended). A leader failover is handled for you and shows as nothing at all.
//! 4. [`Seat::checkin`] (or drop the seat) to give it back.
//! 5. [`Client::close`] (or drop every handle) to end the session.
//!
//! ```no_run
//! use tally_client::{CheckoutOptions, Client, ClientOptions, Error, SessionState};
//!
//! # async fn run() -> Result<(), Error> {
//! let client = Client::connect(["127.0.0.1:27000", "127.0.0.1:27001", "127.0.0.1:27002"],
//!                              ClientOptions::default()).await?;
//! let seat = match client.checkout("solid_modeler", CheckoutOptions::default()).await {
//!     Ok(seat) => seat,
//!     Err(Error::Denied { message, .. }) => {
//!         eprintln!("no license: {message}");
//!         return Ok(());
//!     }
//!     Err(e) => return Err(e),
//! };
//! let mut session = client.watch();
//! tokio::select! {
//!     _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {} // the work
//!     _ = session.wait_for(|s| {
//!         matches!(s, SessionState::Lost { .. }) || !s.revoked().is_empty()
//!     }) => {
//!         eprintln!("license lost or revoked: {:?}", client.state());
//!     }
//! }
//! match seat.checkin().await {
//!     // A revoked seat is no longer held: there is nothing to give back.
//!     Ok(_) | Err(Error::Revoked { .. }) => {}
//!     Err(e) => return Err(e),
//! }
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! A cluster that speaks TLS (the documented deployment) needs its CA, and perhaps a
//! client certificate: set [`ConnectOptions::tls`], for instance from `TALLY_CA`,
//! `TALLY_CERT` and `TALLY_KEY` with [`Tls::from_env`].
//!
//! Every write carries a request id fixed before its first attempt, so retries across a
//! broken connection or a leader change never take a second seat. [`Cluster`] is the
//! connection underneath, usable on its own for the `Admin` service.

mod cluster;
mod error;
mod options;
mod seat;
mod session;
mod tls;

pub use cluster::{normalise, Cluster, ConnectOptions};
pub use error::Error;
pub use options::{CheckoutOptions, ClientOptions, Wait};
pub use seat::Seat;
pub use session::{Client, Revoked, SessionState};
pub use tally_proto as proto;
pub use tls::Tls;
