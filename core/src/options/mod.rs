//! The site's policy: a FlexNet-style options file (`RESERVE`, `MAX`, `INCLUDE`,
//! `EXCLUDE`, groups, `LINGER`, `TIMEOUT`, borrowing limits) as plain data, its parser, a
//! canonical printed form, and the pure decisions it implies for a checkout.
//!
//! The parsed [`Options`] travels in a Raft log entry, so it is ordered data only (Vec,
//! BTreeMap) and prints back to text that parses to the same value, line numbers
//! included: a denial that cites "line 12" points into the admin's file and into
//! `options show` alike.
//!
//! Nothing here reads a clock or does I/O; nothing here revokes a held seat either. The
//! decisions ([`Options::evaluate`]) are asked at checkout time only, so a new options
//! file changes who may take seats from then on and never takes one back.

mod addr;
mod args;
mod error;
mod eval;
mod index;
mod lex;
mod parse;
mod print;
mod settings;

#[cfg(test)]
mod eval_tests;
#[cfg(test)]
mod parse_tests;

pub use addr::IpPattern;
pub use error::{GroupKind, OptionsError};
pub use eval::{Decision, Denial, DenialCode, FeatureUse, Holding, Request, UseTable, Who};
pub use lex::MAX_FILE_BYTES;
pub use parse::{parse, parse_all, MAX_REPORTED_ERRORS, TIMEOUT_FLOOR_SECS, UNSUPPORTED};
pub use settings::FeatureKey;

use serde::{Deserialize, Serialize};

use crate::license::{DupGroup, Version};
use index::Index;

/// A parsed options file: its directives in file order, each with the line it starts on,
/// and (derived, not serialized) the groups they define.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Line>", into = "Vec<Line>")]
pub struct Options {
    lines: Vec<Line>,
    index: Index,
}

impl Options {
    /// An options file from its directives (as [`parse`] or a log entry gives them).
    pub fn from_lines(lines: Vec<Line>) -> Options {
        let index = Index::build(&lines);
        Options { lines, index }
    }

    /// The empty policy: everyone may use everything, nothing is reserved.
    pub fn empty() -> Options {
        Options::from_lines(Vec::new())
    }

    /// The directives in file order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Whether `GROUPCASEINSENSITIVE ON` is in force.
    pub fn group_case_insensitive(&self) -> bool {
        self.index.case_insensitive
    }

    /// The members of a `GROUP` (kind `Group`) or `HOST_GROUP`, from all its lines in
    /// file order (lower-cased under `GROUPCASEINSENSITIVE ON`).
    pub fn members(
        &self,
        kind: GroupKind,
        name: &str,
    ) -> Option<&std::collections::BTreeSet<String>> {
        self.index.groups(kind).get(name)
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::empty()
    }
}

impl From<Vec<Line>> for Options {
    fn from(lines: Vec<Line>) -> Options {
        Options::from_lines(lines)
    }
}

impl From<Options> for Vec<Line> {
    fn from(o: Options) -> Vec<Line> {
        o.lines
    }
}

/// One directive and the (1-based) line it starts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub line: u32,
    pub directive: Directive,
}

