//! `tallyctl features`, `leases` and `remove`: what is licensed, who holds what, and the
//! administrator's removal of a lease.

use std::sync::atomic::{AtomicBool, Ordering};

use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::license::Date;

use crate::admin::table;
use crate::Ctx;

/// Seats beyond this are "uncounted" (the ledger reports an unbounded pool this way).
const UNCOUNTED: u64 = u32::MAX as u64;

/// Whether times are shown in UTC (`--utc`) instead of the local zone. A process-wide
/// display choice, set once by `main` before anything is printed.
static UTC: AtomicBool = AtomicBool::new(false);

/// Shows times in UTC from now on (`--utc`).
pub fn show_utc() {
    UTC.store(true, Ordering::Relaxed);
}

/// The displayed zone's offset from UTC at the instant `ms`, in seconds: the local
/// zone's (with its daylight saving rule for that instant), or 0 under `--utc`.
pub fn offset_s(ms: u64) -> i32 {
    use chrono::{Offset as _, TimeZone as _};
    if UTC.load(Ordering::Relaxed) {
        return 0;
    }
    i64::try_from(ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
        .map_or(0, |t| t.offset().fix().local_minus_utc())
}

/// The wall-clock milliseconds at `ms` in the displayed zone (for calendar arithmetic).
pub fn wall_ms(ms: u64) -> u64 {
    ms.saturating_add_signed(i64::from(offset_s(ms)) * 1000)
}

/// `2026-11-23 01:41:07 -08:00` for Unix milliseconds, in the local zone (as lmstat
/// prints local time), or `2026-11-23 09:41:07Z` in UTC.
pub fn when(ms: u64) -> String {
    when_at(ms, offset_s(ms))
}

/// [`when`] at a given offset from UTC (seconds east).
pub fn when_at(ms: u64, offset_s: i32) -> String {
    if ms == 0 {
        return "-".into();
    }
    let wall = ms.saturating_add_signed(i64::from(offset_s) * 1000);
    let (y, m, d) = Date::of_ms(wall).ymd();
    let s = (wall / 1000) % 86_400;
    let zone = if offset_s == 0 {
        "Z".to_owned()
    } else {
        let a = offset_s.unsigned_abs() / 60;
        let sign = if offset_s < 0 { '-' } else { '+' };
        format!(" {sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{zone}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn state_name(s: i32) -> &'static str {
    match pb::LeaseState::try_from(s) {
        Ok(pb::LeaseState::Active) => "active",
        Ok(pb::LeaseState::Lingering) => "lingering",
        _ => "unknown",
    }
}

fn lease_json(l: &pb::LeaseInfo) -> serde_json::Value {
    serde_json::json!({
        "id": l.lease_id, "seat": l.seat_id, "feature": l.feature, "version": version(&l.version),
        "count": l.count, "user": l.user, "host": l.host, "display": l.display,
        "pid": l.pid, "session": l.session_id, "state": state_name(l.state),
        "granted_at_ms": l.granted_at_ms, "fencing_token": l.fencing_token,
        "lingering_until_ms": l.lingering_until_ms, "overdraft_seats": l.overdraft_seats,
    })
}

/// A lease's version: the lowest the holder asked for ("any" when it did not say).
fn version(v: &str) -> &str {
    if v == "0" || v == "0.0" || v.is_empty() {
        "any"
    } else {
        v
    }
}

pub async fn features(ctx: &Ctx) -> anyhow::Result<()> {
    let (r, stale) = crate::stale::listing(
        ctx,
        "features",
        |ch, allow_stale| async move {
            AdminClient::new(ch)
                .list_features(pb::ListFeaturesRequest { allow_stale })
                .await
        },
        |r: &pb::ListFeaturesResponse| (r.answered_by, r.applied_index),
    )
    .await?;
    print_features(ctx, &r, stale.as_ref())?;
    stale.map_or(Ok(()), |s| Err(s.exit()))
}

fn print_features(
    ctx: &Ctx,
    r: &pb::ListFeaturesResponse,
    stale: Option<&crate::stale::Stale>,
) -> anyhow::Result<()> {
    if let (Some(s), false) = (stale, ctx.json) {
        println!("{}", s.header());
    }
    if ctx.json {
        let v: Vec<_> = r
            .features
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name, "vendor": f.vendor, "versions": f.versions,
                    // An uncounted pool has no number: null, not the ledger's sentinel.
                    "issued": (f.issued < UNCOUNTED).then_some(f.issued),
                    "uncounted": f.issued >= UNCOUNTED,
                    "in_use": f.in_use, "lingering": f.lingering, "queued": f.queued,
                    "overdraft_limit": f.overdraft_limit, "overdraft_in_use": f.overdraft_in_use,
                    "linger_ms": f.linger_ms, "dup_group": f.dup_group,
                    "start_ms": f.start_ms, "expiry_ms": f.expiry_ms,
                    "starts": starts(f), "valid_through": valid_through(f),
                    // The zone whose days those are (and whose midnights the instants are).
                    "time_zone": zone_of(r),
                    "model": f.model, "term_state": f.term_state,
                    "expires": (matches!(f.term_state.as_str(), "active" | "expiring") && f.term_until_ms > 0)
                        .then_some(f.term_until_ms),
                    "grace_until": (f.term_state == "grace").then_some(f.term_until_ms),
                    "demo_seats": (f.term_state == "demo").then_some(f.demo_seats),
                    "assigned": (f.model == "named_user").then_some(f.assigned),
                    "window_ends": (f.window_ends_ms > 0).then_some(f.window_ends_ms),
                    "holders": f.holders.iter().map(lease_json).collect::<Vec<_>>(),
                    "policy": f.policy,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if r.features.is_empty() {
        println!("no features: load a license with `tallyctl license load FILE`");
    }
    // In the spirit of `lmstat -a`: a header line per feature, a line per holder.
    for f in &r.features {
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let issued = if f.issued >= UNCOUNTED {
            "Uncounted".to_owned()
        } else {
            format!("Total of {} license{} issued", f.issued, plural(f.issued))
        };
        println!(
            "Users of {}:  ({issued};  Total of {} license{} in use)",
            f.name,
            f.in_use,
            plural(f.in_use)
        );
        let mut about = vec![
            format!("vendor {}", f.vendor),
            format!("versions {}", f.versions.join(", ")),
        ];
        if f.linger_ms > 0 {
            about.push(format!("linger {} s", f.linger_ms / 1000));
        }
        if f.dup_group != "NONE" && !f.dup_group.is_empty() {
            about.push(format!("DUP_GROUP={}", f.dup_group));
        }
        if f.overdraft_limit > 0 {
            about.push(format!(
                "overdraft {} ({} in use)",
                f.overdraft_limit, f.overdraft_in_use
            ));
        }
        if f.lingering > 0 {
            about.push(format!("{} lingering", f.lingering));
        }
        if f.queued > 0 {
            about.push(format!("{} queued", f.queued));
        }
        // Outside UTC, say whose days the dates are: "valid through 31-dec-2027" ends at
        // 08:00 UTC in America/Los_Angeles.
        let zone = match zone_of(r) {
            "UTC" => String::new(),
            z => format!(" ({z})"),
        };
        if let Some(d) = starts(f) {
            about.push(format!("starts {d}{zone}"));
        }
        about.push(match valid_through(f) {
            None => "permanent".into(),
            Some(d) => format!("valid through {d}{zone}"),
        });
        if f.model == "named_user" {
            about.push(format!("named users: {} assigned", f.assigned));
            if f.window_ends_ms > 0 {
                about.push(format!(
                    "over-assigned: fair-use window ends {}",
                    when(f.window_ends_ms)
                ));
            }
        }
        println!("  {}", about.join(", "));
        if let Some(line) = term_line(f) {
            println!("  {line}");
        }
        // The options file's reservations, caps and lists for the feature, by line.
        for p in &f.policy {
            println!("  options {p}");
        }
        for h in &f.holders {
            let display = if h.display.is_empty() {
                String::new()
            } else {
                format!(" {}", h.display)
            };
            let n = if h.count > 1 {
                format!(", {} licenses", h.count)
            } else {
                String::new()
            };
            println!(
                "    {} {}{} (v{}) (lease {}, session {}{n}), start {}",
                h.user,
                h.host,
                display,
                version(&h.version),
                h.lease_id,
                h.session_id,
                when(h.granted_at_ms)
            );
        }
        println!();
    }
    Ok(())
}

/// The line a human notices when a feature's term needs attention; none while it is
/// simply active.
fn term_line(f: &pb::FeatureInfo) -> Option<String> {
    match f.term_state.as_str() {
        "expiring" => Some(format!(
            "NOTE: expiring on {}: load the renewal",
            when(f.term_until_ms)
        )),
        "grace" => Some(format!(
            "WARNING: expired; in its grace period until {}, then only its demo seats remain",
            when(f.term_until_ms)
        )),
        "demo" => Some(format!(
            "WARNING: expired and past its grace: {} demo seat(s) until a renewed license is loaded",
            f.demo_seats
        )),
        "expired" => Some("WARNING: expired: no seats until a renewed license is loaded".into()),
        "not_started" => Some(format!("NOTE: starts on {}", when(f.term_until_ms))),
        _ => None,
    }
}

pub async fn leases(
    ctx: &Ctx,
    feature: Option<String>,
    user: Option<String>,
) -> anyhow::Result<()> {
    let req = pb::ListLeasesRequest {
        feature,
        user,
        session_id: None,
        allow_stale: false,
    };
    let (r, stale) = crate::stale::listing(
        ctx,
        "leases",
        |ch, allow_stale| {
            let req = pb::ListLeasesRequest {
                allow_stale,
                ..req.clone()
            };
            async move { AdminClient::new(ch).list_leases(req).await }
        },
        |r: &pb::ListLeasesResponse| (r.answered_by, r.applied_index),
    )
    .await?;
    if ctx.json {
        let v: Vec<_> = r.leases.iter().map(lease_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return stale.map_or(Ok(()), |s| Err(s.exit()));
    }
    if let Some(s) = &stale {
        println!("{}", s.header());
    }
    let rows: Vec<Vec<String>> = r
        .leases
        .iter()
        .map(|l| {
            let lease = if l.lease_id == 0 {
                "-".into()
            } else {
                l.lease_id.to_string()
            };
            let state = if l.lingering_until_ms > 0 {
                format!("lingering until {}", when(l.lingering_until_ms))
            } else {
                state_name(l.state).into()
            };
            vec![
                lease,
                l.feature.clone(),
                version(&l.version).to_owned(),
                l.count.to_string(),
                l.user.clone(),
                l.host.clone(),
                l.session_id.to_string(),
                when(l.granted_at_ms),
                l.fencing_token.to_string(),
                state,
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no leases");
    } else {
        table(
            &[
                "LEASE", "FEATURE", "VERSION", "COUNT", "USER", "HOST", "SESSION", "SINCE",
                "TOKEN", "STATE",
            ],
            &rows,
        );
    }
    stale.map_or(Ok(()), |s| Err(s.exit()))
}

pub async fn remove(ctx: &Ctx, lease: u64, reason: String) -> anyhow::Result<()> {
    let req = pb::RemoveLeaseRequest {
        lease_id: lease,
        reason,
    };
    let r = ctx
        .cluster()?
        .call("remove", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).remove_lease(req).await }
        })
        .await?;
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"lease_id": lease, "removed": r.removed})
        );
    } else if r.removed {
        println!("removed lease {lease}: its seats are back in the pool");
    } else {
        println!("lease {lease} was already gone");
    }
    Ok(())
}

