//! Parser and lexer behaviour: spans, statement ends, errors, recovery.

use weir_grammar::ast::*;
use weir_grammar::lexer::{lex, tokenize, Token};
use weir_grammar::{parse, parse_with_comments, FileId, Span, SyntaxErrorKind};

const F: FileId = FileId(7);

fn ok(src: &str) -> File {
    let (f, errors) = parse(F, src);
    assert!(
        errors.is_empty(),
        "unexpected errors for {src:?}: {errors:#?}"
    );
    f
}

fn text(src: &str, s: Span) -> &str {
    assert_eq!(s.file, F);
    &src[s.range()]
}

fn kinds(src: &str) -> Vec<Token> {
    lex(F, src).tokens.into_iter().map(|t| t.1).collect()
}

#[test]
fn lexes_keywords_hyphens_ranges_and_addresses() {
    use std::net::IpAddr;
    assert_eq!(
        kinds("affinity client-ip 3h"),
        vec![
            Token::KwAffinity,
            Token::KwClientIp,
            Token::Duration(3 * 3600),
            Token::End
        ]
    );
    assert_eq!(
        kinds("tcp 8000-8080"),
        vec![
            Token::KwTcp,
            Token::Number(8000),
            Token::Minus,
            Token::Number(8080),
            Token::End
        ]
    );
    assert_eq!(kinds("web-1")[0], Token::Ident("web-1".into()));
    assert_eq!(kinds("0x10")[0], Token::Number(16));
    let v6: IpAddr = "fd00::1".parse().unwrap();
    assert_eq!(kinds("fd00::1")[0], Token::Addr(v6));
    assert_eq!(kinds("::1")[0], Token::Addr("::1".parse().unwrap()));
    assert_eq!(
        kinds("fd00::/8")[0],
        Token::Cidr(("fd00::".parse().unwrap(), 8))
    );
    assert_eq!(
        kinds("10.1.0.5:443"),
        vec![
            Token::Addr("10.1.0.5".parse().unwrap()),
            Token::Colon,
            Token::Number(443),
            Token::End
        ]
    );
    assert_eq!(
        kinds("[fd00::1]:443"),
        vec![
            Token::LBracket,
            Token::Addr(v6),
            Token::RBracket,
            Token::Colon,
            Token::Number(443),
            Token::End
        ]
    );
    assert_eq!(
        kinds("{ app: \"web\", a:b }"),
        vec![
            Token::LBrace,
            Token::Ident("app".into()),
            Token::Colon,
            Token::Str("web".into()),
            Token::Comma,
            Token::Ident("a".into()),
            Token::Colon,
            Token::Ident("b".into()),
            Token::RBrace,
            Token::End
        ]
    );
    assert_eq!(kinds(r#""a\"b\\c""#)[0], Token::Str(r#"a"b\c"#.into()));
}

#[test]
fn lexical_errors() {
    let l = lex(
        F,
        "10.1.0.300 10.0.0.0/33 fd00::1::2 \"abc\n@ 99999999999999999999999",
    );
    let k: Vec<_> = l.errors.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        k,
        vec![
            SyntaxErrorKind::BadAddress("10.1.0.300".into()),
            SyntaxErrorKind::BadCidr("10.0.0.0/33".into()),
            SyntaxErrorKind::BadAddress("fd00::1::2".into()),
            SyntaxErrorKind::UnterminatedString,
            SyntaxErrorKind::StrayCharacter('@'),
            SyntaxErrorKind::NumberOutOfRange {
                text: "99999999999999999999999".into(),
                what: "number".into(),
                max: u64::MAX
            },
        ]
    );
    assert_eq!(l.errors[3].span, Span::new(F, 34, 38));
}

#[test]
fn statement_end_insertion() {
    // After a continuing token (`&&`, `,`, `=`, `{`): no `;`.
    let t =
        kinds("selector a = x == \"a\" &&\n  y == \"b\"\nset s = {\n 10.0.0.0/8,\n 1.2.3.4\n}\n");
    let ends = t.iter().filter(|t| **t == Token::End).count();
    // one after "b", one after 10.0.0.0/8? no: `,` precedes the newline; one after 1.2.3.4, one after `}`
    assert_eq!(ends, 3, "{t:?}");
    // No insertion inside parentheses.
    let t = kinds("selector a = (x == \"a\"\n || y == \"b\")\n");
    assert_eq!(t.iter().filter(|t| **t == Token::End).count(), 1);
    // Comments do not hide the newline, and are kept.
    let l = lex(F, "import a # the a\nimport b\n");
    assert_eq!(l.tokens.iter().filter(|t| t.1 == Token::End).count(), 2);
    assert_eq!(l.comments.len(), 1);
    assert_eq!(l.comments[0].text, "# the a");
    assert_eq!(l.comments[0].span, Span::new(F, 9, 16));
    assert_eq!(tokenize(F, "import a\n").tokens.len(), 2);
}

#[test]
fn spans_of_nodes() {
    let src = "policy db-ingress priority 100 {\n  applies to app == \"postgres\"\n  ingress {\n    allow tcp 5432-5433 from api log\n  }\n}\n";
    let f = ok(src);
    let Item::Policy(p) = &f.items[0] else {
        panic!()
    };
    assert_eq!(text(src, p.span), src.trim_end());
    assert_eq!(text(src, p.name.span), "db-ingress");
    assert_eq!(p.priority.unwrap().value, 100);
    let PolicyItem::AppliesTo(sel, s) = &p.items[0] else {
        panic!()
    };
    assert_eq!(text(src, *s), "applies to app == \"postgres\"");
    assert_eq!(text(src, sel.span()), "app == \"postgres\"");
    let PolicyItem::Rules(b) = &p.items[1] else {
        panic!()
    };
    assert_eq!(b.direction, Direction::Ingress);
    let r = &b.rules[0];
    assert_eq!(text(src, r.span), "allow tcp 5432-5433 from api log");
    assert_eq!(text(src, r.proto.as_ref().unwrap().span()), "tcp 5432-5433");
    let Some(ProtoMatch::Ports { ports, .. }) = &r.proto else {
        panic!()
    };
    assert_eq!(text(src, ports[0].span), "5432-5433");
    assert_eq!(ports[0].hi.unwrap().value, 5433);
    let Some(Peer::Selector(SelExpr::Name(n))) = &r.from else {
        panic!()
    };
    assert_eq!(text(src, n.span), "api");
    assert_eq!(text(src, r.log.unwrap()), "log");

    let src = "set corp = {10.0.0.0/8, 192.168.0.0/16} except {10.99.0.0/16}";
    let f = ok(src);
    let Item::Set(s) = &f.items[0] else { panic!() };
    assert_eq!(text(src, s.expr.base_span), "{10.0.0.0/8, 192.168.0.0/16}");
    assert_eq!(
        text(src, s.expr.except.as_ref().unwrap().1),
        "{10.99.0.0/16}"
    );
    assert_eq!(
        text(src, s.expr.span),
        "{10.0.0.0/8, 192.168.0.0/16} except {10.99.0.0/16}"
    );
    assert_eq!(s.expr.base.len(), 2);
}

#[test]
fn peers() {
    let src = "test \"t\" {\n  expect allow tcp from { app: \"api\" } to {10.0.0.1, db} port 5432 state established at ingress by default\n  expect deny icmp type 8 code 0 from web except {1.2.3.4} to !(a == b) && has(c)\n}\n";
    let f = ok(src);
    let Item::Test(t) = &f.items[0] else { panic!() };
    assert_eq!(text(src, t.name_span), "\"t\"");
    let e = &t.expects[0];
    assert!(matches!(&e.from, Peer::Labels(l, _) if l.len() == 1 && l[0].0.text == "app"));
    assert!(matches!(&e.to, Peer::Set(s) if s.base.len() == 2));
    assert_eq!(e.by.as_ref().unwrap().name, "default");
    assert_eq!(e.state.unwrap().0, ConnState::Established);
    let e = &t.expects[1];
    assert_eq!(e.icmp_type.unwrap().value, 8);
    assert!(matches!(&e.from, Peer::Set(s) if s.except.is_some()));
    assert!(matches!(&e.to, Peer::Selector(SelExpr::And(..))));
    // bare keyword labels (extension): `tier` as a key
    ok("selector s = tier in {\"a\", b}\nendpoint e { labels { tier: edge } addr 10.0.0.1 }");
}

#[test]
fn several_independent_errors() {
    let src = "\
selector a = app == \"x\" @
endpoint e { addr 10.1.0.300 }
policy p {
  applies to all
  ingress {
    allow tcp 70000 from a
    allow tcp from a to b c
    allow tcp 80 from a
  }
}
service s {
  frontend 10.0.0.1:80/tcp
  backends { 10.0.0.2:80 weight 2, 10.0.0.3:80 }
}
";
    let (f, errors) = parse(F, src);
    let got: Vec<(SyntaxErrorKind, &str)> = errors
        .iter()
        .map(|e| (e.kind.clone(), text(src, e.span)))
        .collect();
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(got[0], (SyntaxErrorKind::StrayCharacter('@'), "@"));
    assert_eq!(
        got[1],
        (
            SyntaxErrorKind::BadAddress("10.1.0.300".into()),
            "10.1.0.300"
        )
    );
    assert_eq!(
        got[2],
        (
            SyntaxErrorKind::NumberOutOfRange {
                text: "70000".into(),
                what: "port".into(),
                max: 65535
            },
            "70000"
        )
    );
    assert!(
        matches!(&got[3].0, SyntaxErrorKind::UnexpectedToken { found, expected }
        if found == "c" && expected.contains(&"end of line".to_string()))
    );
    assert_eq!(got[3].1, "c");
    // Recovery kept the rest: the policy (with its good rules) and the service.
    let Some(Item::Policy(p)) = f.items.iter().find(|i| matches!(i, Item::Policy(_))) else {
        panic!()
    };
    let PolicyItem::Rules(b) = &p.items[1] else {
        panic!()
    };
    assert_eq!(b.rules.len(), 2);
    assert!(f
        .items
        .iter()
        .any(|i| matches!(i, Item::Service(s) if s.items.len() == 2)));
}

#[test]
fn missing_token_and_eof() {
    let (_, errors) = parse(F, "tier t\npolicy p {\n  applies to all\n");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        matches!(&errors[0].kind, SyntaxErrorKind::UnexpectedToken { found, expected }
        if found == "end of line" && expected == &vec!["order".to_string()])
    );
    assert_eq!(errors[0].span, Span::new(F, 6, 7));
    // The file ends inside the policy: reported at its `{` (E0007).
    assert!(matches!(
        &errors[1].kind,
        SyntaxErrorKind::UnclosedBrace { at_eof: true, .. }
    ));
    assert_eq!(errors[1].span, Span::new(F, 16, 17));
    // The unclosed policy is still in the tree.
    let (f, _) = parse(F, "policy p {\n  applies to all\n");
    assert!(matches!(&f.items[..], [Item::Policy(p)] if p.items.len() == 1));
}

