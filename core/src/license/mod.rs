//! The FlexLM-style signed license file: its data types, the parser, the canonical form
//! that is signed, and Ed25519 signing and verification.
//!
//! The types here are what the ledger consumes (a [`LicenseFile`] travels through Raft in
//! a license-load entry), so they are plain data: no I/O, no clock. Dates are calendar
//! days, read in the cluster's time zone ([`Zone`]); the ledger compares the instants
//! they begin and end at with the time carried by each log entry.

mod date;
mod effective;
mod lex;
mod parse;
mod sign;
mod zone;

pub use date::Date;
pub use effective::{effective, Effective, EffectiveLine, Ineffective};
pub use lex::{MAX_FILE_BYTES, MAX_LINE_BYTES};
pub use parse::{parse, parse_all, DEFAULT_FAIR_USE_DAYS, KEYWORDS, MAX_REPORTED_ERRORS};
pub use sign::{
    canonical_line, sign_file, sign_file_for, sign_line, verify_file, verify_file_all, verify_line,
    VendorKey, VendorSigningKey,
};
pub use zone::{UnknownZone, Zone, TZDB_VERSION};

use serde::{Deserialize, Serialize};

/// A parsed license file: the vendors it declares and its feature lines, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseFile {
    pub vendors: Vec<String>,
    pub lines: Vec<FeatureLine>,
}

/// The directive of a line. `FEATURE`: only the first one of a feature counts;
/// `INCREMENT`: adds seats (a seat pack); `UPGRADE`: moves seats of an older version to
/// a newer one; `PACKAGE`: names the components that its enabling `FEATURE`/`INCREMENT`
/// line (of the package's name) licenses. FlexNet's meanings, applied in
/// [`effective`]. (New variants go at the end: the enum is in
/// every snapshot and license load entry.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LineKind {
    Feature,
    Increment,
    Upgrade,
    Package,
}

impl LineKind {
    /// The directive as the file writes it.
    pub fn name(self) -> &'static str {
        match self {
            LineKind::Feature => "FEATURE",
            LineKind::Increment => "INCREMENT",
            LineKind::Upgrade => "UPGRADE",
            LineKind::Package => "PACKAGE",
        }
    }
}

/// What a `PACKAGE` line says beyond its name and vendor (FlexNet's package: "a PACKAGE
/// line, by itself, does not license anything"; its enabling `FEATURE`/`INCREMENT` line
/// of the same name does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Package {
    /// `COMPONENTS="comp1 comp2:2.0 comp3:2.0:4"`, in the line's order.
    pub components: Vec<Component>,
    /// `OPTIONS=SUITE`: a checkout of a component also takes a seat of the package.
    pub suite: bool,
    /// Whether the line gave a version (then only an enabling line of that version
    /// enables it); the line's `version` is `0.0` otherwise.
    pub version_given: bool,
}

/// One component of a package: `feature[:version[:count]]`. Without a version the
/// enabling line's applies; the component's seats are `count` times the enabling line's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    pub version: Option<Version>,
    pub count: Option<u32>,
}

/// A feature version, compared as a decimal number the way FlexNet and RLM compare them:
/// `2025.1` is above `2025.0506` (a `2025.1` line serves a request for `2025.0506`),
/// `2.10` equals `2.1`, and `2023.9` is above `2023.10`. A checkout asks for a version and
/// may use any line whose version is at least that.
///
/// Kept as the whole part and the fraction's digits without trailing zeros, so the
/// derived order (numbers, then digit strings) is the decimal order, and equal numbers
/// are equal values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    whole: u64,
    frac: String,
}

/// Most digits on either side of a version's point (FlexNet's versions are short).
const VERSION_DIGITS: usize = 10;

impl Version {
    /// Parses `2026.1`: a decimal number, up to ten digits each side of one point.
    pub fn parse(s: &str) -> Option<Version> {
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |p: &str| p.len() <= VERSION_DIGITS && p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return None;
        }
        Some(Version {
            whole: whole.parse().ok()?,
            frac: frac.trim_end_matches('0').to_owned(),
        })
    }

    /// The version `whole` (`2026` is `2026.0`).
    pub fn whole(whole: u64) -> Version {
        Version {
            whole,
            frac: String::new(),
        }
    }
}

