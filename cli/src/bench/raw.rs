//! Sessions over the raw generated `Licensing` client, for workloads that need more
//! sessions than connections (`heartbeat`, `scale`): finding the leader, opening
//! connections to it, and opening, renewing and closing sessions on them.

use std::time::Duration;

use anyhow::Context as _;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::licensing_client::LicensingClient;
use tally_client::{Cluster, ConnectOptions};
use tonic::transport::Channel;

/// The connection options of this run (TLS above all), set once by `bench::run`: every
/// load-generating task of the process dials the same way, and a global spares threading
/// them through each workload's helpers.
static BASE: std::sync::OnceLock<ConnectOptions> = std::sync::OnceLock::new();

pub fn set_base_options(opts: ConnectOptions) {
    let _ = BASE.set(opts);
}

fn base() -> ConnectOptions {
    BASE.get().cloned().unwrap_or_default()
}

/// One session as the bench keeps it: compact, so a million fit in little memory.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub id: u64,
    pub secret: [u8; 32],
}

impl Session {
    pub fn auth(&self) -> pb::SessionAuth {
        pb::SessionAuth {
            session_id: self.id,
            secret: self.secret.to_vec(),
        }
    }
}

/// Fresh random bytes for client ids and secrets. Each session gets its own client id
/// (as a real process would): the cluster keeps a bounded window of answers per client,
/// so many sessions pipelined under one id would see each other's requests as stale.
#[derive(Debug)]
pub struct Ids {
    seed: [u8; 32],
}

impl Ids {
    pub fn new() -> anyhow::Result<Ids> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?;
        Ok(Ids { seed })
    }

    /// Client id and secret of session number `i`: a random prefix and `i`, so they are
    /// unique without a system call per session (the secrets only need to be unguessable
    /// by other tenants, and a bench has none).
    pub fn of(&self, i: u64) -> ([u8; 16], [u8; 32]) {
        let mut client = [0u8; 16];
        client[..8].copy_from_slice(&self.seed[..8]);
        client[8..].copy_from_slice(&i.to_be_bytes());
        let mut secret = self.seed;
        secret[24..].copy_from_slice(&i.to_be_bytes());
        (client, secret)
    }
}

/// The leader's URI, found by following not-leader answers: a heartbeat of a session
/// that cannot exist is answered `UNKNOWN` by the leader only, and `UNAVAILABLE` with
/// the leader's address by the others (or without one, while no leader is settled).
pub async fn find_leader(endpoints: &[String], retry_for: Duration) -> anyhow::Result<String> {
    let cluster = Cluster::new(
        endpoints,
        ConnectOptions {
            retry_for,
            request_timeout: Duration::from_secs(5),
            ..base()
        },
    )?;
    let req = pb::HeartbeatRequest {
        sessions: vec![pb::SessionAuth {
            session_id: 0,
            secret: vec![0; 32],
        }],
    };
    cluster
        .call("find the leader", |ch| {
            let req = req.clone();
            async move { LicensingClient::new(ch).heartbeat(req).await }
        })
        .await?;
    Ok(cluster.leader_hint())
}

/// `n` separate HTTP/2 connections to `uri`.
pub async fn connect(uri: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let ep = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        ..base()
    }
    .endpoint(uri)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            ep.connect()
                .await
                .with_context(|| format!("connecting to {uri}"))?,
        );
    }
    Ok(out)
}

/// What to open sessions as.
#[derive(Debug, Clone)]
pub struct Opener {
    pub user: String,
    pub host: String,
    pub ttl_ms: u64,
}

impl Opener {
    pub fn new(user: &str, ttl: Duration) -> Opener {
        Opener {
            user: user.to_owned(),
            host: tally_client::ClientOptions::default().host,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Opens session number `i` (request sequence 1 of its client id).
    pub async fn open(&self, ch: Channel, ids: &Ids, i: u64) -> Result<Session, tonic::Status> {
        let (client, secret) = ids.of(i);
        let r = LicensingClient::new(ch)
            .open_session(pb::OpenSessionRequest {
                request: Some(request(client, 1)),
                user: self.user.clone(),
                host: self.host.clone(),
                display: String::new(),
                pid: std::process::id(),
                ttl_ms: self.ttl_ms,
                client_info: "tallyctl bench".into(),
                secret: secret.to_vec(),
            })
            .await?
            .into_inner();
        Ok(Session {
            id: r.session_id,
            secret,
        })
    }
}

pub fn request(client: [u8; 16], seq: u64) -> pb::RequestId {
    pb::RequestId {
        client_id: client.to_vec(),
        seq,
    }
}

/// Closes session number `i` with its client's request `seq`.
pub async fn close(ch: Channel, ids: &Ids, i: u64, s: Session, seq: u64) -> anyhow::Result<()> {
    let (client, _) = ids.of(i);
    LicensingClient::new(ch)
        .close_session(pb::CloseSessionRequest {
            request: Some(request(client, seq)),
            auth: Some(s.auth()),
        })
        .await?;
    Ok(())
}

/// Whether a failed call means "ask the leader again": not the leader, or the
/// connection to it broke (tonic reports that as `UNKNOWN`/`CANCELLED` with a source).
pub fn leader_gone(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown | tonic::Code::Cancelled => std::error::Error::source(s).is_some(),
        _ => false,
    }
}