/// lmremove's form: every active lease of `user` (on `host`, at `display`, when given).
/// The leases are listed, then removed one by one; one that ends meanwhile counts as
/// already gone.
pub async fn remove_user(
    ctx: &Ctx,
    user: &str,
    host: Option<&str>,
    display: Option<&str>,
    reason: String,
) -> anyhow::Result<()> {
    let req = pb::ListLeasesRequest {
        feature: None,
        user: Some(user.to_owned()),
        session_id: None,
        allow_stale: false,
    };
    let cluster = ctx.cluster()?;
    let r = cluster
        .call("leases", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).list_leases(req).await }
        })
        .await?;
    let chosen: Vec<u64> = r
        .leases
        .iter()
        .filter(|l| l.lease_id != 0 && l.user == user)
        .filter(|l| host.is_none_or(|h| l.host == h))
        .filter(|l| display.is_none_or(|d| l.display == d))
        .map(|l| l.lease_id)
        .collect();
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for lease in &chosen {
        let req = pb::RemoveLeaseRequest {
            lease_id: *lease,
            reason: reason.clone(),
        };
        let r = cluster
            .call("remove", |ch| {
                let req = req.clone();
                async move { AdminClient::new(ch).remove_lease(req).await }
            })
            .await;
        match r {
            Ok(r) if r.removed => removed.push(*lease),
            Ok(_) => {}
            // Checked in or expired since the listing: gone already.
            Err(tally_client::Error::Refused {
                code: tonic::Code::NotFound,
                ..
            }) => {}
            // Held for less than the cluster's minimum hold: kept, and said why.
            Err(tally_client::Error::Refused {
                code: tonic::Code::FailedPrecondition,
                message,
                ..
            }) => kept.push((*lease, message)),
            Err(e) => return Err(e.into()),
        }
    }
    if ctx.json {
        let kept: Vec<_> = kept
            .iter()
            .map(|(l, why)| serde_json::json!({"lease": l, "why": why}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"user": user, "host": host, "display": display, "removed": removed, "kept": kept})
        );
    } else if chosen.is_empty() {
        println!(
            "{user} holds no leases{}",
            host.map_or(String::new(), |h| format!(" on {h}"))
        );
    } else {
        println!(
            "removed {} lease(s) of {user}: {removed:?}; their seats are back in the pool",
            removed.len()
        );
        for (lease, why) in &kept {
            println!("kept lease {lease}: {why}");
        }
    }
    Ok(())
}

