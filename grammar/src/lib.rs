//! weir's front end: lexer (logos), statement-end insertion, parser
//! (lalrpop) and the syntax tree.
//!
//! The entry point is [`parse`]. It never fails and never panics: it returns
//! the best tree it could build plus every lexical and syntax error it met,
//! so that a file with several mistakes reports all of them at once.
//! Errors are data ([`SyntaxError`]); their message text lives in the
//! compiler's diagnostics module, the one place that owns all wording.

pub mod ast;
pub mod span;

pub use span::{FileId, Span};

/// What went wrong, as data. Rendering lives in `weir_compiler::diagnostics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SyntaxErrorKind {
    /// A character that starts no token (E0001).
    StrayCharacter(char),
    /// A string literal without its closing quote (E0002).
    UnterminatedString,
    /// Something shaped like an IPv4/IPv6 address that is not one (E0003).
    BadAddress(String),
    /// A CIDR whose prefix length is out of range or malformed (E0004).
    BadCidr(String),
    /// A number too large to be what it stands for: a port > 65535, a
    /// priority > 65535, ... (E0005). `what` names the role ("port").
    NumberOutOfRange {
        text: String,
        what: String,
        max: u64,
    },
    /// A malformed duration (E0006).
    BadDuration(String),
    /// The parser met a token it did not expect (E0010).
    UnexpectedToken {
        found: String,
        expected: Vec<String>,
    },
    /// A statement nests deeper than the parser allows (E0012): `what`
    /// names the construct ("open brackets", "`!`", "`&&`/`||`").
    NestingLimit {
        found: String,
        what: String,
        limit: usize,
    },
    /// The file ended in the middle of something (E0011).
    UnexpectedEof { expected: Vec<String> },
    /// A familiar mistake, recognized and read as the form it stands for so
    /// that nothing else is reported because of it: `found` was written
    /// where `right` (the corrected source text) was meant.
    WrongForm {
        found: String,
        right: String,
        form: Form,
    },
    /// A `{` never closed (E0007). The error's span is the `{`; `noticed`
    /// is where the parser found out: the first line indented as if the
    /// block had ended, or the end of the file (`at_eof`).
    UnclosedBrace { noticed: Span, at_eof: bool },
}

/// Which familiar mistake a [`SyntaxErrorKind::WrongForm`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Form {
    /// `apply to SEL` (any word before `to`) for `applies to SEL`.
    AppliesTo,
    /// `key = value` for `key == value` in a selector.
    Assign,
    /// `tcp:5432` for `tcp 5432`.
    PortColon,
    /// `tcp 5432, 5433` for `tcp {5432, 5433}`.
    PortList,
    /// `fd00::30:5432` (one IPv6 address) for `[fd00::30]:5432`.
    Ipv6Socket,
    /// `'x'` for `"x"`.
    SingleQuotes,
    /// An address without its port where `ADDR:PORT` is expected.
    MissingPort,
    /// `world corp` (a set's bare name) for `world {corp}`.
    WorldName,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyntaxError {
    pub kind: SyntaxErrorKind,
    pub span: Span,
}

pub mod lexer;
mod support;
mod unclosed;

lalrpop_util::lalrpop_mod!(
    #[allow(
        clippy::all,
        clippy::pedantic,
        unused_imports,
        unused_parens,
        dead_code
    )]
    parser
);

pub use lexer::{Comment, Lexed};

/// Parses one file. Never panics; returns the tree it could build (items
/// that failed to parse are left out) and every lexical and syntax error,
/// sorted by position.
pub fn parse(file: FileId, src: &str) -> (ast::File, Vec<SyntaxError>) {
    let (f, errors, _) = parse_with_comments(file, src);
    (f, errors)
}