impl std::fmt::Display for Version {
    /// `2026.1`, `2026.0506`, and `1.0` for a whole number (as license files write it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.frac.is_empty() {
            write!(f, "{}.0", self.whole)
        } else {
            write!(f, "{}.{}", self.whole, self.frac)
        }
    }
}

#[cfg(test)]
mod version_tests {
    use super::Version;

    #[test]
    fn versions_compare_as_decimal_numbers_as_flexnet_does() {
        let v = |s: &str| Version::parse(s).unwrap_or_else(|| panic!("{s}"));
        // (lower, higher): FlexNet's documented examples and their consequences.
        for (lo, hi) in [
            ("2025.0506", "2025.1"),
            ("2023.10", "2023.9"),
            ("1.0", "1.01"),
            ("0.99", "1"),
            ("9.9", "10.0"),
            ("2026.05", "2026.5"),
        ] {
            assert!(v(lo) < v(hi), "{lo} < {hi}");
        }
        for (a, b) in [
            ("2.10", "2.1"),
            ("1", "1.0"),
            ("1.000", "1"),
            ("07.5", "7.5"),
        ] {
            assert_eq!(v(a), v(b), "{a} = {b}");
        }
        assert_eq!(v("2.10").to_string(), "2.1");
        assert_eq!(v("3").to_string(), "3.0");
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "4.2.0",
            "1.x",
            "-1",
            "12345678901",
            "1.12345678901",
            " 1",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
    }
}

/// When a line stops counting: the last day it is valid (inclusive, UTC), or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Expiry {
    Permanent,
    /// Valid through the end of this day.
    On(Date),
}

/// How many seats a line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Count {
    /// FlexLM `uncounted`: no seat limit, leases are still recorded.
    Uncounted,
    Seats(u32),
}

/// FlexLM `DUP_GROUP`: which checkouts of one feature share a single seat. FlexNet
/// accepts `NONE`, `SITE` or any combination of `U` (user), `H` (host), `D` (display)
/// and `V` (vendor-defined); checkouts that agree on every part named share one seat.
/// `V` is refused at parse: a Tally session carries no vendor-defined string to agree on.
/// (New variants go at the end: the enum is in every snapshot and license load entry.)
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum DupGroup {
    /// Every checkout takes its own seat.
    #[default]
    None,
    /// `U`: one user on any number of hosts and processes uses one seat.
    User,
    /// `UH`: one seat per user and host.
    UserHost,
    /// `H`: one seat per host, whoever uses it.
    Host,
    /// `D`: one seat per display.
    Display,
    /// `UD`: one seat per user and display.
    UserDisplay,
    /// `HD`: one seat per host and display.
    HostDisplay,
    /// `UHD`: one seat per user, host and display (several processes of one session).
    UserHostDisplay,
    /// `SITE`: every checkout at the site shares one seat.
    Site,
}

impl DupGroup {
    /// Every grouping and its canonical spelling (letters in `UHD` order).
    pub const ALL: [(DupGroup, &'static str); 9] = [
        (DupGroup::None, "NONE"),
        (DupGroup::User, "U"),
        (DupGroup::UserHost, "UH"),
        (DupGroup::Host, "H"),
        (DupGroup::Display, "D"),
        (DupGroup::UserDisplay, "UD"),
        (DupGroup::HostDisplay, "HD"),
        (DupGroup::UserHostDisplay, "UHD"),
        (DupGroup::Site, "SITE"),
    ];

    /// The canonical spelling, as signed and shown.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(g, _)| *g == self)
            .map_or("NONE", |(_, n)| n)
    }

    /// Which parts of a holder must agree for two checkouts to share a seat: (user, host,
    /// display). `None` for `NONE`: nothing is shared.
    pub fn parts(self) -> Option<(bool, bool, bool)> {
        match self {
            DupGroup::None => None,
            DupGroup::Site => Some((false, false, false)),
            g => {
                let n = g.name();
                Some((n.contains('U'), n.contains('H'), n.contains('D')))
            }
        }
    }