/// The zone a listing's license dates are days of: the cluster's, as the server said
/// (a server from before the setting said nothing, and read dates in UTC).
fn zone_of(r: &pb::ListFeaturesResponse) -> &str {
    if r.time_zone.is_empty() {
        "UTC"
    } else {
        &r.time_zone
    }
}

/// A feature's earliest `START=` as its file writes it; `None` without one. From the
/// server's date when it sends one: a day of the cluster's zone is not always the UTC
/// day of the instant it begins at (Berlin's 1 Jan begins on 31 Dec, UTC).
pub fn starts(f: &pb::FeatureInfo) -> Option<String> {
    if !f.start_date.is_empty() {
        Some(f.start_date.clone())
    } else {
        (f.start_ms > 0).then(|| license_date(f.start_ms))
    }
}

/// A feature's last licensed day as its file writes it; `None` for a permanent one.
pub fn valid_through(f: &pb::FeatureInfo) -> Option<String> {
    if !f.expiry_date.is_empty() {
        Some(f.expiry_date.clone())
    } else {
        (f.expiry_ms > 0).then(|| last_day(f.expiry_ms))
    }
}

/// A day as license files write it (`1-jan-2027`), for the day that starts at `ms`: a
/// server that sends no dates (from before the time-zone setting) read them in UTC.
fn license_date(ms: u64) -> String {
    Date::of_ms(ms).to_string()
}

