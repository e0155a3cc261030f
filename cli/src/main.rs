//! `tallyctl`: the license administrator's and the vendor's command line. Thin: parse
//! flags, run one command, turn its error into one line and an exit code.
//!
//! Exit codes: 0 done; 1 the cluster refused or something else failed; 2 bad usage;
//! 3 the cluster could not be reached or has no leader (retry later); 4 a checkout was
//! denied; 5 a license or key file is invalid (bad syntax, bad signature, wrong key).

mod admin;
mod license;

use std::process::ExitCode;

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
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Nodes, leader, term, log indexes and the health of each node.
    Status,
    /// License files: load into the cluster, list, and the vendor's kit.
    #[command(subcommand)]
    License(license::Cmd),
    /// Cluster membership: add a node (as a learner, caught up), then make it vote.
    #[command(subcommand)]
    Node(admin::NodeCmd),
}

/// What the whole tool needs to talk to a cluster.
#[derive(Debug)]
pub struct Ctx {
    endpoints: Vec<String>,
    pub json: bool,
}

impl Ctx {
    pub fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::new(&self.endpoints, ConnectOptions::default())?)
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
            tally_client::Error::Refused { .. } => 1,
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
            Cmd::License(c) => license::run(&ctx, c).await,
            Cmd::Node(c) => admin::node(&ctx, c).await,
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
