//! Which loaded lines count, and as what: FlexNet's rules for `SUPERSEDE` and `PACKAGE`
//! lines, applied to every line loaded (in load order) before the pools are formed.
//!
//! - `SUPERSEDE` ("used in conjunction with ISSUED date"): a line with `SUPERSEDE` and
//!   `ISSUED=d` makes every other line of the named features (its own name when none are
//!   listed) issued before `d` stop counting; a `PACKAGE` line supersedes `PACKAGE` lines
//!   the same way. A line's issue date is its `ISSUED`, else its `START` (FlexNet's sort
//!   takes "the date from ISSUED= or START="); a line with neither is older than any date.
//!   It is a rule about the lines, not about time: a superseded line stays superseded when
//!   the line that superseded it expires, as the vendor who issued the replacement meant.
//! - `PACKAGE` (FNP End User Guide, "PACKAGE Lines"): "a PACKAGE line, by itself, does
//!   not license anything"; each `FEATURE`/`INCREMENT` line named like the package (and of
//!   its version, when the package gives one) enables it. Every component then counts as
//!   a line of its own: the enabling line with the component's name, the component's
//!   version if it has one, and the enabling line's count times the component's. Without
//!   `OPTIONS=SUITE` the enabling line itself "is removed once the package is enabled";
//!   with it, the enabling line stays as the suite's own feature, whose seat a checkout of
//!   any component also takes, shared by `SUITE_DUP_GROUP` (else the line's `DUP_GROUP`).
//!   Of several `PACKAGE` lines of one package, the first loaded counts.
//!
//! Pure and deterministic: the same loaded lines give the same answer on every node.

use super::{Count, Date, DupGroup, FeatureLine, LineKind};

/// A line as it counts: a loaded line, or a line a `PACKAGE` made for one of its
/// components from the enabling line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveLine {
    /// Where the granting line was loaded from, and its line number there (for a
    /// component, the enabling line's).
    pub source: String,
    pub line_no: u32,
    pub line: FeatureLine,
    /// How the line's pool shares seats: its `DUP_GROUP`, or for a suite's own line its
    /// `SUITE_DUP_GROUP` when it has one. Lines of one feature that differ here form
    /// separate pools.
    pub group: DupGroup,
    /// For a component of a suite: the suite, whose seat a checkout also takes.
    pub suite: Option<String>,
}

/// Why a loaded line does not count (as itself), for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineffective {
    /// A later-issued line with `SUPERSEDE` replaced it.
    Superseded { by_source: String, by_line: u32 },
    /// It enables a (non-suite) package: its seats count as the components'.
    EnablesPackage {
        package_source: String,
        package_line: u32,
    },
    /// A `PACKAGE` line with no enabling line loaded: it licenses nothing yet.
    PackageNotEnabled,
    /// Another `PACKAGE` line of the same package was loaded first.
    PackageRepeated {
        first_source: String,
        first_line: u32,
    },
    /// An `UPGRADE` of a non-suite package's name: a package that is not a suite has no
    /// seats of its own to upgrade (upgrade its components by name).
    UpgradeOfPackage {
        package_source: String,
        package_line: u32,
    },
}

impl std::fmt::Display for Ineffective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineffective::Superseded { by_source, by_line } => {
                write!(f, "superseded by {by_source} line {by_line}: counts for nothing")
            }
            Ineffective::EnablesPackage {
                package_source,
                package_line,
            } => write!(
                f,
                "enables the package of {package_source} line {package_line}: its seats count as the components'"
            ),
            Ineffective::PackageNotEnabled => write!(
                f,
                "no FEATURE or INCREMENT line of the package (and its version) is loaded: licenses nothing yet"
            ),
            Ineffective::PackageRepeated {
                first_source,
                first_line,
            } => write!(
                f,
                "{first_source} line {first_line} defines this package already: this line counts for nothing"
            ),
            Ineffective::UpgradeOfPackage {
                package_source,
                package_line,
            } => write!(
                f,
                "upgrades the package of {package_source} line {package_line}, which is no suite and has no seats of its own: upgrade its components by name"
            ),
        }
    }
}

/// The lines that count, and a note for each loaded line that does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub lines: Vec<EffectiveLine>,
    pub ineffective: Vec<((String, u32), Ineffective)>,
}

/// The day a line was issued, for `SUPERSEDE`: `ISSUED`, else `START`.
fn issued(l: &FeatureLine) -> Option<Date> {
    l.issued.or(l.start)
}

