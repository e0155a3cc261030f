//! Splits license text into logical lines of tokens, each token knowing the physical line
//! and column it came from, so every error can point at what is wrong.
//!
//! Rules: `#` as the first non-blank character makes a comment line, and a word that
//! begins with `#` starts a comment to the end of its line; a `\` ending a line
//! (outside quotes) continues the directive on the next line; tokens are separated by
//! blanks; a double-quoted part may hold blanks and the escapes `\"` and `\\`. The lexer
//! is total and linear: it looks at each character once and never indexes by position.

use crate::Error;

/// Files larger than this are refused before any parsing: real license files are a few
/// kilobytes, and a bound keeps a garbled upload from costing the server anything.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// One directive (after joining continuations) may not exceed this.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// One blank-separated word, unquoted and unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub text: String,
    pub line: u32,
    pub col: u32,
    /// Whether any part of the token was quoted (so `""` is an empty value, not nothing).
    pub quoted: bool,
    /// Byte offset in `text` where the first quoted part begins: only values may be
    /// quoted, so a quote before a keyword's `=` (or in a name) is refused.
    pub quoted_from: Option<usize>,
}

/// A directive: its tokens, and where it ends (for "expected more" errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Logical {
    pub tokens: Vec<Token>,
    pub end_line: u32,
    pub end_col: u32,
}

fn err(line: u32, col: u32, message: impl Into<String>) -> Error {
    Error::Parse {
        line,
        column: col,
        message: message.into(),
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The logical lines of `text`, in order.
pub(crate) fn logical_lines(text: &str) -> Result<Vec<Logical>, Error> {
    if text.len() > MAX_FILE_BYTES {
        return Err(err(
            1,
            1,
            format!(
                "the file is {} bytes; a license file may be at most {MAX_FILE_BYTES}",
                text.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    let mut bytes_in_current = 0usize;
    let mut last_line_no = 0u32;
    // The final newline ends the last line rather than starting an empty one, so a file
    // ending in "\\\n" is reported as ending mid-directive.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (i, raw) in body.split('\n').enumerate() {
        let line_no = to_u32(i + 1);
        last_line_no = line_no;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() {
            if let Some(l) = current.take() {
                return Err(err(
                    l.end_line,
                    l.end_col,
                    "the line ends with '\\' (continued) but the next line is empty",
                ));
            }
            continue;
        }
        bytes_in_current += raw.len();
        if bytes_in_current > MAX_LINE_BYTES {
            let start = current
                .as_ref()
                .and_then(|l| l.tokens.first())
                .map_or(line_no, |t| t.line);
            return Err(err(
                start,
                1,
                format!("the directive is longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        let (mut tokens, continued) = tokenize(raw, line_no)?;
        let end_col = to_u32(raw.chars().count() + 1);
        let logical = current.get_or_insert_with(|| Logical {
            tokens: Vec::new(),
            end_line: line_no,
            end_col,
        });
        logical.tokens.append(&mut tokens);
        logical.end_line = line_no;
        logical.end_col = end_col;
        if !continued {
            if let Some(l) = current.take() {
                if !l.tokens.is_empty() {
                    out.push(l);
                }
            }
            bytes_in_current = 0;
        }
    }
    if let Some(l) = current {
        return Err(err(
            l.end_line.min(last_line_no),
            l.end_col,
            "the file ends in the middle of a directive (a '\\' continues the last line)",
        ));
    }
    Ok(out)
}

/// Tokens of one physical line, and whether it ends with a continuation `\`.
fn tokenize(raw: &str, line: u32) -> Result<(Vec<Token>, bool), Error> {
    let mut tokens = Vec::new();
    // Whether the last character read was a `\` outside quotes: a continuation if the
    // line ends there.
    let mut trailing_backslash = false;
    let mut chars = raw.chars().enumerate().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            // A word that begins with `#` starts a comment to the end of the line, as
            // admins write after a FEATURE line; nothing in it continues the line.
            trailing_backslash = false;
            break;
        }
        let col = to_u32(i + 1);
        let mut tok = Token {
            text: String::new(),
            line,
            col,
            quoted: false,
            quoted_from: None,
        };
        while let Some(&(j, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            trailing_backslash = c == '\\';
            if c == '"' {
                tok.quoted = true;
                tok.quoted_from.get_or_insert(tok.text.len());
                let mut closed = false;
                while let Some((k, q)) = chars.next() {
                    match q {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, e @ ('"' | '\\'))) => tok.text.push(e),
                            Some((k, other)) => {
                                return Err(err(
                                    line,
                                    to_u32(k),
                                    format!(
                                        "unknown escape '\\{other}' in a quoted string (only \\\" and \\\\ are allowed)"
                                    ),
                                ))
                            }
                            None => break,
                        },
                        q if q.is_control() && q != '\t' => {
                            return Err(err(
                                line,
                                to_u32(k + 1),
                                format!("unexpected control character U+{:04X} in a quoted string", u32::from(q)),
                            ))
                        }
                        q => tok.text.push(q),
                    }
                }
                if !closed {
                    return Err(err(
                        line,
                        to_u32(j + 1),
                        "unterminated quoted string: expected a closing '\"' on the same line",
                    ));
                }
            } else if c.is_control() {
                return Err(err(
                    line,
                    to_u32(j + 1),
                    format!("unexpected control character U+{:04X}", u32::from(c)),
                ));
            } else {
                tok.text.push(c);
            }
        }
        tokens.push(tok);
    }
    // A trailing unquoted backslash continues the directive on the next line.
    let continued = match tokens.last_mut() {
        Some(t) if trailing_backslash => {
            t.text.pop();
            if t.text.is_empty() {
                tokens.pop();
            }
            true
        }
        _ => false,
    };
    Ok((tokens, continued))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        logical_lines(text)
            .unwrap()
            .into_iter()
            .map(|l| l.tokens.into_iter().map(|t| t.text).collect())
            .collect()
    }

    #[test]
    fn continuations_comments_and_quotes() {
        let text = "# c\nA b \\\n  c=\"x \\\" y\"\\\n d\n\nE\r\n";
        assert_eq!(
            words(text),
            vec![vec!["A", "b", "c=x \" y", "d"], vec!["E"]]
        );
    }

    #[test]
    fn a_trailing_comment_ends_the_line() {
        let text = "A b # the rest, \\ \"too\"\nC \"#quoted\" x#y # \\\nD\n";
        assert_eq!(
            words(text),
            vec![vec!["A", "b"], vec!["C", "#quoted", "x#y"], vec!["D"]]
        );
    }

    #[test]
    fn positions_follow_continuations() {
        let l = &logical_lines("A \\\n   bb").unwrap()[0];
        assert_eq!((l.tokens[1].line, l.tokens[1].col), (2, 4));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = logical_lines("A \"open").unwrap_err();
        assert_eq!(e.to_string(), "line 1, column 3: unterminated quoted string: expected a closing '\"' on the same line");
        let e = logical_lines("A \\").unwrap_err();
        assert!(
            e.to_string().starts_with("line 1, column 4: the file ends"),
            "{e}"
        );
    }
}
