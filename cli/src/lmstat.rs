//! `tallyctl lmstat -a` / `-f FEATURE`: the cluster's usage in the exact layout of
//! FlexNet's `lmstat -a`, so monitoring scrapers written for FlexNet parse it unchanged.
//!
//! The layout follows the FlexNet License Administration Guide's `lmstat` examples:
//! a `Users of F:  (Total of N licenses issued;  Total of M licenses in use)` header per
//! feature; where seats are in use, the feature's `"F" vVERSION, vendor: V, expiry: D`
//! line and its license type; then one line per holder,
//! `user host display (vVERSION) (server/port handle), start Ddd M/D H:MM[, K licenses]`,
//! with ` (linger: N)` on a seat that lingers after its checkin, and
//! `user host display (vVERSION) (server/port handle) queued for K licenses` per waiter.
//! Differences kept on purpose: times are UTC (Tally's ledger time; FlexNet prints the
//! server's local time), the handle is Tally's lease id (the seat id for a lingering
//! seat, the queue place for a waiter), and "server/port" is the node asked.

use std::fmt::Write as _;

use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::license::Date;

use crate::Ctx;

const UNCOUNTED: u64 = u32::MAX as u64;
const DAY_MS: u64 = 86_400_000;
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

pub async fn run(ctx: &Ctx, feature: Option<String>) -> anyhow::Result<()> {
    let cluster = ctx.cluster()?;
    let features = cluster
        .call("features", |ch| async move {
            AdminClient::new(ch)
                .list_features(pb::ListFeaturesRequest::default())
                .await
        })
        .await?
        .features;
    let waiters = cluster
        .call("queue", |ch| async move {
            AdminClient::new(ch)
                .list_queue(pb::ListQueueRequest::default())
                .await
        })
        .await?
        .waiters;
    if let Some(f) = &feature {
        if !features.iter().any(|x| &x.name == f) {
            anyhow::bail!("no feature {f:?} is licensed (see `tallyctl features`)");
        }
    }
    let endpoint = cluster.leader_hint();
    let (host, port) = server_of(&endpoint);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    print!(
        "{}",
        render(
            &features,
            &waiters,
            feature.as_deref(),
            (&host, &port),
            now,
            &crate::listing::wall_ms
        )
    );
    Ok(())
}

/// `host` and `port` of an endpoint like `https://host:7000`.
fn server_of(endpoint: &str) -> (String, String) {
    let bare = endpoint
        .split("://")
        .last()
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    match bare.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_owned(), p.to_owned()),
        None => (bare.to_owned(), "0".to_owned()),
    }
}

/// `Wed 12/2 9:41`: FlexNet's start time, from wall-clock milliseconds of the zone shown.
fn start(ms: u64) -> String {
    let (_, m, d) = Date::of_ms(ms).ymd();
    let s = (ms / 1000) % 86_400;
    format!(
        "{} {m}/{d} {}:{:02}",
        WEEKDAYS[((ms / DAY_MS + 4) % 7) as usize],
        s / 3600,
        s / 60 % 60
    )
}

/// `31-dec-2027` for an expiry at the end of that day (Tally stores the instant after).
fn expiry(ms: u64) -> String {
    if ms == 0 {
        return "permanent(no expiration date)".into();
    }
    let (y, m, d) = Date::of_ms(ms.saturating_sub(1)).ymd();
    format!("{d}-{}-{y}", MONTHS[(m as usize).saturating_sub(1) % 12])
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The version a line shows: what the holder asked for, else the feature's newest line.
fn shown_version<'a>(asked: &'a str, f: &'a pb::FeatureInfo) -> &'a str {
    if asked.is_empty() || asked == "0" || asked == "0.0" {
        f.versions.last().map_or("0.0", String::as_str)
    } else {
        asked
    }
}

/// The whole `lmstat -a` text (or `-f feature`'s), as a pure function of the listings.
/// `wall` turns an instant into wall-clock milliseconds of the zone shown (lmstat prints
/// local time; `--utc` makes it UTC).
pub fn render(
    features: &[pb::FeatureInfo],
    waiters: &[pb::Waiter],
    only: Option<&str>,
    (host, port): (&str, &str),
    now_ms: u64,
    wall: &dyn Fn(u64) -> u64,
) -> String {
    let now_ms = wall(now_ms);
    let mut o = String::new();
    let (y, mo, d) = Date::of_ms(now_ms).ymd();
    let s = (now_ms / 1000) % 86_400;
    let _ = writeln!(
        o,
        "lmstat - Tally {} (FlexNet lmstat layout)",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        o,
        "Flexible License Manager status on {} {mo}/{d}/{y} {}:{:02}\n",
        WEEKDAYS[((now_ms / DAY_MS + 4) % 7) as usize],
        s / 3600,
        s / 60 % 60
    );
    let _ = writeln!(o, "License server status: {port}@{host}");
    let _ = writeln!(
        o,
        "    License file(s) on {host}: (loaded into the cluster):\n"
    );
    let _ = writeln!(
        o,
        "{host}: license server UP (MASTER) v{}\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut vendors: Vec<&str> = features.iter().map(|f| f.vendor.as_str()).collect();
    vendors.sort_unstable();
    vendors.dedup();
    let _ = writeln!(o, "Vendor daemon status (on {host}):\n");
    for v in vendors {
        let _ = writeln!(o, "  {v:>8}: UP v{}", env!("CARGO_PKG_VERSION"));
    }
    let _ = writeln!(o, "\nFeature usage info:\n");
    for f in features.iter().filter(|f| only.is_none_or(|n| n == f.name)) {
        if f.issued >= UNCOUNTED {
            let _ = writeln!(o, "Users of {}:  (Uncounted, node-locked)\n", f.name);
        } else {
            let _ = writeln!(
                o,
                "Users of {}:  (Total of {} license{} issued;  Total of {} license{} in use)\n",
                f.name,
                f.issued,
                plural(f.issued),
                f.in_use,
                plural(f.in_use)
            );
        }
        let queued: Vec<&pb::Waiter> = waiters.iter().filter(|w| w.feature == f.name).collect();
        if f.holders.is_empty() && queued.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "  \"{}\" v{}, vendor: {}, expiry: {}",
            f.name,
            f.versions.last().map_or("0.0", String::as_str),
            f.vendor,
            crate::listing::valid_through(f).unwrap_or_else(|| expiry(f.expiry_ms))
        );
        let _ = writeln!(o, "  floating license\n");
        for h in &f.holders {
            let display = if h.display.is_empty() {
                &h.host
            } else {
                &h.display
            };
            let lingering = h.state == pb::LeaseState::Lingering as i32;
            let handle = if lingering { h.seat_id } else { h.lease_id };
            let _ = write!(
                o,
                "    {} {} {display} (v{}) ({host}/{port} {handle}), start {}",
                h.user,
                h.host,
                shown_version(&h.version, f),
                start(wall(h.granted_at_ms))
            );
            if h.count > 1 {
                let _ = write!(o, ", {} licenses", h.count);
            }
            if lingering {
                let _ = write!(o, " (linger: {})", f.linger_ms / 1000);
            }
            o.push('\n');
        }
        for w in queued {
            let _ = writeln!(
                o,
                "    {} {} {} (v{}) ({host}/{port} {}) queued for {} license{}",
                w.user,
                w.host,
                w.host,
                shown_version(&w.version, f),
                w.place,
                w.count,
                plural(u64::from(w.count))
            );
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests;
