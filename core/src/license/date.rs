//! Calendar dates as license files write them (`31-dec-2027`), with the civil-calendar
//! arithmetic done here. A date is a day of the calendar, not an instant: where it begins
//! depends on the time zone it is read in (see [`Zone`](super::Zone)); `start_ms` and
//! `end_ms` here read it in UTC.

use std::fmt;

use serde::{Deserialize, Serialize};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_MS: u64 = 86_400_000;

/// A calendar day, stored as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date(i32);

impl Date {
    /// The date `y-m-d`, if it exists and lies in 1970..=9999.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in(y, m) {
            return None;
        }
        // Days from civil (H. Hinnant's algorithm), shifted so March starts the year.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m as i32 + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d as i32 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(Date(era * 146_097 + doe - 719_468))
    }

    /// The UTC day holding `ms` milliseconds since the Unix epoch.
    pub fn of_ms(ms: u64) -> Date {
        Date(i32::try_from(ms / DAY_MS).unwrap_or(i32::MAX))
    }

    /// Year, month (1-12) and day (1-31). In i64 throughout: a `Date` decoded from a
    /// snapshot may hold any i32, and no value may make this overflow.
    pub fn ymd(self) -> (i64, u32, u32) {
        let z = i64::from(self.0) + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    /// Parses FlexLM's `d-mon-yyyy` (month name in any case), e.g. `31-dec-2027`.
    pub fn parse_flexlm(s: &str) -> Option<Date> {
        let mut parts = s.split('-');
        let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || d.is_empty() || d.len() > 2 || y.len() != 4 {
            return None;
        }
        if !d.bytes().all(|b| b.is_ascii_digit()) || !y.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let m = MONTHS
            .iter()
            .position(|name| name.eq_ignore_ascii_case(m))? as u32
            + 1;
        Date::from_ymd(y.parse().ok()?, m, d.parse().ok()?)
    }

    /// Milliseconds since the Unix epoch at 00:00 UTC of this day.
    pub fn start_ms(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0) * DAY_MS
    }

    /// The first millisecond of the next day: a line expiring on this day counts until then.
    pub fn end_ms(self) -> u64 {
        self.start_ms().saturating_add(DAY_MS)
    }

    /// The day `days` later (`GRACE=14` ends at the end of the 14th day after expiry).
    /// Saturates: a `Date` decoded from a snapshot may hold any i32.
    pub fn add_days(self, days: u32) -> Date {
        Date(
            self.0
                .saturating_add(i32::try_from(days).unwrap_or(i32::MAX)),
        )
    }
}

fn days_in(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{d}-{}-{y}", MONTHS[(m - 1) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        let mut prev = None;
        for y in [1970, 1999, 2000, 2024, 2100, 2400, 9999] {
            for m in 1..=12 {
                for d in 1..=days_in(y, m) {
                    let date = Date::from_ymd(y, m, d).unwrap();
                    assert_eq!(date.ymd(), (i64::from(y), m, d));
                    assert_eq!(Date::parse_flexlm(&date.to_string()), Some(date));
                    if let Some(p) = prev {
                        assert!(date > p);
                    }
                    prev = Some(date);
                }
            }
        }
    }

    #[test]
    fn known_days() {
        assert_eq!(Date::from_ymd(1970, 1, 1).unwrap().start_ms(), 0);
        assert_eq!(
            Date::from_ymd(2027, 12, 31).unwrap().start_ms(),
            1_830_211_200_000
        );
        assert_eq!(Date::parse_flexlm("1-JAN-2026"), Date::from_ymd(2026, 1, 1));
        assert_eq!(
            Date::from_ymd(2024, 2, 29).unwrap().to_string(),
            "29-feb-2024"
        );
    }

    #[test]
    fn any_stored_value_is_safe_to_use() {
        // Snapshots are input too: a garbled one may hold any day number.
        for raw in [i32::MIN, -1, 0, i32::MAX] {
            let d = Date(raw);
            let _ = (
                d.ymd(),
                d.to_string(),
                d.start_ms(),
                d.end_ms(),
                d.add_days(u32::MAX),
            );
            let la = super::super::Zone::parse("America/Los_Angeles").unwrap();
            let _ = (la.day_start_ms(d), la.day_end_ms(d), la.grace_end_ms(d, 14));
        }
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for bad in [
            "30-feb-2026",
            "29-feb-2025",
            "0-jan-2026",
            "32-jan-2026",
            "1-foo-2026",
            "1-jan-26",
            "1-jan-1969",
            "-jan-2026",
            "1-jan-2026-1",
            "",
            "1--2026",
            "+1-jan-2026",
            "1-jan-+026",
            "001-jan-2026",
        ] {
            assert_eq!(Date::parse_flexlm(bad), None, "{bad}");
        }
    }
}
