//! What the iptables kernel tests that drive the tools by hand share:
//! whether they may run ([`ready`]: root and the tools, failing instead
//! of skipping under `CI`) and running a tool in a test namespace that
//! must succeed ([`run`]), weir's chains in a save ([`weir_chains`]).
//! Included by the tests that use it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use weir_runtime::netns::Netns;

/// Whether the test may run: `ip`, `iptables-restore` and `ipset` present
/// and root (`kernel_test::may_run` fails under `CI` instead).
pub fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &["ip", "iptables-restore", "ipset"])
}

/// `program args…` in `ns`; its stdout, or the test fails with its stderr.
pub fn run(ns: &Netns, program: &str, args: &[&str]) -> String {
    let o = ns.exec(program, args).unwrap();
    assert!(
        o.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Every `WEIR…` chain of an `iptables-save` text with its rules (the
/// chain name word dropped), the hook chains included, and the rules of
/// built-in chains that jump to one (under the built-in chain's name).
pub fn weir_chains(save: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in save.lines() {
        if let Some(c) = l.strip_prefix(':').and_then(|d| d.split(' ').next()) {
            if c.starts_with("WEIR") {
                out.entry(c.to_string()).or_default();
            }
        } else if let Some(rest) = l.strip_prefix("-A ") {
            let (c, r) = rest.split_once(' ').unwrap_or((rest, ""));
            if c.starts_with("WEIR") || r.contains("-j WEIR") {
                out.entry(c.to_string()).or_default().push(r.to_string());
            }
        }
    }
    out
}