    /// Parses a `DUP_GROUP` value: `NONE`, `SITE`, or `U`, `H` and `D` each at most once
    /// in any order (any case). `Err` says what is wrong.
    pub fn parse(value: &str) -> Result<DupGroup, String> {
        let v = value.to_ascii_uppercase();
        if v == "NONE" || v == "SITE" {
            return Ok(if v == "NONE" {
                DupGroup::None
            } else {
                DupGroup::Site
            });
        }
        if v.contains('V') {
            return Err(format!(
                "DUP_GROUP \"{value}\" groups by V (a vendor-defined string), which Tally sessions do not carry; use U, H and D"
            ));
        }
        let letters = |c: char| v.chars().filter(|x| *x == c).count();
        if v.is_empty()
            || v.chars().any(|c| !"UHD".contains(c))
            || ['U', 'H', 'D'].iter().any(|c| letters(*c) > 1)
        {
            return Err(format!(
                "DUP_GROUP must be NONE, SITE or a combination of U, H and D, found \"{value}\""
            ));
        }
        let canonical: String = ['U', 'H', 'D'].iter().filter(|c| v.contains(**c)).collect();
        Self::ALL
            .iter()
            .find(|(_, n)| *n == canonical)
            .map(|(g, _)| *g)
            .ok_or_else(|| format!("DUP_GROUP \"{value}\" is not a grouping"))
    }
}

/// The licensing model of a line. Named-user licensing (FlexLM `USER_BASED`) is parsed and
/// carried so files that use it round-trip and verify; the ledger refuses to load it until
/// named-user assignments exist, rather than silently treating it as floating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LicenseModel {
    #[default]
    Floating,
    /// Seats bound to named users; over-assignment tolerated for `fair_use_days`.
    NamedUser { fair_use_days: u32 },
}

/// What happens after a term license's expiry: `GRACE=days` keeps it counting (with
/// warnings) for that long, after which `DEMO=n` seats remain until a renewal is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TermPolicy {
    pub grace_days: u32,
    pub demo_seats: u32,
}

/// One `FEATURE`, `INCREMENT`, `UPGRADE` or `PACKAGE` line. A `PACKAGE` line has no
/// expiry or count of its own (`permanent` and `uncounted` stand in; its enabling line
/// has them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureLine {
    pub kind: LineKind,
    pub name: String,
    pub vendor: String,
    pub version: Version,
    pub expiry: Expiry,
    pub count: Count,
    /// `LINGER=secs`: how long a released seat stays counted for its last user.
    pub linger_secs: u32,
    pub dup_group: DupGroup,
    /// `OVERDRAFT=n`: seats grantable beyond `count`, metered as overuse.
    pub overdraft: u32,
    /// `START=date`: the first day the line counts (inclusive).
    pub start: Option<Date>,
    pub issued: Option<Date>,
    pub notice: Option<String>,
    pub vendor_string: Option<String>,
    pub model: LicenseModel,
    pub term: TermPolicy,
    /// Ed25519 signature over [`canonical_line`]; `None` for an unsigned line, which
    /// verification refuses.
    pub signature: Option<Vec<u8>>,
    /// `CLUSTER=<id>`: the line counts only on the cluster with this identity (a FlexLM
    /// host id for a whole cluster). Signed like every keyword, so it cannot be removed.
    pub cluster: Option<ClusterId>,
    /// `EDITION="name"`, `EDITION_CAP=n`, `EDITION_CLOSED`: see [`Edition`].
    pub edition: Option<Edition>,
    /// 1-based line number in the source file where this directive started, for errors.
    pub line_no: u32,
    /// `UPGRADE` lines: the lowest version whose seats the line moves to `version`.
    pub upgrade_from: Option<Version>,
    /// `SUPERSEDE` (`Some` of nothing: the line's own feature or package) or
    /// `SUPERSEDE="f1 f2"`: lines of those names issued before this one's `ISSUED` day
    /// stop counting.
    pub supersede: Option<Vec<String>>,
    /// `SUITE_DUP_GROUP=`: on a suite's enabling line, how the suite's own seats are
    /// shared (FlexNet: "limits the total number of users of the package").
    pub suite_dup_group: Option<DupGroup>,
    /// `PACKAGE` lines: components and options.
    pub package: Option<Package>,
    /// `METER_INTERVAL=`, `METER_MIN=`, `OVERUSE_DAYS=`: how use beyond the count is
    /// metered and billed (see [`crate::usage`]).
    pub meter: Metering,
}

