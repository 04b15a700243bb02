//! `icmp6` (ICMPv6) beside `icmp` (ICMPv4): a keyword of its own, with
//! `type` / `code` in rules and test packets, ending a statement like
//! `icmp`, never a name.

use weir_grammar::ast::*;
use weir_grammar::{parse, FileId};

const F: FileId = FileId(3);

fn rules(src: &str) -> Vec<Rule> {
    let (f, errors) = parse(F, src);
    assert!(errors.is_empty(), "{src:?}: {errors:#?}");
    let Item::Policy(p) = &f.items[0] else {
        panic!("not a policy")
    };
    p.items
        .iter()
        .filter_map(|i| match i {
            PolicyItem::Rules(b) => Some(b.rules.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn icmp6_rules_and_test_packets_parse() {
    let src = "policy p {\n  applies to all\n  ingress {\n    allow icmp6\n    allow icmp6 type 128\n    deny icmp6 type 1 code 4 from any\n    allow icmp type 8\n  }\n}\n";
    let rs = rules(src);
    let proto = |r: &Rule| match &r.proto {
        Some(ProtoMatch::Icmp {
            proto, ty, code, ..
        }) => (*proto, ty.map(|n| n.value), code.map(|n| n.value)),
        other => panic!("{other:?}"),
    };
    assert_eq!(proto(&rs[0]), (Proto::Icmp6, None, None));
    assert_eq!(proto(&rs[1]), (Proto::Icmp6, Some(128), None));
    assert_eq!(proto(&rs[2]), (Proto::Icmp6, Some(1), Some(4)));
    assert_eq!(proto(&rs[3]), (Proto::Icmp, Some(8), None));

    let src = "test \"t\" {\n  expect allow icmp6 type 135 from fd00::1 to fd00::2\n}\n";
    let (f, errors) = parse(F, src);
    assert!(errors.is_empty(), "{errors:#?}");
    let Item::Test(t) = &f.items[0] else { panic!() };
    assert_eq!(t.expects[0].proto.0, Proto::Icmp6);
    assert_eq!(t.expects[0].icmp_type.unwrap().value, 135);
}

#[test]
fn icmp6_is_a_keyword_not_a_name() {
    let (_, errors) = parse(F, "selector icmp6 = all\n");
    assert!(!errors.is_empty());
    // Ports on icmp6 are a syntax error, as on icmp.
    let (_, errors) = parse(
        F,
        "policy p {\n  applies to all\n  ingress { allow icmp6 80 }\n}\n",
    );
    assert!(!errors.is_empty());
}
