//! License loads and unloads: the consistency rules every loaded line of a feature must
//! keep together (one model, editions' caps and closed editions), the
//! cluster lock, and revocation of what a smaller pool no longer grants.

use std::collections::BTreeMap;

use super::{Duplicate, Event, Ledger, LoadError, Reply};
use crate::license::{canonical_line, FeatureLine, LicenseFile, LicenseModel, LineKind};

impl Ledger {
    pub(super) fn load_license(
        &mut self,
        index: u64,
        source: &str,
        license: &LicenseFile,
        ev: &mut Vec<Event>,
    ) -> Reply {
        if let Some(line) = license
            .lines
            .iter()
            .find(|l| l.cluster.is_some_and(|c| Some(c) != self.st.cluster_id))
        {
            return Reply::LoadRefused(LoadError::WrongCluster {
                feature: line.name.clone(),
                line: line.line_no,
                locked_to: line.cluster.unwrap_or(crate::license::ClusterId([0; 8])),
                this: self.st.cluster_id,
            });
        }
        let mut next = self.st.licenses.clone();
        next.insert(source.to_owned(), license.clone());
        if let Err(e) = check_consistent(&next, source) {
            return Reply::LoadRefused(e);
        }
        self.st.licenses = next;
        self.st.loaded_at.insert(source.to_owned(), index);
        self.reindex();
        let duplicates = license
            .lines
            .iter()
            .filter_map(|l| {
                let (of_source, of_line) = self.duplicate_of(source, l.line_no)?;
                Some(Duplicate {
                    line: l.line_no,
                    of_source: of_source.to_owned(),
                    of_line,
                })
            })
            .collect();
        self.enforce_after_load(source, ev);
        let lines = u32::try_from(license.lines.len()).unwrap_or(u32::MAX);
        ev.push(Event::LicenseLoaded {
            source: source.to_owned(),
            lines,
        });
        Reply::LicenseLoaded {
            source: source.to_owned(),
            lines,
            duplicates,
        }
    }

