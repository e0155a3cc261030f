//! A node's configuration, with defaults and `validate()` that names the wrong key.

use std::path::PathBuf;

use thiserror::Error;

/// Everything one `tallyd` node needs to know.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Names the cluster, like etcd's initial-cluster-token: every Raft message carries
    /// it and a node refuses messages of any other cluster, and the data directory is
    /// bound to it on first start. Two clusters under one site CA, or a node dialling an
    /// address that now belongs to another cluster, then fail loudly instead of mixing
    /// their logs.
    pub cluster_name: String,
    pub id: u64,
    /// Where the gRPC port listens (`127.0.0.1:27000`).
    pub listen: String,
    /// The address peers and clients dial to reach this node; defaults to `listen`.
    pub advertise: String,
    pub http: String,
    pub data_dir: PathBuf,
    /// Raft leader heartbeat period. Must stay below half the minimum election timeout.
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// TTL given to sessions that ask for none, and the bounds a requested TTL is clamped
    /// to. The lower bound is at least 1.5 × the election timeout, so a failover can
    /// never outlast a live client's TTL.
    pub default_ttl_ms: u64,
    pub min_ttl_ms: u64,
    pub max_ttl_ms: u64,
    /// Vendors whose licenses this cluster accepts, with their public keys.
    pub vendor_keys: Vec<(String, tally_core::license::VendorKey)>,
    /// Take a snapshot after this many applied entries, so the log stays bounded.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower catches up from
    /// the log instead of needing the whole snapshot.
    pub keep_log_after_snapshot: u64,
    /// Append every applied entry, with the events it produced, and every snapshot
    /// restore or install to `archive.jsonl` in the data directory. Off by default: it
    /// grows without bound. The fault tests turn it on, because snapshots purge the log
    /// and their history checker needs every entry any node ever applied.
    pub archive_log: bool,
    /// Peer id → the address this node dials for it, instead of the peer's advertised
    /// one: for NAT or a relay between nodes, and for the fault harness, which puts a
    /// proxy on every link while clients use the advertised addresses.
    pub dial: std::collections::BTreeMap<u64, String>,
    /// This node's certificate and key and the CA it trusts. Required unless
    /// `insecure_plaintext` is set: every listener and every peer link speaks TLS.
    pub tls: Option<TlsFiles>,
    /// Refuse `Licensing` calls from clients without a certificate from the CA (role
    /// `client` or `admin`). Peers and administrators always need theirs.
    pub require_client_cert: bool,
    /// No TLS and no roles at all: anyone who reaches the port may do anything. Only for
    /// a test bench on loopback; logged loudly at start.
    pub insecure_plaintext: bool,
    /// Allows `insecure_plaintext` on addresses other than loopback. Without it such a
    /// node refuses to start: a plaintext node on a network lets anyone there take seats,
    /// read every session and join the cluster.
    pub insecure_plaintext_beyond_loopback: bool,
    pub limits: Limits,
    /// The longest a queued checkout waits: a request for "as long as it takes" (0) or
    /// longer waits this long, then is answered with a timeout. No wait is forever by
    /// accident.
    pub max_queue_wait_ms: u64,
    /// How long a lease must have been held before an administrator may remove it
    /// (FlexNet's `MIN_LMREMOVE`, 120 s there by default): a user whose seat is taken
    /// keeps it long enough to save their work. 0 (the default): no minimum. Set it the
    /// same on every node: the leader that answers the removal applies its own.
    pub min_remove_hold_ms: u64,
    /// Where a session's user and host come from (`[security] identity`).
    pub identity: Identity,
    /// How far this node's wall clock may be off its peers' before it refuses to lead
    /// (CockroachDB's max offset, same default). Ledger time is the leader's clock, so a
    /// node whose clock is years ahead would expire every license if it led. The bound
    /// is on disagreement between nodes: NTP keeps healthy clocks within milliseconds.
    /// A new leader's first entry time may also run ahead of what it saw passing by
    /// at most this (see `shared::TermClock`).
    pub max_clock_offset_ms: u64,
    /// The time zone license dates are read in, as the cluster's default: the first
    /// leader of a new cluster writes it into the ledger, where it is a replicated
    /// setting (`tallyctl cluster time-zone`). Only then: once the ledger has a zone, it
    /// rules, and no node's configuration ever overrides it (nodes that each read dates
    /// in their own zone would disagree about whether a license counts). `None`: UTC.
    /// Set it alike on every node, since whichever leads first decides.
    pub time_zone: Option<tally_core::license::Zone>,
    /// How many days of ledger time the usage history keeps (1 to 36,500; default 400,
    /// so a year's true-up and the quarter before it can always be reported). Older
    /// records are pruned. Set it alike on every node: each prunes its own copy.
    pub history_retention_days: u32,
}