/// One directive of the options file, FlexNet's meaning where the concept is the same.
/// (New variants go at the end: the enum travels in log entries.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Directive {
    /// `INCLUDE feature TYPE name`: once a feature has one, only those included may use it.
    Include { feature: FeatureRef, who: Target },
    /// `INCLUDEALL TYPE name`: an INCLUDE for every feature.
    IncludeAll { who: Target },
    /// `EXCLUDE feature TYPE name`: may not use the feature, whatever includes them.
    Exclude { feature: FeatureRef, who: Target },
    /// `EXCLUDEALL TYPE name`: an EXCLUDE for every feature.
    ExcludeAll { who: Target },
    /// `RESERVE n feature TYPE name`: n seats kept for the target, usable by no one else.
    Reserve {
        seats: u32,
        feature: FeatureRef,
        who: Target,
    },
    /// `MAX n feature TYPE name`: the target together holds at most n seats.
    Max {
        seats: u32,
        feature: FeatureRef,
        who: Target,
    },
    /// `GROUP name user...`: lines of one name add up.
    Group { name: String, members: Vec<String> },
    /// `HOST_GROUP name host...`: lines of one name add up.
    HostGroup { name: String, members: Vec<String> },
    /// `GROUPCASEINSENSITIVE ON|OFF`: file-wide, wherever it stands.
    GroupCaseInsensitive { on: bool },
    /// `LINGER feature seconds`: may lengthen the vendor's linger, never shorten it.
    Linger { feature: FeatureRef, secs: u32 },
    /// `MAX_OVERDRAFT feature n`: use at most n of the vendor's overdraft.
    MaxOverdraft { feature: FeatureRef, seats: u32 },
    /// `TIMEOUT feature seconds`: an idle client's seats of the feature return.
    Timeout { feature: FeatureRef, secs: u32 },
    /// `TIMEOUTALL seconds`: TIMEOUT for every feature without its own.
    TimeoutAll { secs: u32 },
    /// `MAX_BORROW_HOURS feature hours`: may lower the vendor's `BORROW=hours`.
    MaxBorrowHours { feature: FeatureRef, hours: u32 },
    /// `BORROW_LOWWATER feature n`: n seats of the feature can never be borrowed.
    BorrowLowwater { feature: FeatureRef, seats: u32 },
    /// `INCLUDE_BORROW feature TYPE name`: INCLUDE, for borrowing only.
    IncludeBorrow { feature: FeatureRef, who: Target },
    /// `EXCLUDE_BORROW feature TYPE name`: EXCLUDE, for borrowing only.
    ExcludeBorrow { feature: FeatureRef, who: Target },
}

impl Directive {
    /// The keyword as the file writes it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Directive::Include { .. } => "INCLUDE",
            Directive::IncludeAll { .. } => "INCLUDEALL",
            Directive::Exclude { .. } => "EXCLUDE",
            Directive::ExcludeAll { .. } => "EXCLUDEALL",
            Directive::Reserve { .. } => "RESERVE",
            Directive::Max { .. } => "MAX",
            Directive::Group { .. } => "GROUP",
            Directive::HostGroup { .. } => "HOST_GROUP",
            Directive::GroupCaseInsensitive { .. } => "GROUPCASEINSENSITIVE",
            Directive::Linger { .. } => "LINGER",
            Directive::MaxOverdraft { .. } => "MAX_OVERDRAFT",
            Directive::Timeout { .. } => "TIMEOUT",
            Directive::TimeoutAll { .. } => "TIMEOUTALL",
            Directive::MaxBorrowHours { .. } => "MAX_BORROW_HOURS",
            Directive::BorrowLowwater { .. } => "BORROW_LOWWATER",
            Directive::IncludeBorrow { .. } => "INCLUDE_BORROW",
            Directive::ExcludeBorrow { .. } => "EXCLUDE_BORROW",
        }
    }
}

/// A feature as a directive names it: all its license lines, or (FlexNet's
/// `feature:KEYWORD=value`) only the lines of one version or duplicate grouping.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeatureRef {
    pub name: String,
    pub qualifier: Option<Qualifier>,
}

/// What selects some of a feature's license lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Qualifier {
    /// `:VERSION=v`: the lines of exactly this version.
    Version(Version),
    /// `:DUP_GROUP=g`: the lines with this duplicate grouping.
    DupGroup(DupGroup),
}

/// FlexNet's `TYPE name`: who a directive is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Target {
    User(String),
    Host(String),
    Display(String),
    /// A `GROUP` of users.
    Group(String),
    /// A `HOST_GROUP` of hosts.
    HostGroup(String),
    /// The address the server sees the caller connect from.
    Internet(IpPattern),
    /// The project tag the client sends (FlexNet's `LM_PROJECT`).
    Project(String),
}

impl Target {
    /// The TYPE keyword.
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::User(_) => "USER",
            Target::Host(_) => "HOST",
            Target::Display(_) => "DISPLAY",
            Target::Group(_) => "GROUP",
            Target::HostGroup(_) => "HOST_GROUP",
            Target::Internet(_) => "INTERNET",
            Target::Project(_) => "PROJECT",
        }
    }
}
