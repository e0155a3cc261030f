//! Directives of the license file: `VENDOR`, `FEATURE`, `INCREMENT`, `UPGRADE` and
//! `PACKAGE`, their positional fields and keywords, checked one by one with errors that name the line, the column and
//! what was expected.

use std::collections::BTreeSet;

use base64::Engine as _;

use super::lex::{logical_lines, Logical, Token};
use super::{
    ClusterId, Component, Count, Date, DupGroup, Edition, Expiry, FeatureLine, LicenseFile,
    LicenseModel, LineKind, Package, Version,
};
use crate::Error;

/// Keywords a FEATURE, INCREMENT or UPGRADE line may carry, in the order errors list them.
pub const KEYWORDS: [&str; 20] = [
    "LINGER",
    "DUP_GROUP",
    "OVERDRAFT",
    "START",
    "ISSUED",
    "NOTICE",
    "VENDOR_STRING",
    "SIGN",
    "USER_BASED",
    "GRACE",
    "DEMO",
    "CLUSTER",
    "EDITION",
    "EDITION_CAP",
    "EDITION_CLOSED",
    "SUPERSEDE",
    "SUITE_DUP_GROUP",
    "METER_INTERVAL",
    "METER_MIN",
    "OVERUSE_DAYS",
];

/// Keywords a PACKAGE line may carry.
pub const PACKAGE_KEYWORDS: [&str; 5] = ["COMPONENTS", "OPTIONS", "SUPERSEDE", "ISSUED", "SIGN"];

/// FlexNet keywords Tally refuses by name, each with why: a file that relies on them
/// would count differently here, so it must not load as if they were not there.
const REFUSED: [(&str, &str); 4] = [
    ("HOSTID", "Tally has no host ids: lock a line to a cluster with CLUSTER=<id> instead (see docs/coming-from-flexnet.md)"),
    ("SUITE_RESERVED", "OPTIONS=SUITE_RESERVED (reserving a suite's other components for its user) is not supported"),
    ("SORT", "sort=n (manual line order) is not supported: Tally orders lines as FlexNet does by default"),
    ("BORROW", "borrowing is not supported yet"),
];

/// The named-user fair-use window when a bare `USER_BASED` gives none (the brief's
/// default); `USER_BASED=days` sets it.
pub const DEFAULT_FAIR_USE_DAYS: u32 = 30;

fn at(t: &Token, message: impl Into<String>) -> Error {
    Error::Parse {
        line: t.line,
        column: t.col,
        message: message.into(),
    }
}

