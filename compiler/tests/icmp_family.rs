//! `icmp` is ICMPv4 and `icmp6` ICMPv6, each in its own family only
//! (docs/language.md §4, "Headers"), in the interpreter, the decision
//! graph and the iptables text: `icmp` rules are emitted into iptables
//! only and `icmp6` rules into ip6tables only. The kernel checks are the
//! differential tests (runtime/tests/ebpf_diff.rs, iptables_diff.rs);
//! this one pins the meaning on a hand-written program.

mod common;

use std::net::IpAddr;
use weir_compiler::check::check_program;
use weir_compiler::graph;
use weir_compiler::interp::{BackendChoice, Interp, Packet};
use weir_compiler::iptables::{generate_text, Options};
use weir_compiler::model::{Model, Proto, Verdict};

const SRC: &str = r#"
endpoint h { labels { app: "h" } addr 10.0.0.2 addr fd00::2 }
policy p {
  applies to app == "h"
  ingress {
    allow icmp type 8
    allow icmp6 type 128
    deny icmp
    allow icmp6
  }
}
"#;

/// Each call its own directory: the tests run in parallel, and one's
/// clean-up must not remove the other's file (it did: a flake).
fn model(src: &str) -> Model {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("weir-icmp-family-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("p.weir");
    std::fs::write(&f, src).unwrap();
    let checked = check_program(&[f], &common::loader(), None);
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let _ = std::fs::remove_dir_all(&dir);
    checked.model
}

fn icmp(proto: Proto, src: &str, dst: &str, ty: u8) -> Packet {
    let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
    let mut p = Packet::new(proto, s, 0, d, 0);
    p.icmp_type = ty;
    p
}

#[test]
fn icmp_and_icmp6_are_per_family_in_the_interpreter_and_the_graph() {
    let m = model(SRC);
    let interp = Interp::new(&m);
    let g = graph::build(&m);
    // (packet, verdict, deciding rule index or None for the tier default)
    let cases = [
        // ICMPv4 echo: rule 1; ICMPv4 other: rule 3 (deny icmp).
        (icmp(Proto::Icmp, "10.0.0.9", "10.0.0.2", 8), Verdict::Allow),
        (icmp(Proto::Icmp, "10.0.0.9", "10.0.0.2", 13), Verdict::Deny),
        // ICMPv6 echo: rule 2; ICMPv6 other: rule 4 (allow icmp6) — the
        // `deny icmp` before it does not match IPv6.
        (
            icmp(Proto::Icmp6, "fd00::9", "fd00::2", 128),
            Verdict::Allow,
        ),
        (
            icmp(Proto::Icmp6, "fd00::9", "fd00::2", 135),
            Verdict::Allow,
        ),
        // ICMPv6 type 8 is not echo: allowed by `allow icmp6` (rule 4).
        (icmp(Proto::Icmp6, "fd00::9", "fd00::2", 8), Verdict::Allow),
        // The other family's ICMP matches neither keyword: the tier's
        // default denies it, whatever its type.
        (icmp(Proto::Icmp, "fd00::9", "fd00::2", 8), Verdict::Deny),
        (
            icmp(Proto::Icmp6, "10.0.0.9", "10.0.0.2", 128),
            Verdict::Deny,
        ),
    ];
    for (p, want) in cases {
        let o = interp.evaluate(&p);
        assert_eq!(o.verdict, want, "{p:?}: {:?}", o.decided_by);
        let go = g.evaluate(&p, BackendChoice::ByHash);
        assert_eq!(go.verdict, o.verdict, "graph {p:?}");
        assert_eq!(go.decided_by, o.decided_by, "graph {p:?}");
    }
}

#[test]
fn icmp_rules_go_to_iptables_and_icmp6_rules_to_ip6tables() {
    let m = model(SRC);
    let g = graph::build(&m);
    let out = generate_text(&g, &m, &Options::default()).unwrap();
    assert!(
        out.iptables.contains("-p icmp -m icmp --icmp-type 8"),
        "{}",
        out.iptables
    );
    assert!(!out.iptables.contains("ipv6-icmp"), "{}", out.iptables);
    assert!(!out.iptables.contains("icmpv6"), "{}", out.iptables);
    assert!(
        out.ip6tables
            .contains("-p ipv6-icmp -m icmp6 --icmpv6-type 128"),
        "{}",
        out.ip6tables
    );
    assert!(!out.ip6tables.contains("-p icmp "), "{}", out.ip6tables);
    assert!(!out.ip6tables.contains("--icmp-type"), "{}", out.ip6tables);
}
