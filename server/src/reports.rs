//! The Admin `Report` RPC: the usage history's reports, made on the node asked.
//!
//! What the ledger knows now (the seats counted, named users, metering terms, the zone)
//! is copied under a brief read lock; the history's records are read from its store and
//! the report computed on a blocking thread (`tally_core::history::report`), so a month
//! of records never holds the state machine's lock nor a runtime worker.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tally_core::history::report::{self, Source};
use tally_core::history::{Record, What};
use tally_core::ledger::{DenyReason, Ledger};
use tally_core::license::Zone;
use tally_core::usage::{MeterTerms, Span};
use tally_proto::v1 as pb;
use tonic::Status;

use crate::store::StateMachine;

/// At most this many records are read for one report: about a month of a site of 2,000
/// users (BENCHMARKS.md); a longer window must name a feature or be split.
pub const MAX_RECORDS: usize = 5_000_000;

/// What a report needs of the ledger, copied under its lock.
struct Now {
    applied_index: u64,
    now_ms: u64,
    zone: Zone,
    open: Vec<(String, Span)>,
    assigned: BTreeMap<String, u64>,
    /// Each feature's metering terms: those of its first effective line.
    terms: BTreeMap<String, MeterTerms>,
}

/// `feature`: the one feature asked about, if one: only its seats are copied, since this
/// runs under the state machine's read lock and a ledger may count a million seats.
fn now_of(ledger: &Ledger, applied_index: u64, feature: Option<&str>) -> Now {
    let open = ledger
        .seats()
        .filter(|(_, s)| feature.is_none_or(|f| s.feature == f))
        .map(|(_, s)| {
            let span = Span {
                start_ms: s.charged_ms,
                end_ms: None,
                count: s.count,
            };
            (s.feature.clone(), span)
        })
        .collect();
    let mut terms = BTreeMap::new();
    for l in ledger.effective_lines() {
        terms
            .entry(l.line.name.clone())
            .or_insert_with(|| MeterTerms::from_line(&l.line));
    }
    Now {
        applied_index,
        now_ms: ledger.now_ms(),
        zone: ledger.time_zone(),
        open,
        assigned: ledger
            .named_features()
            .map(|f| (f.to_owned(), ledger.assigned_count(f)))
            .collect(),
        terms,
    }
}

