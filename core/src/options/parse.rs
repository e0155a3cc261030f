//! The directives of the options file, their arguments checked one by one, and the
//! checks that need the whole file (groups used but never defined, settings given twice).

use std::collections::BTreeMap;

use super::args::{
    feature, group_name, invalid, member, number, number_or, target, timeout, Args, GroupRef,
};
use super::lex::{logical_lines, Logical};
use super::{Directive, GroupKind, Line, Options, OptionsError};

/// The shortest `TIMEOUT`/`TIMEOUTALL` accepted, in seconds: FlexNet's own minimum (15
/// minutes). Idle time is the client's guess; below this, people reading a drawing lose
/// their seat.
pub const TIMEOUT_FLOOR_SECS: u32 = 900;

/// [`parse_all`] reports at most this many errors.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// FlexNet options-file keywords Tally refuses, each with why: a file that relies on one
/// would behave differently here, so it must not load as if the line were not there.
pub const UNSUPPORTED: [(&str, &str); 13] = [
    ("NOLOG", "Tally has no debug log to filter: its servers log through tracing, and the usage history keeps every checkout and denial"),
    ("REPORTLOG", "Tally keeps the usage history in the cluster itself (tallyctl report); there is no report log file to name"),
    ("DEBUGLOG", "the servers log through tracing, configured in tallyd's settings, not by the options file"),
    ("ACTIVATION_EXPIRY_DAYS", "Tally has no trusted-storage activation; licenses are signed files"),
    ("ACTIVATION_LOWWATER", "Tally has no trusted-storage activation; licenses are signed files"),
    ("FQDN_MATCHING", "Tally compares host names as the clients report them and resolves nothing"),
    ("INCLUDE_ENTITLEMENT", "entitlement ids belong to FlexNet Operations; Tally has none to match"),
    ("EXCLUDE_ENTITLEMENT", "entitlement ids belong to FlexNet Operations; Tally has none to match"),
    ("INCLUDEALL_ENTITLEMENT", "entitlement ids belong to FlexNet Operations; Tally has none to match"),
    ("EXCLUDEALL_ENTITLEMENT", "entitlement ids belong to FlexNet Operations; Tally has none to match"),
    ("MAX_CONNECTIONS", "Tally has no per-daemon connection limit; cap use with MAX per user or group instead"),
    ("AUTOMATIC_REREAD", "Tally never rereads a file on its own: a new policy takes effect when loaded with `tallyctl options load`"),
    ("DAEMON_SELECT_TIMEOUT", "Tally has no vendor daemon to tune; the cluster's timeouts are in tallyd's settings"),
];

const DIRECTIVES: &str = "INCLUDE, INCLUDEALL, EXCLUDE, EXCLUDEALL, RESERVE, MAX, GROUP, HOST_GROUP, GROUPCASEINSENSITIVE, LINGER, MAX_OVERDRAFT, TIMEOUT, TIMEOUTALL, MAX_BORROW_HOURS, BORROW_LOWWATER, INCLUDE_BORROW, EXCLUDE_BORROW";

