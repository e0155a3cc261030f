//! A node's configuration, with defaults and `validate()` that names the wrong key.

use std::path::PathBuf;

use thiserror::Error;

/// Everything one `tallyd` node needs to know.
#[derive(Debug, Clone)]
pub struct NodeConfig {
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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
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
        }
    }
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
        if self.election_min_ms == 0 || self.election_max_ms <= self.election_min_ms {
            return Err(bad(
                "election_max_ms",
                "must be greater than election_min_ms (> 0)",
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
        if self.snapshot_every == 0 {
            return Err(bad("snapshot_every", "must be at least 1"));
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
            cluster_name: "tally".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Keep enough log behind a snapshot that a briefly lagging follower catches up
            // from the log instead of needing the whole snapshot.
            max_in_snapshot_log_to_keep: 5_000,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        c.validate().map_err(|e| bad("raft", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_mistakes_name_their_key() {
        NodeConfig::default().validate().unwrap();
        type Breaker = fn(&mut NodeConfig);
        let cases: [(Breaker, &str); 5] = [
            (|c| c.id = 0, "id"),
            (|c| c.heartbeat_ms = 200, "heartbeat_ms"),
            (|c| c.election_max_ms = 100, "election_max_ms"),
            (|c| c.min_ttl_ms = 500, "min_ttl_ms"),
            (|c| c.default_ttl_ms = 10, "default_ttl_ms"),
        ];
        for (break_it, key) in cases {
            let mut c = NodeConfig::default();
            break_it(&mut c);
            assert_eq!(c.validate().unwrap_err().key, key);
        }
    }

    #[test]
    fn ttls_are_clamped() {
        let c = NodeConfig::default();
        assert_eq!(c.clamp_ttl(0), c.default_ttl_ms);
        assert_eq!(c.clamp_ttl(1), c.min_ttl_ms);
        assert_eq!(c.clamp_ttl(u64::MAX), c.max_ttl_ms);
    }
}
