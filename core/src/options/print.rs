//! The canonical text of an options file: keywords in capitals, one directive a line,
//! names quoted only when they must be. Each directive is written on the line it came
//! from (blank lines stand in for comments and continuations), so the text parses back
//! to the same [`Options`], line numbers included, and a denial's "line 12" points into
//! `options show` as it does into the admin's file.

use std::fmt;

use super::{Directive, FeatureRef, Line, Options, Qualifier, Target};

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut at = 1u32;
        for l in self.lines() {
            // Lines out of order (never from the parser) are written one after another.
            while at < l.line {
                f.write_str("\n")?;
                at += 1;
            }
            writeln!(f, "{}", l.directive)?;
            at = at.saturating_add(1);
        }
        Ok(())
    }
}

impl fmt::Display for Line {
    /// `line 12: RESERVE 2 cad GROUP eng`, as denials cite it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.directive)
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.keyword();
        match self {
            Directive::Include { feature, who }
            | Directive::Exclude { feature, who }
            | Directive::IncludeBorrow { feature, who }
            | Directive::ExcludeBorrow { feature, who } => write!(f, "{k} {feature} {who}"),
            Directive::IncludeAll { who } | Directive::ExcludeAll { who } => write!(f, "{k} {who}"),
            Directive::Reserve {
                seats,
                feature,
                who,
            }
            | Directive::Max {
                seats,
                feature,
                who,
            } => {
                write!(f, "{k} {seats} {feature} {who}")
            }
            Directive::Group { name, members } | Directive::HostGroup { name, members } => {
                write!(f, "{k} {name}")?;
                for m in members {
                    write!(f, " {}", Word(m))?;
                }
                Ok(())
            }
            Directive::GroupCaseInsensitive { on } => {
                write!(f, "{k} {}", if *on { "ON" } else { "OFF" })
            }
            Directive::Linger { feature, secs } | Directive::Timeout { feature, secs } => {
                write!(f, "{k} {feature} {secs}")
            }
            Directive::MaxOverdraft { feature, seats }
            | Directive::BorrowLowwater { feature, seats } => {
                write!(f, "{k} {feature} {seats}")
            }
            Directive::MaxBorrowHours { feature, hours } => write!(f, "{k} {feature} {hours}"),
            Directive::TimeoutAll { secs } => write!(f, "{k} {secs}"),
        }
    }
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.qualifier {
            None => Ok(()),
            Some(Qualifier::Version(v)) => write!(f, ":VERSION={v}"),
            Some(Qualifier::DupGroup(g)) => write!(f, ":DUP_GROUP={}", g.name()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.type_name();
        match self {
            Target::User(n) | Target::Host(n) | Target::Display(n) | Target::Project(n) => {
                write!(f, "{t} {}", Word(n))
            }
            Target::Group(n) | Target::HostGroup(n) => write!(f, "{t} {n}"),
            Target::Internet(p) => write!(f, "{t} {p}"),
        }
    }
}

/// A name as one token: bare when the lexer would read it back unchanged, else quoted.
struct Word<'a>(&'a str);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let bare = !s.is_empty()
            && !s.starts_with('#')
            && !s.ends_with('\\')
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c.is_control());
        if bare {
            return f.write_str(s);
        }
        f.write_str("\"")?;
        for c in s.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}
