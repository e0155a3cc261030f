//! The time zone a license's dates are read in.
//!
//! A date such as `31-dec-2027` is a day of a calendar, and a calendar day begins at a
//! different instant in every zone. FlexNet reads it in the license server's local
//! calendar; Tally reads it in one zone that the cluster keeps in its replicated ledger
//! (`Op::SetTimeZone`), never in a node's own zone: nodes in different zones, or with a
//! different `TZ`, would otherwise disagree about whether a line counts, and the ledger
//! must be the same on every node. Without a setting the zone is UTC.
//!
//! The rules (offsets, daylight saving) are the IANA database compiled into this build
//! by `chrono-tz` ([`TZDB_VERSION`]): they are pure table lookups, with no clock and no
//! system files, so every node that runs the same release computes the same instants.
//! Daylight saving is tabulated through 2099 there; later dates keep the last offset.

use chrono::{Datelike as _, LocalResult, NaiveDate, NaiveDateTime, TimeZone as _};
use chrono_tz::{GapInfo, Tz};
use thiserror::Error;

use super::Date;

/// The release of the IANA time-zone database compiled into this build (e.g. `2025b`).
pub const TZDB_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// Longest zone name echoed back in an error: the input may be anything.
const MAX_ECHO: usize = 64;

/// A time zone of the IANA database (`Europe/Berlin`, `America/Los_Angeles`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

impl Default for Zone {
    fn default() -> Self {
        Zone::UTC
    }
}

/// A name that is no zone of the compiled database.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("\"{name}\" is not a time zone of the IANA database ({TZDB_VERSION}) compiled into this build: use a name such as Europe/Berlin, America/Los_Angeles or UTC")]
pub struct UnknownZone {
    /// The name asked for (cut to a sane length).
    pub name: String,
}

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// The zone named `name`, in the database's spelling or in any case
    /// (`america/los_angeles`). Links (`US/Pacific`) are zones of their own name.
    pub fn parse(name: &str) -> Result<Zone, UnknownZone> {
        if let Ok(tz) = name.parse::<Tz>() {
            return Ok(Zone(tz));
        }
        // Admins type names; one scan of ~600 names on an admin's or a config's input.
        chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .map(|tz| Zone(*tz))
            .ok_or_else(|| UnknownZone {
                name: name.chars().take(MAX_ECHO).collect(),
            })
    }

    /// The database's name for the zone (`America/Los_Angeles`).
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Milliseconds since the Unix epoch at which `date` begins in this zone: its local
    /// midnight. Where midnight happens twice (clocks set back across it) the day begins
    /// at the first. Where it does not happen at all (clocks set forward across it, as
    /// America/Santiago and Asia/Beirut do at midnight; Pacific/Apia skipped all of
    /// 30 Dec 2011) the day begins at the first local instant that exists: the instant
    /// of the change. A skipped day so begins and ends at the same instant, and counts
    /// for nothing. Instants before the epoch read as 0.
    pub fn day_start_ms(self, date: Date) -> u64 {
        match naive_midnight(date).and_then(|m| first_instant_ms(self.0, &m)) {
            Some(ms) => u64::try_from(ms).unwrap_or(0),
            // Outside chrono's calendar (only a garbled stored value can be): UTC.
            None => date.start_ms(),
        }
    }

    /// The first instant after `date` in this zone: the start of the next local day. A
    /// line expiring on `date` counts until then.
    pub fn day_end_ms(self, date: Date) -> u64 {
        self.day_start_ms(date.add_days(1))
            .max(self.day_start_ms(date))
    }

    /// The end of a line's grace: the end of the `grace_days`th local day after its
    /// expiry day (whole local days, so a daylight-saving change inside the grace period
    /// does not move its end off midnight).
    pub fn grace_end_ms(self, expiry: Date, grace_days: u32) -> u64 {
        self.day_end_ms(expiry.add_days(grace_days))
    }

    /// The local calendar day that holds the instant `ms`. Instants whose day lies
    /// outside the dates licenses can name (before 1970 in zones west of UTC) read as
    /// their UTC day.
    pub fn date_of_ms(self, ms: u64) -> Date {
        let local = i64::try_from(ms)
            .ok()
            .and_then(|ms| self.0.timestamp_millis_opt(ms).single())
            .map(|t| t.date_naive());
        local
            .and_then(|d| Date::from_ymd(d.year(), d.month(), d.day()))
            .unwrap_or_else(|| Date::of_ms(ms))
    }
}

