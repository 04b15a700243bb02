//! Unclosed `{`: finding the brace that was never closed, and where its
//! block was meant to end.
//!
//! Consulted only when the file ends with a `{` still open, so a file whose
//! braces balance is never second-guessed. Counting braces alone cannot say
//! *which* `{` lacks its `}` (the parser only notices at the next item or at
//! the end of the file), so indentation decides, as a reader would: a `}`
//! first on a line less indented than the line of the innermost open `{`
//! shows that `{` was left open, and an item keyword at the start of a
//! line shows every open `{` was. The missing `}` is supplied there, so the
//! rest of the file parses as written and its own errors are still
//! reported; whatever is still open at the end is closed at the end.

use crate::lexer::{Spanned, Token};
use crate::span::{FileId, Span};
use crate::{SyntaxError, SyntaxErrorKind};

/// The tokens with the missing `}` supplied, one error per unclosed `{`,
/// and the positions where tokens were supplied (errors there are about
/// the supplied tokens, not the source).
pub struct Repaired {
    pub tokens: Vec<Spanned>,
    pub errors: Vec<SyntaxError>,
    pub supplied_at: Vec<usize>,
}

/// An open `{`: its span and the indentation of its line.
struct Open {
    start: usize,
    end: usize,
    indent: usize,
}

/// `None` when every `{` is closed.
pub fn repair(file: FileId, src: &str, tokens: &[Spanned]) -> Option<Repaired> {
    if !ends_open(tokens) {
        return None;
    }
    let mut out = Repaired {
        tokens: Vec::with_capacity(tokens.len() + 8),
        errors: Vec::new(),
        supplied_at: Vec::new(),
    };
    let mut open: Vec<Open> = Vec::new();
    for (s, t, e) in tokens {
        if let Some(col) = column_if_first(src, *s) {
            let ends = |o: &Open| match t {
                Token::RBrace => col < o.indent,
                t => col == 0 && starts_item(t),
            };
            let before = out.errors.len();
            while open.last().is_some_and(ends) {
                let o = open.pop().expect("checked");
                out.errors
                    .push(unclosed(file, &o, Span::new(file, *s, *e), false));
                out.tokens.push((*s, Token::End, *s));
                out.tokens.push((*s, Token::RBrace, *s));
            }
            if out.errors.len() > before {
                out.tokens.push((*s, Token::End, *s));
                out.supplied_at.push(*s);
            }
        }
        match t {
            Token::LBrace => open.push(Open {
                start: *s,
                end: *e,
                indent: indent_of_line(src, *s),
            }),
            Token::RBrace => {
                open.pop();
            }
            _ => {}
        }
        out.tokens.push((*s, t.clone(), *e));
    }
    let eof = Span::new(file, src.len(), src.len());
    for o in open.iter().rev() {
        out.errors.push(unclosed(file, o, eof, true));
    }
    Some(out)
}

fn unclosed(file: FileId, o: &Open, noticed: Span, at_eof: bool) -> SyntaxError {
    SyntaxError {
        kind: SyntaxErrorKind::UnclosedBrace { noticed, at_eof },
        span: Span::new(file, o.start, o.end),
    }
}

/// Whether some `{` is still open at the end of the tokens.
fn ends_open(tokens: &[Spanned]) -> bool {
    let mut depth = 0usize;
    for (_, t, _) in tokens {
        match t {
            Token::LBrace => depth += 1,
            Token::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    depth > 0
}

/// Keywords that begin a top-level item.
fn starts_item(t: &Token) -> bool {
    use Token::*;
    matches!(
        t,
        KwImport
            | KwInventory
            | KwSelector
            | KwSet
            | KwEndpoint
            | KwService
            | KwTier
            | KwPolicy
            | KwSteer
            | KwTest
    )
}

/// The token's column (in bytes) when it is the first on its line.
fn column_if_first(src: &str, at: usize) -> Option<usize> {
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let lead = &src[line_start..at];
    lead.chars()
        .all(|c| c == ' ' || c == '\t')
        .then_some(lead.len())
}

/// The indentation (in bytes) of the line holding `at`.
fn indent_of_line(src: &str, at: usize) -> usize {
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    src[line_start..at]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .count()
}
