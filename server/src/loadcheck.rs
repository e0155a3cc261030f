//! What an administrator loading a license should be told about lines that load but do
//! not count as they may expect. A valid signature says the vendor wrote the line, not
//! that it grants anything today: a line that expired in 2020 or starts next year loads
//! without error, and an admin who is not told finds out from a denied engineer.

use std::collections::BTreeMap;

use tally_core::ledger::TimeMs;
use tally_core::license::{Expiry, LicenseFile, LineKind, Zone};

/// One sentence per line worth a word, judged at cluster time `now_ms`, in file order,
/// with dates read in the cluster's time zone `zone`, as the ledger reads them.
pub fn load_warnings(file: &LicenseFile, now_ms: TimeMs, zone: Zone) -> Vec<String> {
    let mut out = Vec::new();
    for l in &file.lines {
        let at = format!("line {}: \"{}\"", l.line_no, l.name);
        if let Some(start) = l.start {
            if now_ms < zone.day_start_ms(start) {
                out.push(format!(
                    "{at} starts on {start}: it grants nothing until then"
                ));
            }
        }
        if let Expiry::On(end) = l.expiry {
            let grace_end = zone.grace_end_ms(end, l.term.grace_days);
            if now_ms >= grace_end {
                out.push(if l.term.demo_seats > 0 {
                    format!(
                        "{at} expired at the end of {end}: only its {} demo seat(s) count",
                        l.term.demo_seats
                    )
                } else {
                    format!("{at} expired at the end of {end}: it grants nothing")
                });
            } else if now_ms >= zone.day_end_ms(end) {
                out.push(format!(
                    "{at} expired at the end of {end}: it counts until its grace ends on {}",
                    end.add_days(l.term.grace_days)
                ));
            }
        }
    }
    // FlexNet's rule, which Tally follows: only the first FEATURE line of a feature
    // counts. A vendor (or an admin pasting a renewal) who meant to add seats wanted
    // INCREMENT.
    let mut features: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for l in file.lines.iter().filter(|l| l.kind == LineKind::Feature) {
        features.entry(&l.name).or_default().push(l.line_no);
    }
    for (name, lines) in features.into_iter().filter(|(_, v)| v.len() > 1) {
        let nums: Vec<String> = lines.iter().map(u32::to_string).collect();
        out.push(format!(
            "lines {}: {} FEATURE lines of \"{name}\": only one counts (the highest version, then the newest ISSUED); INCREMENT lines add seats",
            nums.join(", "),
            lines.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::load_warnings;
    use tally_core::license::{parse, Date, Zone};

    #[test]
    fn lines_that_load_but_do_not_count_are_named() {
        // Cluster time: noon on 15 June 2026.
        let now = Date::from_ymd(2026, 6, 15).unwrap().start_ms() + 43_200_000;
        let cases: [(&str, &[&str]); 6] = [
            ("FEATURE a demo 1.0 31-dec-2027 5", &[]),
            (
                "FEATURE a demo 1.0 1-jan-2020 5",
                &["line 2: \"a\" expired at the end of 1-jan-2020: it grants nothing"],
            ),
            (
                "FEATURE a demo 1.0 1-jan-2020 5 DEMO=2",
                &["line 2: \"a\" expired at the end of 1-jan-2020: only its 2 demo seat(s) count"],
            ),
            (
                "FEATURE a demo 1.0 10-jun-2026 5 GRACE=30",
                &["line 2: \"a\" expired at the end of 10-jun-2026: it counts until its grace ends on 10-jul-2026"],
            ),
            (
                "FEATURE a demo 1.0 permanent 5 START=1-jan-2027",
                &["line 2: \"a\" starts on 1-jan-2027: it grants nothing until then"],
            ),
            (
                "FEATURE a demo 1.0 permanent 5\nINCREMENT a demo 1.0 permanent 2\nFEATURE a demo 1.0 permanent 7",
                &["lines 2, 4: 2 FEATURE lines of \"a\": only one counts (the highest version, then the newest ISSUED); INCREMENT lines add seats"],
            ),
        ];
        for (lines, want) in cases {
            let file = parse(&format!("VENDOR demo\n{lines}\n")).unwrap();
            assert_eq!(load_warnings(&file, now, Zone::UTC), want, "{lines}");
        }
    }

    #[test]
    fn dates_are_judged_in_the_clusters_zone() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        // 04:00 UTC on 11 Jun 2026: 10 Jun still in Los Angeles, 11 Jun in Berlin.
        let now = Date::from_ymd(2026, 6, 11).unwrap().start_ms() + 4 * 3_600_000;
        let ended = "line 2: \"a\" expired at the end of 10-jun-2026: it grants nothing";
        let started = "line 2: \"a\" starts on 11-jun-2026: it grants nothing until then";
        // (line, zone, the warnings)
        let cases: [(&str, Zone, &[&str]); 6] = [
            ("FEATURE a demo 1.0 10-jun-2026 5", Zone::UTC, &[ended]),
            ("FEATURE a demo 1.0 10-jun-2026 5", la, &[]),
            ("FEATURE a demo 1.0 10-jun-2026 5", berlin, &[ended]),
            ("FEATURE a demo 1.0 permanent 5 START=11-jun-2026", Zone::UTC, &[]),
            ("FEATURE a demo 1.0 permanent 5 START=11-jun-2026", la, &[started]),
            (
                "FEATURE a demo 1.0 9-jun-2026 5 GRACE=1",
                la,
                &["line 2: \"a\" expired at the end of 9-jun-2026: it counts until its grace ends on 10-jun-2026"],
            ),
        ];
        for (lines, zone, want) in cases {
            let file = parse(&format!("VENDOR demo\n{lines}\n")).unwrap();
            assert_eq!(
                load_warnings(&file, now, zone),
                want,
                "{lines} in {}",
                zone.name()
            );
        }
    }
}