/// Applies `SUPERSEDE` and `PACKAGE` to the distinct loaded lines, given in load order
/// with their sources.
pub fn effective(loaded: &[(&str, &FeatureLine)]) -> Effective {
    let mut out = Effective::default();
    let is_package = |l: &FeatureLine| l.kind == LineKind::Package;
    // Who supersedes each line, if anyone: the first line (in load order) that does.
    // Only the few lines that carry SUPERSEDE are searched, so a file of thousands of
    // lines stays linear.
    let superseders: Vec<&(&str, &FeatureLine)> = loaded
        .iter()
        .filter(|(_, l)| l.supersede.is_some())
        .collect();
    let superseded_by = |m: &FeatureLine| {
        superseders.iter().copied().find(|(_, l)| {
            let (Some(names), Some(day)) = (&l.supersede, l.issued) else {
                return false;
            };
            let named = if names.is_empty() {
                l.name == m.name
            } else {
                names.contains(&m.name)
            };
            named && is_package(l) == is_package(m) && issued(m).is_none_or(|d| d < day)
        })
    };
    let mut live: Vec<(&str, &FeatureLine)> = Vec::new();
    for (src, l) in loaded {
        match superseded_by(l) {
            Some((by_src, by)) => out.ineffective.push((
                ((*src).to_owned(), l.line_no),
                Ineffective::Superseded {
                    by_source: (*by_src).to_owned(),
                    by_line: by.line_no,
                },
            )),
            None => live.push((src, l)),
        }
    }
    // The package that counts for each name: the first one loaded.
    let mut packages: Vec<(&str, &FeatureLine)> = Vec::new();
    for (src, l) in live.iter().filter(|(_, l)| is_package(l)) {
        match packages.iter().find(|(_, p)| p.name == l.name) {
            Some((first_src, first)) => out.ineffective.push((
                ((*src).to_owned(), l.line_no),
                Ineffective::PackageRepeated {
                    first_source: (*first_src).to_owned(),
                    first_line: first.line_no,
                },
            )),
            None => packages.push((src, l)),
        }
    }
    let mut enabled: Vec<&str> = Vec::new();
    for (src, l) in live.iter().filter(|(_, l)| !is_package(l)) {
        let pkg = packages.iter().find(|(_, p)| {
            p.name == l.name
                && p.package
                    .as_ref()
                    .is_some_and(|k| !k.version_given || p.version == l.version)
        });
        let Some((pkg_src, pkg_line)) = pkg else {
            out.lines.push(EffectiveLine {
                source: (*src).to_owned(),
                line_no: l.line_no,
                line: (*l).clone(),
                group: l.dup_group,
                suite: None,
            });
            continue;
        };
        let Some(package) = &pkg_line.package else {
            continue;
        };
        let at_package = || ((*pkg_src).to_owned(), pkg_line.line_no);
        if l.kind == LineKind::Upgrade && !package.suite {
            let (package_source, package_line) = at_package();
            out.ineffective.push((
                ((*src).to_owned(), l.line_no),
                Ineffective::UpgradeOfPackage {
                    package_source,
                    package_line,
                },
            ));
            continue;
        }
        enabled.push(pkg_line.name.as_str());
        if l.kind != LineKind::Upgrade {
            for c in &package.components {
                let mut line = (*l).clone();
                line.name = c.name.clone();
                if let Some(v) = &c.version {
                    line.version = v.clone();
                }
                if let (Count::Seats(n), Some(k)) = (line.count, c.count) {
                    line.count = Count::Seats(n.saturating_mul(k));
                }
                line.supersede = None;
                line.suite_dup_group = None;
                out.lines.push(EffectiveLine {
                    source: (*src).to_owned(),
                    line_no: l.line_no,
                    group: line.dup_group,
                    line,
                    suite: package.suite.then(|| pkg_line.name.clone()),
                });
            }
        }
        if package.suite {
            out.lines.push(EffectiveLine {
                source: (*src).to_owned(),
                line_no: l.line_no,
                line: (*l).clone(),
                group: l.suite_dup_group.unwrap_or(l.dup_group),
                suite: None,
            });
        } else {
            let (package_source, package_line) = at_package();
            out.ineffective.push((
                ((*src).to_owned(), l.line_no),
                Ineffective::EnablesPackage {
                    package_source,
                    package_line,
                },
            ));
        }
    }
    for (src, p) in &packages {
        if !enabled.contains(&p.name.as_str()) {
            out.ineffective.push((
                ((*src).to_owned(), p.line_no),
                Ineffective::PackageNotEnabled,
            ));
        }
    }
    out
}
