//! `tallyctl users`: named users of `USER_BASED` features: assign, unassign, list.

use clap::Subcommand;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;

use crate::admin::table;
use crate::listing::when;
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Name users of a named-user feature. Beyond its count, they work for its fair-use
    /// window, then are blocked until seats are loaded or users unassigned.
    Assign {
        /// A feature whose lines are USER_BASED.
        feature: String,
        /// The user names to assign (login names, as clients send them).
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Take users off a feature: the seats they hold of it are revoked at once.
    Unassign {
        /// A feature whose lines are USER_BASED.
        feature: String,
        /// The user names to take off it.
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Assigned users with their standing: licensed, fair_use or blocked.
    List {
        /// Only this feature's users.
        feature: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let c = ctx.cluster()?;
    let (feature, users, assign) = match cmd {
        Cmd::List { feature } => return list(ctx, feature).await,
        Cmd::Assign { feature, users } => (feature, users, true),
        Cmd::Unassign { feature, users } => (feature, users, false),
    };
    let req = pb::AssignUsersRequest {
        feature: feature.clone(),
        users,
    };
    let r = c
        .call("users", |ch| {
            let req = req.clone();
            async move {
                if assign {
                    AdminClient::new(ch).assign_users(req).await
                } else {
                    AdminClient::new(ch).unassign_users(req).await
                }
            }
        })
        .await?;
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"feature": feature, "changed": r.changed})
        );
    } else {
        println!(
            "{} {} user(s) {} {feature}",
            if assign { "assigned" } else { "unassigned" },
            r.changed,
            if assign { "to" } else { "from" }
        );
    }
    Ok(())
}

async fn list(ctx: &Ctx, feature: Option<String>) -> anyhow::Result<()> {
    let req = pb::ListUsersRequest { feature };
    let r = ctx
        .cluster()?
        .call("users list", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).list_users(req).await }
        })
        .await?;
    if ctx.json {
        let v: Vec<_> = r
            .users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "feature": u.feature, "user": u.user, "assigned_at": u.assigned_at_ms,
                    "state": u.state, "until": (u.until_ms > 0).then_some(u.until_ms),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if r.users.is_empty() {
        println!("no named users assigned");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r
        .users
        .iter()
        .map(|u| {
            let state = match u.state.as_str() {
                "fair_use" => format!("fair use until {}", when(u.until_ms)),
                "blocked" => format!("BLOCKED since {}", when(u.until_ms)),
                s => s.to_owned(),
            };
            vec![
                u.feature.clone(),
                u.user.clone(),
                when(u.assigned_at_ms),
                state,
            ]
        })
        .collect();
    table(&["FEATURE", "USER", "ASSIGNED", "STATE"], &rows);
    Ok(())
}
