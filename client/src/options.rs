//! What a client says about itself when it opens a session, with defaults from the OS.

use std::time::Duration;

use crate::ConnectOptions;

/// Who is asking, and for how long a session lives without heartbeats.
///
/// The defaults come from the process: `$USER` (or `$LOGNAME`), the kernel's host name,
/// `$DISPLAY`, the process id. Override any of them, e.g. for a service account:
///
/// ```
/// let opts = tally_client::ClientOptions {
///     user: "render-farm".into(),
///     ttl: std::time::Duration::from_secs(60),
///     ..Default::default()
/// };
/// assert_eq!(opts.user, "render-farm");
/// assert!(!opts.host.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user: String,
    pub host: String,
    pub display: String,
    pub pid: u32,
    /// How long the session outlives its last acknowledged heartbeat. The cluster clamps
    /// it to its bounds and the granted value is [`Client::ttl`](crate::Client::ttl);
    /// zero asks for the cluster's default.
    pub ttl: Duration,
    /// Free text for administrators, such as the application's name and version.
    pub client_info: String,
    pub connect: ConnectOptions,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            user: env_first(&["USER", "LOGNAME", "USERNAME"])
                .or_else(login_name)
                .unwrap_or_else(|| "unknown".into()),
            host: host_name(),
            display: env_first(&["DISPLAY"]).unwrap_or_default(),
            pid: std::process::id(),
            ttl: Duration::ZERO,
            client_info: String::new(),
            connect: ConnectOptions::default(),
        }
    }
}

fn env_first(names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.is_empty())
}

/// The name of this process's user from the kernel and the password file, for when the
/// environment does not say (services, containers).
fn login_name() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| env_first(&["HOSTNAME", "COMPUTERNAME"]))
        .unwrap_or_else(|| "localhost".into())
}

/// How to check out.
///
/// ```
/// use std::time::Duration;
/// use tally_client::{CheckoutOptions, Wait};
///
/// // Two seats of version 2026.1 or later, queueing up to five minutes for them.
/// let opts = CheckoutOptions {
///     count: 2,
///     version: "2026.1".into(),
///     wait: Wait::For(Duration::from_secs(300)),
/// };
/// assert_eq!(CheckoutOptions::default().count, 1);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct CheckoutOptions {
    /// Seats to take, all or none.
    pub count: u32,
    /// Lowest version that will do, such as `"2026.1"`; empty takes any.
    pub version: String,
    /// Whether to wait in the feature's queue when no seat is free.
    pub wait: Wait,
}

impl Default for CheckoutOptions {
    fn default() -> Self {
        CheckoutOptions {
            count: 1,
            version: String::new(),
            wait: Wait::No,
        }
    }
}

/// Waiting for a seat. The queue lives in the cluster, replicated: waiters are served
/// first come, first served, and a failover keeps the order. Nobody who arrives later
/// takes a free seat past a waiter.
///
/// ```
/// use tally_client::Wait;
/// assert_eq!(Wait::default(), Wait::No);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Denied at once when no seat is free.
    #[default]
    No,
    /// Wait up to this long, then [`Error::Denied`](crate::Error::Denied) with
    /// `QueueTimeout`.
    For(Duration),
    /// Wait as long as the session lives.
    Forever,
}
