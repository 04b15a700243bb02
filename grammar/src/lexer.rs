//! The lexer: logos tokens, lexical-error tokens and the Go-style
//! statement-end (`;`) insertion pass (language.md §1).
//!
//! [`lex`] is what the parser consumes. [`tokenize`] is the raw token stream
//! without inserted statement ends (for tools such as a formatter). Both
//! return the comments they skipped, with spans, in [`Lexed::comments`].
//!
//! Lexical errors never stop lexing: each one is reported in
//! [`Lexed::errors`] and leaves a [`Token::Error`] in the stream, which the
//! grammar knows as a terminal that fits nowhere, so the parser recovers at
//! the next statement end without reporting a second error for it.

use crate::span::{FileId, Span};
use crate::{Form, SyntaxError, SyntaxErrorKind};
use logos::Logos;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a token callback rejected its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LexError {
    /// A character that starts no token.
    #[default]
    Stray,
    BadAddress,
    BadCidr,
    /// A number literal that does not fit in 64 bits.
    NumberTooBig,
    BadDuration,
}

macro_rules! tokens {
    ( $( $kw:tt => $name:ident, )* ) => {
        /// A token. Keywords are `Kw*` variants; see [`Token::keyword`].
        #[derive(Logos, Debug, Clone, PartialEq, Eq)]
        #[logos(error = LexError)]
        #[logos(skip r"[ \t\r\n\f]+")]
        pub enum Token {
            $( #[token($kw)] $name, )*

            #[token("{")] LBrace,
            #[token("}")] RBrace,
            #[token("(")] LParen,
            #[token(")")] RParen,
            #[token("[")] LBracket,
            #[token("]")] RBracket,
            #[token(",")] Comma,
            /// A statement end: a written `;` or one inserted at a newline.
            #[token(";")] End,
            #[token(":")] Colon,
            #[token("=")] Assign,
            #[token("/")] Slash,
            #[token("-")] Minus,
            #[token("==")] EqEq,
            #[token("!=")] NotEq,
            #[token("&&")] AndAnd,
            #[token("||")] OrOr,
            #[token("!")] Bang,
            #[token(".")] Dot,

            #[regex(r"[A-Za-z_][A-Za-z0-9_-]*", |lex| lex.slice().to_string())]
            Ident(String),
            #[regex(r#""([^"\\\n]|\\[^\n])*""#, |lex| unescape(lex.slice()))]
            Str(String),
            /// `'x'`: a string in single quotes (an error, then read as `"x"`).
            #[regex(r"'([^'\\\n]|\\[^\n])*'", |lex| { let t = lex.slice(); t[1..t.len() - 1].to_string() })]
            SingleQuoted(String),
            /// A string without its closing quote (becomes an error).
            #[regex(r#""([^"\\\n]|\\[^\n])*\\?"#)]
            UnterminatedStr,
            #[regex(r"[0-9]+", |lex| lex.slice().parse::<u64>().map_err(|_| LexError::NumberTooBig))]
            #[regex(r"0x[0-9a-fA-F]+", |lex| u64::from_str_radix(&lex.slice()[2..], 16).map_err(|_| LexError::NumberTooBig))]
            Number(u64),
            /// A duration, in seconds.
            #[regex(r"[0-9]+[smhd]", |lex| duration(lex.slice()))]
            Duration(u64),
            /// An IPv4 or IPv6 address.
            #[regex(r"[0-9]+(\.[0-9]+)+", |lex| addr4(lex.slice()))]
            #[regex(r"[0-9a-fA-F]*:[0-9a-fA-F]*:[0-9a-fA-F:.]*", |lex| addr6(lex.slice()))]
            Addr(IpAddr),
            /// An IPv4 or IPv6 CIDR; host bits are not checked here.
            #[regex(r"[0-9]+(\.[0-9]+)+/[0-9]+", |lex| cidr(lex.slice(), true))]
            #[regex(r"[0-9a-fA-F]*:[0-9a-fA-F]*:[0-9a-fA-F:.]*/[0-9]+", |lex| cidr(lex.slice(), false))]
            Cidr((IpAddr, u8)),
            #[regex(r"#[^\n]*", allow_greedy = true)]
            Comment,
            /// Stands for a lexical error (already reported) in the parser's input.
            Error,
        }

        /// Every keyword, as written.
        pub const KEYWORDS: &[&str] = &[ $( $kw, )* ];

        impl Token {
            /// The keyword's text, if this token is a keyword.
            pub fn keyword(&self) -> Option<&'static str> {
                match self {
                    $( Token::$name => Some($kw), )*
                    _ => None,
                }
            }
        }
    };
}