/// The last day a license counts, as its file writes it: `expiry_ms` is the first instant
/// it no longer does (the end of its expiry day, UTC for such a server), so a `31-mar-2027` line reads
/// "valid through 31-mar-2027", not "expires 2027-04-01 00:00:00Z".
fn last_day(expiry_ms: u64) -> String {
    Date::of_ms(expiry_ms.saturating_sub(1)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn license_days_read_as_the_file_writes_them() {
        let end_of_31_mar_2027 = tally_core::license::Date::from_ymd(2027, 3, 31)
            .unwrap()
            .end_ms();
        assert_eq!(super::last_day(end_of_31_mar_2027), "31-mar-2027");
        let jan_1 = tally_core::license::Date::from_ymd(2027, 1, 1)
            .unwrap()
            .start_ms();
        assert_eq!(super::license_date(jan_1), "1-jan-2027");
    }

    #[test]
    fn the_servers_dates_win_over_instants() {
        use tally_client::proto::v1 as pb;
        // Berlin's 1 Jan 2027 begins at 23:00 UTC on 31 Dec; Los Angeles's 31 Mar 2027
        // ends at 07:00 UTC on 1 Apr. The server sends the days themselves.
        let berlin = pb::FeatureInfo {
            start_ms: 1_798_758_000_000,
            start_date: "1-jan-2027".into(),
            ..Default::default()
        };
        let la = pb::FeatureInfo {
            expiry_ms: 1_806_562_800_000,
            expiry_date: "31-mar-2027".into(),
            ..Default::default()
        };
        assert_eq!(super::starts(&berlin).as_deref(), Some("1-jan-2027"));
        assert_eq!(super::valid_through(&la).as_deref(), Some("31-mar-2027"));
        // An older server sent instants only, of UTC days (and read dates in UTC).
        let old = |f: &pb::FeatureInfo| pb::FeatureInfo {
            start_date: String::new(),
            expiry_date: String::new(),
            ..f.clone()
        };
        assert_eq!(super::starts(&old(&berlin)).as_deref(), Some("31-dec-2026"));
        assert_eq!(
            super::valid_through(&old(&la)).as_deref(),
            Some("1-apr-2027")
        );
        let permanent = pb::FeatureInfo::default();
        assert_eq!(super::starts(&permanent), None);
        assert_eq!(super::valid_through(&permanent), None);
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(super::when_at(0, 0), "-");
        assert_eq!(super::when_at(1_795_424_204_449, 0), "2026-11-23 08:56:44Z");
        assert_eq!(super::when_at(951_782_400_000, 0), "2000-02-29 00:00:00Z");
        // East and west of UTC, across midnight both ways.
        assert_eq!(
            super::when_at(1_795_424_204_449, -9 * 3600),
            "2026-11-22 23:56:44 -09:00"
        );
        assert_eq!(
            super::when_at(951_782_400_000, 5 * 3600 + 30 * 60),
            "2000-02-29 05:30:00 +05:30"
        );
        assert_eq!(
            super::when_at(951_782_400_000, -1),
            "2000-02-28 23:59:59 -00:00"
        );
    }
}