/// Parses a license file. Signatures are decoded but not verified: see
/// [`verify_file`](super::verify_file). The first mistake is the error; [`parse_all`]
/// reports every one.
pub fn parse(text: &str) -> Result<LicenseFile, Error> {
    let (file, mut errors) = parse_upto(text, 1);
    if errors.is_empty() {
        Ok(file)
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parses a license file as far as it can: the directives that are right, and an error
/// for each one that is not, in file order, so a vendor fixing a file sees every
/// mistake at once. A mistake in the file's shape (its size, an unterminated quote or
/// continuation) stops the parse there, and so does the [`MAX_REPORTED_ERRORS`]th
/// error (a garbled 4 MiB file is millions of bad lines). The file is usable only when
/// no error came back.
pub fn parse_all(text: &str) -> (LicenseFile, Vec<Error>) {
    parse_upto(text, MAX_REPORTED_ERRORS)
}

/// [`parse_all`] reports at most this many errors.
pub const MAX_REPORTED_ERRORS: usize = 100;

fn parse_upto(text: &str, max_errors: usize) -> (LicenseFile, Vec<Error>) {
    let mut file = LicenseFile {
        vendors: Vec::new(),
        lines: Vec::new(),
    };
    let logicals = match logical_lines(text) {
        Ok(l) => l,
        Err(e) => return (file, vec![e]),
    };
    let mut errors = Vec::new();
    // A set beside the ordered list: a huge file of VENDOR lines must stay linear.
    let mut declared: BTreeSet<String> = BTreeSet::new();
    for logical in &logicals {
        if let Err(e) = directive(logical, &mut file, &mut declared) {
            errors.push(e);
            if errors.len() >= max_errors {
                break;
            }
        }
    }
    if file.lines.is_empty() && errors.is_empty() {
        errors.push(Error::Parse {
            line: 1,
            column: 1,
            message: "no FEATURE, INCREMENT, UPGRADE or PACKAGE line".into(),
        });
    }
    (file, errors)
}

/// One directive into `file`.
fn directive(
    logical: &Logical,
    file: &mut LicenseFile,
    declared: &mut BTreeSet<String>,
) -> Result<(), Error> {
    let Some(head) = logical.tokens.first() else {
        return Ok(());
    };
    if head.quoted {
        return Err(at(
            head,
            format!(
                "expected VENDOR, FEATURE, INCREMENT, UPGRADE or PACKAGE, found the quoted string \"{}\"",
                head.text
            ),
        ));
    }
    match head.text.to_ascii_uppercase().as_str() {
        "VENDOR" => {
            let name = logical
                .tokens
                .get(1)
                .ok_or_else(|| end(logical, "VENDOR needs a name: expected `VENDOR <name>`"))?;
            if let Some(extra) = logical.tokens.get(2) {
                return Err(at(
                    extra,
                    format!(
                        "unexpected \"{}\" after the vendor name: expected `VENDOR <name>`",
                        extra.text
                    ),
                ));
            }
            let name = identifier(name, "a vendor name")?;
            if declared.insert(name.clone()) {
                file.vendors.push(name);
            }
        }
        "FEATURE" => file
            .lines
            .push(feature(logical, LineKind::Feature, declared)?),
        "INCREMENT" => file
            .lines
            .push(feature(logical, LineKind::Increment, declared)?),
        "UPGRADE" => file
            .lines
            .push(feature(logical, LineKind::Upgrade, declared)?),
        "PACKAGE" => file.lines.push(package(logical, declared)?),
        _ => {
            return Err(at(
                head,
                format!(
                    "unknown directive \"{}\" (expected VENDOR, FEATURE, INCREMENT, UPGRADE or PACKAGE)",
                    head.text
                ),
            ))
        }
    }
    Ok(())
}

fn end(l: &Logical, message: &str) -> Error {
    Error::Parse {
        line: l.end_line,
        column: l.end_col,
        message: message.into(),
    }
}

const FIELDS: [&str; 5] = ["feature name", "vendor", "version", "expiry date", "count"];
const UPGRADE_FIELDS: [&str; 6] = [
    "feature name",
    "vendor",
    "version upgraded from",
    "version upgraded to",
    "expiry date",
    "count",
];

fn feature(l: &Logical, kind: LineKind, vendors: &BTreeSet<String>) -> Result<FeatureLine, Error> {
    let directive = kind.name();
    let upgrade = kind == LineKind::Upgrade;
    let (fields, short): (&[&str], &str) = if upgrade {
        (
            &UPGRADE_FIELDS,
            "name vendor from-version version expiry count",
        )
    } else {
        (&FIELDS, "name vendor version expiry count")
    };
    let mut positional = Vec::with_capacity(fields.len());
    for (i, what) in fields.iter().enumerate() {
        match l.tokens.get(i + 1) {
            Some(t) if t.quoted => {
                return Err(at(
                    t,
                    format!(
                        "expected the {what}, found the quoted string \"{}\"",
                        t.text
                    ),
                ))
            }
            Some(t) if t.text.contains('=') => {
                return Err(at(
                    t,
                    format!("expected the {what}, found the keyword \"{}\"", t.text),
                ))
            }
            Some(t) => positional.push(t),
            None => {
                return Err(end(
                    l,
                    &format!("{directive} ends early: expected the {what} (fields: {short})"),
                ))
            }
        }
    }
    let from = if upgrade {
        Some(positional.remove(2))
    } else {
        None
    };
    let [name, vendor, version, expiry, count] = positional[..] else {
        return Err(end(l, "internal: wrong number of fields"));
    };
    let name_s = identifier(name, "a feature name")?;
    let vendor_s = identifier(vendor, "a vendor name")?;
    if !vendors.contains(&vendor_s) {
        return Err(at(
            vendor,
            format!("vendor \"{vendor_s}\" is not declared: expected a `VENDOR {vendor_s}` line before this one"),
        ));
    }
    let mut line = FeatureLine::new(
        kind,
        name_s,
        vendor_s,
        parse_version(version)?,
        parse_expiry(expiry)?,
        parse_count(count)?,
        l.tokens.first().map_or(l.end_line, |t| t.line),
    );
    if let Some(from) = from {
        let from_v = parse_version(from)?;
        // FlexNet: "UPGRADE lines do not work for node-locked, uncounted licenses".
        if line.count == Count::Uncounted {
            return Err(at(
                count,
                "an UPGRADE line moves a number of seats: its count cannot be \"uncounted\"",
            ));
        }
        if from_v >= line.version {
            return Err(at(
                version,
                format!(
                    "an UPGRADE goes to a higher version: {} is not above {from_v}",
                    line.version
                ),
            ));
        }
        line.upgrade_from = Some(from_v);
    }
    let mut seen = BTreeSet::new();
    let mut start_tok = None;
    let mut supersede_tok = None;
    for t in l.tokens.iter().skip(fields.len() + 1) {
        let eq = t.text.find('=');
        if t.quoted_from.is_some_and(|q| eq.is_none_or(|e| q <= e)) {
            return Err(at(
                t,
                format!(
                    "expected a keyword such as LINGER=300, found the quoted string \"{}\"",
                    t.text
                ),
            ));
        }
        let (key, value) = match t.text.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (t.text.to_ascii_uppercase(), None),
        };
        let Some(known) = KEYWORDS.iter().find(|k| **k == key) else {
            return Err(unknown_keyword(t, &key, &KEYWORDS));
        };
        if !seen.insert(*known) {
            return Err(at(t, format!("{known} is given twice")));
        }
        if *known == "EDITION_CLOSED" {
            if value.is_some() {
                return Err(at(t, "EDITION_CLOSED takes no value"));
            }
            line.edition.get_or_insert_with(Edition::default).closed = true;
            continue;
        }
        if *known == "SUPERSEDE" {
            line.supersede = Some(supersede(t, value)?);
            supersede_tok = Some(t);
            continue;
        }
        if *known == "USER_BASED" && value.is_none() {
            line.model = LicenseModel::NamedUser {
                fair_use_days: DEFAULT_FAIR_USE_DAYS,
            };
            continue;
        }
        let Some(value) = value else {
            return Err(at(
                t,
                format!("{known} needs a value: expected {known}=<value>"),
            ));
        };
        match *known {
            "LINGER" => line.linger_secs = number(t, known, value)?,
            "OVERDRAFT" => line.overdraft = number(t, known, value)?,
            "GRACE" => line.term.grace_days = number(t, known, value)?,
            "DEMO" => line.term.demo_seats = number(t, known, value)?,
            "METER_INTERVAL" => line.meter.interval_secs = meter_interval(t, value)?,
            "METER_MIN" => line.meter.min_secs = number(t, known, value)?,
            "OVERUSE_DAYS" => line.meter.overuse_days = number(t, known, value)?,
            "USER_BASED" => {
                line.model = LicenseModel::NamedUser {
                    fair_use_days: number(t, known, value)?,
                }
            }
            "DUP_GROUP" => {
                line.dup_group = DupGroup::parse(value).map_err(|why| at(t, why))?;
            }
            "SUITE_DUP_GROUP" => {
                line.suite_dup_group = Some(DupGroup::parse(value).map_err(|why| at(t, why))?);
            }
            "START" => {
                line.start = Some(date(t, known, value)?);
                start_tok = Some(t);
            }
            "ISSUED" => line.issued = Some(date(t, known, value)?),
            "NOTICE" => line.notice = Some(value.to_owned()),
            "VENDOR_STRING" => line.vendor_string = Some(value.to_owned()),
            "SIGN" => line.signature = Some(signature(t, value)?),
            "EDITION" => {
                if value.is_empty() {
                    return Err(at(t, "EDITION needs a name: EDITION=\"Compact\""));
                }
                line.edition.get_or_insert_with(Edition::default).name = value.to_owned();
            }
            "EDITION_CAP" => {
                line.edition.get_or_insert_with(Edition::default).cap = Some(number(t, known, value)?)
            }
            "CLUSTER" => {
                line.cluster = Some(ClusterId::parse(value).ok_or_else(|| {
                    at(
                        t,
                        format!("CLUSTER must be a cluster id of 16 hex digits (as `tallyctl status` shows it), found \"{value}\""),
                    )
                })?)
            }
            _ => return Err(at(t, format!("keyword {known} is not handled"))),
        }
    }
    if let Some(e) = &line.edition {
        if e.name.is_empty() {
            return Err(end(
                l,
                "EDITION_CAP and EDITION_CLOSED belong to an edition: add EDITION=\"name\"",
            ));
        }
    }
    if let (Some(start), Expiry::On(exp), Some(t)) = (line.start, line.expiry, start_tok) {
        if start > exp {
            return Err(at(
                t,
                format!("START={start} is after the expiry date {exp}"),
            ));
        }
    }
    supersede_needs_issued(&line, supersede_tok)?;
    Ok(line)
}

/// An unknown keyword: refused by name, with the reason where it is a FlexNet keyword
/// Tally knows and does not do.
fn unknown_keyword(t: &Token, key: &str, known: &[&str]) -> Error {
    if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
        return at(t, format!("{key} is not supported: {why}"));
    }
    at(
        t,
        format!(
            "unknown keyword \"{key}\" (expected one of {})",
            known.join(", ")
        ),
    )
}

