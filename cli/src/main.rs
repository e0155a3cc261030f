//! `tallyctl`: the license administrator's and the vendor's command line. Thin: parse
//! flags, run one command, turn its error into one line and an exit code.
//!
//! Exit codes: 0 done; 1 the cluster refused or something else failed; 2 bad usage;
//! 3 the cluster could not be reached or has no leader (retry later); 4 a checkout was
//! denied; 5 a license or key file is invalid (bad syntax, bad signature, wrong key).

mod admin;
mod bench;
mod checkout;
mod license;
mod listing;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tally_client::{Cluster, ConnectOptions};

#[derive(Parser, Debug)]
#[command(
    name = "tallyctl",
    version,
    about = "Administer a Tally license cluster"
)]
struct Cli {
    /// The cluster's nodes, comma-separated HOST:PORT (any of them; all is best).
    #[arg(long, env = "TALLY_ENDPOINTS", value_delimiter = ',', global = true)]
    endpoints: Vec<String>,
    /// Print JSON instead of tables (a stable contract for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to keep looking for a leader (elections, unreachable nodes) before giving up.
    #[arg(long, env = "TALLY_TIMEOUT", default_value_t = 15.0, global = true)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Nodes, leader, term, log indexes and the health of each node.
    Status,
    /// Per feature: seats issued, in use, lingering, overdraft, and who holds them.
    Features,
    /// Leases and lingering seats, optionally of one feature or user.
    Leases {
        #[arg(long)]
        feature: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
    /// Remove a lease (admin): its seats return to the pool at once, without linger.
    Remove {
        lease: u64,
        /// Why, for the history.
        #[arg(long, default_value = "removed by tallyctl")]
        reason: String,
    },
    /// Check out seats in a real session and hold them, heartbeating.
    Checkout(checkout::Args),
    /// License files: load into the cluster, list, and the vendor's kit.
    #[command(subcommand)]
    License(license::Cmd),
    /// Cluster membership: add a node (as a learner, caught up), then make it vote.
    #[command(subcommand)]
    Node(admin::NodeCmd),
    /// Load generators against a running cluster; the last line printed is one JSON object.
    #[command(subcommand)]
    Bench(bench::Cmd),
}

/// What the whole tool needs to talk to a cluster.
#[derive(Debug)]
pub struct Ctx {
    endpoints: Vec<String>,
    pub json: bool,
    retry_for: Duration,
}

impl Ctx {
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            retry_for: self.retry_for,
            ..ConnectOptions::default()
        }
    }

    pub fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::new(&self.endpoints, self.connect_options())?)
    }
}

/// A denial is not an error of the tool but its answer; it has its own exit code.
#[derive(Debug)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "denied: {}", self.0)
    }
}

impl std::error::Error for Denied {}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.downcast_ref::<tally_client::Error>() {
        return match c {
            tally_client::Error::Unavailable { .. } => 3,
            tally_client::Error::Endpoint { .. } => 2,
            tally_client::Error::Denied { .. } => 4,
            tally_client::Error::Refused { .. }
            | tally_client::Error::SessionLost { .. }
            | tally_client::Error::LeaseGone { .. } => 1,
        };
    }
    if e.downcast_ref::<tally_core::Error>().is_some() {
        return 5;
    }
    if e.downcast_ref::<Denied>().is_some() {
        return 4;
    }
    1
}

fn hint(e: &anyhow::Error) -> &'static str {
    match e.downcast_ref::<tally_client::Error>() {
        Some(tally_client::Error::Unavailable { .. }) => {
            " (is the cluster running, and are --endpoints / TALLY_ENDPOINTS right?)"
        }
        _ => "",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        endpoints: cli.endpoints,
        json: cli.json,
        retry_for: Duration::try_from_secs_f64(cli.timeout).unwrap_or(Duration::from_secs(15)),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tallyctl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Status => admin::status(&ctx).await,
            Cmd::Features => listing::features(&ctx).await,
            Cmd::Leases { feature, user } => listing::leases(&ctx, feature, user).await,
            Cmd::Remove { lease, reason } => listing::remove(&ctx, lease, reason).await,
            Cmd::Checkout(a) => checkout::run(&ctx, a).await,
            Cmd::License(c) => license::run(&ctx, c).await,
            Cmd::Node(c) => admin::node(&ctx, c).await,
            Cmd::Bench(c) => bench::run(&ctx, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tallyctl: {e:#}{}", hint(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
