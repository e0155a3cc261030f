//! `tallyctl`: the license administrator's and the vendor's command line. Thin: parse
//! flags, run one command, turn its error into one line and an exit code.
//!
//! Exit codes: see [`EXIT_CODES`].

mod admin;
mod bench;
mod checkout;
mod license;
mod listing;
mod lmstat;
mod options;
mod pki;
mod report;
mod sessions;
mod snapshot;
mod stale;
mod users;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tally_client::{Cluster, ConnectOptions, Tls};

/// What each exit code means, as `tallyctl --help` shows it.
const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  the cluster refused, or something else failed
  2  bad usage
  3  the cluster could not be reached or has no leader (retry later)
  4  a checkout was denied
  5  a license or key file is invalid (bad syntax, bad signature, wrong key)
  6  a held seat was taken back (revoked, removed) or its session lost
  7  status: the cluster works, but a member does not answer (degraded)";

#[derive(Parser, Debug)]
#[command(
    name = "tallyctl",
    version,
    about = "Administer a Tally license cluster",
    after_help = EXIT_CODES
)]
struct Cli {
    /// The cluster's nodes, comma-separated HOST:PORT (any of them; all is best).
    #[arg(long, env = "TALLY_ENDPOINTS", value_delimiter = ',', global = true)]
    endpoints: Vec<String>,
    /// Print JSON instead of tables (a stable contract for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Show times in UTC instead of this machine's local zone (JSON is always Unix
    /// milliseconds).
    #[arg(long, env = "TALLY_UTC", global = true)]
    utc: bool,
    /// Seconds to keep looking for a leader (elections, unreachable nodes) before giving up.
    #[arg(long, env = "TALLY_TIMEOUT", default_value_t = 15.0, global = true)]
    timeout: f64,
    /// The site CA's certificate (PEM): dial the cluster over TLS, trusting only it.
    #[arg(long, env = "TALLY_CA", global = true)]
    ca: Option<PathBuf>,
    /// Your certificate (PEM): role admin for admin commands, client for checkouts.
    #[arg(long, env = "TALLY_CERT", global = true)]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "TALLY_KEY", global = true)]
    key: Option<PathBuf>,
    /// A file of TALLY_*=VALUE lines (like the tally.env three-nodes.sh and `tallyd dev`
    /// write) for settings given neither as flags nor in the environment.
    #[arg(long, env = "TALLY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Nodes, leader, term, log indexes and the health of each node.
    Status,
    /// Per feature: seats issued, in use, lingering, overdraft, and who holds them.
    Features,
    /// Usage in FlexNet's `lmstat -a` layout, for scrapers written for FlexNet.
    Lmstat {
        /// Every feature (the default; accepted for FlexNet scripts).
        #[arg(short = 'a')]
        all: bool,
        /// One feature only.
        #[arg(short = 'f')]
        feature: Option<String>,
    },
    /// Leases and lingering seats, optionally of one feature or user.
    Leases {
        /// Only this feature's leases.
        #[arg(long)]
        feature: Option<String>,
        /// Only this user's leases.
        #[arg(long)]
        user: Option<String>,
    },
    /// Remove a lease (admin): its seats return to the pool at once, without linger.
    /// Like FlexNet's lmremove, `--user U [--host H] [--display D]` removes every lease
    /// of that user (on that host, display) instead of one by id.
    Remove {
        /// The lease's id, as `tallyctl leases` shows it.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        lease: Option<u64>,
        /// Remove every lease of this user instead.
        #[arg(long)]
        user: Option<String>,
        /// With --user: only the leases taken from this host.
        #[arg(long, requires = "user")]
        host: Option<String>,
        /// With --user: only the leases taken from this X display.
        #[arg(long, requires = "user")]
        display: Option<String>,
        /// Why, for the history.
        #[arg(long, default_value = "removed by tallyctl")]
        reason: String,
    },
    /// The running client sessions (who, from where, proved how); `close ID` ends one.
    Sessions {
        #[command(subcommand)]
        cmd: Option<sessions::SessionsCmd>,
    },
    /// Named users of USER_BASED features: assign, unassign, list.
    #[command(subcommand)]
    Users(users::Cmd),
    /// The usage history (admin): use per interval, metered overuse, the monthly
    /// true-up, denials, and the records themselves, as tables, JSON or CSV.
    #[command(subcommand)]
    Report(report::Cmd),
    /// The queued checkouts, earliest first; `cancel PLACE` ends one.
    Queue {
        #[command(subcommand)]
        cmd: Option<sessions::QueueCmd>,
    },
    /// Check out seats in a real session and hold them, heartbeating.
    Checkout(checkout::Args),
    /// License files: load into the cluster, list, and the vendor's kit.
    #[command(subcommand)]
    License(license::Cmd),
    /// The site's options file (FlexNet-style RESERVE, MAX, INCLUDE, EXCLUDE, ...): load
    /// it into the cluster, show the one in force, check one offline.
    #[command(subcommand)]
    Options(options::Cmd),
    /// Cluster membership: add a node (as a learner, caught up), then make it vote.
    #[command(subcommand)]
    Node(admin::NodeCmd),
    /// Cluster-wide settings and repairs: the time zone of license dates, the clock.
    #[command(subcommand)]
    Cluster(admin::ClusterCmd),
    /// Load generators against a running cluster; the last line printed is one JSON object.
    #[command(subcommand)]
    Bench(bench::Cmd),
    /// A site CA and certificates for nodes, administrators and client hosts (offline).
    #[command(subcommand)]
    Pki(pki::Cmd),
    /// Backups: save one from the cluster (admin), inspect a file. `tallyd restore` seeds
    /// a new cluster from one.
    #[command(subcommand)]
    Snapshot(snapshot::Cmd),
}