    pub(super) fn unload_license(&mut self, source: &str, ev: &mut Vec<Event>) -> Reply {
        if self.st.licenses.remove(source).is_none() {
            return Reply::LoadRefused(LoadError::NoSuchSource {
                source: source.to_owned(),
            });
        }
        self.st.loaded_at.remove(source);
        self.reindex();
        self.enforce_after_load(source, ev);
        ev.push(Event::LicenseUnloaded {
            source: source.to_owned(),
        });
        Reply::Done { affected: 1 }
    }
}
/// The lines of one feature, across all loaded files, must agree on what a pool can have
/// only one of (grouping, licensing model), and keep their editions' rules: a closed
/// edition stands alone, and an edition's cap is never exceeded by what is loaded.
/// Errors name a line of the file being loaded (`source`), which is what the admin can
/// fix. Copies of one canonical line count once here too.
fn check_consistent(files: &BTreeMap<String, LicenseFile>, source: &str) -> Result<(), LoadError> {
    let others = files.iter().filter(|(s, _)| s.as_str() != source);
    let loading = files.iter().filter(|(s, _)| s.as_str() == source);
    let mut first: BTreeMap<&str, (&str, &FeatureLine)> = BTreeMap::new();
    let mut distinct: BTreeMap<&str, BTreeMap<String, (&str, &FeatureLine)>> = BTreeMap::new();
    for (src, line) in others
        .chain(loading)
        .flat_map(|(s, f)| f.lines.iter().map(move |l| (s.as_str(), l)))
    {
        let conflict = |what: String| LoadError::Conflict {
            feature: line.name.clone(),
            line: line.line_no,
            what,
        };
        // Lines that differ in DUP_GROUP form separate pools (see `pool.rs`); a PACKAGE
        // line is no line of a feature.
        if line.kind == LineKind::Package {
            continue;
        }
        let (seen_src, seen) = *first.entry(&line.name).or_insert((src, line));
        let named = |l: &FeatureLine| matches!(l.model, LicenseModel::NamedUser { .. });
        if named(seen) != named(line) {
            return Err(conflict(format!(
                "{} but {} line {} is {}: one feature has one licensing model",
                if named(line) {
                    "USER_BASED (named users)"
                } else {
                    "floating"
                },
                seen_src,
                seen.line_no,
                if named(seen) {
                    "USER_BASED (named users)"
                } else {
                    "floating"
                },
            )));
        }
        distinct
            .entry(&line.name)
            .or_default()
            .entry(canonical_line(line))
            .or_insert((src, line));
    }
    suites_stand_alone(files)?;
    for lines in distinct.values() {
        let lines: Vec<&(&str, &FeatureLine)> = lines.values().collect();
        // Name the loading file's line when it is involved: that is what can be fixed.
        let blame = lines
            .iter()
            .find(|(s, _)| *s == source)
            .or(lines.first())
            .map(|(_, l)| *l);
        let Some(blame) = blame else { continue };
        if let Some((src, closed)) = lines
            .iter()
            .find(|(_, l)| l.edition.as_ref().is_some_and(|e| e.closed))
        {
            if lines.len() > 1 {
                let e = closed.edition.as_ref().map_or("", |e| e.name.as_str());
                let what = if lines.iter().any(|(_, l)| l.kind == LineKind::Increment) {
                    "takes no packs (INCREMENT lines)"
                } else {
                    "cannot be combined with another license of the feature"
                };
                return Err(LoadError::Conflict {
                    feature: blame.name.clone(),
                    line: blame.line_no,
                    what: format!(
                        "the {e} edition ({src} line {}) {what}: its seats are not carried into another license; unload {src} first",
                        closed.line_no
                    ),
                });
            }
        }
        let cap = lines
            .iter()
            .filter_map(|(_, l)| l.edition.as_ref().and_then(|e| e.cap.map(|c| (c, e))))
            .min_by_key(|(c, _)| *c);
        if let Some((cap, edition)) = cap {
            let total: u64 = lines
                .iter()
                .map(|(_, l)| match l.count {
                    crate::license::Count::Seats(n) => u64::from(n),
                    crate::license::Count::Uncounted => u64::MAX / 4,
                })
                .sum();
            if total > u64::from(cap) {
                let named: Vec<String> = lines
                    .iter()
                    .map(|(s, l)| format!("{s} line {}", l.line_no))
                    .collect();
                return Err(LoadError::Conflict {
                    feature: blame.name.clone(),
                    line: blame.line_no,
                    what: format!(
                        "the {} edition allows at most {cap} seats in all (EDITION_CAP={cap}), and these lines would grant {total}: {}",
                        edition.name,
                        named.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// A suite's component is granted only with a seat of its suite; a line that licenses the
/// same feature on its own, in the same grouping, would share the component's pool and
/// could not say which of its seats need the suite. FlexNet keeps them apart by the
/// package; Tally refuses the mix, naming both lines.
fn suites_stand_alone(files: &BTreeMap<String, LicenseFile>) -> Result<(), LoadError> {
    let mut all: Vec<(&str, &FeatureLine)> = files
        .iter()
        .flat_map(|(s, f)| f.lines.iter().map(move |l| (s.as_str(), l)))
        .collect();
    all.dedup_by_key(|(_, l)| canonical_line(l));
    let eff = crate::license::effective(&all);
    for a in eff.lines.iter().filter(|a| a.suite.is_some()) {
        let clash = eff
            .lines
            .iter()
            .find(|b| b.line.name == a.line.name && b.group == a.group && b.suite != a.suite);
        if let Some(b) = clash {
            return Err(LoadError::Conflict {
                feature: a.line.name.clone(),
                line: b.line_no,
                what: format!(
                    "{} line {} licenses {} as a component of the suite {}, and {} line {} licenses it apart from that suite: one pool cannot be both",
                    a.source,
                    a.line_no,
                    a.line.name,
                    a.suite.as_deref().unwrap_or(""),
                    b.source,
                    b.line_no
                ),
            });
        }
    }
    Ok(())
}