/// FlexNet: SUPERSEDE is "used in conjunction with ISSUED date": without the date there is
/// nothing to compare the other lines' dates with.
fn supersede_needs_issued(line: &FeatureLine, tok: Option<&Token>) -> Result<(), Error> {
    match tok {
        Some(t) if line.issued.is_none() => Err(at(
            t,
            "SUPERSEDE needs ISSUED=<date>: it replaces the lines issued before that day",
        )),
        _ => Ok(()),
    }
}

/// `SUPERSEDE` (the line's own name) or `SUPERSEDE="f1 f2"`.
fn supersede(t: &Token, value: Option<&str>) -> Result<Vec<String>, Error> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    if names.is_empty() {
        return Err(at(t, "SUPERSEDE= needs feature names: SUPERSEDE=\"f1 f2\", or a bare SUPERSEDE for this line's own"));
    }
    if let Some(bad) = names.iter().find(|n| !is_identifier(n)) {
        return Err(at(
            t,
            format!("SUPERSEDE names features: \"{bad}\" is not a feature name"),
        ));
    }
    Ok(names)
}

/// A `PACKAGE name vendor [version] COMPONENTS="..." [OPTIONS=SUITE] [SUPERSEDE] [ISSUED=]
/// SIGN=` line.
fn package(l: &Logical, vendors: &BTreeSet<String>) -> Result<FeatureLine, Error> {
    let positional: Vec<&Token> = l
        .tokens
        .iter()
        .skip(1)
        .take_while(|t| !t.quoted && !t.text.contains('='))
        .take(3)
        .collect();
    let (Some(name), Some(vendor)) = (positional.first(), positional.get(1)) else {
        return Err(end(
            l,
            "PACKAGE ends early: expected `PACKAGE <name> <vendor> [<version>] COMPONENTS=\"...\"`",
        ));
    };
    let name_s = identifier(name, "a package name")?;
    let vendor_s = identifier(vendor, "a vendor name")?;
    if !vendors.contains(&vendor_s) {
        return Err(at(
            vendor,
            format!("vendor \"{vendor_s}\" is not declared: expected a `VENDOR {vendor_s}` line before this one"),
        ));
    }
    let version = positional.get(2).map(|t| parse_version(t)).transpose()?;
    let mut line = FeatureLine::new(
        LineKind::Package,
        name_s,
        vendor_s,
        version.clone().unwrap_or(Version::whole(0)),
        Expiry::Permanent,
        Count::Uncounted,
        l.tokens.first().map_or(l.end_line, |t| t.line),
    );
    let mut pkg = Package {
        version_given: version.is_some(),
        ..Package::default()
    };
    let mut seen = BTreeSet::new();
    let mut supersede_tok = None;
    let mut components_tok = None;
    for t in l.tokens.iter().skip(1 + positional.len()) {
        let (key, value) = match t.text.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (t.text.to_ascii_uppercase(), None),
        };
        if t.quoted_from
            .is_some_and(|q| t.text.find('=').is_none_or(|e| q <= e))
        {
            return Err(at(
                t,
                format!(
                    "expected a keyword such as COMPONENTS=\"a b\", found the quoted string \"{}\"",
                    t.text
                ),
            ));
        }
        let Some(known) = PACKAGE_KEYWORDS.iter().find(|k| **k == key) else {
            return Err(unknown_keyword(t, &key, &PACKAGE_KEYWORDS));
        };
        if !seen.insert(*known) {
            return Err(at(t, format!("{known} is given twice")));
        }
        if *known == "SUPERSEDE" {
            line.supersede = Some(supersede(t, value)?);
            supersede_tok = Some(t);
            continue;
        }
        let Some(value) = value else {
            return Err(at(
                t,
                format!("{known} needs a value: expected {known}=<value>"),
            ));
        };
        match *known {
            "COMPONENTS" => {
                pkg.components = components(t, value)?;
                components_tok = Some(t);
            }
            "OPTIONS" => match value.to_ascii_uppercase().as_str() {
                "SUITE" => pkg.suite = true,
                "SUITE_RESERVED" => return Err(unknown_keyword(t, "SUITE_RESERVED", &[])),
                _ => return Err(at(t, format!("OPTIONS must be SUITE, found \"{value}\""))),
            },
            "ISSUED" => line.issued = Some(date(t, known, value)?),
            "SIGN" => line.signature = Some(signature(t, value)?),
            _ => return Err(at(t, format!("keyword {known} is not handled"))),
        }
    }
    let Some(ctok) = components_tok else {
        return Err(end(l, "PACKAGE needs COMPONENTS=\"feature[:version[:count]] ...\": a package consists of at least one component"));
    };
    // FlexNet: "num_lic is only legal if OPTIONS=SUITE is not set".
    if pkg.suite {
        if let Some(c) = pkg.components.iter().find(|c| c.count.is_some()) {
            return Err(at(ctok, format!("component {} has a count, which a suite's components cannot have: each has the suite's count (OPTIONS=SUITE)", c.name)));
        }
    }
    supersede_needs_issued(&line, supersede_tok)?;
    line.package = Some(pkg);
    Ok(line)
}