/// What the whole tool needs to talk to a cluster.
#[derive(Debug)]
pub struct Ctx {
    endpoints: Vec<String>,
    pub json: bool,
    retry_for: Duration,
    /// TLS from --ca/--cert/--key: read when a command first connects, so offline
    /// commands do not trip over a stale TALLY_CA.
    tls: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
}

impl Ctx {
    pub fn connect_options(&self) -> Result<ConnectOptions, tally_client::Error> {
        let (ca, cert, key) = &self.tls;
        Ok(ConnectOptions {
            retry_for: self.retry_for,
            tls: Tls::from_paths(ca.as_deref(), cert.as_deref(), key.as_deref())?,
            ..ConnectOptions::default()
        })
    }

    pub fn cluster(&self) -> anyhow::Result<Cluster> {
        Ok(Cluster::new(&self.endpoints, self.connect_options()?)?)
    }
}

/// Sets each `TALLY_*=VALUE` of a config file that the environment does not already
/// set, so flags beat the environment, which beats the file. Lines may start with
/// `export`; `#` starts a comment.
fn apply_config_file(path: &Path, explicit: bool) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("reading the config file {}: {e}", path.display()),
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim();
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!("{}:{}: expected TALLY_NAME=VALUE", path.display(), n + 1);
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if !k.starts_with("TALLY_") || k == "TALLY_CONFIG" {
            anyhow::bail!("{}:{}: unknown setting {k:?}", path.display(), n + 1);
        }
        if std::env::var_os(k).is_none() {
            // Still single-threaded: no runtime has started.
            std::env::set_var(k, v);
        }
    }
    Ok(())
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

/// Held seats that are gone (revoked by the cluster, or their session lost): the holder
/// must stop using them, so this has its own exit code too.
#[derive(Debug)]
pub struct SeatLost(pub String);

impl std::fmt::Display for SeatLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SeatLost {}

/// `status`'s verdict on a cluster that is not healthy: it printed what it saw, and says
/// why it is not exiting 0.
#[derive(Debug)]
pub struct Unhealthy {
    pub code: u8,
    pub what: String,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Unhealthy {}

fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(u) = e.downcast_ref::<Unhealthy>() {
        return u.code;
    }
    if let Some(c) = e.downcast_ref::<tally_client::Error>() {
        return match c {
            tally_client::Error::Unavailable { .. } => 3,
            tally_client::Error::Endpoint { .. } | tally_client::Error::Tls { .. } => 2,
            tally_client::Error::Denied { .. } => 4,
            tally_client::Error::SessionLost { .. }
            | tally_client::Error::LeaseGone { .. }
            | tally_client::Error::Revoked { .. } => 6,
            tally_client::Error::Refused { .. } => 1,
        };
    }
    if e.downcast_ref::<tally_core::Error>().is_some()
        || e.downcast_ref::<license::InvalidOnCluster>().is_some()
        || e.downcast_ref::<options::Invalid>().is_some()
    {
        return 5;
    }
    if e.downcast_ref::<Denied>().is_some() {
        return 4;
    }
    if e.downcast_ref::<SeatLost>().is_some() {
        return 6;
    }
    1
}

fn hint(e: &anyhow::Error) -> &'static str {
    match e.downcast_ref::<tally_client::Error>() {
        Some(tally_client::Error::Unavailable { .. }) => {
            " (is the cluster running, are --endpoints / TALLY_ENDPOINTS right, and if it speaks TLS, is --ca / TALLY_CA given?)"
        }
        _ => "",
    }
}

/// The cluster flags, global so that they go anywhere on the line.
const CLUSTER_FLAGS: [&str; 6] = ["endpoints", "timeout", "ca", "cert", "key", "config"];
/// Commands that never dial a cluster: their help leaves the cluster flags out.
const OFFLINE: [[&str; 2]; 7] = [
    ["options", "check"],
    ["license", "keygen"],
    ["license", "sign"],
    ["license", "verify"],
    ["pki", "init"],
    ["pki", "issue"],
    ["snapshot", "inspect"],
];

