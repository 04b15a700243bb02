//! Helpers for the grammar's actions: error conversion and checks that are
//! easier in Rust than in the grammar.

use crate::ast::*;
use crate::lexer::{Token, KEYWORDS};
use crate::span::{FileId, Span};
use crate::{Form, SyntaxError, SyntaxErrorKind};
use lalrpop_util::{ErrorRecovery, ParseError};
use std::net::IpAddr;

/// One element of a `{ … }` peer: a set element or a `key: value` pair.
#[derive(Debug, Clone)]
pub enum PeerElem {
    Set(SetElem),
    Pair((Label, Label)),
}

/// One line of an endpoint body.
#[derive(Debug, Clone)]
pub enum EpItem {
    Labels(Vec<(Label, Label)>),
    Addr(CidrLit),
    Ports(Vec<PortDecl>),
    /// `node NAME`
    Node(Ident),
    /// `host network`
    HostNetwork(Span),
    Namespace(Ident),
}

/// A number checked against the maximum for its role.
#[allow(clippy::too_many_arguments)]
pub fn num(
    src: &str,
    file: FileId,
    errors: &mut Vec<SyntaxError>,
    l: usize,
    value: u64,
    r: usize,
    what: &str,
    max: u64,
) -> Num {
    let span = Span::new(file, l, r);
    if value > max {
        errors.push(SyntaxError {
            kind: SyntaxErrorKind::NumberOutOfRange {
                text: src.get(l..r).unwrap_or_default().to_string(),
                what: what.to_string(),
                max,
            },
            span,
        });
    }
    Num { value, span }
}

/// Short name of a grammar terminal, for `expected` lists.
fn terminal_name(t: &str) -> String {
    match t {
        "IDENT" => "identifier".into(),
        "STR" => "string".into(),
        "NUM" => "number".into(),
        "DUR" => "duration".into(),
        "ADDR" => "address".into(),
        "CIDR" => "CIDR".into(),
        "END" => "end of line".into(),
        _ => t.trim_matches('"').to_string(),
    }
}

/// Turns lalrpop's expected list into short token names. Where a bare
/// label is possible every keyword is acceptable; those lists drop the
/// keywords, keeping the ones with a meaning of their own there.
pub fn expected_names(expected: &[String]) -> Vec<String> {
    let mut names: Vec<String> = expected
        .iter()
        .filter(|t| t.as_str() != "LEXERR")
        .map(|t| terminal_name(t))
        .collect();
    // `nodes` is the one keyword that is no bare label (it would make
    // `nodes SEL` ambiguous), so it is not among them.
    if KEYWORDS
        .iter()
        .filter(|k| **k != "nodes")
        .all(|k| names.iter().any(|n| n == k))
    {
        names.retain(|n| {
            !KEYWORDS.contains(&n.as_str()) || matches!(n.as_str(), "all" | "any" | "has")
        });
    }
    // Inside a skipped (already broken) region everything is acceptable
    // except the end of the file; what is really missing is a `}`.
    if names.iter().any(|n| n == ".") && names.iter().any(|n| n == "}") {
        names = vec!["}".to_string()];
    }
    names.dedup();
    names
}

/// Converts a parse error. `None` when the offending token is a lexical
/// error token: that error has been reported already.
pub fn convert(src: &str, file: FileId, e: ParseError<usize, Token, ()>) -> Option<SyntaxError> {
    match e {
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => {
            if tok == Token::Error {
                return None;
            }
            if tok == Token::End && l >= src.len() {
                // The statement end inserted at the end of the input.
                return Some(SyntaxError {
                    kind: SyntaxErrorKind::UnexpectedEof {
                        expected: expected_names(&expected),
                    },
                    span: Span::new(file, src.len(), src.len()),
                });
            }
            Some(SyntaxError {
                kind: SyntaxErrorKind::UnexpectedToken {
                    found: tok.describe(src, l, r),
                    expected: expected_names(&expected),
                },
                span: Span::new(file, l, r),
            })
        }
        ParseError::UnrecognizedEof { expected, .. } => Some(SyntaxError {
            kind: SyntaxErrorKind::UnexpectedEof {
                expected: expected_names(&expected),
            },
            span: Span::new(file, src.len(), src.len()),
        }),
        ParseError::ExtraToken { token: (l, tok, r) } => {
            if tok == Token::Error {
                return None;
            }
            Some(SyntaxError {
                kind: SyntaxErrorKind::UnexpectedToken {
                    found: tok.describe(src, l, r),
                    expected: vec![],
                },
                span: Span::new(file, l, r),
            })
        }
        ParseError::InvalidToken { location } => Some(SyntaxError {
            kind: SyntaxErrorKind::UnexpectedToken {
                found: src
                    .get(location..)
                    .and_then(|s| s.chars().next())
                    .map(String::from)
                    .unwrap_or_default(),
                expected: vec![],
            },
            span: Span::new(file, location, location),
        }),
        ParseError::User { .. } => None,
    }
}

/// Records the error behind a `!` recovery.
pub fn recovered(
    src: &str,
    file: FileId,
    errors: &mut Vec<SyntaxError>,
    rec: ErrorRecovery<usize, Token, ()>,
) {
    if let Some(e) = convert(src, file, rec.error) {
        errors.push(e);
    }
}