tokens! {
    "import" => KwImport,
    "inventory" => KwInventory,
    "selector" => KwSelector,
    "set" => KwSet,
    "except" => KwExcept,
    "endpoint" => KwEndpoint,
    "labels" => KwLabels,
    "addr" => KwAddr,
    "service" => KwService,
    "frontend" => KwFrontend,
    "backends" => KwBackends,
    "select" => KwSelect,
    "port" => KwPort,
    "weight" => KwWeight,
    "balance" => KwBalance,
    "random" => KwRandom,
    "maglev" => KwMaglev,
    "affinity" => KwAffinity,
    "client-ip" => KwClientIp,
    "tier" => KwTier,
    "order" => KwOrder,
    "policy" => KwPolicy,
    "priority" => KwPriority,
    "applies" => KwApplies,
    "to" => KwTo,
    "ingress" => KwIngress,
    "egress" => KwEgress,
    "allow" => KwAllow,
    "deny" => KwDeny,
    "pass" => KwPass,
    "log" => KwLog,
    "from" => KwFrom,
    "any" => KwAny,
    "all" => KwAll,
    "tcp" => KwTcp,
    "udp" => KwUdp,
    "sctp" => KwSctp,
    "icmp" => KwIcmp,
    "icmp6" => KwIcmp6,
    "type" => KwType,
    "code" => KwCode,
    "in" => KwIn,
    "not" => KwNot,
    "has" => KwHas,
    "default" => KwDefault,
    "steer" => KwSteer,
    "redirect" => KwRedirect,
    "proxy" => KwProxy,
    "mark" => KwMark,
    "dscp" => KwDscp,
    "bypass" => KwBypass,
    "test" => KwTest,
    "expect" => KwExpect,
    "state" => KwState,
    "new" => KwNew,
    "established" => KwEstablished,
    "at" => KwAt,
    "by" => KwBy,
    "via" => KwVia,
    "audit" => KwAudit,
    "self" => KwSelf,
    "world" => KwWorld,
    "ports" => KwPorts,
    "node" => KwNode,
    "nodes" => KwNodes,
    "host" => KwHost,
    "network" => KwNetwork,
    "namespace" => KwNamespace,
}

fn unescape(s: &str) -> String {
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('"' | '\\')) => out.push(e),
                // Only `\"` and `\\` are escapes; anything else is kept as written.
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn duration(s: &str) -> Result<u64, LexError> {
    let (digits, unit) = s.split_at(s.len() - 1);
    let n: u64 = digits.parse().map_err(|_| LexError::BadDuration)?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 86400,
    };
    n.checked_mul(mul).ok_or(LexError::BadDuration)
}

fn addr4(s: &str) -> Result<IpAddr, LexError> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return Err(LexError::BadAddress);
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        // Leading zeros (`010`) are rejected: they read as octal elsewhere.
        if p.len() > 1 && p.starts_with('0') {
            return Err(LexError::BadAddress);
        }
        *o = p.parse().map_err(|_| LexError::BadAddress)?;
    }
    Ok(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn addr6(s: &str) -> Result<IpAddr, LexError> {
    s.parse::<Ipv6Addr>()
        .map(IpAddr::V6)
        .map_err(|_| LexError::BadAddress)
}

fn cidr(s: &str, v4: bool) -> Result<(IpAddr, u8), LexError> {
    let (a, p) = s.split_once('/').ok_or(LexError::BadCidr)?;
    let addr = if v4 { addr4(a)? } else { addr6(a)? };
    let max = if v4 { 32 } else { 128 };
    if p.len() > 1 && p.starts_with('0') {
        return Err(LexError::BadCidr);
    }
    match p.parse::<u8>() {
        Ok(n) if n <= max => Ok((addr, n)),
        _ => Err(LexError::BadCidr),
    }
}

/// A `#` comment as written (including the `#`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// A token with its byte range `[start, end)`.
pub type Spanned = (usize, Token, usize);

/// The result of lexing one file.
#[derive(Debug, Clone, Default)]
pub struct Lexed {
    pub tokens: Vec<Spanned>,
    pub comments: Vec<Comment>,
    pub errors: Vec<SyntaxError>,
}

/// Raw tokens, comments and lexical errors; no statement ends are inserted.
pub fn tokenize(file: FileId, src: &str) -> Lexed {
    let mut out = Lexed::default();
    // Policy text averages more than five bytes a token: sized once, the
    // token list of a large program is not copied while it grows.
    out.tokens.reserve(src.len() / 5 + 16);
    let mut pos = 0;
    'outer: while pos < src.len() {
        let mut lx = Token::lexer(&src[pos..]);
        while let Some(res) = lx.next() {
            let sp = lx.span();
            let (s, e) = (pos + sp.start, pos + sp.end);
            let span = Span::new(file, s, e);
            let text = &src[s..e];
            let kind = match res {
                Ok(Token::Comment) => {
                    out.comments.push(Comment {
                        text: text.to_string(),
                        span,
                    });
                    continue;
                }
                Ok(Token::UnterminatedStr) => SyntaxErrorKind::UnterminatedString,
                Ok(Token::SingleQuoted(inner)) => {
                    // One error; the parser reads it as the string meant.
                    out.errors.push(SyntaxError {
                        kind: SyntaxErrorKind::WrongForm {
                            found: text.to_string(),
                            right: format!("\"{inner}\""),
                            form: Form::SingleQuotes,
                        },
                        span,
                    });
                    out.tokens.push((s, Token::Str(inner), e));
                    continue;
                }
                Ok(tok) => {
                    out.tokens.push((s, tok, e));
                    continue;
                }
                Err(LexError::Stray) => {
                    let c = text.chars().next().unwrap_or('\u{fffd}');
                    let ce = s + c.len_utf8();
                    out.errors.push(SyntaxError {
                        kind: SyntaxErrorKind::StrayCharacter(c),
                        span: Span::new(file, s, ce),
                    });
                    out.tokens.push((s, Token::Error, ce));
                    if e > ce {
                        // logos consumed more than the bad character: lex
                        // again right after it so nothing is lost.
                        pos = ce;
                        continue 'outer;
                    }
                    continue;
                }
                Err(LexError::BadAddress) => SyntaxErrorKind::BadAddress(text.to_string()),
                Err(LexError::BadCidr) => SyntaxErrorKind::BadCidr(text.to_string()),
                Err(LexError::BadDuration) => SyntaxErrorKind::BadDuration(text.to_string()),
                Err(LexError::NumberTooBig) => SyntaxErrorKind::NumberOutOfRange {
                    text: text.to_string(),
                    what: "number".to_string(),
                    max: u64::MAX,
                },
            };
            out.errors.push(SyntaxError { kind, span });
            out.tokens.push((s, Token::Error, e));
        }
        break;
    }
    out
}