impl FeatureLine {
    /// A line with the six positional fields and every keyword at its default (no linger,
    /// no grouping, no overdraft, no dates or strings, floating, unsigned), at `line_no`.
    pub fn new(
        kind: LineKind,
        name: String,
        vendor: String,
        version: Version,
        expiry: Expiry,
        count: Count,
        line_no: u32,
    ) -> Self {
        FeatureLine {
            kind,
            name,
            vendor,
            version,
            expiry,
            count,
            linger_secs: 0,
            dup_group: DupGroup::None,
            overdraft: 0,
            start: None,
            issued: None,
            notice: None,
            vendor_string: None,
            model: LicenseModel::Floating,
            term: TermPolicy::default(),
            signature: None,
            cluster: None,
            edition: None,
            line_no,
            upgrade_from: None,
            supersede: None,
            suite_dup_group: None,
            package: None,
            meter: Metering::DEFAULT,
        }
    }
}

/// How the vendor meters use beyond the licensed count, as the line signs it (in
/// seconds and days, the file's units; [`crate::usage::MeterTerms`] is the same in
/// milliseconds). The defaults are the 2016 rules of metered overuse: 10-minute intervals,
/// checkouts shorter than 10 minutes not recorded, 4 overuse days a quarter free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metering {
    /// `METER_INTERVAL=secs`: the length of a metering interval (1 to 86400).
    pub interval_secs: u32,
    /// `METER_MIN=secs`: a checkout shorter than this is not recorded (0: every one is).
    pub min_secs: u32,
    /// `OVERUSE_DAYS=n`: overuse days a quarter that are not billed.
    pub overuse_days: u32,
}

impl Metering {
    /// 600 s intervals, 600 s minimum, 4 days a quarter.
    pub const DEFAULT: Metering = Metering {
        interval_secs: 600,
        min_secs: 600,
        overuse_days: 4,
    };
}

impl Default for Metering {
    fn default() -> Self {
        Metering::DEFAULT
    }
}

/// A product edition, as the vendor signs it on a line (STARFACE's Compact and Free, say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edition {
    /// `EDITION="Compact"`: the edition's name, for people.
    pub name: String,
    /// `EDITION_CAP=20`: the feature grants at most this many seats in all, whatever
    /// packs are loaded; a load that would exceed it is refused.
    pub cap: Option<u32>,
    /// `EDITION_CLOSED`: the edition takes no packs (INCREMENT lines) and cannot be
    /// combined with any other line of the feature: its seats are not carried into a
    /// commercial license (unload it first).
    pub closed: bool,
}

/// A cluster's identity: 64 random bits made when the cluster first forms, replicated in
/// its log and shown by `tallyctl status`, like a FlexLM host id. Written as 16 lowercase
/// hex digits. A license line with `CLUSTER=<id>` counts only on that cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub [u8; 8]);

impl ClusterId {
    /// Reads 16 hex digits (either case).
    pub fn parse(s: &str) -> Option<ClusterId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 8];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterId(out))
    }
}

impl std::fmt::Display for ClusterId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod cluster_id_tests {
    use super::ClusterId;

    #[test]
    fn cluster_ids_read_16_hex_digits_and_print_lowercase() {
        let id = ClusterId::parse("8F3A1c2b9d4e7f60").unwrap();
        assert_eq!(id.to_string(), "8f3a1c2b9d4e7f60");
        for bad in [
            "",
            "8f3a1c2b9d4e7f6",
            "8f3a1c2b9d4e7f600",
            "8f3a1c2b9d4e7f6g",
            "+f3a1c2b9d4e7f60",
        ] {
            assert_eq!(ClusterId::parse(bad), None, "{bad:?}");
        }
    }
}
