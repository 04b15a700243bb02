//! The parser never panics, whatever the input, and every error span lies
//! inside the file.

use proptest::prelude::*;
use weir_grammar::{parse, FileId};

const VALID: &str = r#"import std.dns
tier security order 10
selector api = app == "api" && !(tier in {"a", b}) || has(x)
set corp = {10.0.0.0/8, 192.168.0.0/16, fd00::/8} except {10.99.0.0/16}
endpoint web-1 { labels { app: "web", tier: "edge" }  addr 10.1.0.5 }
service checkout {
  frontend 10.96.0.10:443/tcp
  backends select app == "checkout" port 8443
  backends { 10.3.0.1:8080 weight 3, [fd00::1]:8080 }
  balance maglev
  affinity client-ip 3h
}
default deny ingress, egress
policy db-ingress priority 100 tier security {
  applies to app == "postgres"
  ingress {
    allow tcp {5432, 6000-6010} from api
    allow icmp type 8 code 0 from corp except {10.1.0.0/16}
    deny from any log
  }
}
steer web-proxy {
  redirect tcp 80 from api to proxy 127.0.0.1:15001
  mark 0x10 udp 53 from any
  bypass tcp 179 to 10.0.0.1
}
test "t" {
  expect allow tcp from { app: "api" } to db-1 port 5432 state new at ingress by default
}
"#;

const SOUP: &[&str] = &[
    "import",
    "selector",
    "set",
    "except",
    "endpoint",
    "labels",
    "addr",
    "service",
    "frontend",
    "backends",
    "select",
    "port",
    "weight",
    "balance",
    "random",
    "maglev",
    "affinity",
    "client-ip",
    "tier",
    "order",
    "policy",
    "priority",
    "applies",
    "to",
    "ingress",
    "egress",
    "allow",
    "deny",
    "pass",
    "log",
    "from",
    "any",
    "all",
    "tcp",
    "udp",
    "sctp",
    "icmp",
    "type",
    "code",
    "in",
    "not",
    "has",
    "default",
    "steer",
    "redirect",
    "proxy",
    "mark",
    "dscp",
    "bypass",
    "test",
    "expect",
    "state",
    "new",
    "established",
    "at",
    "by",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    ":",
    "=",
    "/",
    "-",
    "==",
    "!=",
    "&&",
    "||",
    "!",
    ".",
    "\n",
    "\n",
    "web-1",
    "app",
    "\"s\"",
    "\"unterminated",
    "80",
    "70000",
    "0x10",
    "3h",
    "10.0.0.1",
    "10.0.0.0/8",
    "10.1.0.300",
    "10.0.0.0/33",
    "fd00::1",
    "fd00::/8",
    "::",
    "@",
    "# c\n",
    "é",
];

fn check(src: &str) {
    let (_, errors) = parse(FileId(3), src);
    for e in errors {
        assert_eq!(e.span.file, FileId(3));
        assert!(
            e.span.start <= e.span.end && e.span.end as usize <= src.len(),
            "{e:?}"
        );
    }
}

#[test]
fn valid_sample_parses() {
    let (f, errors) = parse(FileId(0), VALID);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(f.items.len(), 10);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_strings(s in "\\PC{0,200}") {
        check(&s);
    }

    #[test]
    fn random_ascii(s in "[ -~\n\t]{0,300}") {
        check(&s);
    }

    #[test]
    fn token_soup(toks in prop::collection::vec(prop::sample::select(SOUP), 0..120)) {
        check(&toks.join(" "));
        check(&toks.concat());
    }

    #[test]
    fn mutated_valid(edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, prop::sample::select(SOUP)), 1..6)) {
        let mut s = VALID.to_string();
        for (at, op, tok) in edits {
            let mut i = at.index(s.len() + 1);
            while !s.is_char_boundary(i) { i -= 1; }
            match op {
                0 => s.insert_str(i, tok),
                1 => {
                    let mut j = (i + 1 + tok.len() % 7).min(s.len());
                    while !s.is_char_boundary(j) { j += 1; }
                    s.replace_range(i..j, "");
                }
                _ => { s.truncate(i); }
            }
        }
        check(&s);
    }
}

#[test]
fn deep_nesting_is_cut_off() {
    let src = format!(
        "selector a = {}x\nselector b = {}x{}\nselector c = {}\nselector d = !!x\n",
        "!".repeat(100_000),
        "(".repeat(50_000),
        ")".repeat(50_000),
        vec!["x"; 50_000].join(" && ")
    );
    let (f, errors) = parse(FileId(0), &src);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(f.items.len(), 1);
    // Each error says which limit was passed (E0012), not just "unexpected".
    let limits: Vec<(String, usize)> = errors
        .iter()
        .map(|e| match &e.kind {
            weir_grammar::SyntaxErrorKind::NestingLimit { what, limit, .. } => {
                (what.clone(), *limit)
            }
            other => panic!("not a nesting limit: {other:?}"),
        })
        .collect();
    assert_eq!(
        limits,
        [
            ("`!`".to_string(), 256),
            ("open brackets".to_string(), 256),
            ("`&&`/`||`".to_string(), 4096)
        ]
    );
}
