//! The administrator's part of the workload, beside the clients: license reloads (counts
//! up and down, so reloads revoke held seats; a seat pack loaded and unloaded; a line
//! loaded a second time under another name, which must count once), admin removals of
//! leases and admin closes of sessions. Each is recorded like a client's operation
//! (client [`ADMIN`]), and the model judges what it did from the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tally_client::proto::v1::admin_client::AdminClient;
use tally_client::proto::v1::{
    AdminCloseSessionRequest, ListLeasesRequest, ListSessionsRequest, LoadLicenseRequest,
    RemoveLeaseRequest, UnloadLicenseRequest,
};
use tally_client::{Cluster, ConnectOptions};
use tally_core::license::{sign_file, VendorSigningKey};

use crate::workload::{now_ms, History, Op, Outcome, Rng};

/// The `client` of an administrator's operation in the history.
pub const ADMIN: usize = usize::MAX;

/// `DUP_GROUP` features, loaded before the workload starts: `delta` shared by a user on
/// any host, `epsilon` by a user on one host.
pub const DUP_LICENSE: &str = "\
VENDOR demo
FEATURE delta demo 1.0 permanent 2 LINGER=1 DUP_GROUP=U
FEATURE epsilon demo 1.0 permanent 2 DUP_GROUP=UH
";

/// The harness's license with other counts (same lingers, so `MAX_LINGER_MS` holds).
fn harness_license(alpha: u64, beta: u64, gamma: u64) -> String {
    format!(
        "VENDOR demo\nFEATURE alpha demo 1.0 permanent {alpha} LINGER=2\n\
         FEATURE beta demo 1.0 permanent {beta}\nFEATURE gamma demo 1.0 permanent {gamma} LINGER=1\n"
    )
}

/// What the administrator needs: the vendor key (to sign reloads) and the endpoints.
#[derive(Debug, Clone)]
pub struct Licensor {
    pub key: VendorSigningKey,
    pub endpoints: Vec<String>,
}

pub(crate) async fn run(
    lic: Licensor,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
) {
    let Ok(c) = Cluster::new(
        &lic.endpoints,
        ConnectOptions {
            retry_for: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            tls: None,
        },
    ) else {
        return;
    };
    // The harness's counts as last loaded (3, 2, 1): a copy under another name must be
    // of a line as loaded, to test that it counts once.
    let mut counts = (3, 2, 1);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(700 + rng.below(1_500))).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let start = now_ms();
        let (what, r): (String, Result<String, String>) = match rng.below(10) {
            0..=3 => {
                counts = (2 + rng.below(3), 1 + rng.below(2), 1 + rng.below(2));
                let text = harness_license(counts.0, counts.1, counts.2);
                let what = format!("reload harness.lic with {counts:?}");
                (what, load(&c, &lic.key, "harness.lic", &text).await)
            }
            4 => {
                let text = "VENDOR demo\nINCREMENT alpha demo 1.0 permanent 2\n";
                (
                    "load pack.lic".into(),
                    load(&c, &lic.key, "pack.lic", text).await,
                )
            }
            5 => ("unload pack.lic".into(), unload(&c, "pack.lic").await),
            6 => {
                let text = harness_license(counts.0, counts.1, counts.2);
                let what = format!("load a copy of harness.lic {counts:?} as copy.lic");
                (what, load(&c, &lic.key, "copy.lic", &text).await)
            }
            7 => ("unload copy.lic".into(), unload(&c, "copy.lic").await),
            8 => ("remove a lease".into(), remove_lease(&c, &mut rng).await),
            _ => ("close a session".into(), close_session(&c, &mut rng).await),
        };
        let outcome = match r {
            Ok(done) => Outcome::Admin(done),
            Err(e) => Outcome::Unknown(e),
        };
        if let Ok(mut h) = history.lock() {
            h.ops.push(Op {
                client: ADMIN,
                session: 0,
                what,
                start_ms: start,
                end_ms: now_ms(),
                outcome,
            });
        }
    }
}

async fn load(
    c: &Cluster,
    key: &VendorSigningKey,
    source: &str,
    text: &str,
) -> Result<String, String> {
    let text = sign_file(text, key).map_err(|e| e.to_string())?;
    let source = source.to_owned();
    c.call("load license", |ch| {
        let req = LoadLicenseRequest {
            source: source.clone(),
            text: text.clone(),
        };
        async move { AdminClient::new(ch).load_license(req).await }
    })
    .await
    .map(|_| "loaded".into())
    .map_err(|e| e.to_string())
}

async fn unload(c: &Cluster, source: &str) -> Result<String, String> {
    let source = source.to_owned();
    c.call("unload license", |ch| {
        let req = UnloadLicenseRequest {
            source: source.clone(),
        };
        async move { AdminClient::new(ch).unload_license(req).await }
    })
    .await
    .map(|_| "unloaded".into())
    .map_err(|e| e.to_string())
}

async fn remove_lease(c: &Cluster, rng: &mut Rng) -> Result<String, String> {
    let leases = c
        .call("leases", |ch| async move {
            AdminClient::new(ch)
                .list_leases(ListLeasesRequest::default())
                .await
        })
        .await
        .map_err(|e| e.to_string())?
        .leases;
    let held: Vec<u64> = leases
        .iter()
        .map(|l| l.lease_id)
        .filter(|id| *id != 0)
        .collect();
    if held.is_empty() {
        return Ok("nothing held".into());
    }
    let lease_id = held[rng.below(held.len() as u64) as usize];
    let r = c
        .call("remove", |ch| async move {
            AdminClient::new(ch)
                .remove_lease(RemoveLeaseRequest {
                    lease_id,
                    reason: "fault workload".into(),
                })
                .await
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("lease {lease_id} removed: {}", r.removed))
}

async fn close_session(c: &Cluster, rng: &mut Rng) -> Result<String, String> {
    let sessions = c
        .call("sessions", |ch| async move {
            AdminClient::new(ch)
                .list_sessions(ListSessionsRequest {})
                .await
        })
        .await
        .map_err(|e| e.to_string())?
        .sessions;
    if sessions.is_empty() {
        return Ok("no session".into());
    }
    let session_id = sessions[rng.below(sessions.len() as u64) as usize].session_id;
    c.call("close session", |ch| async move {
        AdminClient::new(ch)
            .close_session(AdminCloseSessionRequest {
                session_id,
                reason: "fault workload".into(),
            })
            .await
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!("session {session_id} closed"))
}