/// PEM files of one node's TLS identity (paths, read at start).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed the nodes', admins' and clients' certificates.
    pub ca: PathBuf,
}

/// What one host or session may ask of a node, so one misbehaving host cannot starve the
/// others. Zero switches a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// `Licensing` calls per second from one IP address (bursts of twice that). High
    /// enough for a terminal server or a render farm's gateway; a client stuck in a retry
    /// loop without backoff hits it.
    pub per_address_rps: u32,
    /// Checkouts, checkins and closes per second of one session (bursts of twice that).
    /// Each is a log entry on every node; heartbeats are cheap and not counted here.
    pub per_session_rps: u32,
    /// Live sessions one caller may hold, counted by what it proved: its client
    /// certificate, else its address (a self-chosen client id would not bind anyone).
    /// Administrators are not counted. High enough for a terminal server's users behind
    /// one address; a client opening sessions in a loop hits it.
    pub sessions_per_identity: u32,
    /// Open connections to the gRPC port at once (clients, admins and peers): beyond it a
    /// new connection is closed at once. Raise the process's file limit above it (the
    /// systemd unit does); 0 switches the cap off.
    pub max_connections: u32,
    /// Open connections to the HTTP port at once (dashboards, scrapers, load balancers):
    /// kept apart from the gRPC port's, so an HTTP flood never costs a client or a peer.
    pub max_http_connections: u32,
    /// Failed authentications (a write naming an unknown session, a wrong or malformed
    /// secret, another client's request id; a heartbeat with a wrong secret) per second
    /// one caller may cause, counted by what it proved
    /// (its client certificate, else its address), bursts of twice that. Beyond it each
    /// further refusal is held [`Limits::failed_auth_delay_ms`] before it is sent, as
    /// OpenSSH's PerSourcePenalties and pam_faildelay do: a flooder that waits for its
    /// answers (every gRPC client does, within the port's stream cap) is slowed to a
    /// trickle and stops eating the cores honest clients share. Only refusals are held,
    /// so an honest request behind the same address or certificate is never slowed.
    pub failed_auth_rps: u32,
    /// How long a refusal past `failed_auth_rps` is held (at most 10 s: a held call keeps
    /// its stream open).
    pub failed_auth_delay_ms: u64,
    /// Client writes (opens, checkouts, checkins, closes) this node may have proposed
    /// and not yet seen answered. Beyond it a new one is answered `UNAVAILABLE` "busy" at
    /// once, which clients retry with backoff: overload then shows as slower answers,
    /// not as a queue in front of Raft that grows until calls time out. The lease
    /// keeper's writes (expiries, checkpoints) and administrators' are never counted or
    /// refused, and heartbeats are not writes.
    pub max_pending_writes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_address_rps: 100_000,
            per_session_rps: 1_000,
            sessions_per_identity: 1_000,
            max_connections: 10_000,
            max_http_connections: 256,
            failed_auth_rps: 20,
            failed_auth_delay_ms: 1_000,
            max_pending_writes: 4_096,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            cluster_name: "tally".into(),
            id: 1,
            listen: "127.0.0.1:27000".into(),
            advertise: String::new(),
            http: "127.0.0.1:27080".into(),
            data_dir: PathBuf::from("tally-data"),
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            default_ttl_ms: 30_000,
            min_ttl_ms: 1_000,
            max_ttl_ms: 3_600_000,
            vendor_keys: Vec::new(),
            snapshot_every: 10_000,
            keep_log_after_snapshot: 5_000,
            archive_log: false,
            dial: Default::default(),
            tls: None,
            require_client_cert: false,
            insecure_plaintext: false,
            insecure_plaintext_beyond_loopback: false,
            limits: Limits::default(),
            max_clock_offset_ms: 500,
            max_queue_wait_ms: 86_400_000,
            min_remove_hold_ms: 0,
            identity: Identity::Asserted,
            time_zone: None,
            history_retention_days: 400,
        }
    }
}

