//! `tallyctl report`: the usage history's reports (use per interval, metered overuse,
//! the monthly true-up, denials) and the history itself, as tables, JSON or CSV.
//!
//! The node asked makes the report from its own copy of the history (every node has
//! the same); `--json` prints the server's JSON as it came, so scripts read exactly what
//! docs/usage-history.md documents.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::Value;
use tally_client::proto::v1 as pb;
use tally_client::proto::v1::admin_client::AdminClient;
use tally_core::license::Date;

use crate::admin::table;
use crate::listing::when;
use crate::Ctx;

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Per feature and interval: the peak in use, licensed, overdraft used, denials and
    /// checkouts queued.
    Usage {
        #[command(flatten)]
        w: Window,
        /// The interval: `1h` (default), `10m`, `1d`, or seconds.
        #[arg(long, default_value = "1h")]
        interval: String,
    },
    /// A feature's metered overuse by its license's terms (METER_INTERVAL, METER_MIN,
    /// OVERUSE_DAYS): over-count intervals, overuse days, and quarters with what they
    /// bill.
    Overuse {
        #[command(flatten)]
        w: Window,
    },
    /// Per feature and month: the peak in use (named users: assigned) against the
    /// licensed count, and the shortfall a true-up pays for.
    Trueup {
        #[command(flatten)]
        w: Window,
    },
    /// Who was refused what, when and why.
    Denials {
        #[command(flatten)]
        w: Window,
    },
    /// The history's records themselves (grants, checkins, expiries, reclaims,
    /// removals, revocations, denials, waits, loads, assignments, alerts); `--json`
    /// prints JSON lines.
    History {
        #[command(flatten)]
        w: Window,
        /// Only records of this kind (grant, checkin, expiry, reclaim, denial, short...).
        #[arg(long)]
        kind: Option<String>,
    },
}

/// The window and format every report takes.
#[derive(Args, Debug)]
pub struct Window {
    /// Start: `2026-12-01` (UTC midnight), `2026-12-01T09:30:00Z`, ms since the epoch,
    /// or a time ago (`30d`, `12h`, `90m`, `45s`).
    #[arg(long, default_value = "30d")]
    from: String,
    /// End (exclusive), in the same forms; default: now.
    #[arg(long)]
    to: Option<String>,
    /// Only this feature (required by `overuse`).
    #[arg(long)]
    feature: Option<String>,
    /// Comma-separated values, with a header line.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// JSON (the global --json flag works too).
    #[arg(long)]
    json: bool,
}

/// Milliseconds since the epoch from a date, a date-time, a number of ms, or a time ago.
pub fn parse_time(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Some(ago) = parse_span(s) {
        return Ok(now_ms.saturating_sub(ago));
    }
    let (date, time) = s.split_once('T').unwrap_or((s, ""));
    let mut parts = date.splitn(3, '-').map(str::parse::<u32>);
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(d))) = (parts.next(), parts.next(), parts.next()) else {
        bail!("\"{s}\" is not a time: give 2026-12-01, 2026-12-01T09:30:00Z, ms since the epoch, or a time ago like 30d");
    };
    let day = i32::try_from(y)
        .ok()
        .and_then(|y| Date::from_ymd(y, m, d))
        .with_context(|| format!("\"{date}\" is not a calendar date"))?;
    let mut ms = day.start_ms();
    if !time.is_empty() {
        let t = time
            .strip_suffix('Z')
            .with_context(|| format!("\"{s}\": give times in UTC, ending with Z"))?;
        let hms: Vec<u64> = t
            .split(':')
            .map(str::parse::<u64>)
            .collect::<Result<_, _>>()
            .with_context(|| format!("\"{time}\" is not HH:MM[:SS]Z"))?;
        match hms.as_slice() {
            [h, mi] | [h, mi, 0] if *h < 24 && *mi < 60 => ms += (h * 3600 + mi * 60) * 1000,
            [h, mi, sec] if *h < 24 && *mi < 60 && *sec < 60 => {
                ms += (h * 3600 + mi * 60 + sec) * 1000;
            }
            _ => bail!("\"{time}\" is not HH:MM[:SS]Z"),
        }
    }
    Ok(ms)
}

/// `30d`, `12h`, `90m`, `45s` in ms.
pub fn parse_span(s: &str) -> Option<u64> {
    let unit = match s.chars().last()? {
        'd' => 86_400_000,
        'h' => 3_600_000,
        'm' => 60_000,
        's' => 1_000,
        _ => return None,
    };
    let n: u64 = s[..s.len() - 1].parse().ok()?;
    n.checked_mul(unit)
}