/// `COMPONENTS="comp1 comp2:1.5 comp3:2.0:4"`: each `feature[:version[:count]]`, at least
/// one, no feature twice, none the package itself.
fn components(t: &Token, value: &str) -> Result<Vec<Component>, Error> {
    let mut out: Vec<Component> = Vec::new();
    for word in value.split_whitespace() {
        let mut parts = word.split(':');
        let name = parts.next().unwrap_or_default();
        if !is_identifier(name) {
            return Err(at(
                t,
                format!("component \"{word}\": \"{name}\" is not a feature name"),
            ));
        }
        let version = match parts.next() {
            // `comp::4`: the enabling line's version, a count of its own.
            Some("") => None,
            Some(v) => Some(Version::parse(v).ok_or_else(|| {
                at(
                    t,
                    format!("component \"{word}\": \"{v}\" is not a version such as 2026.1"),
                )
            })?),
            None => None,
        };
        let count = match parts.next() {
            Some(n) => match plain_u32(n) {
                Some(n) if n > 0 => Some(n),
                _ => return Err(at(t, format!("component \"{word}\": the count \"{n}\" must be a whole number of at least 1"))),
            },
            None => None,
        };
        if parts.next().is_some() {
            return Err(at(
                t,
                format!("component \"{word}\" has more than feature:version:count"),
            ));
        }
        if out.iter().any(|c| c.name == name) {
            return Err(at(t, format!("component {name} is listed twice")));
        }
        out.push(Component {
            name: name.to_owned(),
            version,
            count,
        });
    }
    if out.is_empty() {
        return Err(at(
            t,
            "COMPONENTS lists no component: a package consists of at least one",
        ));
    }
    Ok(out)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Names: letters, digits, `_`, `-` and `.`, at most 64 characters.
fn identifier(t: &Token, what: &str) -> Result<String, Error> {
    if is_identifier(&t.text) {
        Ok(t.text.clone())
    } else {
        Err(at(
            t,
            format!(
                "expected {what} (up to 64 letters, digits, '_', '-' or '.'), found \"{}\"",
                t.text
            ),
        ))
    }
}

fn parse_version(t: &Token) -> Result<Version, Error> {
    Version::parse(&t.text).ok_or_else(|| {
        at(
            t,
            format!(
                "expected a version such as 2026.1 (a decimal number: digits, at most one '.'), found \"{}\"",
                t.text
            ),
        )
    })
}

fn parse_expiry(t: &Token) -> Result<Expiry, Error> {
    if t.text.eq_ignore_ascii_case("permanent") || t.text == "0" {
        return Ok(Expiry::Permanent);
    }
    Date::parse_flexlm(&t.text).map(Expiry::On).ok_or_else(|| {
        at(
            t,
            format!(
                "expected an expiry date such as 31-dec-2027 or \"permanent\", found \"{}\"",
                t.text
            ),
        )
    })
}

fn parse_count(t: &Token) -> Result<Count, Error> {
    if t.text.eq_ignore_ascii_case("uncounted") {
        return Ok(Count::Uncounted);
    }
    match plain_u32(&t.text) {
        Some(0) => Err(at(t, "count must be at least 1 (or \"uncounted\")")),
        Some(n) => Ok(Count::Seats(n)),
        None => Err(at(
            t,
            format!(
                "expected a count (a positive number or \"uncounted\"), found \"{}\"",
                t.text
            ),
        )),
    }
}

/// Decimal digits only (no sign, no spaces), fitting in a u32.
fn plain_u32(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn number(t: &Token, key: &str, value: &str) -> Result<u32, Error> {
    plain_u32(value).ok_or_else(|| {
        at(
            t,
            format!(
                "{key} must be a whole number from 0 to {}, found \"{value}\"",
                u32::MAX
            ),
        )
    })
}

/// The longest metering interval: a day. A day with an over-count interval is an
/// overuse day, so an interval longer than a day would hide the days inside it.
const MAX_METER_INTERVAL_SECS: u32 = 86_400;

/// `METER_INTERVAL=secs`: at least a second (an interval of nothing meters nothing), at
/// most a day.
fn meter_interval(t: &Token, value: &str) -> Result<u32, Error> {
    match plain_u32(value) {
        Some(n) if (1..=MAX_METER_INTERVAL_SECS).contains(&n) => Ok(n),
        _ => Err(at(
            t,
            format!(
                "METER_INTERVAL must be a whole number of seconds from 1 to {MAX_METER_INTERVAL_SECS} (a day), found \"{value}\""
            ),
        )),
    }
}

fn date(t: &Token, key: &str, value: &str) -> Result<Date, Error> {
    Date::parse_flexlm(value).ok_or_else(|| {
        at(
            t,
            format!("{key} must be a date such as 1-jan-2026, found \"{value}\""),
        )
    })
}

/// SIGN holds 64 bytes of standard base64 (padding optional). A wrong value is a parse
/// error here rather than a verification failure later, because it can never verify.
fn signature(t: &Token, value: &str) -> Result<Vec<u8>, Error> {
    let trimmed = value.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|_| at(t, "SIGN is not valid base64"))?;
    if bytes.len() != 64 {
        return Err(at(
            t,
            format!(
                "SIGN must hold a 64-byte Ed25519 signature, found {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
