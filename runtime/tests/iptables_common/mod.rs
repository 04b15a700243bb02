//! What the iptables kernel tests that drive the tools by hand share:
//! whether they may run ([`ready`]: root and the tools, failing instead
//! of skipping under `CI`) and running a tool in a test namespace that
//! must succeed ([`run`]). Included by the tests that use it.
#![allow(dead_code)]

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