pub async fn run(ctx: &Ctx, cmd: Cmd) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (kind, w, interval_ms, record_kind) = match cmd {
        Cmd::Usage { w, interval } => {
            let ms = parse_span(&interval)
                .or_else(|| interval.parse::<u64>().ok().map(|s| s * 1000))
                .filter(|ms| *ms >= 1000)
                .with_context(|| {
                    format!("--interval \"{interval}\": give 1h, 10m, 1d or seconds (at least 1)")
                })?;
            ("usage", w, ms, None)
        }
        Cmd::Overuse { w } => {
            if w.feature.is_none() {
                bail!("an overuse report is of one feature: give --feature");
            }
            ("overuse", w, 0, None)
        }
        Cmd::Trueup { w } => ("trueup", w, 0, None),
        Cmd::Denials { w } => ("denials", w, 0, None),
        Cmd::History { w, kind } => ("history", w, 0, kind),
    };
    let req = pb::ReportRequest {
        kind: kind.into(),
        from_ms: parse_time(&w.from, now).context("--from")?,
        to_ms: w
            .to
            .as_deref()
            .map(|t| parse_time(t, now))
            .transpose()
            .context("--to")?
            .unwrap_or(0),
        feature: w.feature.clone().unwrap_or_default(),
        interval_ms,
        record_kind: record_kind.unwrap_or_default(),
    };
    let r = ctx
        .cluster()?
        .call("report", |ch| {
            let req = req.clone();
            async move { AdminClient::new(ch).report(req).await }
        })
        .await?;
    let v: Value = serde_json::from_str(&r.json).context("the server's report is not JSON")?;
    if ctx.json || w.json {
        match (&v, kind) {
            (Value::Array(rows), "history") => {
                for row in rows {
                    println!("{row}");
                }
            }
            _ => println!("{v}"),
        }
        return Ok(());
    }
    let (cols, rows) = columns(kind, &v);
    if w.csv {
        print!("{}", csv(cols, &rows));
        return Ok(());
    }
    human(kind, &v, cols, &rows);
    Ok(())
}

/// The columns of a report's rows, and the rows (for `overuse`: its intervals).
fn columns<'a>(kind: &str, v: &'a Value) -> (&'static [&'static str], Vec<&'a Value>) {
    let rows = |v: &'a Value| v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    match kind {
        "usage" => (
            &[
                "feature",
                "start_ms",
                "end_ms",
                "peak",
                "licensed",
                "overdraft_used",
                "denials",
                "queued",
            ],
            rows(v),
        ),
        "overuse" => (
            &["start_ms", "end_ms", "counted", "over"],
            rows(&v["intervals"]),
        ),
        "trueup" => (&["feature", "month", "peak", "licensed", "short"], rows(v)),
        _ => (
            &[
                "index", "at_ms", "kind", "feature", "user", "host", "count", "id", "detail", "by",
            ],
            rows(v),
        ),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
fn csv(cols: &[&str], rows: &[&Value]) -> String {
    let quote = |s: String| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = cols.join(",");
    out.push('\n');
    for r in rows {
        let line: Vec<String> = cols.iter().map(|c| quote(cell(&r[*c]))).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn human(kind: &str, v: &Value, cols: &[&str], rows: &[&Value]) {
    if kind == "overuse" {
        println!(
            "{}: {} licensed; {} over-count interval(s); overuse days: {}",
            cell(&v["feature"]),
            cell(&v["licensed"]),
            rows.len(),
            v["overuse_days"]
                .as_array()
                .map(|d| d.iter().map(cell).collect::<Vec<_>>().join(" "))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "none".into()),
        );
        let quarters: Vec<Vec<String>> = v["quarters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|q| {
                ["quarter", "overuse_days", "allowance", "billable_days"]
                    .iter()
                    .map(|c| cell(&q[*c]))
                    .collect()
            })
            .collect();
        table(
            &["QUARTER", "OVERUSE DAYS", "ALLOWANCE", "BILLABLE"],
            &quarters,
        );
    }
    if rows.is_empty() {
        println!("nothing in this window");
        return;
    }
    let header: Vec<String> = cols
        .iter()
        .map(|c| c.trim_end_matches("_ms").to_ascii_uppercase())
        .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| match (c.ends_with("_ms"), r[*c].as_u64()) {
                    (true, Some(ms)) => when(ms),
                    _ => cell(&r[*c]),
                })
                .collect()
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    table(&header, &body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_dates_date_times_ms_or_a_time_ago() {
        let now = 1_800_000_000_000;
        let day = Date::from_ymd(2026, 12, 1).unwrap().start_ms();
        for (text, want) in [
            ("2026-12-01", Some(day)),
            ("2026-12-01T09:30Z", Some(day + 34_200_000)),
            ("2026-12-01T09:30:15Z", Some(day + 34_215_000)),
            ("1234", Some(1234)),
            ("30d", Some(now - 30 * 86_400_000)),
            ("90m", Some(now - 5_400_000)),
            ("2026-13-01", None),
            ("2026-12-01T09:30", None),
            ("2026-12-01T25:00Z", None),
            ("yesterday", None),
        ] {
            assert_eq!(parse_time(text, now).ok(), want, "{text}");
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let rows = [serde_json::json!({"a": "x,y", "b": "say \"hi\"", "c": 3})];
        let refs: Vec<&Value> = rows.iter().collect();
        assert_eq!(
            csv(&["a", "b", "c", "d"], &refs),
            "a,b,c,d\n\"x,y\",\"say \"\"hi\"\"\",3,\n"
        );
    }
}