/// 00:00 of `date` as a wall-clock time, if chrono's calendar reaches it.
fn naive_midnight(date: Date) -> Option<NaiveDateTime> {
    let (y, m, d) = date.ymd();
    NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?.and_hms_opt(0, 0, 0)
}

/// The first instant (Unix ms) at which the wall clock of `tz` reads `local` or, if it
/// never reads it (a gap), the instant it jumps past it.
fn first_instant_ms(tz: Tz, local: &NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(a, b) => Some(a.timestamp_millis().min(b.timestamp_millis())),
        // The gap's end is the instant of the change: its first local time is the first
        // that exists after `local`.
        LocalResult::None => GapInfo::new(local, &tz)
            .and_then(|g| g.end)
            .map(|t| t.timestamp_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC time written `2028-01-01T08:00`.
    fn utc(s: &str) -> u64 {
        let t = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap();
        u64::try_from(t.and_utc().timestamp_millis()).unwrap()
    }

    fn day(s: &str) -> Date {
        Date::parse_flexlm(s).unwrap()
    }

    #[test]
    fn local_days_begin_and_end_where_the_zone_says() {
        // (zone, day, its start, its end, what the case is about)
        let table: &[(&str, &str, &str, &str, &str)] = &[
            ("UTC", "31-dec-2027", "2027-12-31T00:00", "2028-01-01T00:00", "UTC as before"),
            (
                "America/Los_Angeles",
                "31-dec-2027",
                "2027-12-31T08:00",
                "2028-01-01T08:00",
                "PST: a 31-dec-2027 line ends at 16:00 UTC+8h",
            ),
            (
                "America/Los_Angeles",
                "8-mar-2026",
                "2026-03-08T08:00",
                "2026-03-09T07:00",
                "PDT begins at 02:00 on 8 Mar 2026: a 23-hour day",
            ),
            (
                "America/Los_Angeles",
                "1-nov-2026",
                "2026-11-01T07:00",
                "2026-11-02T08:00",
                "PDT ends at 02:00 on 1 Nov 2026: a 25-hour day",
            ),
            (
                "Europe/Berlin",
                "31-dec-2027",
                "2027-12-30T23:00",
                "2027-12-31T23:00",
                "east of UTC the day begins the evening before",
            ),
            (
                "Asia/Kolkata",
                "1-jan-2026",
                "2025-12-31T18:30",
                "2026-01-01T18:30",
                "a half-hour offset",
            ),
            (
                "America/Santiago",
                "6-sep-2026",
                "2026-09-06T04:00",
                "2026-09-07T03:00",
                "Chile springs forward at midnight (Sun>=2 Sep, 04:00 UTC): 00:00 does not exist, the day begins at 01:00 -03",
            ),
            (
                "America/Santiago",
                "5-sep-2026",
                "2026-09-05T04:00",
                "2026-09-06T04:00",
                "the day before the gap ends at the change",
            ),
            (
                "America/Santiago",
                "4-apr-2026",
                "2026-04-04T03:00",
                "2026-04-05T04:00",
                "Chile falls back at midnight (Sun>=2 Apr, 03:00 UTC) to 23:00: the Saturday has 25 hours",
            ),
            (
                "Asia/Beirut",
                "29-mar-2026",
                "2026-03-28T22:00",
                "2026-03-29T21:00",
                "Lebanon springs forward at 00:00 on the last Sunday of March: the day begins at 01:00 +03",
            ),
            (
                "America/Havana",
                "8-mar-2026",
                "2026-03-08T05:00",
                "2026-03-09T04:00",
                "Cuba springs forward at 00:00 standard time (Mar Sun>=8)",
            ),
            (
                "America/Havana",
                "1-nov-2026",
                "2026-11-01T04:00",
                "2026-11-02T05:00",
                "Cuba falls back from 01:00 to 00:00 (Nov Sun>=1): midnight happens twice, the day begins at the first",
            ),
            (
                "Pacific/Apia",
                "29-dec-2011",
                "2011-12-29T10:00",
                "2011-12-30T10:00",
                "Samoa skipped 30 Dec 2011: the 29th ends where the 31st begins",
            ),
            (
                "Pacific/Apia",
                "30-dec-2011",
                "2011-12-30T10:00",
                "2011-12-30T10:00",
                "the skipped day begins and ends at the change: it counts for nothing",
            ),
            (
                "Pacific/Apia",
                "31-dec-2011",
                "2011-12-30T10:00",
                "2011-12-31T10:00",
                "the day after the skip, at +14",
            ),
        ];
        for (zone, date, start, end, why) in table {
            let z = Zone::parse(zone).unwrap();
            let d = day(date);
            assert_eq!(
                z.day_start_ms(d),
                utc(start),
                "start of {date} in {zone}: {why}"
            );
            assert_eq!(z.day_end_ms(d), utc(end), "end of {date} in {zone}: {why}");
            assert_eq!(z.day_end_ms(d), z.day_start_ms(d.add_days(1)), "{why}");
        }
        let apia = Zone::parse("Pacific/Apia").unwrap();
        assert_eq!(
            apia.day_end_ms(day("29-dec-2011")),
            apia.day_start_ms(day("31-dec-2011"))
        );
    }

    #[test]
    fn grace_is_whole_local_days() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        // 14 days from 1 Mar 2026 cross the change to PDT: the grace still ends at a
        // local midnight (07:00 UTC in PDT), not 24 × 14 hours later (08:00 UTC).
        assert_eq!(
            la.grace_end_ms(day("1-mar-2026"), 14),
            utc("2026-03-16T07:00")
        );
        assert_eq!(
            la.grace_end_ms(day("1-mar-2026"), 0),
            utc("2026-03-02T08:00")
        );
        assert_eq!(
            Zone::UTC.grace_end_ms(day("1-mar-2026"), 14),
            day("15-mar-2026").end_ms()
        );
    }

    #[test]
    fn every_day_of_every_zone_begins_on_that_day() {
        // For each zone and each day of a span with real and scheduled changes: days
        // follow each other, the instant a day begins lies in it (unless it was
        // skipped), and the millisecond before lies in an earlier day.
        let (first, last) = (day("1-jan-2010"), day("31-dec-2027"));
        for tz in chrono_tz::TZ_VARIANTS {
            let z = Zone(tz);
            let mut d = first;
            let mut start = z.day_start_ms(d);
            while d <= last {
                let next = z.day_start_ms(d.add_days(1));
                assert!(next >= start, "{} {d}", z.name());
                if next > start {
                    assert_eq!(z.date_of_ms(start), d, "{} {d}", z.name());
                    assert_eq!(z.date_of_ms(next - 1), d, "{} {d}", z.name());
                }
                assert!(z.date_of_ms(start - 1) < d, "{} {d}", z.name());
                d = d.add_days(1);
                start = next;
            }
        }
    }

    #[test]
    fn names_are_checked_and_spelt_as_the_database_does() {
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::UTC);
        assert_eq!(Zone::default(), Zone::UTC);
        assert_eq!(
            Zone::parse("america/los_angeles").unwrap().name(),
            "America/Los_Angeles"
        );
        assert_eq!(Zone::parse("US/Pacific").unwrap().name(), "US/Pacific");
        for bad in [
            "",
            "Mars/Olympus_Mons",
            "America/Los Angeles",
            "PST8PDT7",
            "+01:00",
        ] {
            let e = Zone::parse(bad).unwrap_err();
            assert!(e.to_string().contains("not a time zone"), "{bad}: {e}");
        }
        let long = "x".repeat(10_000);
        assert_eq!(Zone::parse(&long).unwrap_err().name.len(), MAX_ECHO);
    }

    #[test]
    fn any_stored_date_is_safe_in_any_zone() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        for d in [
            Date::parse_flexlm("1-jan-1970").unwrap(),
            Date::parse_flexlm("31-dec-9999").unwrap(),
        ] {
            let _ = (
                la.day_start_ms(d),
                la.day_end_ms(d),
                la.grace_end_ms(d, u32::MAX),
            );
        }
        // 1 Jan 1970 in Tokyo began before the epoch.
        let tokyo = Zone::parse("Asia/Tokyo").unwrap();
        assert_eq!(tokyo.day_start_ms(day("1-jan-1970")), 0);
        for ms in [0, u64::MAX, i64::MAX as u64] {
            let _ = la.date_of_ms(ms);
        }
    }
}