/// [`parse`], also returning the file's comments (for the formatter).
pub fn parse_with_comments(file: FileId, src: &str) -> (ast::File, Vec<SyntaxError>, Vec<Comment>) {
    let mut lexed = lexer::lex(file, src);
    let mut errors = lexed.errors;
    limit_nesting(file, src, &mut lexed.tokens, &mut errors);
    if let Some(repaired) = unclosed::repair(file, src, &lexed.tokens) {
        // Some `{` is never closed: report it at the brace, and parse with
        // the missing `}` supplied where the block was meant to end.
        let mut tokens = repaired.tokens;
        tokens.extend(closers(&tokens, src.len()));
        let (tree, syntax) = run_parser(file, src, tokens);
        let supplied = |e: &SyntaxError| {
            e.span.start as usize >= src.len()
                || (e.span.start == e.span.end
                    && repaired.supplied_at.contains(&(e.span.start as usize)))
        };
        errors.extend(syntax.into_iter().filter(|e| !supplied(e)));
        errors.extend(repaired.errors);
        errors.sort_by_key(|e| (e.span.start, e.span.end));
        errors.dedup();
        return (tree, errors, lexed.comments);
    }
    // The tokens move into the parser (a copy kept for the rare second
    // run below was the parse's largest allocation: ~130 MB for an 11 MB
    // program); that run lexes the file again, which gives the same tokens.
    let (mut tree, mut syntax) = run_parser(file, src, lexed.tokens);
    let at_eof = |e: &SyntaxError| e.span.start as usize >= src.len();
    if syntax.iter().any(at_eof) {
        // The file ended inside something. lalrpop drops the errors of
        // recoveries still in progress when a later recovery unwinds them,
        // so parse again with the missing closing brackets supplied: that
        // run sees every error before the end of the file, and builds the
        // tree of the unclosed item. The errors at the end come from the
        // first run (the second one's are about the supplied tokens).
        let mut tokens = lexer::lex(file, src).tokens;
        limit_nesting(file, src, &mut tokens, &mut Vec::new());
        tokens.extend(closers(&tokens, src.len()));
        let (tree2, syntax2) = run_parser(file, src, tokens);
        tree = tree2;
        let eof_errors: Vec<SyntaxError> = syntax.into_iter().filter(at_eof).collect();
        syntax = syntax2.into_iter().filter(|e| !at_eof(e)).collect();
        syntax.extend(eof_errors);
    }
    errors.extend(syntax);
    errors.sort_by_key(|e| (e.span.start, e.span.end));
    errors.dedup();
    (tree, errors, lexed.comments)
}

/// Nesting limits, so that no input can build a tree deep enough to
/// overflow the stack of a recursive walk (or of `Drop`): per statement at
/// most 256 open brackets, 256 `!` and 4096 `&&`/`||`. The first token past
/// a limit is reported with the limit it passed (E0012); it and every later
/// one in the statement become error tokens.
fn limit_nesting(
    file: FileId,
    src: &str,
    tokens: &mut [lexer::Spanned],
    errors: &mut Vec<SyntaxError>,
) {
    use lexer::Token as T;
    const MAX_DEPTH: usize = 256;
    const MAX_NOT: usize = 256;
    const MAX_BINARY: usize = 4096;
    let (mut depth, mut nots, mut binary, mut reported) = (0usize, 0usize, 0usize, false);
    for (s, t, e) in tokens.iter_mut() {
        let over = match t {
            T::End => {
                (nots, binary, reported) = (0, 0, false);
                None
            }
            T::LBrace | T::LParen | T::LBracket => {
                depth += 1;
                (depth > MAX_DEPTH).then_some(("open brackets", MAX_DEPTH))
            }
            T::RBrace | T::RParen | T::RBracket => {
                depth = depth.saturating_sub(1);
                None
            }
            T::Bang => {
                nots += 1;
                (nots > MAX_NOT).then_some(("`!`", MAX_NOT))
            }
            T::AndAnd | T::OrOr => {
                binary += 1;
                (binary > MAX_BINARY).then_some(("`&&`/`||`", MAX_BINARY))
            }
            _ => None,
        };
        if let Some((what, limit)) = over {
            if !reported {
                reported = true;
                errors.push(SyntaxError {
                    kind: SyntaxErrorKind::NestingLimit {
                        found: src[*s..*e].to_string(),
                        what: what.to_string(),
                        limit,
                    },
                    span: Span::new(file, *s, *e),
                });
            }
            *t = T::Error;
        }
    }
}

fn run_parser(
    file: FileId,
    src: &str,
    tokens: Vec<lexer::Spanned>,
) -> (ast::File, Vec<SyntaxError>) {
    let mut syntax = Vec::new();
    let tree = match parser::FileParser::new().parse(src, file, &mut syntax, tokens) {
        Ok(f) => f,
        Err(e) => {
            syntax.extend(support::convert(src, file, e));
            ast::File::default()
        }
    };
    (tree, syntax)
}

/// Statement ends and closing brackets for every bracket left open.
fn closers(tokens: &[lexer::Spanned], end: usize) -> Vec<lexer::Spanned> {
    use lexer::Token as T;
    let mut stack = Vec::new();
    for (_, t, _) in tokens {
        match t {
            T::LBrace => stack.push(T::RBrace),
            T::LParen => stack.push(T::RParen),
            T::LBracket => stack.push(T::RBracket),
            T::RBrace | T::RParen | T::RBracket => {
                if let Some(i) = stack.iter().rposition(|c| c == t) {
                    stack.truncate(i);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    while let Some(t) = stack.pop() {
        if t == T::RBrace {
            out.push((end, T::End, end));
        }
        out.push((end, t, end));
    }
    out.push((end, T::End, end));
    out
}
