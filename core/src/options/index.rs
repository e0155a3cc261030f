//! The groups an options file defines, merged across their lines and ready for lookups.
//! Derived from the directives (never serialized), so a log entry carries the file once
//! and every node rebuilds the same index from it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::{Directive, GroupKind, Line};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Index {
    /// `GROUPCASEINSENSITIVE ON` (the last such line, though the parser allows one).
    pub case_insensitive: bool,
    users: BTreeMap<String, BTreeSet<String>>,
    hosts: BTreeMap<String, BTreeSet<String>>,
}

impl Index {
    pub fn build(lines: &[Line]) -> Index {
        // The switch is file-wide: it must be known before any member is folded, so it is
        // found first rather than applied where it stands.
        let case_insensitive = lines
            .iter()
            .rev()
            .find_map(|l| match l.directive {
                Directive::GroupCaseInsensitive { on } => Some(on),
                _ => None,
            })
            .unwrap_or(false);
        let mut index = Index {
            case_insensitive,
            ..Index::default()
        };
        for l in lines {
            let (map, name, members) = match &l.directive {
                Directive::Group { name, members } => (&mut index.users, name, members),
                Directive::HostGroup { name, members } => (&mut index.hosts, name, members),
                _ => continue,
            };
            let set = map.entry(name.clone()).or_default();
            for m in members {
                set.insert(fold(case_insensitive, m).into_owned());
            }
        }
        index
    }

    pub fn groups(&self, kind: GroupKind) -> &BTreeMap<String, BTreeSet<String>> {
        match kind {
            GroupKind::Group => &self.users,
            GroupKind::HostGroup => &self.hosts,
        }
    }

    /// Whether `who` (a user or host name) is a member of the named group.
    pub fn contains(&self, kind: GroupKind, group: &str, who: &str) -> bool {
        self.groups(kind)
            .get(group)
            .is_some_and(|set| set.contains(fold(self.case_insensitive, who).as_ref()))
    }
}

/// A member as it is stored and looked up: lower-cased when groups ignore case.
/// (Borrowed when it needs no folding: lookups run on every checkout.)
fn fold(case_insensitive: bool, name: &str) -> Cow<'_, str> {
    if case_insensitive {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}