/// Whether a `;` is inserted at a newline after this token (language.md §1).
/// `default` is included too, so that `by default` can end an `expect` line.
fn can_end_statement(t: &Token) -> bool {
    use Token::*;
    matches!(
        t,
        Ident(_)
            | Str(_)
            | Number(_)
            | Duration(_)
            | Addr(_)
            | Cidr(_)
            | RBrace
            | RParen
            | RBracket
            | Error
            | KwAny
            | KwAll
            | KwLog
            | KwAllow
            | KwDeny
            | KwPass
            | KwTcp
            | KwUdp
            | KwSctp
            | KwIcmp
            | KwIcmp6
            | KwRandom
            | KwMaglev
            | KwBypass
            | KwIngress
            | KwEgress
            | KwNew
            | KwEstablished
            | KwDefault
            | KwAudit
            | KwSelf
            | KwWorld
            | KwPorts
            | KwNode
            | KwNetwork
            | KwNamespace
    )
}

/// Tokens for the parser: [`tokenize`] plus inserted statement ends.
///
/// A `;` ([`Token::End`]) is inserted at a newline that follows a token
/// that can end a statement, unless the innermost open bracket is a `(` or
/// `[`; its span is the newline character. One more is inserted at the end
/// of the input (an empty span) under the same condition. A `}` closes any
/// `(`/`[` left open inside its braces, so an unclosed parenthesis cannot
/// swallow the rest of the file.
pub fn lex(file: FileId, src: &str) -> Lexed {
    let raw = tokenize(file, src);
    let mut tokens = Vec::with_capacity(raw.tokens.len() + raw.tokens.len() / 4);
    let mut stack: Vec<char> = Vec::new();
    let mut prev: Option<(usize, bool)> = None; // (end, can end statement)
    let insert_ok = |stack: &Vec<char>| !matches!(stack.last(), Some('(' | '['));
    for (s, tok, e) in raw.tokens {
        if let Some((pe, true)) = prev {
            if insert_ok(&stack) {
                if let Some(nl) = src[pe..s].find('\n') {
                    tokens.push((pe + nl, Token::End, pe + nl + 1));
                }
            }
        }
        match tok {
            Token::LParen => stack.push('('),
            Token::LBracket => stack.push('['),
            Token::LBrace => stack.push('{'),
            Token::RParen | Token::RBracket => {
                let want = if tok == Token::RParen { '(' } else { '[' };
                if let Some(i) = stack.iter().rposition(|&c| c == want) {
                    if !stack[i + 1..].contains(&'{') {
                        stack.truncate(i);
                    }
                }
            }
            Token::RBrace => {
                if let Some(i) = stack.iter().rposition(|&c| c == '{') {
                    stack.truncate(i);
                }
            }
            _ => {}
        }
        prev = Some((e, can_end_statement(&tok)));
        tokens.push((s, tok, e));
    }
    if let Some((_, true)) = prev {
        if insert_ok(&stack) {
            tokens.push((src.len(), Token::End, src.len()));
        }
    }
    Lexed {
        tokens,
        comments: raw.comments,
        errors: raw.errors,
    }
}

impl Token {
    /// A short name for the token, for `found` in syntax errors: the source
    /// text for most tokens, `end of line` for an inserted statement end.
    pub fn describe(&self, src: &str, start: usize, end: usize) -> String {
        match self {
            Token::End if src.get(start..end) != Some(";") => {
                if start >= src.len() {
                    "end of file".to_string()
                } else {
                    "end of line".to_string()
                }
            }
            _ => src.get(start..end).unwrap_or("?").to_string(),
        }
    }
}