/// Parses an options file; the first mistake (in file order) is the error.
pub fn parse(text: &str) -> Result<Options, OptionsError> {
    let (options, mut errors) = parse_all(text);
    if errors.is_empty() {
        Ok(options)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parses as far as it can: the directives that are right, and every mistake in file
/// order (at most [`MAX_REPORTED_ERRORS`]), so an admin sees them all at once. A mistake
/// in the file's shape (size, an open quote or continuation) stops it there. The
/// options are usable only when no error came back.
pub fn parse_all(text: &str) -> (Options, Vec<OptionsError>) {
    let logicals = match logical_lines(text) {
        Ok(l) => l,
        Err(e) => return (Options::empty(), vec![e]),
    };
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut refs = Vec::new();
    // A single-valued setting's key and the line that first gave it.
    let mut singles: BTreeMap<(&'static str, String), u32> = BTreeMap::new();
    for logical in &logicals {
        if errors.len() >= MAX_REPORTED_ERRORS {
            break;
        }
        let Some(head) = logical.tokens.first() else {
            continue;
        };
        match directive(logical, &mut refs) {
            Ok(d) => match single_key(&d) {
                Some(key) => match singles.get(&key) {
                    Some(&first_line) => errors.push(OptionsError::Duplicate {
                        line: head.line,
                        column: head.col,
                        directive: key.0,
                        subject: key.1,
                        first_line,
                    }),
                    None => {
                        singles.insert(key, head.line);
                        lines.push(Line {
                            line: head.line,
                            directive: d,
                        });
                    }
                },
                None => lines.push(Line {
                    line: head.line,
                    directive: d,
                }),
            },
            Err(e) => errors.push(e),
        }
    }
    let options = Options::from_lines(lines);
    for (kind, name, line, column) in refs {
        if options.members(kind, &name).is_none() {
            let other = match kind {
                GroupKind::Group => GroupKind::HostGroup,
                GroupKind::HostGroup => GroupKind::Group,
            };
            let hint = if options.members(other, &name).is_some() {
                format!(" ({other} {name} exists: did you mean TYPE {other}?)")
            } else {
                String::new()
            };
            errors.push(OptionsError::UndefinedGroup {
                line,
                column,
                kind,
                name,
                hint,
            });
        }
    }
    errors.sort_by_key(|e| (e.line(), e.column()));
    errors.truncate(MAX_REPORTED_ERRORS);
    (options, errors)
}

/// The key under which a setting may be given only once, if it is single-valued.
fn single_key(d: &Directive) -> Option<(&'static str, String)> {
    match d {
        Directive::Linger { feature, .. }
        | Directive::MaxOverdraft { feature, .. }
        | Directive::Timeout { feature, .. }
        | Directive::MaxBorrowHours { feature, .. }
        | Directive::BorrowLowwater { feature, .. } => {
            Some((d.keyword(), format!(" for {feature}")))
        }
        Directive::TimeoutAll { .. } | Directive::GroupCaseInsensitive { .. } => {
            Some((d.keyword(), String::new()))
        }
        _ => None,
    }
}

fn directive(l: &Logical, refs: &mut Vec<GroupRef>) -> Result<Directive, OptionsError> {
    let head = l.tokens.first().ok_or(OptionsError::Missing {
        line: l.end_line,
        column: l.end_col,
        directive: "a directive",
        expected: "a keyword",
        usage: DIRECTIVES,
    })?;
    let key = head.text.to_ascii_uppercase();
    let (directive, usage): (&'static str, &'static str) = match key.as_str() {
        _ if head.quoted => ("", ""),
        "INCLUDE" => ("INCLUDE", "INCLUDE feature TYPE name"),
        "EXCLUDE" => ("EXCLUDE", "EXCLUDE feature TYPE name"),
        "INCLUDE_BORROW" => ("INCLUDE_BORROW", "INCLUDE_BORROW feature TYPE name"),
        "EXCLUDE_BORROW" => ("EXCLUDE_BORROW", "EXCLUDE_BORROW feature TYPE name"),
        "INCLUDEALL" => ("INCLUDEALL", "INCLUDEALL TYPE name"),
        "EXCLUDEALL" => ("EXCLUDEALL", "EXCLUDEALL TYPE name"),
        "RESERVE" => ("RESERVE", "RESERVE seats feature TYPE name"),
        "MAX" => ("MAX", "MAX seats feature TYPE name"),
        "GROUP" => ("GROUP", "GROUP name user..."),
        "HOST_GROUP" => ("HOST_GROUP", "HOST_GROUP name host..."),
        "GROUPCASEINSENSITIVE" => ("GROUPCASEINSENSITIVE", "GROUPCASEINSENSITIVE ON|OFF"),
        "LINGER" => ("LINGER", "LINGER feature seconds"),
        "MAX_OVERDRAFT" => ("MAX_OVERDRAFT", "MAX_OVERDRAFT feature seats"),
        "TIMEOUT" => ("TIMEOUT", "TIMEOUT feature seconds"),
        "TIMEOUTALL" => ("TIMEOUTALL", "TIMEOUTALL seconds"),
        "MAX_BORROW_HOURS" => ("MAX_BORROW_HOURS", "MAX_BORROW_HOURS feature hours"),
        "BORROW_LOWWATER" => ("BORROW_LOWWATER", "BORROW_LOWWATER feature seats"),
        _ => ("", ""),
    };
    if directive.is_empty() {
        if let Some((k, why)) = UNSUPPORTED
            .iter()
            .find(|(k, _)| *k == key)
            .filter(|_| !head.quoted)
        {
            return Err(OptionsError::Unsupported {
                line: head.line,
                column: head.col,
                keyword: (*k).to_owned(),
                why,
            });
        }
        return Err(OptionsError::UnknownDirective {
            line: head.line,
            column: head.col,
            found: head.text.clone(),
            expected: DIRECTIVES,
        });
    }
    let mut a = Args {
        l,
        directive,
        usage,
        next: 1,
    };
    let d = match directive {
        "INCLUDE" | "EXCLUDE" | "INCLUDE_BORROW" | "EXCLUDE_BORROW" => {
            let feature = feature(a.take("a feature")?)?;
            let who = target(&mut a, refs)?;
            match directive {
                "INCLUDE" => Directive::Include { feature, who },
                "EXCLUDE" => Directive::Exclude { feature, who },
                "INCLUDE_BORROW" => Directive::IncludeBorrow { feature, who },
                _ => Directive::ExcludeBorrow { feature, who },
            }
        }
        "INCLUDEALL" => Directive::IncludeAll {
            who: target(&mut a, refs)?,
        },
        "EXCLUDEALL" => Directive::ExcludeAll {
            who: target(&mut a, refs)?,
        },
        "RESERVE" | "MAX" => {
            let n = a.take("a number of seats")?;
            let seats = if directive == "RESERVE" {
                // Reserving nothing is a typo more often than a wish.
                number(n)
                    .filter(|s| *s > 0)
                    .ok_or_else(|| invalid(n, "a number of seats from 1 up"))?
            } else {
                number(n).ok_or_else(|| invalid(n, "a number of seats"))?
            };
            let feature = feature(a.take("a feature")?)?;
            let who = target(&mut a, refs)?;
            if directive == "RESERVE" {
                Directive::Reserve {
                    seats,
                    feature,
                    who,
                }
            } else {
                Directive::Max {
                    seats,
                    feature,
                    who,
                }
            }
        }
        "GROUP" | "HOST_GROUP" => {
            let name = group_name(a.take("the group's name")?)?;
            if a.l.tokens.len() <= a.next {
                a.take("at least one member")?;
            }
            let members = a.rest().iter().map(member).collect::<Result<Vec<_>, _>>()?;
            if directive == "GROUP" {
                Directive::Group { name, members }
            } else {
                Directive::HostGroup { name, members }
            }
        }
        "GROUPCASEINSENSITIVE" => {
            let t = a.take("ON or OFF")?;
            let on = match t.text.to_ascii_uppercase().as_str() {
                "ON" if !t.quoted => true,
                "OFF" if !t.quoted => false,
                _ => return Err(invalid(t, "ON or OFF")),
            };
            Directive::GroupCaseInsensitive { on }
        }
        "TIMEOUTALL" => Directive::TimeoutAll {
            secs: timeout(a.take("a number of seconds")?, "ALL")?,
        },
        _ => {
            let feature = feature(a.take("a feature")?)?;
            let t = a.take(match directive {
                "MAX_BORROW_HOURS" => "a number of hours",
                "LINGER" | "TIMEOUT" => "a number of seconds",
                _ => "a number of seats",
            })?;
            match directive {
                "TIMEOUT" => Directive::Timeout {
                    feature,
                    secs: timeout(t, "")?,
                },
                "LINGER" => Directive::Linger {
                    feature,
                    secs: number_or(t, "a number of seconds")?,
                },
                "MAX_OVERDRAFT" => Directive::MaxOverdraft {
                    feature,
                    seats: number_or(t, "a number of seats")?,
                },
                "MAX_BORROW_HOURS" => Directive::MaxBorrowHours {
                    feature,
                    hours: number_or(t, "a number of hours")?,
                },
                _ => Directive::BorrowLowwater {
                    feature,
                    seats: number_or(t, "a number of seats")?,
                },
            }
        }
    };
    a.done()?;
    Ok(d)
}
