//! What can be wrong with an options file. Every variant that comes from the text names
//! the 1-based line and column it points at, so `tallyctl options check` can show the
//! admin the exact place; the fields are structured so tools need not parse messages.

use thiserror::Error;

/// Which kind of group a name refers to (`GROUP` holds users, `HOST_GROUP` hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKind {
    Group,
    HostGroup,
}

impl GroupKind {
    /// The directive (and TYPE) that defines this kind of group.
    pub fn keyword(self) -> &'static str {
        match self {
            GroupKind::Group => "GROUP",
            GroupKind::HostGroup => "HOST_GROUP",
        }
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.keyword())
    }
}

/// A failure to read an options file, or a loaded file that does not fit the licenses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    /// The whole file is over the size limit (reported at line 1, column 1).
    #[error("line 1, column 1: the file is {bytes} bytes; an options file may be at most {max}")]
    TooLarge { bytes: usize, max: usize },

    #[error("line {line}, column {column}: unterminated quoted string: expected a closing '\"' on the same line")]
    UnterminatedQuote { line: u32, column: u32 },

    #[error("line {line}, column {column}: unknown escape '\\{found}' in a quoted string (only \\\" and \\\\ are allowed)")]
    BadEscape { line: u32, column: u32, found: char },

    #[error("line {line}, column {column}: unexpected control character U+{code:04X}")]
    ControlCharacter { line: u32, column: u32, code: u32 },

    /// A `\` continued a line into a blank line or the end of the file.
    #[error("line {line}, column {column}: the line ends with '\\' (continued) but {next}")]
    DanglingContinuation {
        line: u32,
        column: u32,
        next: &'static str,
    },

    #[error(
        "line {line}, column {column}: unknown directive \"{found}\" (expected one of {expected})"
    )]
    UnknownDirective {
        line: u32,
        column: u32,
        found: String,
        expected: &'static str,
    },

    /// A FlexNet keyword Tally knows and deliberately does not do: refused by name, so a
    /// file that relies on it never loads as if it were not there.
    #[error("line {line}, column {column}: {keyword} is not supported: {why}")]
    Unsupported {
        line: u32,
        column: u32,
        keyword: String,
        why: &'static str,
    },

    /// The directive ended before an argument it needs (reported where it ends).
    #[error("line {line}, column {column}: {directive} ends early: expected {expected} (usage: {usage})")]
    Missing {
        line: u32,
        column: u32,
        directive: &'static str,
        expected: &'static str,
        usage: &'static str,
    },

    #[error("line {line}, column {column}: unexpected \"{found}\" after the arguments of {directive} (usage: {usage})")]
    Extra {
        line: u32,
        column: u32,
        directive: &'static str,
        found: String,
        usage: &'static str,
    },

    /// A word that is not what its place needs: `expected` says what would be.
    #[error("line {line}, column {column}: expected {expected}, found \"{found}\"")]
    Invalid {
        line: u32,
        column: u32,
        expected: &'static str,
        found: String,
    },

    /// A feature qualifier FlexNet has and Tally does not (`:HOSTID=`, `:EXPDATE=`, ...).
    #[error("line {line}, column {column}: the feature qualifier {keyword} is not supported: only VERSION= and DUP_GROUP= select license lines in Tally")]
    UnsupportedQualifier {
        line: u32,
        column: u32,
        keyword: String,
    },

    #[error("line {line}, column {column}: TIMEOUT{all} of {seconds} s is below the minimum of {floor} s: a shorter idle time would take seats from people who are only reading")]
    TimeoutBelowFloor {
        line: u32,
        column: u32,
        all: &'static str,
        seconds: u32,
        floor: u32,
    },

    /// A single-valued setting given twice for the same feature (or file-wide).
    #[error("line {line}, column {column}: {directive}{subject} is given twice (first on line {first_line}): remove one so the file says one thing")]
    Duplicate {
        line: u32,
        column: u32,
        directive: &'static str,
        subject: String,
        first_line: u32,
    },

    #[error("line {line}, column {column}: {kind} \"{name}\" is used but never defined: add a `{kind} {name} ...` line{hint}")]
    UndefinedGroup {
        line: u32,
        column: u32,
        kind: GroupKind,
        name: String,
        /// Non-empty when a group of the other kind has the name (a likely mix-up).
        hint: String,
    },

    /// The reservations of a feature add up to more seats than its pool has; `lines` are
    /// the RESERVE lines from the first one that no longer fits.
    #[error("RESERVE on line{} {} for {feature} reserve{} {reserved} seats in all, but the pool has {seats}", plural(lines), join(lines), if lines.len() == 1 { "s" } else { "" })]
    Overbooked {
        feature: String,
        reserved: u64,
        seats: u32,
        lines: Vec<u32>,
    },
}

impl OptionsError {
    /// The line the error points at (for [`Overbooked`](Self::Overbooked) the first
    /// overflowing RESERVE line; 1 for a file too large).
    pub fn line(&self) -> u32 {
        use OptionsError as E;
        match self {
            E::TooLarge { .. } => 1,
            E::Overbooked { lines, .. } => lines.first().copied().unwrap_or(1),
            E::UnterminatedQuote { line, .. }
            | E::BadEscape { line, .. }
            | E::ControlCharacter { line, .. }
            | E::DanglingContinuation { line, .. }
            | E::UnknownDirective { line, .. }
            | E::Unsupported { line, .. }
            | E::Missing { line, .. }
            | E::Extra { line, .. }
            | E::Invalid { line, .. }
            | E::UnsupportedQualifier { line, .. }
            | E::TimeoutBelowFloor { line, .. }
            | E::Duplicate { line, .. }
            | E::UndefinedGroup { line, .. } => *line,
        }
    }

    /// The column the error points at (1 where the error is about whole lines).
    pub fn column(&self) -> u32 {
        use OptionsError as E;
        match self {
            E::TooLarge { .. } | E::Overbooked { .. } => 1,
            E::UnterminatedQuote { column, .. }
            | E::BadEscape { column, .. }
            | E::ControlCharacter { column, .. }
            | E::DanglingContinuation { column, .. }
            | E::UnknownDirective { column, .. }
            | E::Unsupported { column, .. }
            | E::Missing { column, .. }
            | E::Extra { column, .. }
            | E::Invalid { column, .. }
            | E::UnsupportedQualifier { column, .. }
            | E::TimeoutBelowFloor { column, .. }
            | E::Duplicate { column, .. }
            | E::UndefinedGroup { column, .. } => *column,
        }
    }
}

fn plural(lines: &[u32]) -> &'static str {
    if lines.len() == 1 {
        ""
    } else {
        "s"
    }
}

fn join(lines: &[u32]) -> String {
    let words: Vec<String> = lines.iter().map(u32::to_string).collect();
    words.join(", ")
}