/// A `{ … }` peer: a set literal when its elements are addresses and
/// names, a label map when they are `key: value` pairs. A mix, or a label
/// map with `except`, is a syntax error.
pub fn brace_peer(
    src: &str,
    file: FileId,
    errors: &mut Vec<SyntaxError>,
    list: (Vec<Option<PeerElem>>, Span),
    except: Option<(usize, (Vec<SetElem>, Span))>,
    span: Span,
) -> Peer {
    let (elems, base_span) = list;
    let elems: Vec<PeerElem> = elems.into_iter().flatten().collect();
    let is_map = matches!(elems.first(), Some(PeerElem::Pair(_)));
    let mut sets = Vec::new();
    let mut pairs = Vec::new();
    let mut mixed = false;
    for e in elems {
        match e {
            PeerElem::Set(s) => {
                if is_map && !mixed {
                    mixed = true;
                    let sp = match &s {
                        SetElem::Cidr(c) => c.span,
                        SetElem::Name(n) => n.span,
                    };
                    errors.push(SyntaxError {
                        kind: SyntaxErrorKind::UnexpectedToken {
                            found: src.get(sp.range()).unwrap_or_default().to_string(),
                            expected: vec!["label".into(), "string".into()],
                        },
                        span: sp,
                    });
                }
                sets.push(s);
            }
            PeerElem::Pair(p) => {
                if !is_map && !mixed {
                    mixed = true;
                    errors.push(SyntaxError {
                        kind: SyntaxErrorKind::UnexpectedToken {
                            found: ":".into(),
                            expected: vec![",".into(), "}".into()],
                        },
                        span: Span::new(file, p.0.span.end as usize, p.1.span.start as usize),
                    });
                }
                pairs.push(p);
            }
        }
    }
    if is_map {
        if let Some((at, _)) = except {
            errors.push(SyntaxError {
                kind: SyntaxErrorKind::UnexpectedToken {
                    found: "except".into(),
                    expected: vec!["to".into(), "port".into(), "end of line".into()],
                },
                span: Span::new(file, at, at + "except".len()),
            });
        }
        Peer::Labels(pairs, span)
    } else {
        Peer::Set(SetExpr {
            base: sets,
            base_span,
            except: except.map(|e| e.1),
            span,
        })
    }
}

pub fn endpoint(name: Ident, lines: Vec<Option<EpItem>>, span: Span) -> EndpointDecl {
    let mut labels = Vec::new();
    let mut addrs = Vec::new();
    let mut ports = Vec::new();
    let mut node = Vec::new();
    let mut host_network = Vec::new();
    let mut namespace = Vec::new();
    for l in lines.into_iter().flatten() {
        match l {
            EpItem::Labels(ls) => labels.extend(ls),
            EpItem::Addr(a) => addrs.push(a),
            EpItem::Ports(ps) => ports.extend(ps),
            EpItem::Node(n) => node.push(n),
            EpItem::HostNetwork(s) => host_network.push(s),
            EpItem::Namespace(n) => namespace.push(n),
        }
    }
    EndpointDecl {
        name,
        labels,
        addrs,
        ports,
        node,
        host_network,
        namespace,
        span,
    }
}

/// Records a familiar mistake at `found` (byte range), read as `right`.
pub fn wrong_form(
    src: &str,
    file: FileId,
    errors: &mut Vec<SyntaxError>,
    form: Form,
    found: (usize, usize),
    right: String,
) {
    errors.push(SyntaxError {
        kind: SyntaxErrorKind::WrongForm {
            found: src.get(found.0..found.1).unwrap_or_default().to_string(),
            right,
            form,
        },
        span: Span::new(file, found.0, found.1),
    });
}

/// `tcp {5432, 5433}`: ports as a set after the protocol, as written.
pub fn port_set(src: &str, proto: &str, ports: &[PortRange]) -> String {
    let list: Vec<&str> = ports
        .iter()
        .map(|p| src.get(p.span.range()).unwrap_or_default())
        .collect();
    format!("{} {{{}}}", proto.trim_end(), list.join(", "))
}

/// An address written where `ADDR:PORT` is expected. `fd00::30:5432` is
/// one IPv6 address to the lexer; when its last group is a decimal port
/// and the rest is an address, it is read as `[fd00::30]:5432`. Anything
/// else is a missing port. Either way one error, and a socket to go on with.
pub fn bare_socket(
    src: &str,
    file: FileId,
    errors: &mut Vec<SyntaxError>,
    addr: CidrLit,
) -> SocketLit {
    let span = addr.span;
    let text = src.get(span.range()).unwrap_or_default();
    if let Some((host, port, ip)) = split_ipv6_port(text) {
        wrong_form(
            src,
            file,
            errors,
            Form::Ipv6Socket,
            (span.start as usize, span.end as usize),
            format!("[{host}]:{port}"),
        );
        let port_start = span.end as usize - port.len();
        let port = Num {
            value: port.parse().unwrap_or(0),
            span: Span::new(file, port_start, span.end as usize),
        };
        let addr = CidrLit {
            addr: ip,
            prefix: None,
            span: Span::new(file, span.start as usize, port_start - 1),
        };
        return SocketLit { addr, port, span };
    }
    let right = match addr.addr {
        IpAddr::V4(_) => format!("{text}:PORT"),
        IpAddr::V6(_) => format!("[{text}]:PORT"),
    };
    wrong_form(
        src,
        file,
        errors,
        Form::MissingPort,
        (span.start as usize, span.end as usize),
        right,
    );
    let port = Num {
        value: 0,
        span: Span::new(file, span.end as usize, span.end as usize),
    };
    SocketLit { addr, port, span }
}

/// `fd00::30:5432` → `("fd00::30", "5432", fd00::30)`.
fn split_ipv6_port(text: &str) -> Option<(&str, &str, IpAddr)> {
    let (host, port) = text.rsplit_once(':')?;
    if host.ends_with(':') || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse::<u16>().ok()?;
    let ip: std::net::Ipv6Addr = host.parse().ok()?;
    Some((host, port, IpAddr::V6(ip)))
}
