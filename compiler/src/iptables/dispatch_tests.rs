//! The nat service dispatch's layout (`services.rs`): up to 16 frontend
//! addresses and no redirect rule after the dispatch put the frontend
//! rules in `WEIR-NAT-PRE` itself; more addresses, or a redirect, keep
//! the `iprange` guard and the address tree. What a flow gets through
//! either layout is checked with real traffic by
//! `runtime/tests/iptables_diff.rs`; this is the shape.

use super::*;
use crate::synth;

fn v4(n: usize) -> String {
    let m = synth::model(&synth::Params {
        services: n,
        maglev_pct: 0,
        ..synth::Params::default()
    });
    let g = crate::graph::build(&m);
    generate_text(&g, &m, &Options::default())
        .expect("generates")
        .iptables
}

fn nat_pre(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("-A WEIR-NAT-PRE "))
        .collect()
}

#[test]
fn few_frontends_dispatch_in_the_entry_chain() {
    let text = v4(10);
    let rules = nat_pre(&text);
    assert_eq!(rules.len(), 10, "{rules:#?}");
    for r in &rules {
        assert!(r.starts_with("-A WEIR-NAT-PRE -d 10."), "{r}");
        assert!(r.contains(" -g WEIR-FE"), "{r}");
    }
    assert!(!text.contains("iprange"), "no guard");
    assert!(!text.contains(":WEIR-SVC"), "no tree chain");
}

#[test]
fn many_frontends_keep_the_guard_and_the_tree() {
    let text = v4(40);
    let rules = nat_pre(&text);
    assert_eq!(rules.len(), 1, "{rules:#?}");
    assert!(
        rules[0].contains("-m iprange --dst-range") && rules[0].ends_with("-j WEIR-SVC1"),
        "{}",
        rules[0]
    );
    assert!(text.contains(":WEIR-SVC1 "));
}
