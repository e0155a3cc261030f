//! The arguments of a directive, read left to right: numbers, names, features with
//! their qualifiers, and `TYPE name` targets, each refused with what was expected.

use super::lex::{Logical, Token};
use super::parse::TIMEOUT_FLOOR_SECS;
use super::{FeatureRef, GroupKind, IpPattern, OptionsError, Qualifier, Target};
use crate::license::{DupGroup, Version};

/// A group named by a directive, and where: checked once the whole file is read, since
/// FlexNet lets a GROUP line come after its use.
pub(super) type GroupRef = (GroupKind, String, u32, u32);

/// The arguments of one directive, read left to right.
pub(super) struct Args<'a> {
    pub l: &'a Logical,
    pub directive: &'static str,
    pub usage: &'static str,
    pub next: usize,
}

impl<'a> Args<'a> {
    pub fn take(&mut self, expected: &'static str) -> Result<&'a Token, OptionsError> {
        let t = self.l.tokens.get(self.next).ok_or(OptionsError::Missing {
            line: self.l.end_line,
            column: self.l.end_col,
            directive: self.directive,
            expected,
            usage: self.usage,
        })?;
        self.next += 1;
        Ok(t)
    }

    pub fn rest(&mut self) -> &'a [Token] {
        let rest = self.l.tokens.get(self.next..).unwrap_or_default();
        self.next = self.l.tokens.len();
        rest
    }

    pub fn done(&self) -> Result<(), OptionsError> {
        match self.l.tokens.get(self.next) {
            Some(t) => Err(OptionsError::Extra {
                line: t.line,
                column: t.col,
                directive: self.directive,
                found: t.text.clone(),
                usage: self.usage,
            }),
            None => Ok(()),
        }
    }
}

pub(super) fn invalid(t: &Token, expected: &'static str) -> OptionsError {
    OptionsError::Invalid {
        line: t.line,
        column: t.col,
        expected,
        found: t.text.clone(),
    }
}

/// Decimal digits only (no sign, no blanks), fitting in a u32; never a quoted word.
pub(super) fn number(t: &Token) -> Option<u32> {
    let s = &t.text;
    if t.quoted || s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn number_or(t: &Token, what: &'static str) -> Result<u32, OptionsError> {
    number(t).ok_or_else(|| invalid(t, what))
}

pub(super) fn timeout(t: &Token, all: &'static str) -> Result<u32, OptionsError> {
    let seconds = number_or(t, "a number of seconds")?;
    if seconds < TIMEOUT_FLOOR_SECS {
        return Err(OptionsError::TimeoutBelowFloor {
            line: t.line,
            column: t.col,
            all,
            seconds,
            floor: TIMEOUT_FLOOR_SECS,
        });
    }
    Ok(seconds)
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The longest user, host, display or project name accepted.
const MAX_NAME_CHARS: usize = 256;

/// A user, host, display or project: any text the client may send, up to a bound.
pub(super) fn member(t: &Token) -> Result<String, OptionsError> {
    let n = t.text.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(invalid(t, "a name of 1 to 256 characters"));
    }
    Ok(t.text.clone())
}

pub(super) fn group_name(t: &Token) -> Result<String, OptionsError> {
    if is_identifier(&t.text) {
        Ok(t.text.clone())
    } else {
        Err(invalid(
            t,
            "a group name (up to 64 letters, digits, '_', '-' or '.')",
        ))
    }
}

/// `feature`, `feature:VERSION=v` or `feature:DUP_GROUP=g` (possibly quoted whole).
pub(super) fn feature(t: &Token) -> Result<FeatureRef, OptionsError> {
    let (name, qualifier) = match t.text.split_once(':') {
        Some((n, q)) => (n, Some(q)),
        None => (t.text.as_str(), None),
    };
    if !is_identifier(name) {
        return Err(invalid(t, "a feature name (up to 64 letters, digits, '_', '-' or '.'), optionally with :VERSION=v or :DUP_GROUP=g"));
    }
    let qualifier = match qualifier.map(|q| q.split_once('=')) {
        None => None,
        Some(None) => {
            return Err(invalid(
                t,
                "a qualifier after ':' of the form VERSION=v or DUP_GROUP=g",
            ))
        }
        Some(Some((key, value))) => match key.to_ascii_uppercase().as_str() {
            "VERSION" => Some(Qualifier::Version(Version::parse(value).ok_or_else(
                || invalid(t, "feature:VERSION=v with a version such as 2026.1"),
            )?)),
            "DUP_GROUP" => Some(Qualifier::DupGroup(DupGroup::parse(value).map_err(
                |_| {
                    invalid(
                        t,
                        "feature:DUP_GROUP=g with NONE, SITE or a combination of U, H and D",
                    )
                },
            )?)),
            other if is_identifier(other) => {
                return Err(OptionsError::UnsupportedQualifier {
                    line: t.line,
                    column: t.col,
                    keyword: other.to_owned(),
                })
            }
            _ => {
                return Err(invalid(
                    t,
                    "a qualifier after ':' of the form VERSION=v or DUP_GROUP=g",
                ))
            }
        },
    };
    Ok(FeatureRef {
        name: name.to_owned(),
        qualifier,
    })
}

/// `TYPE name`, recording a group it names.
pub(super) fn target(a: &mut Args<'_>, refs: &mut Vec<GroupRef>) -> Result<Target, OptionsError> {
    const TYPES: &str = "a TYPE: USER, HOST, DISPLAY, GROUP, HOST_GROUP, INTERNET or PROJECT";
    let ty = a.take(TYPES)?;
    let kind = if ty.quoted {
        String::new()
    } else {
        ty.text.to_ascii_uppercase()
    };
    let name = a.take("a name after the TYPE")?;
    let group = |kind: GroupKind, refs: &mut Vec<GroupRef>| {
        let n = group_name(name)?;
        refs.push((kind, n.clone(), name.line, name.col));
        Ok::<String, OptionsError>(n)
    };
    Ok(match kind.as_str() {
        "USER" => Target::User(member(name)?),
        "HOST" => Target::Host(member(name)?),
        "DISPLAY" => Target::Display(member(name)?),
        "PROJECT" => Target::Project(member(name)?),
        "GROUP" => Target::Group(group(GroupKind::Group, refs)?),
        "HOST_GROUP" => Target::HostGroup(group(GroupKind::HostGroup, refs)?),
        "INTERNET" => {
            Target::Internet(IpPattern::parse(&name.text).map_err(|why| invalid(name, why))?)
        }
        _ => return Err(invalid(ty, TYPES)),
    })
}
