use super::format;
use serde_json::Value;
use std::path::{Path, PathBuf};
use weir_grammar::FileId;

/// The tree with every span removed.
fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let is_span = m.len() == 3
                && m.contains_key("file")
                && m.contains_key("start")
                && m.contains_key("end");
            if is_span {
                *v = Value::Null;
                return;
            }
            m.retain(|k, _| k != "span" && !k.ends_with("_span"));
            m.values_mut().for_each(strip);
        }
        Value::Array(a) => a.iter_mut().for_each(strip),
        _ => {}
    }
}

fn tree(src: &str) -> Value {
    let (f, errors) = weir_grammar::parse(FileId(0), src);
    assert!(errors.is_empty(), "{errors:?}\n{src}");
    let mut v = serde_json::to_value(&f).unwrap();
    strip(&mut v);
    v
}

fn comments(src: &str) -> Vec<String> {
    weir_grammar::parse_with_comments(FileId(0), src)
        .2
        .into_iter()
        .map(|c| c.text.trim_end().to_string())
        .collect()
}

/// Formats, and checks idempotence, tree and comments.
fn check(src: &str) -> String {
    let once = format(src).unwrap_or_else(|e| panic!("{e:?}"));
    let twice = format(&once).unwrap();
    assert_eq!(once, twice, "not idempotent:\n{once}");
    assert_eq!(tree(src), tree(&once), "tree changed:\n{once}");
    assert_eq!(comments(src), comments(&once), "comments changed:\n{once}");
    once
}

fn weir_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            weir_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "weir") {
            out.push(p);
        }
    }
}

#[test]
fn examples_and_stdlib_round_trip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    weir_files(&root.join("examples"), &mut files);
    weir_files(&root.join("stdlib-policies"), &mut files);
    assert!(files.len() >= 5);
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        check(&src);
    }
}

#[test]
fn canonical_layout() {
    let src = "# head\n\nimport std.dns\nselector a   = app==\"x\"&&(b||c)\nselector b=x!=y\n\n\nselector c = has( k ) || !tier in {\"a\",\"b\"}\nset s={10.0.0.0/8,\n 192.168.0.0/16} except {10.99.0.0/16} # trailing\nendpoint e { labels { app: \"x\" }\n labels { k: v }  addr 10.1.0.5 }\nservice v { frontend [fd00::1]:443/tcp ; backends { 10.3.0.1:8080 weight 3, 10.3.0.2:8080 }\n  balance maglev\n\n\n affinity client-ip 3h }\npolicy p priority 0x10 tier t {\n\n  # leading\n  applies to a\n  ingress { allow tcp {80, 8000-8080} from corp log\n  deny }\n  egress {}\n}\nsteer m { redirect tcp 80 to proxy 127.0.0.1:15001\n mark 0x10 udp 53 from any }\ntest \"t\" {\n  expect deny icmp type 8 code 0 from {app: \"x\"} to e state new at ingress by default # c\n}\n# tail\n";
    let out = check(src);
    assert_eq!(out, EXPECTED_LAYOUT);
}

#[test]
fn long_lists_break() {
    let elems: Vec<String> = (0..12).map(|i| format!("10.{i}.0.0/16")).collect();
    let src = format!(
        "set big = {{{}}}\npolicy p {{\n applies to all\n ingress {{ allow from {{{}}} }}\n}}\n",
        elems.join(","),
        elems.join(", ")
    );
    let out = check(&src);
    assert!(out.contains("set big = {\n  10.0.0.0/16,\n"), "{out}");
    assert!(out.lines().all(|l| l.len() <= 100), "{out}");
}

#[test]
fn comments_in_lists_break_them() {
    let src = "set s = { 10.0.0.0/8, # a\n  192.168.0.0/16 }\n";
    let out = check(src);
    assert_eq!(out, "set s = {\n  10.0.0.0/8,  # a\n  192.168.0.0/16,\n}\n");
}

#[test]
fn refuses_syntax_errors() {
    assert!(format("selector = \n").is_err());
    assert_eq!(format("").unwrap(), "");
}