/// The command line, with the cluster flags left out of offline commands' help. Each
/// offline command gets hidden flags of the same names, which clap's propagation of the
/// global ones then leaves alone: still accepted there (a sourced tally.env sets them
/// for every command), and ignored.
fn command() -> clap::Command {
    let hide = |c: clap::Command| {
        CLUSTER_FLAGS.iter().fold(c, |c, id| {
            if c.get_arguments().any(|a| a.get_id() == id) {
                return c; // its own flag of that name (`license sign --key`)
            }
            c.arg(
                clap::Arg::new(*id)
                    .long(*id)
                    .num_args(1)
                    .action(clap::ArgAction::Append)
                    .help("Not used by this command (it reaches no cluster)")
                    .hide(true),
            )
        })
    };
    let mut cmd = <Cli as clap::CommandFactory>::command();
    for [group, name] in OFFLINE {
        cmd = cmd.mut_subcommand(group, |g| g.mut_subcommand(name, hide));
    }
    cmd
}

fn parse() -> Cli {
    match <Cli as clap::FromArgMatches>::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

fn main() -> ExitCode {
    let first = parse();
    // Settings from a config file count as environment, under flags and the real
    // environment; parse again once they are in place.
    let (config, explicit) = match first.config {
        Some(p) => (Some(p), true),
        None => (
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/tally/tally.env")),
            false,
        ),
    };
    if let Some(path) = config {
        if let Err(e) = apply_config_file(&path, explicit) {
            eprintln!("tallyctl: {e:#}");
            return ExitCode::from(2);
        }
    }
    let cli = parse();
    if cli.utc {
        listing::show_utc();
    }
    let ctx = Ctx {
        endpoints: cli.endpoints,
        json: cli.json,
        retry_for: Duration::try_from_secs_f64(cli.timeout).unwrap_or(Duration::from_secs(15)),
        tls: (cli.ca, cli.cert, cli.key),
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
            Cmd::Lmstat { all: _, feature } => lmstat::run(&ctx, feature).await,
            Cmd::Leases { feature, user } => listing::leases(&ctx, feature, user).await,
            Cmd::Remove {
                lease,
                user,
                host,
                display,
                reason,
            } => match (lease, user) {
                (Some(lease), _) => listing::remove(&ctx, lease, reason).await,
                (None, Some(user)) => {
                    listing::remove_user(&ctx, &user, host.as_deref(), display.as_deref(), reason)
                        .await
                }
                (None, None) => unreachable!("clap requires a lease or --user"),
            },
            Cmd::Checkout(a) => checkout::run(&ctx, a).await,
            Cmd::Sessions { cmd } => sessions::sessions(&ctx, cmd).await,
            Cmd::Queue { cmd } => sessions::queue(&ctx, cmd).await,
            Cmd::Users(c) => users::run(&ctx, c).await,
            Cmd::Report(c) => report::run(&ctx, c).await,
            Cmd::License(c) => license::run(&ctx, c).await,
            Cmd::Options(c) => options::run(&ctx, c).await,
            Cmd::Node(c) => admin::node(&ctx, c).await,
            Cmd::Cluster(c) => admin::cluster(&ctx, c).await,
            Cmd::Bench(c) => bench::run(&ctx, c).await,
            Cmd::Pki(c) => pki::run(c),
            Cmd::Snapshot(c) => snapshot::run(&ctx, c).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command, by path: `license sign --key`.
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for a in cmd.get_arguments() {
            out.push((format!("{path} {}", a.get_id()), a.clone()));
        }
        for s in cmd.get_subcommands() {
            walk(s, &format!("{path} {}", s.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_help_text() {
        let mut args = Vec::new();
        walk(&command(), "tallyctl", &mut args);
        let bare: Vec<&str> = args
            .iter()
            .filter(|(_, a)| {
                a.get_help().is_none() && !["help", "version"].contains(&a.get_id().as_str())
            })
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(bare.is_empty(), "arguments without help text: {bare:#?}");
    }

    fn help(path: &[&str]) -> String {
        let mut cmd = command();
        cmd.build();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).unwrap();
        }
        sub.render_long_help().to_string()
    }

    #[test]
    fn offline_commands_do_not_list_cluster_flags() {
        for path in OFFLINE {
            let h = help(&path);
            for flag in ["--endpoints", "--timeout", "--ca ", "--cert", "--config"] {
                assert!(!h.contains(flag), "{path:?} lists {flag}:\n{h}");
            }
        }
        // Its own --key (the vendor's secret key) stays.
        assert!(help(&["license", "sign"]).contains("--key <KEY>"));
        let status = help(&["status"]);
        assert!(
            status.contains("--endpoints") && status.contains("--ca"),
            "{status}"
        );
        // Hidden, still accepted.
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(
            &command()
                .try_get_matches_from(["tallyctl", "pki", "init", "d", "--endpoints", "x:1"])
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(cli.cmd, Cmd::Pki(_)));
    }
}