#[test]
fn error_inside_braces_does_not_close_block() {
    let src =
        "policy p {\n  ingress {\n    allow from {10.0.0.0/8 oops: 3}\n    deny from any\n  }\n}\n";
    let (f, errors) = parse(F, src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let Item::Policy(p) = &f.items[0] else {
        panic!()
    };
    let PolicyItem::Rules(b) = &p.items[0] else {
        panic!()
    };
    assert_eq!(b.rules.len(), 2);
}

#[test]
fn number_ranges() {
    let (_, errors) = parse(
        F,
        "policy p priority 70000 {\n egress { allow icmp type 256 code 300 }\n}\nsteer s { dscp 64 udp 1 ; mark 0x100000000 }\n",
    );
    let whats: Vec<String> = errors
        .iter()
        .map(|e| match &e.kind {
            SyntaxErrorKind::NumberOutOfRange { what, .. } => what.clone(),
            k => panic!("{k:?}"),
        })
        .collect();
    assert_eq!(
        whats,
        [
            "priority",
            "ICMP type or code",
            "ICMP type or code",
            "DSCP value",
            "mark"
        ]
    );
}

#[test]
fn redirect_needs_proxy_and_comments_are_returned() {
    let (_, errors) = parse(F, "steer s {\n  redirect tcp 80 from a to b\n}\n");
    assert_eq!(errors.len(), 1);
    let (f, errors, comments) = parse_with_comments(F, "# head\nimport std.dns # tail\n");
    assert!(errors.is_empty());
    assert_eq!(f.items.len(), 1);
    assert_eq!(comments.len(), 2);
}

#[test]
fn self_world_and_default_pass() {
    let src = "tier admin order 10 audit default pass\n\
               policy p tier admin {\n  applies to all\n  ingress {\n    allow from self\n    deny from world\n    allow from world 10.0.0.0/8 except {10.9.0.0/16} log\n    allow from world {corp}\n  }\n}\n";
    let f = ok(src);
    let Item::Tier(t) = &f.items[0] else {
        panic!("{:?}", f.items[0])
    };
    assert!(t.audit.is_some());
    assert_eq!(text(src, t.default_pass.unwrap()), "default pass");
    let Item::Policy(p) = &f.items[1] else {
        panic!("{:?}", f.items[1])
    };
    let PolicyItem::Rules(b) = &p.items[1] else {
        panic!("{:?}", p.items[1])
    };
    let peers: Vec<&Peer> = b.rules.iter().map(|r| r.from.as_ref().unwrap()).collect();
    assert!(matches!(peers[0], Peer::SelfEp(s) if text(src, *s) == "self"));
    assert!(matches!(peers[1], Peer::World(None, _)));
    assert!(
        matches!(peers[2], Peer::World(Some(e), s) if e.except.is_some() && text(src, *s) == "world 10.0.0.0/8 except {10.9.0.0/16}")
    );
    assert!(b.rules[2].log.is_some());
    assert!(
        matches!(peers[3], Peer::World(Some(e), _) if matches!(&e.base[..], [SetElem::Name(n)] if n.name == "corp"))
    );
    // `world NAME` is read as meant, with one error.
    let (_, errors) = parse(
        F,
        "policy p {\n  applies to all\n  ingress { allow from world corp }\n}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

/// A file that ends inside a statement is parsed twice (the second time
/// from the tokens lexed again, with the missing closers supplied): the
/// tree keeps every complete item before the end, and the error at the
/// end is reported once.
#[test]
fn a_file_ending_inside_a_statement_keeps_every_item_before_it() {
    let mut src = String::new();
    for i in 0..10 {
        src.push_str(&format!("selector s{i} = app == \"{i}\"\n"));
    }
    src.push_str("selector t = (app ==");
    let (f, errors) = parse(F, &src);
    let complete = f
        .items
        .iter()
        .filter(|i| matches!(i, Item::Selector(s) if s.name.name.starts_with('s')))
        .count();
    assert_eq!(complete, 10, "{:#?}", f.items);
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .all(|e| e.span.start as usize >= src.len() - 8),
        "{errors:#?}"
    );
}