const EXPECTED_LAYOUT: &str = r#"# head

import std.dns

selector a = app == "x" && (b || c)
selector b = x != y

selector c = has(k) || !tier in { "a", "b" }

set s = { 10.0.0.0/8, 192.168.0.0/16 } except { 10.99.0.0/16 }  # trailing

endpoint e { labels { app: "x", k: v } addr 10.1.0.5 }

service v {
  frontend [fd00::1]:443/tcp
  backends { 10.3.0.1:8080 weight 3, 10.3.0.2:8080 }
  balance maglev

  affinity client-ip 3h
}

policy p priority 0x10 tier t {
  # leading
  applies to a
  ingress {
    allow tcp { 80, 8000-8080 } from corp log
    deny
  }
  egress {}
}

steer m {
  redirect tcp 80 to proxy 127.0.0.1:15001
  mark 0x10 udp 53 from any
}

test "t" {
  expect deny icmp type 8 code 0 from { app: "x" } to e state new at ingress by default  # c
}
# tail
"#;

#[test]
fn via_and_by_kind_are_kept() {
    let src = "test \"t\" {\n  expect   allow tcp from any to 10.96.0.10 port 443 via   web-1 by  policy x\n  expect allow tcp from any to 10.96.0.10 port 0 via [fd00::5]:8443 by service web\n}\n";
    let out = check(src);
    assert!(out.contains("port 443 via web-1 by policy x\n"), "{out}");
    assert!(
        out.contains("port 0 via [fd00::5]:8443 by service web\n"),
        "{out}"
    );
}

/// `audit` on tiers and policies, and an expect line's steering and audit
/// parts, survive formatting (the tree comparison sees a flag's span as
/// null either way, so the text is checked).
#[test]
fn audit_marks_and_expect_assertions_are_kept() {
    let src = "tier staged   order 5 audit\npolicy p priority 10 tier staged   audit {\n  applies to all\n}\npolicy audit audit {\n  applies to all\n}\ntest \"t\" {\n  expect allow tcp from any to any port 80 redirect to proxy 127.0.0.1:15001   by p audit deny by policy audit\n  expect allow udp from any to any port 53 mark 0x10\n  expect allow udp from any to any port 53 dscp 46 audit allow\n  expect allow tcp from any to any port 179 bypass by default\n}\n";
    let out = check(src);
    for want in [
        "tier staged order 5 audit\n",
        "policy p priority 10 tier staged audit {",
        "policy audit audit {",
        "port 80 redirect to proxy 127.0.0.1:15001 by p audit deny by policy audit\n",
        "port 53 mark 0x10\n",
        "port 53 dscp 46 audit allow\n",
        "port 179 bypass by default\n",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}

/// Named ports (endpoint `ports { }`, rule `tcp port "NAME"`) format in
/// their canonical layout and round-trip; the semantics file too.
#[test]
fn named_ports_round_trip() {
    let src = "endpoint w { labels { app: \"w\" } addr 10.1.0.5 ports {http:8080/tcp,\n dns : 53/udp} }\npolicy p {\n applies to app == \"w\"\n ingress { allow tcp port   \"http\" from any }\n egress { allow udp port \"dns\" to app == \"w\" }\n}\nservice s {\n frontend 10.96.0.1:80/tcp\n backends select app == \"w\" port   \"http\"\n}\n";
    let out = check(src);
    assert!(
        out.contains("endpoint w { labels { app: \"w\" } addr 10.1.0.5 ports { http: 8080/tcp, dns: 53/udp } }"),
        "{out}"
    );
    assert!(out.contains("allow tcp port \"http\" from any"), "{out}");
    assert!(
        out.contains("allow udp port \"dns\" to app == \"w\""),
        "{out}"
    );
    assert!(
        out.contains("backends select app == \"w\" port \"http\""),
        "{out}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in ["named-ports.weir", "named-target-ports.weir"] {
        check(&std::fs::read_to_string(root.join("tests/semantics").join(f)).unwrap());
    }
}
