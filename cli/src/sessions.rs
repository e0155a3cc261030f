//! `tallyctl sessions` and `tallyctl queue`: the running client sessions and the queued
//! checkouts, and the administrator's ways out of a stuck one (close a session, cancel a
//! wait).

use clap::Subcommand;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;

use crate::admin::table;
use crate::listing::when;
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// End a session (a hung or abandoned client): its seats return at once, its waits
    /// end, and its holder hears the session is gone.
    Close {
        /// The session's id, as `tallyctl sessions` shows it.
        id: u64,
        /// Why, for the server's log.
        #[arg(long, default_value = "closed with tallyctl")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCmd {
    /// Cancel a queued checkout (PLACE from `tallyctl queue`); its client is told.
    Cancel {
        /// The waiter's place, as `tallyctl queue` shows it.
        place: u64,
        /// Why, for the server's log.
        #[arg(long, default_value = "cancelled with tallyctl")]
        reason: String,
    },
}

pub async fn sessions(ctx: &Ctx, cmd: Option<SessionsCmd>) -> anyhow::Result<()> {
    let c = ctx.cluster()?;
    if let Some(SessionsCmd::Close { id, reason }) = cmd {
        let req = pb::AdminCloseSessionRequest {
            session_id: id,
            reason,
        };
        c.call("sessions close", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).close_session(req).await }
        })
        .await?;
        if ctx.json {
            println!("{}", serde_json::json!({"session": id, "closed": true}));
        } else {
            println!("closed session {id}: its seats are back in the pool");
        }
        return Ok(());
    }
    let r = c
        .call("sessions", |ch| async move {
            AdminClient::new(ch)
                .list_sessions(pb::ListSessionsRequest {})
                .await
        })
        .await?;
    if ctx.json {
        let v: Vec<_> = r
            .sessions
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.session_id, "user": s.user, "host": s.host, "display": s.display,
                    "pid": s.pid, "client_addr": s.client_addr,
                    "cert_name": (!s.cert_name.is_empty()).then_some(&s.cert_name),
                    "ttl_ms": s.ttl_ms, "opened_at_ms": s.opened_at_ms,
                    "last_heartbeat_ms": s.last_heartbeat_ms, "leases": s.leases,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .sessions
        .iter()
        .map(|s| {
            vec![
                s.session_id.to_string(),
                s.user.clone(),
                s.host.clone(),
                s.client_addr.clone(),
                if s.cert_name.is_empty() {
                    "-".into()
                } else {
                    s.cert_name.clone()
                },
                when(s.opened_at_ms),
                s.leases.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SESSION",
            "USER",
            "HOST",
            "ADDRESS",
            "CERTIFICATE",
            "OPENED",
            "LEASES",
        ],
        &rows,
    );
    Ok(())
}

pub async fn queue(ctx: &Ctx, cmd: Option<QueueCmd>) -> anyhow::Result<()> {
    let c = ctx.cluster()?;
    if let Some(QueueCmd::Cancel { place, reason }) = cmd {
        let req = pb::CancelWaitRequest { place, reason };
        c.call("queue cancel", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).cancel_wait(req).await }
        })
        .await?;
        if ctx.json {
            println!("{}", serde_json::json!({"place": place, "cancelled": true}));
        } else {
            println!("cancelled the wait at place {place}");
        }
        return Ok(());
    }
    let r = c
        .call("queue", |ch| async move {
            AdminClient::new(ch)
                .list_queue(pb::ListQueueRequest {})
                .await
        })
        .await?;
    if ctx.json {
        let v: Vec<_> = r
            .waiters
            .iter()
            .map(|w| {
                serde_json::json!({
                    "place": w.place, "feature": w.feature, "version": w.version,
                    "count": w.count, "session": w.session_id, "user": w.user, "host": w.host,
                    "queued_at_ms": w.queued_at_ms,
                    "deadline_ms": (w.deadline_ms > 0).then_some(w.deadline_ms),
                    "position": w.position,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if r.waiters.is_empty() {
        println!("nobody is waiting");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .waiters
        .iter()
        .map(|w| {
            vec![
                w.place.to_string(),
                w.feature.clone(),
                w.count.to_string(),
                w.position.to_string(),
                w.user.clone(),
                w.host.clone(),
                when(w.queued_at_ms),
                when(w.deadline_ms),
            ]
        })
        .collect();
    table(
        &[
            "PLACE", "FEATURE", "COUNT", "POSITION", "USER", "HOST", "QUEUED", "UNTIL",
        ],
        &rows,
    );
    Ok(())
}