/// Where a session's user and host come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// As FlexLM: the client says who it is (its OS user and host name), and the server
    /// believes it. Anyone who can reach the port can claim any user.
    #[default]
    Asserted,
    /// The user is the client certificate's common name and the host one of its host
    /// names (subject alternative names); a session that claims anything else is
    /// refused. Needs `[tls]` and a client certificate per user (administrators may
    /// still open sessions in any name, e.g. `tallyctl checkout --user`).
    Certificate,
}

/// `[security]` in the TOML file.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    pub identity: Option<Identity>,
}

/// A configuration value that cannot work, naming the key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: &'static str,
    pub problem: String,
}

fn bad(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

/// Whether `host:port` names a loopback address (127.0.0.0/8, ::1, localhost).
fn is_loopback(addr: &str) -> bool {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Longest cluster name: it travels in a header of every Raft message.
pub const MAX_CLUSTER_NAME: usize = 64;

/// Most log entries in one AppendEntries (openraft's default is 300). Entries can be
/// tens of kilobytes (a heartbeat checkpoint, a license), and a follower behind by
/// hundreds of them must still take one append well within the transport's deadline.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;

/// A cluster name is 1-64 of `A-Z a-z 0-9 . _ -`, so it is a valid gRPC header value and
/// reads the same in every log.
pub fn check_cluster_name(name: &str) -> Result<(), ConfigError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME || !name.chars().all(ok) {
        return Err(bad(
            "cluster_name",
            format!("\"{}\" is not a cluster name: use 1-{MAX_CLUSTER_NAME} letters, digits, '.', '_' or '-'", name.escape_debug()),
        ));
    }
    Ok(())
}

impl NodeConfig {
    /// The address to advertise to peers and clients.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(bad("id", "node ids start at 1"));
        }
        check_cluster_name(&self.cluster_name)?;
        if self.election_min_ms == 0 || self.election_max_ms <= self.election_min_ms {
            return Err(bad(
                "election_max_ms",
                "must be greater than election_min_ms (> 0)",
            ));
        }
        // The ledger takes a silence of more than OUTAGE_GAP_MS between entries for an
        // outage (and restarts every TTL); a failover (a tick's second plus a couple of
        // election rounds) must end well inside it.
        let gap = tally_core::ledger::OUTAGE_GAP_MS;
        if self.election_max_ms.saturating_mul(2).saturating_add(1_000) > gap {
            return Err(bad(
                "election_max_ms",
                format!(
                    "must be at most {} ms: a failover must end well inside the ledger's {gap} ms outage gap",
                    (gap - 1_000) / 2
                ),
            ));
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 2 >= self.election_min_ms {
            return Err(bad(
                "heartbeat_ms",
                format!(
                    "must be > 0 and below half of election_min_ms ({})",
                    self.election_min_ms
                ),
            ));
        }
        let floor = self.election_max_ms * 3 / 2;
        if self.min_ttl_ms < floor {
            return Err(bad(
                "min_ttl_ms",
                format!("must be at least 1.5 × election_max_ms = {floor} ms, so failover never expires a live session"),
            ));
        }
        if self.max_ttl_ms < self.min_ttl_ms {
            return Err(bad("max_ttl_ms", "must be at least min_ttl_ms"));
        }
        if !(self.min_ttl_ms..=self.max_ttl_ms).contains(&self.default_ttl_ms) {
            return Err(bad(
                "default_ttl_ms",
                "must lie between min_ttl_ms and max_ttl_ms",
            ));
        }
        if self.min_remove_hold_ms > 86_400_000 {
            return Err(bad(
                "min_remove_hold_ms",
                "must be at most a day (86400000): beyond that no administrator could remove a runaway lease",
            ));
        }
        if self.max_queue_wait_ms == 0 {
            return Err(bad(
                "max_queue_wait_ms",
                "must be at least 1: it bounds every queued checkout's wait",
            ));
        }
        // A lease must not be stretched or cut by more than a fraction of the shortest
        // TTL when leadership passes between nodes whose clocks differ by the bound.
        if self.max_clock_offset_ms == 0 || self.max_clock_offset_ms >= self.min_ttl_ms {
            return Err(bad(
                "max_clock_offset_ms",
                format!("must be > 0 and below min_ttl_ms ({} ms)", self.min_ttl_ms),
            ));
        }
        if self.limits.failed_auth_delay_ms > 10_000 {
            return Err(bad(
                "limits.failed_auth_delay_ms",
                "must be at most 10000: a held refusal keeps its stream open",
            ));
        }
        if self.snapshot_every == 0 {
            return Err(bad("snapshot_every", "must be at least 1"));
        }
        match (&self.tls, self.insecure_plaintext) {
            (None, false) => {
                return Err(bad(
                    "tls",
                    "no certificate configured: set [tls] cert, key and ca (deploy/README.md shows how to make them), or insecure_plaintext = true for a test bench",
                ))
            }
            (Some(_), true) => {
                return Err(bad(
                    "insecure_plaintext",
                    "set together with [tls]: choose one",
                ))
            }
            _ => {}
        }
        if self.require_client_cert && self.tls.is_none() {
            return Err(bad("require_client_cert", "needs [tls]"));
        }
        if self.identity == Identity::Certificate && self.tls.is_none() {
            return Err(bad(
                "security.identity",
                "\"certificate\" needs [tls]: identities come from client certificates",
            ));
        }
        if self.insecure_plaintext && !self.insecure_plaintext_beyond_loopback {
            for (key, addr) in [("listen", &self.listen), ("http", &self.http)] {
                if !addr.is_empty() && !is_loopback(addr) {
                    return Err(bad(
                        key,
                        format!("{addr} is not a loopback address, and insecure_plaintext is on: anyone on the network could take seats and join the cluster. Use [tls], or listen on 127.0.0.1, or also set insecure_plaintext_beyond_loopback = true if you really mean it"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Clamps a client's requested TTL (0: the default) into the configured bounds.
    pub fn clamp_ttl(&self, requested_ms: u64) -> u64 {
        if requested_ms == 0 {
            self.default_ttl_ms
        } else {
            requested_ms.clamp(self.min_ttl_ms, self.max_ttl_ms)
        }
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let c = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_log_after_snapshot,
            install_snapshot_timeout: 10_000,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            // Closed until the clock monitor finds this node's clock agrees with a
            // quorum (`clock::pinger`): no campaign on an unchecked clock.
            enable_elect: false,
            enable_heartbeat: false,
            ..Default::default()
        };
        c.validate().map_err(|e| bad("raft", e.to_string()))
    }
}

/// The TOML file form of [`NodeConfig`]: every key optional (defaults apply), unknown
/// keys refused, so a typo is an error naming the key instead of a silent default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub cluster_name: Option<String>,
    pub id: Option<u64>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub http: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub heartbeat_ms: Option<u64>,
    pub election_min_ms: Option<u64>,
    pub election_max_ms: Option<u64>,
    pub default_ttl_ms: Option<u64>,
    pub min_ttl_ms: Option<u64>,
    pub max_ttl_ms: Option<u64>,
    pub snapshot_every: Option<u64>,
    pub keep_log_after_snapshot: Option<u64>,
    pub archive_log: Option<bool>,
    /// Vendor name to public key text (`tally-ed25519-public:...`) or to a file holding it.
    #[serde(default)]
    pub vendors: std::collections::BTreeMap<String, String>,
    /// Peer id (as a string key) → the address to dial it at.
    #[serde(default)]
    pub dial: std::collections::BTreeMap<String, String>,
    /// Paths relative to the config file's directory.
    pub tls: Option<TlsFiles>,
    pub require_client_cert: Option<bool>,
    pub insecure_plaintext: Option<bool>,
    pub insecure_plaintext_beyond_loopback: Option<bool>,
    pub limits: Option<Limits>,
    pub max_clock_offset_ms: Option<u64>,
    pub max_queue_wait_ms: Option<u64>,
    pub min_remove_hold_ms: Option<u64>,
    pub security: Option<SecurityFile>,
    /// An IANA zone name (`Europe/Berlin`), checked here against the compiled database.
    pub time_zone: Option<String>,
    pub history_retention_days: Option<u32>,
}

impl FileConfig {
    /// Parses TOML; errors name the key and line.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| bad("file", e.to_string().trim_end().to_owned()))
    }

    /// Applies the file over the defaults, reading vendor key files relative to `base`.
    pub fn into_config(self, base: &std::path::Path) -> Result<NodeConfig, ConfigError> {
        let d = NodeConfig::default();
        let mut vendor_keys = Vec::new();
        for (vendor, key) in self.vendors {
            let text = if key.starts_with("tally-ed25519-public:") {
                key
            } else {
                std::fs::read_to_string(base.join(&key)).map_err(|e| {
                    bad(
                        "vendors",
                        format!("reading the key of vendor \"{vendor}\" from {key}: {e}"),
                    )
                })?
            };
            let k = tally_core::license::VendorKey::from_text(&text)
                .map_err(|e| bad("vendors", format!("vendor \"{vendor}\": {e}")))?;
            vendor_keys.push((vendor, k));
        }
        let time_zone = self
            .time_zone
            .map(|name| tally_core::license::Zone::parse(&name))
            .transpose()
            .map_err(|e| bad("time_zone", e.to_string()))?;
        let history_retention_days = match self.history_retention_days {
            None => d.history_retention_days,
            Some(n @ 1..=36_500) => n,
            Some(n) => {
                return Err(bad(
                    "history_retention_days",
                    format!("{n} is not a number of days from 1 to 36500"),
                ))
            }
        };
        Ok(NodeConfig {
            time_zone,
            history_retention_days,
            cluster_name: self.cluster_name.unwrap_or(d.cluster_name),
            id: self.id.unwrap_or(d.id),
            listen: self.listen.unwrap_or(d.listen),
            advertise: self.advertise.unwrap_or(d.advertise),
            http: self.http.unwrap_or(d.http),
            data_dir: self.data_dir.map_or(d.data_dir, |p| base.join(p)),
            heartbeat_ms: self.heartbeat_ms.unwrap_or(d.heartbeat_ms),
            election_min_ms: self.election_min_ms.unwrap_or(d.election_min_ms),
            election_max_ms: self.election_max_ms.unwrap_or(d.election_max_ms),
            default_ttl_ms: self.default_ttl_ms.unwrap_or(d.default_ttl_ms),
            min_ttl_ms: self.min_ttl_ms.unwrap_or(d.min_ttl_ms),
            max_ttl_ms: self.max_ttl_ms.unwrap_or(d.max_ttl_ms),
            snapshot_every: self.snapshot_every.unwrap_or(d.snapshot_every),
            keep_log_after_snapshot: self
                .keep_log_after_snapshot
                .unwrap_or(d.keep_log_after_snapshot),
            archive_log: self.archive_log.unwrap_or(d.archive_log),
            vendor_keys,
            tls: self.tls.map(|t| TlsFiles {
                cert: base.join(t.cert),
                key: base.join(t.key),
                ca: base.join(t.ca),
            }),
            require_client_cert: self.require_client_cert.unwrap_or(d.require_client_cert),
            insecure_plaintext: self.insecure_plaintext.unwrap_or(d.insecure_plaintext),
            insecure_plaintext_beyond_loopback: self
                .insecure_plaintext_beyond_loopback
                .unwrap_or(d.insecure_plaintext_beyond_loopback),
            limits: self.limits.unwrap_or(d.limits),
            max_clock_offset_ms: self.max_clock_offset_ms.unwrap_or(d.max_clock_offset_ms),
            max_queue_wait_ms: self.max_queue_wait_ms.unwrap_or(d.max_queue_wait_ms),
            min_remove_hold_ms: self.min_remove_hold_ms.unwrap_or(d.min_remove_hold_ms),
            identity: self.security.and_then(|s| s.identity).unwrap_or(d.identity),
            dial: self
                .dial
                .into_iter()
                .map(|(id, addr)| {
                    id.parse::<u64>()
                        .map(|id| (id, addr))
                        .map_err(|_| bad("dial", format!("\"{id}\" is not a node id")))
                })
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A node id from a Kubernetes StatefulSet pod name (`tallyd run --id-from-ordinal`):
/// the ordinal after the name's last `-`, plus one, since ids start at 1 and ordinals at
/// 0 (`tally-0` is node 1). Why a flag and not arithmetic in the manifest: Kubernetes
/// substitutes variables into arguments but cannot add, and the image need not have a
/// shell.
pub fn id_from_ordinal(pod_name: &str) -> Result<u64, ConfigError> {
    let ordinal = pod_name
        .rsplit_once('-')
        .map(|(_, n)| n)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            bad(
                "id",
                format!(
                    "--id-from-ordinal {:?}: not a StatefulSet pod name (NAME-ORDINAL, e.g. tally-0)",
                    pod_name.escape_debug().to_string()
                ),
            )
        })?;
    ordinal.checked_add(1).ok_or_else(|| {
        bad(
            "id",
            format!("--id-from-ordinal {pod_name}: ordinal too large"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_ordinal_gives_the_node_id_one_above_it() {
        assert_eq!(id_from_ordinal("tally-0").unwrap(), 1);
        assert_eq!(id_from_ordinal("license-server-12").unwrap(), 13);
        for bad in [
            "tally",
            "tally-",
            "tally-x",
            "tally-+1",
            "",
            "tally-18446744073709551615",
            "tally-99999999999999999999",
        ] {
            let e = id_from_ordinal(bad).unwrap_err();
            assert_eq!(e.key, "id", "{bad}: {e}");
        }
    }

    #[test]
    fn defaults_are_valid_and_mistakes_name_their_key() {
        let e = NodeConfig::default().validate().unwrap_err();
        assert_eq!(
            e.key, "tls",
            "TLS is on unless plaintext is asked for by name"
        );
        let ok = NodeConfig {
            insecure_plaintext: true,
            ..NodeConfig::default()
        };
        ok.validate().unwrap();
        type Breaker = fn(&mut NodeConfig);
        let cases: [(Breaker, &str); 20] = [
            (|c| c.id = 0, "id"),
            (|c| c.cluster_name.clear(), "cluster_name"),
            (|c| c.cluster_name = "site a".into(), "cluster_name"),
            (|c| c.cluster_name = "x".repeat(65), "cluster_name"),
            (|c| c.heartbeat_ms = 200, "heartbeat_ms"),
            (|c| c.election_max_ms = 100, "election_max_ms"),
            (|c| c.election_max_ms = 2_001, "election_max_ms"),
            (|c| c.listen = "0.0.0.0:27000".into(), "listen"),
            (|c| c.max_queue_wait_ms = 0, "max_queue_wait_ms"),
            (|c| c.min_remove_hold_ms = 86_400_001, "min_remove_hold_ms"),
            (|c| c.identity = Identity::Certificate, "security.identity"),
            (|c| c.http = "10.0.0.5:27080".into(), "http"),
            (|c| c.min_ttl_ms = 500, "min_ttl_ms"),
            (|c| c.default_ttl_ms = 10, "default_ttl_ms"),
            (|c| c.require_client_cert = true, "require_client_cert"),
            (|c| c.max_clock_offset_ms = 0, "max_clock_offset_ms"),
            (|c| c.max_clock_offset_ms = 1_000, "max_clock_offset_ms"),
            (|c| c.snapshot_every = 0, "snapshot_every"),
            (
                |c| c.limits.failed_auth_delay_ms = 10_001,
                "limits.failed_auth_delay_ms",
            ),
            (
                |c| {
                    c.tls = Some(TlsFiles {
                        cert: "n.crt".into(),
                        key: "n.key".into(),
                        ca: "ca.crt".into(),
                    })
                },
                "insecure_plaintext",
            ),
        ];
        for (break_it, key) in cases {
            let mut c = ok.clone();
            break_it(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
        // Loopback in any spelling is fine; the louder flag allows the rest.
        for addr in ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"] {
            let c = NodeConfig {
                listen: addr.into(),
                ..ok.clone()
            };
            c.validate().unwrap();
        }
        NodeConfig {
            listen: "0.0.0.0:27000".into(),
            insecure_plaintext_beyond_loopback: true,
            ..ok.clone()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn toml_files_apply_over_defaults_and_typos_are_named() {
        let f = FileConfig::parse(
            "id = 2\nlisten = \"127.0.0.1:27001\"\ndata_dir = \"n2\"\nmax_clock_offset_ms = 250\n",
        )
        .unwrap();
        let c = f.into_config(std::path::Path::new("/srv")).unwrap();
        assert_eq!((c.id, c.listen.as_str()), (2, "127.0.0.1:27001"));
        assert_eq!(c.max_clock_offset_ms, 250);
        assert!(!c.archive_log, "the archive is off unless asked for");
        assert_eq!(c.data_dir, PathBuf::from("/srv/n2"));
        assert_eq!(c.heartbeat_ms, NodeConfig::default().heartbeat_ms);
        let f = FileConfig::parse("snapshot_every = 20\narchive_log = true\n").unwrap();
        let c = f.into_config(std::path::Path::new("/srv")).unwrap();
        assert_eq!((c.snapshot_every, c.archive_log), (20, true));
        let f = FileConfig::parse("[security]\nidentity = \"certificate\"\n").unwrap();
        let c = f.into_config(std::path::Path::new("/srv")).unwrap();
        assert_eq!(c.identity, Identity::Certificate);
        let e = FileConfig::parse("[security]\nidentity = \"ldap\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `ldap`"), "{e}");
        let e = FileConfig::parse("id = 2\nelection_mni_ms = 5\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown field `election_mni_ms`"),
            "{e}"
        );
        let e = FileConfig::parse("[vendors]\nacme = \"tally-ed25519-public:xx\"\n")
            .unwrap()
            .into_config(std::path::Path::new("."))
            .unwrap_err();
        assert_eq!(e.key, "vendors");
    }

    #[test]
    fn history_retention_is_days_within_bounds_and_mistakes_name_the_key() {
        let parse =
            |t: &str| FileConfig::parse(t).and_then(|f| f.into_config(std::path::Path::new(".")));
        for (text, want) in [
            ("", Ok(400)),
            ("history_retention_days = 1", Ok(1)),
            ("history_retention_days = 36500", Ok(36_500)),
            (
                "history_retention_days = 0",
                Err("0 is not a number of days"),
            ),
            ("history_retention_days = 36501", Err("36501 is not")),
            ("history_retention_days = -3", Err("history_retention_days")),
        ] {
            match (parse(text), want) {
                (Ok(c), Ok(days)) => assert_eq!(c.history_retention_days, days, "{text}"),
                (Err(e), Err(msg)) => {
                    assert!(e.to_string().contains(msg), "{text}: {e}");
                    assert!(
                        e.to_string().contains("history_retention_days"),
                        "{text}: {e}"
                    );
                }
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn the_time_zone_is_an_iana_name_and_mistakes_name_the_key() {
        let zone = |text: &str| {
            FileConfig::parse(text)
                .unwrap()
                .into_config(std::path::Path::new("."))
                .map(|c| c.time_zone.map(|z| z.name()))
        };
        assert_eq!(
            zone(""),
            Ok(None),
            "no key: UTC until the ledger says otherwise"
        );
        // (file, the zone it configures)
        for (text, want) in [
            ("time_zone = \"Europe/Berlin\"", "Europe/Berlin"),
            ("time_zone = \"america/los_angeles\"", "America/Los_Angeles"),
            ("time_zone = \"UTC\"", "UTC"),
        ] {
            assert_eq!(zone(text), Ok(Some(want)), "{text}");
        }
        // (file, what the error says besides the key)
        for (text, says) in [
            ("time_zone = \"CET+1\"", "\"CET+1\" is not a time zone"),
            ("time_zone = \"\"", "\"\" is not a time zone"),
            (
                "time_zone = \"Europe/Berln\"",
                "Europe/Berlin, America/Los_Angeles or UTC",
            ),
        ] {
            let e = zone(text).unwrap_err();
            assert_eq!(e.key, "time_zone", "{text}");
            assert!(e.to_string().contains(says), "{text}: {e}");
        }
        let e = FileConfig::parse("time_zone = 1\n").unwrap_err();
        assert!(e.to_string().contains("time_zone"), "{e}");
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let f = FileConfig::parse(include_str!("../../deploy/examples/node1.toml")).unwrap();
        assert_eq!(f.vendors.get("acme").map(String::as_str), Some("acme.pub"));
        let dir = std::env::temp_dir().join(format!("tally-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = tally_core::license::VendorSigningKey::from_bytes(&[3; 32]).public();
        std::fs::write(dir.join("acme.pub"), key.to_text()).unwrap();
        let c = f.into_config(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        c.validate().unwrap();
        assert_eq!(c.vendor_keys, vec![("acme".to_owned(), key)]);
        assert_eq!(c.advertised(), "tally1.example.com:27000");
    }

    #[test]
    fn ttls_are_clamped() {
        let c = NodeConfig::default();
        assert_eq!(c.clamp_ttl(0), c.default_ttl_ms);
        assert_eq!(c.clamp_ttl(1), c.min_ttl_ms);
        assert_eq!(c.clamp_ttl(u64::MAX), c.max_ttl_ms);
    }
}
