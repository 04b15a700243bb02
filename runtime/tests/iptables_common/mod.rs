//! What the iptables kernel tests that drive the tools by hand share:
//! whether they may run ([`ready`], [`ready_legacy`]: root and the tools,
//! failing instead of skipping under `CI`), a fresh namespace
//! ([`fresh_ns`]) and running a tool in it that must succeed ([`run`],
//! [`run_with`]), weir's chains in a save ([`weir_chains`]).
//! Included by the tests that use it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use weir_runtime::netns::Netns;

/// Whether the test may run: `ip`, `iptables-restore` and `ipset` present
/// and root (`kernel_test::may_run` fails under `CI` instead).
pub fn ready(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(test, &["ip", "iptables-restore", "ipset"])
}

/// [`ready`] for the tests that drive the legacy tools by name
/// (`iptables-legacy-restore`, `iptables-legacy-save`).
pub fn ready_legacy(test: &str) -> bool {
    weir_runtime::kernel_test::may_run(
        test,
        &[
            "ip",
            "iptables-legacy-restore",
            "iptables-legacy-save",
            "ipset",
        ],
    )
}

/// A fresh namespace `PREFIX-TAG<n>-<pid>` (`n` counts this process's).
pub fn fresh_ns(prefix: &str, tag: &str) -> Netns {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Netns::create(&format!("{prefix}-{tag}{n}-{}", std::process::id())).unwrap()
}

/// `program args…` in `ns`; its stdout, or the test fails with its stderr.
pub fn run(ns: &Netns, program: &str, args: &[&str]) -> String {
    run_with(ns, program, args, None)
}

/// [`run`], feeding `input` on standard input.
pub fn run_with(ns: &Netns, program: &str, args: &[&str], input: Option<&str>) -> String {
    let o = ns.exec_with_input(program, args, input).unwrap();
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