/// Makes the report `req` asks for. Blocking (reads the history store).
pub fn make(sm: &StateMachine, req: &pb::ReportRequest) -> Result<pb::ReportResponse, Status> {
    let now = {
        let s = sm.read();
        let feature = (!req.feature.is_empty()).then_some(req.feature.as_str());
        now_of(&s.ledger, s.last_applied.map_or(0, |l| l.index), feature)
    };
    let history = sm.history();
    // Records of entries applied before this call may still be queued for the writer.
    history.flush().map_err(internal)?;
    let to_ms = match req.to_ms {
        0 => now.now_ms.saturating_add(1),
        t => t,
    };
    if to_ms <= req.from_ms {
        return Err(Status::invalid_argument(format!(
            "the window is empty: from ({}) must be before to ({to_ms})",
            req.from_ms
        )));
    }
    let records = history
        .read(req.from_ms, MAX_RECORDS + 1)
        .map_err(internal)?;
    if records.len() > MAX_RECORDS {
        return Err(Status::resource_exhausted(format!(
            "more than {MAX_RECORDS} history records from {} on: ask for a later --from",
            req.from_ms
        )));
    }
    let steps = history.steps().map_err(internal)?;
    let src = Source {
        records: &records,
        open: &now.open,
        licensed: &steps,
        assigned_now: &now.assigned,
        now_ms: now.now_ms,
    };
    let features: Vec<String> = if req.feature.is_empty() {
        src.features()
    } else {
        vec![req.feature.clone()]
    };
    let (from_ms, zone) = (req.from_ms, now.zone);
    let value = match req.kind.as_str() {
        "usage" => {
            let interval = if req.interval_ms == 0 {
                3_600_000
            } else {
                req.interval_ms
            };
            let rows = report::usage(&src, &features, from_ms, to_ms, interval)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            serde_json::to_value(rows).map_err(internal)?
        }
        "overuse" => {
            if req.feature.is_empty() {
                return Err(Status::invalid_argument(
                    "an overuse report is of one feature: give --feature",
                ));
            }
            let terms = now.terms.get(&req.feature).copied().unwrap_or_default();
            let o = report::overuse(&src, &req.feature, terms, zone, from_ms, to_ms);
            let mut v = serde_json::to_value(o).map_err(internal)?;
            v["feature"] = json!(req.feature);
            v["terms"] = json!({
                "interval_ms": terms.interval_ms,
                "min_ms": terms.min_ms,
                "overuse_days_per_quarter": terms.overuse_days_per_quarter,
            });
            v
        }
        "trueup" => {
            let rows = report::trueup(&src, &features, zone, from_ms, to_ms);
            serde_json::to_value(rows).map_err(internal)?
        }
        "denials" => {
            let f = (!req.feature.is_empty()).then_some(req.feature.as_str());
            let rows: Vec<Value> = report::denials(&src, f, from_ms, to_ms)
                .into_iter()
                .map(|r| flat(r, zone))
                .collect();
            Value::Array(rows)
        }
        "history" => {
            let rows: Vec<Value> = records
                .iter()
                .filter(|r| r.at_ms < to_ms)
                .filter(|r| req.feature.is_empty() || r.feature == req.feature)
                .filter(|r| req.record_kind.is_empty() || r.what.kind() == req.record_kind)
                .map(|r| flat(r, zone))
                .collect();
            Value::Array(rows)
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown report \"{}\": usage, overuse, trueup, denials or history",
                other.escape_debug()
            )))
        }
    };
    Ok(pb::ReportResponse {
        json: value.to_string(),
        applied_index: now.applied_index,
        now_ms: now.now_ms,
    })
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// One record as the export and the denials report print it: the same columns for
/// every kind (`count`, `id` and `detail` mean what the kind says), so that CSV works.
pub fn flat(r: &Record, zone: Zone) -> Value {
    let (count, id, detail): (u64, u64, String) = match &r.what {
        What::Granted {
            lease,
            count,
            overdraft,
            fresh,
        } => (
            u64::from(*count),
            *lease,
            format!(
                "{}{}",
                if *fresh {
                    "new seat"
                } else {
                    "shared or lingering seat"
                },
                if *overdraft > 0 {
                    format!(", {overdraft} overdraft")
                } else {
                    String::new()
                }
            ),
        ),
        What::Released { lease, cause } => (0, *lease, format!("{cause:?}")),
        What::Reclaimed {
            seat,
            count,
            charged_ms,
        } => (
            u64::from(*count),
            *seat,
            format!("in use since {charged_ms}"),
        ),
        What::Removed { lease } => (0, *lease, String::new()),
        What::Revoked { lease, reason } => (0, *lease, format!("{reason:?}")),
        What::Denied { reason } => (0, 0, denial(reason, &r.feature, zone)),
        What::Queued { place } => (0, *place, String::new()),
        What::Dequeued { place, reason } => (0, *place, denial(reason, &r.feature, zone)),
        What::LicenseLoaded { source, lines } => (u64::from(*lines), 0, source.clone()),
        What::LicenseUnloaded { source } => (0, 0, source.clone()),
        What::OptionsLoaded { directives } => (u64::from(*directives), 0, String::new()),
        What::Assigned { users, assigned } | What::Unassigned { users, assigned } => {
            (*assigned, 0, users.join(" "))
        }
        What::Licensed {
            issued,
            overdraft_limit,
        } => (*issued, 0, format!("overdraft {overdraft_limit}")),
        What::Short { in_use, licensed } => {
            (*in_use, 0, format!("{in_use} in use, {licensed} licensed"))
        }
        What::FairUseOpened { until_ms } => (0, 0, format!("until {until_ms}")),
        What::FairUseClosed => (0, 0, String::new()),
        What::TermChanged { state } => (0, 0, crate::convert::term_name(state).to_owned()),
        What::TimeZoneSet { zone } => (0, 0, zone.clone()),
        What::ClockRepaired { from_ms, to_ms } => (0, 0, format!("{from_ms} -> {to_ms}")),
    };
    json!({
        "index": r.index,
        "at_ms": r.at_ms,
        "kind": r.what.kind(),
        "feature": r.feature,
        "user": r.user,
        "host": r.host,
        "count": count,
        "id": id,
        "detail": detail,
        "by": r.by,
    })
}

/// A refusal as `CODE: message`.
fn denial(reason: &DenyReason, feature: &str, zone: Zone) -> String {
    let code = crate::convert::denial_code(reason).as_str_name();
    let code = code.strip_prefix("DENIAL_REASON_").unwrap_or(code);
    format!(
        "{code}: {}",
        crate::convert::deny_message(reason, feature, zone)
    )
}
