//! Splits options-file text into directives of tokens, each token knowing its line and
//! column. The rules are the license file's (see `license::lex`): `#` first on a line,
//! or starting a word, comments to the end of the line; a `\` ending a line continues
//! the directive; blanks separate tokens; double quotes may hold blanks and the escapes
//! `\"` and `\\`. It is a separate lexer only because its errors are [`OptionsError`]'s
//! structured variants. Total and linear: each character is looked at once.

use super::OptionsError;

/// Files larger than this are refused before parsing. Big sites list thousands of users
/// in groups, still far below this; the bound keeps a garbled upload cheap.
pub const MAX_FILE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub text: String,
    pub line: u32,
    pub col: u32,
    /// Whether any part was quoted: `"INCLUDE"` is a name, not a keyword.
    pub quoted: bool,
}

/// One directive: its tokens and where it ends (for "ends early" errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Logical {
    pub tokens: Vec<Token>,
    pub end_line: u32,
    pub end_col: u32,
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The directives of `text` in order, or the first mistake in its shape.
pub(super) fn logical_lines(text: &str) -> Result<Vec<Logical>, OptionsError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(OptionsError::TooLarge {
            bytes: text.len(),
            max: MAX_FILE_BYTES,
        });
    }
    let mut out = Vec::new();
    let mut current: Option<Logical> = None;
    // The final newline ends the last line rather than starting an empty one.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (i, raw) in body.split('\n').enumerate() {
        let line = to_u32(i + 1);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue;
        }
        if trimmed.is_empty() {
            if let Some(l) = current.take() {
                return Err(OptionsError::DanglingContinuation {
                    line: l.end_line,
                    column: l.end_col,
                    next: "the next line is empty",
                });
            }
            continue;
        }
        let (mut tokens, continued) = tokenize(raw, line)?;
        let end_col = to_u32(raw.chars().count() + 1);
        let logical = current.get_or_insert_with(|| Logical {
            tokens: Vec::new(),
            end_line: line,
            end_col,
        });
        logical.tokens.append(&mut tokens);
        logical.end_line = line;
        logical.end_col = end_col;
        if !continued {
            if let Some(l) = current.take() {
                if !l.tokens.is_empty() {
                    out.push(l);
                }
            }
        }
    }
    if let Some(l) = current {
        return Err(OptionsError::DanglingContinuation {
            line: l.end_line,
            column: l.end_col,
            next: "the file ends there",
        });
    }
    Ok(out)
}

/// The tokens of one physical line, and whether it ends with a continuation `\`.
fn tokenize(raw: &str, line: u32) -> Result<(Vec<Token>, bool), OptionsError> {
    let mut tokens = Vec::new();
    let mut trailing_backslash = false;
    let mut chars = raw.chars().enumerate().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            trailing_backslash = false;
            break;
        }
        let mut tok = Token {
            text: String::new(),
            line,
            col: to_u32(i + 1),
            quoted: false,
        };
        while let Some(&(j, c)) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            trailing_backslash = c == '\\';
            if c == '"' {
                tok.quoted = true;
                quoted(&mut chars, &mut tok.text, line, to_u32(j + 1))?;
            } else if c.is_control() {
                return Err(OptionsError::ControlCharacter {
                    line,
                    column: to_u32(j + 1),
                    code: u32::from(c),
                });
            } else {
                tok.text.push(c);
            }
        }
        tokens.push(tok);
    }
    let continued = match tokens.last_mut() {
        Some(t) if trailing_backslash => {
            t.text.pop();
            if t.text.is_empty() && !t.quoted {
                tokens.pop();
            }
            true
        }
        _ => false,
    };
    Ok((tokens, continued))
}

/// The rest of a quoted part (the opening quote is read), into `out`.
fn quoted(
    chars: &mut impl Iterator<Item = (usize, char)>,
    out: &mut String,
    line: u32,
    open_col: u32,
) -> Result<(), OptionsError> {
    while let Some((k, q)) = chars.next() {
        match q {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((k, found)) => {
                    return Err(OptionsError::BadEscape {
                        line,
                        column: to_u32(k),
                        found,
                    })
                }
                None => break,
            },
            q if q.is_control() && q != '\t' => {
                return Err(OptionsError::ControlCharacter {
                    line,
                    column: to_u32(k + 1),
                    code: u32::from(q),
                })
            }
            q => out.push(q),
        }
    }
    Err(OptionsError::UnterminatedQuote {
        line,
        column: open_col,
    })
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
        let text = "# c\nGROUP eng a \\\n  \"b c\" # d\n\n  RESERVE 1 \"f:VERSION=2\" USER x\r\n";
        assert_eq!(
            words(text),
            vec![
                vec!["GROUP", "eng", "a", "b c"],
                vec!["RESERVE", "1", "f:VERSION=2", "USER", "x"]
            ]
        );
        let l = &logical_lines("A \\\n   bb").unwrap()[0];
        assert_eq!((l.tokens[1].line, l.tokens[1].col), (2, 4));
    }
}
